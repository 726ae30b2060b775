//! Workers that fail under the gateway: a crash mid-turn fails that request (503
//! `worker_exited`, or an error event mid-stream) and the next one succeeds; a client that goes
//! away interrupts its turn (`turn/interrupt` reaches the worker); shutdown drains.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crash_fails_its_request_and_the_next_one_succeeds() {
    let s = Server::start(settings(), fake_pool(&["--fault", "crash-mid-turn"], pool_settings(1, 2)), None).await;
    let r = chat(s.addr, "x").await;
    assert_eq!((r.status, r.code().as_str()), (503, "worker_exited"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let r = chat_stream(s.addr, "x").await;
    let frames = r.sse();
    assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"));
    assert!(frames.iter().any(|(_, d)| d.contains("\"worker_exited\"")), "{frames:?}");
    s.stop().await;

    // A healthy pool whose serving worker is killed mid-stream: that stream fails, the next
    // request is served (by the spare, then by the restarted worker).
    let s = Server::start(
        settings(),
        fake_pool(&["--fault", "slow-deltas", "--delta-ms", "200"], pool_settings(1, 2)),
        None,
    )
    .await;
    let addr = s.addr;
    let streaming = tokio::spawn(async move { chat_stream(addr, "long").await });
    let pool = s.gateway.pool().clone();
    let busy = eventually(Duration::from_secs(5), || {
        pool.supervisors()
            .iter()
            .any(|s| s.current().is_some_and(|w| w.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0))
    })
    .await;
    assert!(busy, "a worker took the turn");
    let victim = pool
        .supervisors()
        .iter()
        .find_map(|s| s.current().filter(|w| w.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0))
        .and_then(|w| w.pid)
        .expect("the serving worker's pid");
    std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status().expect("kill");
    let r = streaming.await.expect("join");
    let frames = r.sse();
    assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"), "{frames:?}");
    assert!(frames.iter().any(|(_, d)| d.contains("\"error\"")), "an error event: {frames:?}");
    let next = chat(s.addr, "next").await;
    assert_eq!(next.status, 200, "{}", next.text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_interrupts_its_turn() {
    let pool = fake_pool(&["--trace", "--fault", "slow-deltas", "--delta-ms", "500"], pool_settings(1, 2));
    let s = Server::start(settings(), pool, None).await;
    for stream in [true, false] {
        let body =
            json!({"model": "codex", "stream": stream, "messages": [{"role": "user", "content": "a long answer"}]})
                .to_string();
        let pool = s.gateway.pool().clone();
        // Counted over every worker: the turn may go to the spare while the first one drains.
        let starts = |p: &warden_agent::pool::Pool| {
            p.supervisors().iter().map(|s| s.stderr_tail().matches("fake-worker: turn/start").count()).sum::<usize>()
        };
        let starts_before = starts(&pool);
        let mut c = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
        let req =
            format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        c.write_all(req.as_bytes()).await.expect("write");
        let started = eventually(Duration::from_secs(5), || starts(&pool) > starts_before).await;
        assert!(started, "the turn started");
        let before =
            pool.supervisors().iter().map(|s| s.stderr_tail().matches("turn/interrupt").count()).sum::<usize>();
        drop(c);
        let t = Instant::now();
        let interrupted = eventually(Duration::from_secs(5), || {
            pool.supervisors().iter().map(|s| s.stderr_tail().matches("turn/interrupt").count()).sum::<usize>() > before
        })
        .await;
        assert!(interrupted, "turn/interrupt reached the worker within 5 s (stream: {stream})");
        eprintln!("disconnect to interrupt (stream: {stream}): {:?}", t.elapsed());
    }
    let m = s
        .gateway
        .pool()
        .supervisors()
        .iter()
        .map(|s| s.metrics().turns.load(std::sync::atomic::Ordering::SeqCst))
        .sum::<u64>();
    assert_eq!(m, 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    let s = Server::start(
        settings(),
        fake_pool(&["--fault", "slow-deltas", "--delta-ms", "150"], pool_settings(1, 2)),
        None,
    )
    .await;
    let addr = s.addr;
    let running = tokio::spawn(async move { chat(addr, "drain me").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pool = s.gateway.pool().clone();
    s.stop().await;
    let r = running.await.expect("join");
    assert_eq!(r.status, 200, "the request in flight finished: {}", r.text());
    assert!(!pool.is_ready(), "the workers stopped");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}
