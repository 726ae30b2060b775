//! Integration tests of warden-credproxy against the fake Responses upstream of warden-testkit.
//! Everything binds 127.0.0.1; every wait is bounded.

mod dumps;
mod forward;
mod limits;
mod pool;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_credproxy::{key_from_str, CredConfig, CredProxy, RequestRecord, RequestSink};
use warden_testkit::fake_upstream::FakeUpstream;

/// The real key of the tests: must never show up anywhere but at the upstream.
pub const KEY: &str = "sk-test-REALKEY_0123456789-abcdefXYZ";
/// What the agent holds.
pub const DUMMY: &str = "warden-proxied-dummy";
/// Upper bound of any single wait.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Records(pub Mutex<Vec<RequestRecord>>);

impl RequestSink for Records {
    fn request(&self, r: &RequestRecord) {
        self.0.lock().expect("records lock").push(r.clone());
    }
}

impl Records {
    pub fn all(&self) -> Vec<RequestRecord> {
        self.0.lock().expect("records lock").clone()
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub records: Arc<Records>,
    pub proxy: CredProxy,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A config pointing at `up`'s `/v1/responses`.
pub fn config_for(up: &FakeUpstream) -> CredConfig {
    CredConfig { upstream: up.url("/v1/responses").parse().expect("upstream url"), ..CredConfig::default() }
}

pub async fn start(cfg: CredConfig) -> Running {
    let records = Arc::new(Records::default());
    let proxy = CredProxy::new(cfg, key_from_str(KEY).expect("key"), records.clone()).expect("proxy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    let p = proxy.clone();
    let task = tokio::spawn(async move { p.serve(listener).await });
    Running { addr, records, proxy, task }
}

/// Opens an HTTP/1.1 client connection over `io`.
pub async fn client<IO>(io: IO) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("client handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// Sends one request; returns the response with its body unread.
pub async fn send_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> http::Response<Incoming> {
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect to the proxy");
    let mut c = client(s).await;
    let mut b = Request::builder().method(method).uri(path).header("host", format!("{addr}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    tokio::time::timeout(WAIT, c.send_request(req)).await.expect("response in time").expect("response")
}

/// Sends one request and reads the whole response.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, HeaderMap, Bytes) {
    let r = send_head(addr, method, path, headers, body).await;
    let (parts, body) = r.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect()).await.expect("body in time").expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

/// Writes `raw` on a fresh connection and returns everything read until EOF or 2 s of silence.
pub async fn raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if out.len() > 1 << 20 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` every 20 ms until it is true, for at most [`WAIT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
