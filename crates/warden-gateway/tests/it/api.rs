//! The happy paths, shaped as the official SDKs parse them: chat completions (JSON and SSE with
//! usage), responses (JSON and the SSE event sequence), conversations by
//! `previous_response_id`, models, health, metrics, request ids, CORS, audit records.

use std::time::Duration;

use serde_json::{json, Value};

use crate::*;

async fn server() -> Server {
    Server::start(settings(), fake_pool(&[], pool_settings(2, 4)), Some(keys(16, 0))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_answer_as_json_and_as_sse_with_usage() {
    let s = server().await;
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({
            "model": "codex",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "codex");
    assert!(v["id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-")), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|c| c.starts_with("You said: hello")), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0), "{v}");
    assert!(r.header("x-request-id").is_some_and(|i| i.starts_with("req_")));

    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({
            "model": "codex", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream me"}]
        }),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let frames = r.sse();
    assert_eq!(frames.last().map(|f| f.1.as_str()), Some("[DONE]"), "{frames:?}");
    assert!(frames.iter().all(|(e, _)| e.is_none()), "chat chunks carry no event name: {frames:?}");
    let chunks = r.sse_json();
    let (id, created) = (chunks[0]["id"].clone(), chunks[0]["created"].clone());
    for c in &chunks {
        assert_eq!((&c["id"], &c["created"], c["model"].as_str()), (&id, &created, Some("codex")), "{c}");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<&Value> = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).collect();
    assert_eq!(finishes.len(), 1, "exactly one finish chunk: {chunks:?}");
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"], json!([]), "{last}");
    assert!(last["usage"]["completion_tokens"].as_u64().is_some_and(|t| t > 0), "{last}");
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null() && c.get("usage").is_some(), "usage: null before the last: {c}");
    }
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("You said: stream me"), "{text}");

    // Without include_usage: no usage chunk.
    let r = post(
        s.addr,
        "/v1/chat/completions",
        &json!({
            "model": "codex", "stream": true, "messages": [{"role": "user", "content": "x"}]
        }),
    )
    .await;
    let chunks = r.sse_json();
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && !c["choices"].as_array().is_some_and(|a| a.is_empty())));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_answer_as_json_and_stream_the_sdk_event_sequence() {
    let s = server().await;
    let r = post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "hi", "instructions": "Be kind."})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["object"].as_str(), v["status"].as_str()), (Some("response"), Some("completed")));
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert!(v["output"][0]["content"][0]["text"].as_str().is_some_and(|t| t.starts_with("You said: hi")), "{v}");
    assert_eq!(v["instructions"], "Be kind.");
    assert!(v["usage"]["input_tokens"].as_u64().is_some(), "{v}");

    let r = post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "stream", "stream": true})).await;
    assert_eq!(r.status, 200);
    let frames = r.sse();
    let kinds: Vec<String> = frames.iter().map(|(e, _)| e.clone().unwrap_or_default()).collect();
    let head = [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ];
    assert_eq!(&kinds[..head.len()], head, "{kinds:?}");
    let tail =
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"];
    assert_eq!(&kinds[kinds.len() - tail.len()..], tail, "{kinds:?}");
    let events = r.sse_json();
    for (i, (e, (name, _))) in events.iter().zip(frames.iter()).enumerate() {
        assert_eq!(e["sequence_number"].as_u64(), Some(i as u64), "{e}");
        assert_eq!(e["type"].as_str(), name.as_deref(), "{e}");
    }
    let item_id = events[2]["item"]["id"].clone();
    for d in events.iter().filter(|e| e["type"] == "response.output_text.delta") {
        assert_eq!(
            (&d["item_id"], d["output_index"].as_u64(), d["content_index"].as_u64()),
            (&item_id, Some(0), Some(0))
        );
    }
    let deltas: String = events.iter().filter_map(|e| e["delta"].as_str()).collect();
    let done = events.last().expect("events");
    assert_eq!(done["response"]["status"], "completed");
    assert_eq!(done["response"]["output"][0]["content"][0]["text"].as_str(), Some(deltas.as_str()));
    assert!(done["response"]["usage"]["output_tokens"].as_u64().is_some(), "{done}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_continues_the_same_codex_thread() {
    let mut gs = settings();
    gs.thread_ttl = Duration::from_millis(1500);
    let s = Server::start(gs, fake_pool(&[], pool_settings(2, 4)), Some(keys(16, 0))).await;
    let first = post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "one"})).await.json();
    let text = |v: &Value| v["output"][0]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    let t1 = text(&first);
    assert!(t1.contains("[turn 1 of "), "{t1}");
    let thread = t1.rsplit(" of ").next().unwrap_or_default().trim_end_matches(']').to_owned();
    let second =
        post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "two", "previous_response_id": first["id"]}))
            .await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    assert_eq!(text(&second), format!("You said: two [turn 2 of {thread}]"), "the same thread, no history resent");
    assert_eq!(second["previous_response_id"], first["id"]);
    // Streamed continuation too.
    let third = post(
        s.addr,
        "/v1/responses",
        &json!({"model": "codex", "input": "three", "stream": true, "previous_response_id": second["id"]}),
    )
    .await;
    let done = third.sse_json().pop().expect("events");
    assert!(text(&done["response"]).ends_with(&format!("[turn 3 of {thread}]")), "{done}");
    // Only the latest response of a conversation continues it.
    let old = post(
        s.addr,
        "/v1/responses",
        &json!({"model": "codex", "input": "again", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!((old.status, old.code().as_str()), (404, "previous_response_not_found"));
    assert_eq!(old.json()["error"]["param"], "previous_response_id");
    // Another client key does not see it.
    let id = done["response"]["id"].as_str().expect("id").to_owned();
    let other = raw(
        s.addr,
        "POST",
        "/v1/responses",
        &[("Authorization", "Bearer sk-client-bob-0123456789abcdef0123456789ab")],
        json!({"model": "codex", "input": "x", "previous_response_id": id}).to_string().as_bytes(),
    )
    .await;
    assert_eq!((other.status, other.code().as_str()), (404, "previous_response_not_found"));
    // store: false keeps nothing.
    let unstored = post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "x", "store": false})).await.json();
    let r =
        post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "y", "previous_response_id": unstored["id"]}))
            .await;
    assert_eq!((r.status, r.code().as_str()), (404, "previous_response_not_found"));
    // Expired after the TTL.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let r =
        post(s.addr, "/v1/responses", &json!({"model": "codex", "input": "late", "previous_response_id": id})).await;
    assert_eq!((r.status, r.code().as_str()), (404, "previous_response_not_found"), "{}", r.text());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_metrics_and_request_ids() {
    let s = server().await;
    let m = get(s.addr, "/v1/models").await;
    assert_eq!(m.status, 200);
    let list = m.json();
    let ids: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, ["codex", "fast"]);
    assert_eq!(m.json()["object"], "list");
    let one = get(s.addr, "/v1/models/fast").await;
    assert_eq!(
        (one.status, one.json()["id"].as_str(), one.json()["object"].as_str()),
        (200, Some("fast"), Some("model"))
    );
    let none = get(s.addr, "/v1/models/nope").await;
    assert_eq!((none.status, none.code().as_str()), (404, "model_not_found"));

    // Health needs no key; it names the profile, the Codex sandbox name, the workers.
    let h = raw(s.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(h.status, 200);
    let h = h.json();
    assert_eq!(
        (h["ok"].as_bool(), h["profile"].as_str(), h["sandbox_mode"].as_str()),
        (Some(true), Some("offline"), Some("read-only"))
    );
    let workers = h["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 3, "two workers and the spare");
    assert!(workers.iter().all(|w| w["ready"] == true && w["state"] == "ready" && w.get("restarts").is_some()), "{h}");
    assert!(workers.iter().all(|w| w.get("stderr_tail").is_none()), "no diagnostics without a key");
    assert_eq!(raw(s.addr, "GET", "/readyz", &[], b"").await.status, 200);
    assert_eq!(raw(s.addr, "GET", "/livez", &[], b"").await.status, 200);
    // Diagnostics and metrics need a key.
    assert_eq!(raw(s.addr, "GET", "/debug/workers", &[], b"").await.status, 401);
    assert!(get(s.addr, "/debug/workers").await.json()[0].get("stderr_tail").is_some());
    assert_eq!(raw(s.addr, "GET", "/metrics", &[], b"").await.status, 401);
    chat(s.addr, "count me").await;
    let metrics = get(s.addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").is_some_and(|c| c.starts_with("text/plain")));
    let text = metrics.text();
    assert!(text.contains("warden_serve_requests_total{route=\"chat.completions\",status=\"200\"} 1"), "{text}");
    assert!(
        text.contains("# TYPE warden_worker_turns_total counter")
            && text.contains("warden_worker_ready{worker=\"worker-0\"} 1"),
        "{text}"
    );

    // X-Request-Id: a client's own is echoed when it is well-formed, replaced otherwise.
    let with_id = |id: &'static str| {
        let auth = format!("Bearer {KEY}");
        async move { raw(s.addr, "GET", "/v1/models", &[("Authorization", &auth), ("X-Request-Id", id)], b"").await }
    };
    let mine = with_id("trace-42.a_b").await;
    assert_eq!(mine.header("x-request-id"), Some("trace-42.a_b"));
    let bad = with_id("no spaces allowed").await;
    assert!(bad.header("x-request-id").is_some_and(|i| i.starts_with("req_")));
    let err = raw(s.addr, "GET", "/nope", &[], b"").await;
    assert_eq!(err.status, 404);
    assert!(err.header("x-request-id").is_some(), "every response has one");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_origins_are_listed() {
    let from_app = |addr| async move {
        let auth = format!("Bearer {KEY}");
        raw(addr, "GET", "/v1/models", &[("Origin", "https://app.example"), ("Authorization", &auth)], b"").await
    };
    let s = server().await;
    let pre = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")];
    let r = raw(s.addr, "OPTIONS", "/v1/chat/completions", &pre, b"").await;
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());
    let r = from_app(s.addr).await;
    assert!(r.header("access-control-allow-origin").is_none());
    s.stop().await;

    let mut gs = settings();
    gs.cors_origins = vec!["https://app.example".into()];
    let s = Server::start(gs, fake_pool(&[], pool_settings(1, 2)), Some(keys(16, 0))).await;
    let r = raw(
        s.addr,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(r.header("access-control-allow-credentials").is_none(), "never with credentials");
    let r = raw(
        s.addr,
        "OPTIONS",
        "/v1/chat/completions",
        &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = from_app(s.addr).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_request_is_one_audit_record_without_prompt_text() {
    let s = server().await;
    chat(s.addr, "SECRET-PROMPT-TEXT").await;
    post(s.addr, "/v1/responses", &json!({"model": "nope", "input": "x"})).await;
    post(s.addr, "/v1/responses", &json!({"model": "fast", "input": "SECRET-PROMPT-TEXT", "stream": true})).await;
    raw(s.addr, "POST", "/v1/responses", &[("Authorization", "Bearer wrong-key-SECRET")], b"{}").await;
    let text = s.stop().await;
    assert!(!text.contains("SECRET"), "no prompt text and no presented key in the audit log: {text}");
    let records: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let requests: Vec<&Value> = records.iter().filter(|r| r["event"] == "serve.request").collect();
    assert_eq!(requests.len(), 4, "{records:#?}");
    let f = |r: &Value, k: &str| {
        r.get(k).or_else(|| r.get("fields").and_then(|f| f.get(k))).cloned().unwrap_or(Value::Null)
    };
    let chat = requests.iter().find(|r| f(r, "route") == "chat.completions").expect("the chat record");
    assert_eq!(
        (f(chat, "client_key"), f(chat, "model"), f(chat, "outcome"), f(chat, "status")),
        (json!("alice"), json!("codex"), json!("completed"), json!(200))
    );
    assert!(
        f(chat, "thread").as_str().is_some_and(|t| !t.is_empty())
            && f(chat, "total_tokens").as_u64().is_some_and(|t| t > 0),
        "{chat}"
    );
    assert!(
        f(chat, "duration_ms").as_u64().is_some()
            && f(chat, "request_id").as_str().is_some_and(|i| i.starts_with("req_"))
    );
    let refused = requests.iter().find(|r| f(r, "model") == "nope").expect("the refused record");
    assert_eq!((f(refused, "status"), f(refused, "code")), (json!(404), json!("model_not_found")));
    let unauth = requests.iter().find(|r| f(r, "status") == 401).expect("the 401 record");
    assert_eq!(f(unauth, "client_key"), Value::Null);
    assert!(records.iter().any(|r| r["event"] == "serve.stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_get_keepalive_comments() {
    let mut gs = settings();
    gs.sse_keepalive = Duration::from_millis(150);
    let s =
        Server::start(gs, fake_pool(&["--fault", "slow-deltas", "--delta-ms", "700"], pool_settings(1, 2)), None).await;
    let r = chat_stream(s.addr, "slow").await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("\n: keepalive\n\n") || text.starts_with(": keepalive"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    s.stop().await;
}
