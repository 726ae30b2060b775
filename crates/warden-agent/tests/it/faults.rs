//! Every fault mode of the fake worker gives its typed error within its (short) timeout, and the
//! worker process is gone and reaped afterwards.

use std::time::Duration;

use serde_json::json;
use warden_agent::approval::ApprovalMode;
use warden_agent::rpc::{ClientInfo, ConnectionOptions, RefuseAll};
use warden_agent::turn::{self, TurnEvent, TurnStatus};
use warden_agent::AgentError;

use crate::support::*;

#[tokio::test]
async fn hang_before_handshake_times_out_and_the_worker_exits_at_stdin_eof() {
    let mut w = Worker::plain(&["--fault", "hang-before-handshake"]);
    let limit = Duration::from_millis(300);
    let e = within(limit + SLACK, "initialize", w.conn.initialize(&ClientInfo::warden(), limit))
        .await
        .expect_err("no answer");
    assert_eq!(e, AgentError::Timeout { method: "initialize".into(), after: limit });
    assert_eq!(w.conn.pending(), 0, "the timed-out request is no longer waiting");
    w.conn.shutdown();
    assert!(w.exits_within(SLACK).await.success());
    assert_eq!(within(SLACK, "closed", w.conn.closed()).await, AgentError::WorkerExited { pending: None });
}

#[tokio::test]
async fn requests_before_initialize_are_refused_and_a_second_initialize_is_the_workers_error() {
    let w = Worker::plain(&[]);
    let e = w.conn.request("thread/start", json!({}), Duration::from_secs(1)).await.expect_err("refused");
    assert_eq!(e, AgentError::NotInitialized { method: "thread/start".into() });
    assert!(matches!(w.conn.notify("x", json!({})).await, Err(AgentError::NotInitialized { .. })));
    w.init().await;
    let e = w.conn.initialize(&ClientInfo::warden(), Duration::from_secs(2)).await.expect_err("twice");
    assert!(
        matches!(&e, AgentError::Rpc { method, code: -32600, message } if method == "initialize" && message == "Already initialized"),
        "{e:?}"
    );
    let e = w.conn.request("no/such/method", json!({}), Duration::from_secs(2)).await.expect_err("unknown");
    assert!(matches!(e, AgentError::Rpc { code: -32600, .. }), "{e:?}");
    w.finish().await;
}

#[tokio::test]
async fn crash_mid_turn_ends_the_stream_and_every_pending_request_with_worker_exited() {
    let mut w = Worker::plain(&["--fault", "crash-mid-turn"]);
    w.init().await;
    let thread = start(&w.conn, ApprovalMode::Never).await;
    // A request still waiting when the worker dies fails with it, naming its method.
    let conn = w.conn.clone();
    let sleeper =
        tokio::spawn(async move { conn.request("fake/sleep", json!({ "ms": 30000 }), Duration::from_secs(20)).await });
    let mut stream =
        turn::start_turn(&w.conn, &thread, turn_params("hello", Duration::from_secs(10))).await.expect("turn/start");
    let (events, end) = within(SLACK, "the crash", drain(&mut stream)).await;
    assert_eq!(end, Some(AgentError::WorkerExited { pending: None }), "{events:?}");
    assert_eq!(text_of(&events), "You said: ", "the first delta came before the crash");
    let pending = within(SLACK, "the pending request", sleeper).await.expect("join");
    assert_eq!(pending, Err(AgentError::WorkerExited { pending: Some("fake/sleep".into()) }));
    assert_eq!(w.conn.closed().await, AgentError::WorkerExited { pending: None });
    assert_eq!(within(SLACK, "reader", &mut w.reader).await.expect("join"), AgentError::WorkerExited { pending: None });
    // Later requests fail at once.
    let e = w.conn.request("thread/start", json!({}), Duration::from_secs(5)).await.expect_err("closed");
    assert_eq!(e, AgentError::WorkerExited { pending: Some("thread/start".into()) });
    assert_eq!(w.exits_within(SLACK).await.code(), Some(70));
}

#[tokio::test]
async fn hang_mid_turn_is_an_idle_timeout_of_the_stream() {
    let mut w = Worker::plain(&["--fault", "hang-mid-turn"]);
    w.init().await;
    let thread = start(&w.conn, ApprovalMode::Never).await;
    let idle = Duration::from_millis(400);
    let mut stream = turn::start_turn(&w.conn, &thread, turn_params("hello", idle)).await.expect("turn/start");
    let (events, end) = within(idle * 2 + SLACK, "the idle timeout", drain(&mut stream)).await;
    match end {
        Some(AgentError::Timeout { method, after }) => {
            assert_eq!(after, idle);
            assert!(method.contains(thread.as_str()) && method.contains(stream.turn_id().as_str()), "{method}");
        }
        other => panic!("expected a timeout, got {other:?} after {events:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ends after its error");
    assert_eq!(text_of(&events), "You said: ");
    // The hung worker still exits at stdin EOF.
    w.conn.shutdown();
    assert!(w.exits_within(SLACK).await.success());
}

#[tokio::test]
async fn a_worker_that_ignores_stdin_eof_is_killed_and_reaped() {
    let mut w = Worker::plain(&["--fault", "ignore-eof"]);
    w.init().await;
    w.conn.shutdown();
    assert!(tokio::time::timeout(Duration::from_millis(300), w.child.wait()).await.is_err(), "it lingers");
    let status = w.kill().await;
    assert!(!status.success());
    assert_eq!(within(SLACK, "closed", w.conn.closed()).await, AgentError::WorkerExited { pending: None });
}

#[tokio::test]
async fn garbage_lines_are_ignored_and_counted() {
    let (w, thread) = Worker::with_thread(&["--fault", "garbage"]).await;
    let (events, end) = w.turn(&thread, "hi", Duration::from_secs(3)).await;
    assert_eq!(end, None, "{events:?}");
    assert_eq!(text_of(&events), format!("You said: hi [turn 1 of {thread}]"));
    let stats = w.conn.stats();
    // One before each message: initialize, thread/start, thread/started, turn/start and 10 turn events.
    assert_eq!(stats.garbage_lines, 14, "{stats:?}");
    w.finish().await;
}

#[tokio::test]
async fn too_much_garbage_closes_the_connection_with_a_protocol_error() {
    let opts = ConnectionOptions { max_garbage_lines: 3, ..fast_options() };
    let mut w = Worker::fake(&["--fault", "garbage"], std::sync::Arc::new(RefuseAll), opts);
    // Garbage line 1 comes before the initialize answer, 2 and 3 before the first two answers.
    w.init().await;
    for value in 0..2 {
        let r = w.conn.request("fake/sleep", json!({ "ms": 0, "value": value }), Duration::from_secs(2)).await;
        assert_eq!(r, Ok(json!({ "value": value })));
    }
    let e = within(SLACK, "the fourth", w.conn.request("fake/sleep", json!({ "ms": 0 }), Duration::from_secs(2)))
        .await
        .expect_err("closed");
    assert!(matches!(&e, AgentError::Protocol(m) if m.contains("4 lines that are not JSON")), "{e:?}");
    assert_eq!(w.conn.closed().await, e);
    // The connection closed the worker's stdin (and its stdout): the worker ends.
    w.exits_within(SLACK).await;
}

#[tokio::test]
async fn an_oversized_line_is_a_protocol_error_that_closes_the_connection_and_ends_the_worker() {
    // The fake writes 9 MiB in one line; the default cap is 8 MiB.
    let mut w = Worker::plain(&["--fault", "oversized"]);
    assert_eq!(w.conn.options().max_line_bytes, 8 << 20);
    w.init().await;
    let conn = w.conn.clone();
    let other =
        tokio::spawn(async move { conn.request("fake/sleep", json!({ "ms": 20000 }), Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = within(SLACK * 2, "thread/start", turn::start_thread(&w.conn, &thread_params(ApprovalMode::Never)))
        .await
        .expect_err("oversized");
    let AgentError::Protocol(message) = &e else { panic!("expected a protocol error, got {e:?}") };
    assert!(message.contains("longer than 8388608 bytes"), "{message}");
    // Everything waiting fails with the same error; the connection is closed for good.
    assert_eq!(within(SLACK, "the other request", other).await.expect("join"), Err(e.clone()));
    assert_eq!(w.conn.closed().await, e);
    assert_eq!(w.conn.request("fake/sleep", json!({}), Duration::from_secs(1)).await, Err(e));
    // Its stdin closed and its stdout no longer read, the worker ends by itself.
    w.exits_within(SLACK).await;
}

#[tokio::test]
async fn an_answer_with_neither_result_nor_error_is_a_protocol_error() {
    let w = Worker::plain(&["--fault", "bad-response"]);
    w.init().await;
    let e = turn::start_thread(&w.conn, &thread_params(ApprovalMode::Never)).await.expect_err("bad");
    assert!(
        matches!(&e, AgentError::Protocol(m) if m.contains("thread/start") && m.contains("neither result nor error")),
        "{e:?}"
    );
    assert!(w.conn.close_reason().is_none(), "one bad answer fails its request, not the connection");
    w.finish().await;
}

#[tokio::test]
async fn overloaded_is_a_retryable_error() {
    let w = Worker::plain(&["--fault", "overloaded"]);
    w.init().await;
    let e = turn::start_thread(&w.conn, &thread_params(ApprovalMode::Never)).await.expect_err("overloaded");
    assert_eq!(e, AgentError::Overloaded { method: "thread/start".into() });
    assert!(e.is_retryable());
    w.finish().await;
}

#[tokio::test]
async fn error_notifications_are_events_and_the_failed_turn_says_why() {
    let (w, thread) = Worker::with_thread(&["--fault", "error-notification"]).await;
    let (events, end) = w.turn(&thread, "hi", Duration::from_secs(3)).await;
    assert_eq!(end, None);
    let errors: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::Error { message, will_retry } => Some((message.clone(), *will_retry)),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [("fake upstream hiccup; retrying".to_owned(), true), ("fake fatal error".to_owned(), false)]);
    match events.last() {
        Some(TurnEvent::Completed { status: TurnStatus::Failed, error: Some(err), usage: Some(_) }) => {
            assert_eq!(err.message, "fake fatal error");
            assert_eq!(err.codex_error_info, Some(json!("other")));
        }
        other => panic!("expected a failed turn, got {other:?}"),
    }
    w.finish().await;
}

#[tokio::test]
async fn slow_deltas_within_the_idle_timeout_complete_and_interrupt_stops_them() {
    let w =
        Worker::plain(&["--fault", "slow-deltas", "--delta-ms", "150", "--delta", "a", "--delta", "b", "--delta", "c"]);
    w.init().await;
    let thread = start(&w.conn, ApprovalMode::Never).await;
    // Each gap (150 ms) is shorter than the idle timeout; the whole turn is longer.
    let idle = Duration::from_millis(250);
    let mut stream = turn::start_turn(&w.conn, &thread, turn_params("x", idle)).await.expect("turn/start");
    let (events, end) = drain(&mut stream).await;
    assert_eq!(end, None, "{events:?}");
    assert_eq!(text_of(&events), "abc");
    assert!(matches!(events.last(), Some(TurnEvent::Completed { status: TurnStatus::Completed, .. })));

    let mut stream =
        turn::start_turn(&w.conn, &thread, turn_params("x", Duration::from_secs(3))).await.expect("turn/start");
    // Bounded: the turn has three deltas.
    for _ in 0..20 {
        if let Some(Ok(TurnEvent::TextDelta { .. })) = stream.next().await {
            break;
        }
    }
    within(SLACK, "interrupt", stream.interrupt()).await.expect("turn/interrupt");
    let (events, end) = drain(&mut stream).await;
    assert_eq!(end, None);
    assert!(
        matches!(events.last(), Some(TurnEvent::Completed { status: TurnStatus::Interrupted, error: None, .. })),
        "{events:?}"
    );
    assert!(text_of(&events).len() < 2, "no more than one delta after the interrupt: {events:?}");
    // Interrupting a finished turn is the worker's error.
    let e = stream.interrupt().await.expect_err("no such turn");
    assert!(matches!(e, AgentError::Rpc { code: -32600, .. }), "{e:?}");
    w.finish().await;
}

#[tokio::test]
async fn dropping_the_connection_closes_the_workers_stdin_and_it_exits() {
    let Worker { conn, reader, mut child, pid, .. } = Worker::plain(&[]);
    conn.initialize(&ClientInfo::warden(), Duration::from_secs(3)).await.expect("initialize");
    let clone = conn.clone();
    drop(conn);
    assert!(tokio::time::timeout(Duration::from_millis(200), child.wait()).await.is_err(), "a clone keeps it open");
    drop(clone);
    let status = within(SLACK, "exit", child.wait()).await.expect("wait");
    assert!(status.success());
    assert_no_zombie(pid);
    assert_eq!(within(SLACK, "reader", reader).await.expect("join"), AgentError::WorkerExited { pending: None });
}
