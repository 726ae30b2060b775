//! Upstream connections: reused across requests, dropped when the upstream closed them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use warden_credproxy::CredConfig;

use crate::{send, start, KEY};

fn config(addr: SocketAddr) -> CredConfig {
    CredConfig { upstream: format!("http://{addr}/v1/responses").parse().expect("url"), ..CredConfig::default() }
}

/// A keep-alive hyper upstream answering `data: N\n\n` (N: its request count); counts connections.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let (c, requests) = (conns.clone(), Arc::new(AtomicUsize::new(0)));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let auth = req.headers().get("authorization").cloned();
                        let _ = req.into_body().collect().await;
                        let ok = auth.is_some_and(|a| a.as_bytes() == format!("Bearer {KEY}").as_bytes());
                        let body = if ok { format!("data: {n}\n\n") } else { "no key\n".to_owned() };
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let (addr, conns) = counting_upstream().await;
    let p = start(config(addr)).await;
    for i in 1..=5 {
        // A fresh client connection each time: only the proxy's side can be reused.
        let (status, _, body) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
        assert_eq!(status, 200);
        assert_eq!(body, format!("data: {i}\n\n"), "the key is injected on a reused connection too");
    }
    assert_eq!(conns.load(Ordering::SeqCst), 1, "one upstream connection for five sequential requests");
}

/// An upstream that answers one request per connection with a keep-alive response, then closes the
/// connection and reports it closed.
async fn closing_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<usize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = l.accept().await {
            n += 1;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Head and the 2-byte body.
            while !got.windows(4).any(|w| w == b"\r\n\r\n") || !got.ends_with(b"{}") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
            let body = format!("data: conn {n}\n\n");
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            drop(s);
            let _ = tx.send(n);
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_is_not_reused() {
    let (addr, mut closed) = closing_upstream().await;
    let p = start(config(addr)).await;
    for i in 1..=3 {
        let (status, _, body) = send(p.addr, "POST", "/v1/responses", &[], b"{}").await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, format!("data: conn {i}\n\n"));
        // The upstream has closed that connection before the next request is sent.
        assert_eq!(tokio::time::timeout(crate::WAIT, closed.recv()).await.expect("closed in time"), Some(i));
    }
}
