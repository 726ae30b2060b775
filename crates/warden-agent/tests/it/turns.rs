//! Turns against the fake worker: the typed stream, kept threads, routing between threads.

use std::time::Duration;

use warden_agent::approval::ApprovalMode;
use warden_agent::turn::{self, Checkout, ThreadId, Threads, TurnEvent, TurnStatus};

use crate::support::*;

#[tokio::test]
async fn a_turn_streams_typed_events_in_order() {
    let w = Worker::plain(&[]);
    w.init().await;
    let thread = start(&w.conn, ApprovalMode::Never).await;
    let mut stream =
        turn::start_turn(&w.conn, &thread, turn_params("hi there", Duration::from_secs(3))).await.expect("turn/start");
    assert_eq!(stream.thread_id(), &thread);
    let (events, end) = drain(&mut stream).await;
    assert_eq!(end, None);
    let shape: Vec<String> = events
        .iter()
        .map(|e| match e {
            TurnEvent::TextDelta { .. } => "delta".to_owned(),
            TurnEvent::ItemStarted(i) => format!("started {}", i.kind),
            TurnEvent::ItemCompleted(i) => format!("completed {}", i.kind),
            TurnEvent::TokenUsage(_) => "usage".to_owned(),
            TurnEvent::Error { .. } => "error".to_owned(),
            TurnEvent::Completed { .. } => "end".to_owned(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "started userMessage",
            "completed userMessage",
            "started agentMessage",
            "delta",
            "delta",
            "delta",
            "completed agentMessage",
            "usage",
            "end"
        ]
    );
    let text = format!("You said: hi there [turn 1 of {thread}]");
    assert_eq!(text_of(&events), text);
    let TurnEvent::ItemCompleted(item) = &events[6] else { panic!("{events:?}") };
    assert_eq!(item.text(), Some(text.as_str()));
    match &events[8] {
        TurnEvent::Completed { status: TurnStatus::Completed, error: None, usage: Some(u) } => {
            assert_eq!(u.total.input_tokens, 10);
            assert_eq!(u.model_context_window, Some(128000));
        }
        other => panic!("{other:?}"),
    }
    assert!(stream.next().await.is_none());
    w.finish().await;
}

#[tokio::test]
async fn kept_threads_carry_a_conversation_and_threads_do_not_cross_talk() {
    let w = Worker::plain(&[]);
    w.init().await;
    let kept: Threads<ThreadId> = Threads::new(Duration::from_secs(60), 8);
    let params = turn::ThreadParams { ephemeral: false, ..thread_params(ApprovalMode::Never) };
    let a = turn::start_thread(&w.conn, &params).await.expect("thread a");
    let b = turn::start_thread(&w.conn, &params).await.expect("thread b");
    assert!(kept.insert_busy("conv-a", a.clone()).is_empty());
    // Two turns at once on two threads of one connection.
    let mut sa = turn::start_turn(&w.conn, &a, turn_params("one", Duration::from_secs(3))).await.expect("turn a");
    let mut sb = turn::start_turn(&w.conn, &b, turn_params("other", Duration::from_secs(3))).await.expect("turn b");
    let ((ea, _), (eb, _)) = tokio::join!(drain(&mut sa), drain(&mut sb));
    assert_eq!(text_of(&ea), format!("You said: one [turn 1 of {a}]"));
    assert_eq!(text_of(&eb), format!("You said: other [turn 1 of {b}]"));
    kept.checkin("conv-a");
    // The conversation goes on on the same thread.
    let Checkout::Ready(thread) = kept.checkout("conv-a") else { panic!("kept thread not ready") };
    assert_eq!(kept.checkout("conv-a"), Checkout::Busy);
    let mut s = turn::start_turn(&w.conn, &thread, turn_params("two", Duration::from_secs(3))).await.expect("turn 2");
    let (e2, _) = drain(&mut s).await;
    assert_eq!(text_of(&e2), format!("You said: two [turn 2 of {a}]"));
    kept.checkin("conv-a");
    // Evicted threads are told to the worker.
    let evicted = kept.sweep_at(std::time::Instant::now() + Duration::from_secs(61));
    assert_eq!(evicted, [("conv-a".to_owned(), a.clone())]);
    turn::unsubscribe(&w.conn, &a).await.expect("thread/unsubscribe");
    let e = turn::start_turn(&w.conn, &a, turn_params("three", Duration::from_secs(3))).await.expect_err("gone");
    assert!(matches!(e, warden_agent::AgentError::Rpc { code: -32600, .. }), "{e:?}");
    w.finish().await;
}
