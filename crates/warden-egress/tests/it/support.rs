//! Test harness: a recording upstream on loopback, a recording decision sink, proxy startup and a
//! small HTTP client. Everything binds 127.0.0.1:0; every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_egress::{Decision, DecisionSink, Egress, EgressConfig, Limits, RuleSpec, RulesConfig};

/// The longest any single test step waits.
pub const STEP: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Sink(pub Mutex<Vec<Decision>>);

impl DecisionSink for Sink {
    fn decision(&self, d: &Decision) {
        self.0.lock().expect("sink lock").push(d.clone());
    }
}

impl Sink {
    pub fn all(&self) -> Vec<Decision> {
        self.0.lock().expect("sink lock").clone()
    }
    pub fn last(&self) -> Decision {
        self.all().last().cloned().expect("at least one decision")
    }
}

/// An upstream that records connections and bytes. `http`: answers every request head with a small
/// keep-alive response carrying hop-by-hop headers; otherwise echoes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    pub bytes: Arc<Mutex<Vec<u8>>>,
}

impl Upstream {
    pub async fn start(http: bool) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = l.local_addr().expect("upstream addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (c, b) = (conns.clone(), bytes.clone());
        tokio::spawn(async move {
            for _ in 0..64 {
                let Ok((mut s, _)) = l.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buf = [0u8; 8192];
                    for _ in 0..1000 {
                        let n = match tokio::time::timeout(STEP, s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => n,
                            _ => return,
                        };
                        b.lock().expect("bytes lock").extend_from_slice(&buf[..n]);
                        if !http {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(end) = find(&pending, b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\n\
                                X-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Upstream: yes\r\n\r\nhello";
                            if s.write_all(resp).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, conns, bytes }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn conn_count(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<u8> {
        self.bytes.lock().expect("bytes lock").clone()
    }

    /// Asserts the upstream saw no connection at all.
    pub fn assert_untouched(&self, case: &str) {
        assert_eq!(self.conn_count(), 0, "{case}: upstream was connected to");
        assert!(self.received().is_empty(), "{case}: upstream received bytes");
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn allow(p: &str) -> RuleSpec {
    RuleSpec { pattern: p.to_owned(), expires: None, raw: false }
}

/// A raw allow rule (`HOST:PORT`): tunnels to it are not inspected.
pub fn allow_raw(p: &str) -> RuleSpec {
    RuleSpec { pattern: p.to_owned(), expires: None, raw: true }
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub struct Proxy {
    pub egress: Egress,
    pub sink: Arc<Sink>,
    pub http: SocketAddr,
    pub socks: SocketAddr,
}

pub async fn start_proxy(rules: RulesConfig) -> Proxy {
    start_proxy_with(rules, Limits::default()).await
}

pub async fn start_proxy_with(rules: RulesConfig, limits: Limits) -> Proxy {
    let sink = Arc::new(Sink::default());
    let (egress, _warnings) = Egress::new(EgressConfig { rules, limits }, sink.clone()).expect("valid config");
    let hl = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let sl = TcpListener::bind("127.0.0.1:0").await.expect("bind socks");
    let (http, socks) = (hl.local_addr().expect("addr"), sl.local_addr().expect("addr"));
    let e = egress.clone();
    tokio::spawn(async move { e.serve_http(hl).await });
    let e = egress.clone();
    tokio::spawn(async move { e.serve_socks5(sl).await });
    Proxy { egress, sink, http, socks }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads exactly one response (head + Content-Length body) from `s`, never past its end, so that
/// pipelined responses can be read one by one.
pub async fn read_response(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 64 * 1024, "response head too long");
        let n = tokio::time::timeout(STEP, s.read(&mut byte)).await.expect("response in time").expect("read");
        assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    r.parse(&buf).expect("valid response head");
    let status = r.code.expect("status");
    let headers: Vec<(String, String)> =
        r.headers.iter().map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(STEP, s.read_exact(&mut body)).await.expect("body in time").expect("body");
    Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Sends `raw` on a new connection to the proxy and reads one response.
pub async fn request(proxy: SocketAddr, raw: &str) -> Resp {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    s.write_all(raw.as_bytes()).await.expect("write request");
    read_response(&mut s).await
}

/// Asserts the connection is closed by the peer within [`STEP`] (EOF or reset), ignoring data.
pub async fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {STEP:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens a CONNECT tunnel to `authority` through the proxy and asserts the 200.
pub async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write CONNECT");
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200, "CONNECT {authority}: {r:?}");
    s
}

/// A SOCKS5 CONNECT (`atyp` 1, 3 or 4 with `addr`); returns the stream and the reply code.
pub async fn socks_connect(proxy: SocketAddr, atyp: u8, addr: &[u8], port: u16) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(proxy).await.expect("connect");
    s.write_all(&[5, 1, 0]).await.expect("greeting");
    let mut m = [0u8; 2];
    tokio::time::timeout(STEP, s.read_exact(&mut m)).await.expect("in time").expect("method");
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, 1, 0, atyp];
    if atyp == 3 {
        req.push(u8::try_from(addr.len()).expect("short name"));
    }
    req.extend_from_slice(addr);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.expect("request");
    let mut r = [0u8; 10];
    tokio::time::timeout(STEP, s.read_exact(&mut r)).await.expect("in time").expect("reply");
    assert_eq!(r[0], 5);
    (s, r[1])
}
