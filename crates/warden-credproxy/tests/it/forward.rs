//! What reaches the upstream, what reaches the client, and in which order.

use std::time::Duration;

use http_body_util::BodyExt;
use warden_credproxy::{AuthScheme, CredConfig, Route};
use warden_testkit::fake_upstream::FakeUpstream;

use crate::{config_for, eventually, raw, send, send_head, start, DUMMY, KEY, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_the_key_and_rewrites_host() {
    let up = FakeUpstream::start();
    let p = start(config_for(&up)).await;
    let body = br#"{"model":"gpt-test","stream":true,"input":[]}"#;
    let bearer = format!("Bearer {DUMMY}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("accept", "text/event-stream"),
        ("session-id", "s-1"),
        ("content-type", "application/json"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
    ];
    let (status, h, resp) = send(p.addr, "POST", "/v1/responses", &headers, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(h.get("content-type").map(|v| v.as_bytes()), Some(&b"text/event-stream"[..]));
    assert!(h.get("set-cookie").is_some(), "response headers are mirrored: {h:?}");
    assert!(h.get("transfer-encoding").is_none_or(|v| v == "chunked"));
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(text, up.sse_events().concat());

    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/responses");
    assert_eq!(r.body, body);
    assert_eq!(r.header_values("authorization"), vec![format!("Bearer {KEY}")]);
    assert_eq!(r.header_values("host"), vec![up.addr().to_string()]);
    assert_eq!(r.header("session-id").as_deref(), Some("s-1"));
    assert_eq!(r.header("accept").as_deref(), Some("text/event-stream"));
    assert!(r.header("proxy-authorization").is_none(), "hop-by-hop headers are not forwarded");
    for (name, v) in &r.headers {
        assert!(!String::from_utf8_lossy(v).contains(DUMMY), "the client's credential reached the upstream in {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbids_other_methods_paths_and_queries() {
    let up = FakeUpstream::start();
    let p = start(config_for(&up)).await;
    for (method, path) in [
        ("GET", "/v1/responses"),
        ("PUT", "/v1/responses"),
        ("POST", "/v1/responses/"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/models"),
        ("POST", "/v1/responses?stream=true"),
        ("POST", "/v1/responses?"),
        ("POST", "/V1/RESPONSES"),
        ("GET", "/shutdown"),
    ] {
        let (status, h, body) = send(p.addr, method, path, &[], b"{}").await;
        assert_eq!(status, 403, "{method} {path}");
        assert!(h.get("content-type").is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("text/plain"))));
        let body = String::from_utf8_lossy(&body);
        assert!(body.len() < 200 && body.contains("forbidden"), "{body}");
    }
    // Absolute-form targets are refused too, even with the right path.
    let out = raw(
        p.addr,
        format!("POST http://{}/v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}", up.addr())
            .as_bytes(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(up.requests().is_empty(), "nothing may reach the upstream: {:?}", up.requests());
    let recs = p.records.all();
    assert_eq!(recs.len(), 10);
    assert!(recs.iter().all(|r| r.status == 403 && r.bytes_in == 0));
    assert!(recs.iter().all(|r| !r.path.contains('?')), "records carry the path without the query: {recs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_reach_the_client_before_the_upstream_sends_the_next() {
    let up = FakeUpstream::start();
    up.gate_events(true);
    let p = start(config_for(&up)).await;
    let resp = send_head(p.addr, "POST", "/v1/responses", &[("accept", "text/event-stream")], b"{}").await;
    assert_eq!(resp.status(), 200);
    let events = up.sse_events();
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    // Read until the first event is complete. The upstream cannot send event 2 before release().
    while !String::from_utf8_lossy(&seen).contains("\n\n") {
        let f = tokio::time::timeout(WAIT, body.frame()).await.expect("first event in time").expect("frame");
        seen.extend_from_slice(f.expect("frame ok").data_ref().expect("data"));
    }
    assert_eq!(String::from_utf8_lossy(&seen), events[0]);
    assert_eq!(up.events_sent(), 1, "the client saw event 1 while the upstream had sent only it");
    up.release(events.len());
    let rest = tokio::time::timeout(WAIT, body.collect()).await.expect("rest in time").expect("rest").to_bytes();
    seen.extend_from_slice(&rest);
    assert_eq!(String::from_utf8_lossy(&seen), events.concat());
    assert_eq!(up.events_sent(), events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_auth_header_without_scheme() {
    let up = FakeUpstream::start();
    let cfg = CredConfig {
        auth_header: http::HeaderName::from_static("x-api-key"),
        auth_scheme: "none".parse::<AuthScheme>().expect("scheme"),
        ..config_for(&up)
    };
    let p = start(cfg).await;
    let bearer = format!("Bearer {DUMMY}");
    let headers = [("x-api-key", DUMMY), ("authorization", bearer.as_str()), ("anthropic-version", "2023-06-01")];
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &headers, b"{}").await;
    assert_eq!(status, 200);
    let r = &up.requests()[0];
    assert_eq!(r.header_values("x-api-key"), vec![KEY.to_owned()]);
    assert!(r.header("authorization").is_none(), "the client's Authorization must not reach the upstream");
    assert_eq!(r.header("anthropic-version").as_deref(), Some("2023-06-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_route_maps_onto_the_upstream_base() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg.routes.push("POST:/v1/chat/completions".parse::<Route>().expect("route"));
    let p = start(cfg).await;
    let (status, _, body) = send(p.addr, "POST", "/v1/chat/completions", &[], br#"{"messages":[]}"#).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
    assert_eq!(status, 200);
    let (status, _, _) = send(p.addr, "GET", "/v1/chat/completions", &[], b"").await;
    assert_eq!(status, 403);
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/responses"]);
    assert_eq!(up.requests()[0].header("authorization"), Some(format!("Bearer {KEY}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener() {
    let up = FakeUpstream::start();
    let records = std::sync::Arc::new(crate::Records::default());
    let proxy = warden_credproxy::CredProxy::new(
        config_for(&up),
        warden_credproxy::key_from_str(KEY).expect("key"),
        records.clone(),
    )
    .expect("proxy");
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("credproxy.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind unix socket");
    let p = proxy.clone();
    let task = tokio::spawn(async move { p.serve_unix(listener).await });
    let s = tokio::net::UnixStream::connect(&sock).await.expect("connect unix");
    let mut c = crate::client(s).await;
    let req = http::Request::post("/v1/responses")
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .expect("request");
    let resp = tokio::time::timeout(WAIT, c.send_request(req)).await.expect("in time").expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("response.completed"));
    assert_eq!(up.requests()[0].header("authorization"), Some(format!("Bearer {KEY}")));
    eventually("one record", || records.all().len() == 1).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_shutdown_ends_serve() {
    let up = FakeUpstream::start();
    let p = start(CredConfig { http_shutdown: true, ..config_for(&up) }).await;
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
    assert_eq!(status, 200);
    let (status, _, body) = send(p.addr, "GET", "/shutdown", &[], b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = tokio::time::timeout(WAIT, p.task).await.expect("serve returned in time").expect("join");
    assert!(r.is_ok(), "{r:?}");
    // And the listener is gone.
    let c = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(p.addr)).await;
    assert!(matches!(c, Ok(Err(_))), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_never_carry_header_values() {
    let up = FakeUpstream::start();
    let p = start(config_for(&up)).await;
    let bearer = format!("Bearer {DUMMY}");
    let (status, _, body) =
        send(p.addr, "POST", "/v1/responses", &[("authorization", bearer.as_str()), ("cookie", "c=1")], b"{\"a\":1}")
            .await;
    assert_eq!(status, 200);
    send(p.addr, "GET", "/v1/responses", &[("authorization", bearer.as_str())], b"").await;
    eventually("two records", || p.records.all().len() == 2).await;
    let recs = p.records.all();
    let ok = recs.iter().find(|r| r.status == 200).expect("a 200 record");
    assert_eq!((ok.method.as_str(), ok.path.as_str()), ("POST", "/v1/responses"));
    assert_eq!(ok.bytes_in, 7);
    assert_eq!(ok.bytes_out, body.len() as u64);
    let all = format!("{recs:?}");
    for secret in [KEY, DUMMY, "c=1", "Bearer"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    assert!(!format!("{:?}", p.proxy).contains(KEY));
}

/// The upstream's name is resolved by warden's own resolver (hickory, `/etc/hosts` first), not by
/// glibc's NSS modules, which a static binary cannot load safely; `Host` keeps the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolves_an_upstream_name_through_etc_hosts() {
    let hosts = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    assert!(
        hosts.lines().any(|l| l.split_whitespace().next() == Some("127.0.0.1") && l.split_whitespace().any(|w| w == "localhost")),
        "this test needs `127.0.0.1 localhost` in /etc/hosts"
    );
    let up = FakeUpstream::start();
    let url = format!("http://localhost:{}/v1/responses", up.addr().port());
    let p = start(CredConfig { upstream: url.parse().expect("url"), ..CredConfig::default() }).await;
    let (status, _, resp) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header_values("host"), vec![format!("localhost:{}", up.addr().port())]);
    assert_eq!(reqs[0].header_values("authorization"), vec![format!("Bearer {KEY}")]);
}
