//! Body cap, upstream failures, and key hygiene of errors.

use std::time::Duration;

use warden_credproxy::{key_from_str, CredConfig, CredProxy, NullSink};
use warden_testkit::fake_upstream::FakeUpstream;

use crate::{config_for, raw, send, start, KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_cap_get_413() {
    let up = FakeUpstream::start();
    let p = start(CredConfig { max_body_bytes: 1000, ..config_for(&up) }).await;
    let (status, _, _) = send(p.addr, "POST", "/v1/responses", &[], &[b'a'; 1000]).await;
    assert_eq!(status, 200, "exactly the cap is fine");
    let (status, _, body) = send(p.addr, "POST", "/v1/responses", &[], &[b'a'; 1001]).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    // Chunked, no content-length: cut while streaming.
    let mut req = b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
        req.extend_from_slice(&[b'b'; 600]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let out = raw(p.addr, &req).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(up.requests().len(), 1, "only the request within the cap was received whole");
    let statuses: Vec<u16> = p.records.all().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 413, 413]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_gives_502_json_without_the_key() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = CredConfig {
        upstream: format!("http://127.0.0.1:{port}/v1/responses").parse().expect("url"),
        ..CredConfig::default()
    };
    let p = start(cfg).await;
    let (status, h, body) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
    assert_eq!(status, 502);
    assert_eq!(h.get("content-type").map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json error body");
    assert_eq!(v["error"]["type"], "warden_credproxy");
    assert_eq!(v["error"]["code"], "upstream_unreachable");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains(&format!("127.0.0.1:{port}"))), "{v}");
    assert!(!String::from_utf8_lossy(&body).contains(KEY));
    assert_eq!(p.records.all()[0].status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_gives_504() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            if held.len() > 16 {
                break;
            }
        }
    });
    let cfg = CredConfig {
        upstream: format!("http://127.0.0.1:{port}/v1/responses").parse().expect("url"),
        idle_timeout: Duration::from_millis(300),
        ..CredConfig::default()
    };
    let p = start(cfg).await;
    let (status, _, body) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
    assert_eq!(status, 504);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "upstream_timeout");
    hold.abort();
}

#[test]
fn configuration_errors_never_show_the_key() {
    let bad = [
        CredConfig { upstream: "ftp://example.com/x".parse().expect("uri"), ..CredConfig::default() },
        CredConfig { upstream: "/v1/responses".parse().expect("uri"), ..CredConfig::default() },
        CredConfig { upstream: "http://user:pw@example.com/x".parse().expect("uri"), ..CredConfig::default() },
        CredConfig { routes: vec![], ..CredConfig::default() },
    ];
    for cfg in bad {
        let e =
            CredProxy::new(cfg, key_from_str(KEY).expect("key"), std::sync::Arc::new(NullSink)).expect_err("refused");
        let msg = format!("{e} / {e:?}");
        assert!(!msg.contains(KEY), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_and_the_held_ones_keep_working() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = FakeUpstream::start();
    let p = start(CredConfig { max_connections: 2, ..config_for(&up) }).await;
    // Two idle keep-alive connections hold both slots (a request each, answered, kept open).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.expect("connect");
        s.write_all(b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answer").expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(s);
    }
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        raw(p.addr, b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"),
    )
    .await
    .expect("the third connection is answered, not left hanging");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("\"code\":\"too_many_connections\"") && out.contains("limit 2"), "{out}");
    assert!(up.requests().is_empty(), "nothing over the cap reached the upstream");
    // A slot frees up when a held connection closes.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        let (status, _, _) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot serves requests again");
    assert!(!out.contains(KEY));
}
