//! Every error row: the OpenAI envelope, the status, the code, the param, `Retry-After` and
//! `WWW-Authenticate` where they belong.

use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

fn assert_envelope(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let e = &v["error"];
    assert_eq!(e["code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some(), "{v}");
    assert!(e.get("param").is_some(), "param is present (null or the field): {v}");
    assert!(r.header("x-request-id").is_some());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_404_405_413_with_the_field_named() {
    let s = Server::start(settings(), fake_pool(&[], pool_settings(1, 2)), Some(keys(16, 0))).await;
    let auth = format!("Bearer {KEY}");
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let r = raw(s.addr, "POST", "/v1/chat/completions", &h, b"{not json").await;
    assert_envelope(&r, 400, "invalid_json");
    let cases = [
        (json!({"messages": [{"role": "user", "content": "x"}]}), 400, "model_required", Some("model")),
        (
            json!({"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            json!({"model": "codex", "messages": [{"role": "user", "content": "x"}], "n": 3}),
            400,
            "invalid_request_error",
            Some("n"),
        ),
        (
            json!({"model": "codex", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
            400,
            "unsupported_parameter",
            Some("tools"),
        ),
        (
            json!({"model": "codex", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}),
            400,
            "unsupported_parameter",
            Some("messages[0].content[0]"),
        ),
        (json!({"model": "codex"}), 400, "invalid_request_error", Some("messages")),
    ];
    for (body, status, code, param) in cases {
        let r = post(s.addr, "/v1/chat/completions", &body).await;
        let v = assert_envelope(&r, status, code);
        assert_eq!(v["error"]["param"].as_str(), param, "{body}: {v}");
    }
    // Ignored sampling fields are accepted.
    let ok = post(
        s.addr,
        "/v1/chat/completions",
        &json!({
            "model": "codex", "messages": [{"role": "user", "content": "x", "name": "ann"}],
            "temperature": 0.7, "top_p": 0.9, "max_tokens": 5, "stop": ["\n"], "presence_penalty": 0.1,
            "frequency_penalty": 0.1, "user": "u1", "seed": 1, "logit_bias": {}
        }),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let r = post(
        s.addr,
        "/v1/responses",
        &json!({"model": "codex", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}),
    )
    .await;
    assert_eq!(assert_envelope(&r, 400, "unsupported_parameter")["error"]["param"], "input[0].type");
    let r = raw(s.addr, "GET", "/v1/chat/completions", &h, b"").await;
    assert_envelope(&r, 405, "method_not_allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")));
    let r = raw(s.addr, "GET", "/v2/nothing", &h, b"").await;
    assert_envelope(&r, 404, "not_found");
    // Over the body cap (64 KiB in these settings): refused from Content-Length, and when sent.
    let big = format!(
        "{{\"model\":\"codex\",\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}",
        "x".repeat(70 * 1024)
    );
    let r = raw(s.addr, "POST", "/v1/chat/completions", &h, big.as_bytes()).await;
    assert_envelope(&r, 413, "request_entity_too_large");
    assert_eq!(r.header("connection"), Some("close"), "the unread body ends the connection, said so");
    // Without Content-Length (chunked), refused when the cap is passed.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.expect("connect");
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut c, head.as_bytes()).await.expect("write");
    for _ in 0..5 {
        let chunk = format!("{:x}\r\n{}\r\n", 20 * 1024, "y".repeat(20 * 1024));
        if tokio::io::AsyncWriteExt::write_all(&mut c, chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut c, &mut buf))
        .await
        .expect("an answer")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Over the header cap (64 KiB): refused by hyper with 431.
    let huge = "h".repeat(70 * 1024);
    let r = raw(s.addr, "GET", "/v1/models", &[("X-Padding", huge.as_str())], b"").await;
    assert_envelope(&r, 431, "headers_too_large");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_limited_per_key() {
    let s = Server::start(
        settings(),
        fake_pool(&["--fault", "slow-deltas", "--delta-ms", "300"], pool_settings(2, 4)),
        Some(keys(1, 0)),
    )
    .await;
    let body = json!({"model": "codex", "messages": [{"role": "user", "content": "x"}]}).to_string();
    let r = raw(s.addr, "POST", "/v1/chat/completions", &[], body.as_bytes()).await;
    assert_envelope(&r, 401, "invalid_api_key");
    assert!(r.header("www-authenticate").is_some_and(|w| w.starts_with("Bearer")), "{:?}", r.headers);
    let r = raw(
        s.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer sk-wrong-0123456789abcdef0123456789")],
        body.as_bytes(),
    )
    .await;
    assert_envelope(&r, 401, "invalid_api_key");
    assert!(!r.text().contains("sk-wrong"), "the presented key is not echoed");
    let r = raw(s.addr, "GET", "/v1/models", &[("Authorization", "Basic abc")], b"").await;
    assert_envelope(&r, 401, "invalid_api_key");
    // Concurrency 1 per key: a second request while one runs is 429 concurrency_exceeded.
    let addr = s.addr;
    let slow = tokio::spawn(async move { chat(addr, "slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = chat(s.addr, "x").await;
    assert_envelope(&r, 429, "concurrency_exceeded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(slow.await.expect("join").status, 200);
    s.stop().await;

    // A rate of 2 per minute: the third is 429 rate_limited with Retry-After.
    let s = Server::start(settings(), fake_pool(&[], pool_settings(1, 2)), Some(keys(8, 2))).await;
    for _ in 0..2 {
        assert_eq!(get(s.addr, "/v1/models").await.status, 200);
    }
    let r = get(s.addr, "/v1/models").await;
    assert_envelope(&r, 429, "rate_limited");
    assert!(r.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| (1..=60).contains(&v)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_is_429_worker_busy_and_no_ready_worker_is_503() {
    // One worker, one turn, no queue: the second request is busy at once.
    let mut ps = pool_settings(1, 1);
    ps.queue = 0;
    let s = Server::start(settings(), fake_pool(&["--fault", "slow-deltas", "--delta-ms", "400"], ps), None).await;
    let addr = s.addr;
    let slow = tokio::spawn(async move { chat(addr, "slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = chat(s.addr, "x").await;
    assert_envelope(&r, 429, "worker_busy");
    assert!(r.header("retry-after").is_some());
    assert_eq!(slow.await.expect("join").status, 200);
    s.stop().await;

    // Workers that never answer initialize: nothing is ready.
    let mut ps = pool_settings(1, 1);
    ps.queue_timeout = Duration::from_millis(300);
    let s = Server::start(settings(), fake_pool(&["--fault", "hang-before-handshake"], ps), None).await;
    let r = chat(s.addr, "x").await;
    assert_envelope(&r, 503, "worker_not_ready");
    assert!(r.header("retry-after").is_some());
    assert_eq!(raw(s.addr, "GET", "/readyz", &[], b"").await.status, 503);
    assert_eq!(raw(s.addr, "GET", "/livez", &[], b"").await.status, 200, "restarting is still live");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_turns_are_504_and_stream_failures_end_with_an_error_event() {
    let mut gs = settings();
    gs.idle_timeout = Duration::from_millis(400);
    let s = Server::start(gs, fake_pool(&["--fault", "hang-mid-turn"], pool_settings(1, 2)), None).await;
    let r = chat(s.addr, "x").await;
    assert_envelope(&r, 504, "idle_timeout");
    // Mid-stream: an error event, then [DONE] (chat); response.failed (responses).
    let r = chat_stream(s.addr, "x").await;
    assert_eq!(r.status, 200);
    let frames = r.sse();
    assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"), "{frames:?}");
    let err: Value = serde_json::from_str(&frames[frames.len() - 2].1).expect("JSON");
    assert_eq!(err["error"]["code"], "idle_timeout", "{err}");
    let r = post(s.addr, "/v1/responses", &json!({"model": "codex", "stream": true, "input": "x"})).await;
    let events = r.sse_json();
    let last = events.last().expect("events");
    assert_eq!(last["type"], "response.failed", "{last}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "idle_timeout");
    s.stop().await;

    let mut gs = settings();
    gs.request_timeout = Duration::from_millis(500);
    let s =
        Server::start(gs, fake_pool(&["--fault", "slow-deltas", "--delta-ms", "300"], pool_settings(1, 2)), None).await;
    let r = chat(s.addr, "x").await;
    assert_envelope(&r, 504, "worker_request_timeout");
    s.stop().await;
}
