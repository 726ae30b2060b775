//! Many requests on one connection, answered out of order; late answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use warden_agent::AgentError;

use crate::support::*;

#[tokio::test]
async fn responses_out_of_order_reach_their_own_requests() {
    let w = Worker::plain(&[]);
    w.init().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut set = JoinSet::new();
    // The first sent is answered last.
    for (i, ms) in [400u64, 250, 100, 0].into_iter().enumerate() {
        let (conn, order) = (w.conn.clone(), order.clone());
        set.spawn(async move {
            let r = conn.request("fake/sleep", json!({ "ms": ms, "value": i }), Duration::from_secs(5)).await;
            order.lock().expect("lock").push(i);
            (i, r)
        });
        // Sent in this order.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..4 {
        let (i, r) = within(SLACK * 2, "an answer", set.join_next()).await.expect("a task").expect("join");
        assert_eq!(r.expect("answered"), json!({ "value": i }));
    }
    assert_eq!(*order.lock().expect("lock"), [3, 2, 1, 0], "answered in reverse order of sending");
    assert_eq!(w.conn.pending(), 0);
    w.finish().await;
}

#[tokio::test]
async fn two_hundred_and_fifty_six_concurrent_requests_on_one_connection() {
    let w = Worker::plain(&[]);
    w.init().await;
    let mut set = JoinSet::new();
    for i in 0..256u64 {
        let conn = w.conn.clone();
        set.spawn(async move {
            let ms = (i * 37) % 200;
            (i, conn.request("fake/sleep", json!({ "ms": ms, "value": i }), Duration::from_secs(20)).await)
        });
    }
    let mut seen = vec![false; 256];
    // Bounded: 256 tasks.
    while let Some(done) = within(Duration::from_secs(30), "256 answers", set.join_next()).await {
        let (i, r) = done.expect("join");
        assert_eq!(r.expect("answered"), json!({ "value": i }));
        seen[i as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let stats = w.conn.stats();
    assert_eq!((stats.unmatched_responses, stats.garbage_lines), (0, 0), "{stats:?}");
    w.finish().await;
}

#[tokio::test]
async fn an_answer_after_the_timeout_is_counted_and_dropped() {
    let w = Worker::plain(&[]);
    w.init().await;
    let limit = Duration::from_millis(100);
    let e = w.conn.request("fake/sleep", json!({ "ms": 300 }), limit).await.expect_err("too slow");
    assert_eq!(e, AgentError::Timeout { method: "fake/sleep".into(), after: limit });
    assert_eq!(w.conn.pending(), 0);
    // The late answer arrives, matches nothing, and the connection goes on.
    let stats = within(SLACK, "the late answer", async {
        loop {
            let s = w.conn.stats();
            if s.unmatched_responses > 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(stats.unmatched_responses, 1);
    let ok = w.conn.request("fake/sleep", json!({ "ms": 0, "value": "next" }), Duration::from_secs(2)).await;
    assert_eq!(ok, Ok(json!({ "value": "next" })));
    w.finish().await;
}

#[tokio::test]
async fn the_bound_on_waiting_requests_is_a_retryable_error() {
    let opts = warden_agent::rpc::ConnectionOptions { max_pending: 2, ..fast_options() };
    let w = Worker::fake(&[], Arc::new(warden_agent::rpc::RefuseAll), opts);
    w.init().await;
    let mut set = JoinSet::new();
    for _ in 0..2 {
        let conn = w.conn.clone();
        set.spawn(async move { conn.request("fake/sleep", json!({ "ms": 500 }), Duration::from_secs(5)).await });
    }
    within(SLACK, "two pending", async {
        while w.conn.pending() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let e = w.conn.request("fake/sleep", json!({ "ms": 0 }), Duration::from_secs(5)).await.expect_err("bounded");
    assert_eq!(e, AgentError::TooManyRequests { method: "fake/sleep".into(), limit: 2 });
    assert!(e.is_retryable());
    while let Some(r) = within(SLACK, "the two", set.join_next()).await {
        assert!(r.expect("join").is_ok());
    }
    w.finish().await;
}
