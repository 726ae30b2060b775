//! Accept loops, the HTTP service, the SOCKS5 handshake and tunnels with the SNI check.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::request::{classify, strip_hop_by_hop, RequestError, Target};
use crate::rules::{normalize_host, Host};
use crate::socks::{self, reply};
use crate::tls::{scan_client_hello, Scan, MAX_SCAN_BYTES};
use crate::{Denial, Egress, Failure, Outcome};

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Proto {
    Http,
    Socks5,
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut)
        || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE, EMFILE, ENOBUFS, ENOMEM
}

pub(crate) async fn serve(eg: Egress, listener: TcpListener, proto: Proto) -> std::io::Result<()> {
    if let Ok(a) = listener.local_addr() {
        eg.register_listener(a);
    }
    let (slots, overflow) = eg.slots();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let eg = eg.clone();
                tokio::spawn(async move {
                    match proto {
                        Proto::Http => serve_http_conn(eg, stream).await,
                        Proto::Socks5 => serve_socks_conn(eg, stream).await,
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                if let Ok(permit) = overflow.clone().try_acquire_owned() {
                    let limit = eg.limits().max_connections;
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), answer_overflow(stream, proto, limit)).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

async fn answer_overflow(mut s: TcpStream, proto: Proto, limit: usize) -> std::io::Result<()> {
    let mut buf = [0u8; 512];
    match proto {
        Proto::Http => {
            let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
            let body = format!("warden: too many connections (limit {limit}); try again later\n");
            let resp = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await?;
        }
        Proto::Socks5 => {
            let _ = s.read(&mut buf).await?;
            s.write_all(&[5, 0]).await?;
            let _ = s.read(&mut buf).await?;
            s.write_all(&socks::encode_reply(reply::GENERAL_FAILURE, None)).await?;
        }
    }
    s.shutdown().await
}

async fn serve_http_conn(eg: Egress, stream: TcpStream) {
    let limits = eg.limits().clone();
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(crate::request::MAX_HEADERS);
    let svc = hyper::service::service_fn(move |req| {
        let eg = eg.clone();
        async move { Ok::<_, Infallible>(handle(eg, req).await) }
    });
    let _ = b.serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, deny: Option<&'static str>, msg: &str) -> Response<Body> {
    let mut body = msg.to_owned();
    body.push('\n');
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(reason) = deny {
        r.headers_mut().insert("x-warden-deny", HeaderValue::from_static(reason));
    }
    r
}

fn denied(d: Denial) -> Response<Body> {
    text(StatusCode::FORBIDDEN, Some(d.reason), &d.message)
}

fn failed(f: Failure) -> Response<Body> {
    match f {
        Failure::Timeout(m) => text(StatusCode::GATEWAY_TIMEOUT, None, &m),
        Failure::Refused(m) => text(StatusCode::BAD_GATEWAY, None, &m),
    }
}

async fn handle(eg: Egress, mut req: Request<Incoming>) -> Response<Body> {
    let head_bytes: usize =
        req.uri().to_string().len() + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    if head_bytes > eg.limits().max_header_bytes {
        return text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None, "warden: request head too large");
    }
    let protocol = if req.method() == Method::CONNECT { "connect" } else { "http" };
    let hosts: Vec<&[u8]> = req.headers().get_all(header::HOST).iter().map(|v| v.as_bytes()).collect();
    let target = match classify(req.method().as_str(), &req.uri().to_string(), &hosts) {
        Ok(t) => t,
        Err(RequestError::Host(e)) => {
            let (host, why) = match &e {
                crate::rules::HostError::Invalid { host, .. } => (host.clone(), e.to_string()),
                crate::rules::HostError::Port { authority, .. } => (authority.clone(), e.to_string()),
            };
            let d = eg.deny(protocol, host, 0, "invalid-name", format!("warden: {why}"));
            return denied(d);
        }
        Err(RequestError::HostMismatch { host, port, header }) => {
            let msg = format!("warden: the Host header {header:?} does not match the request target {host}:{port}");
            let d = eg.deny(protocol, host.to_string(), port, "host-mismatch", msg);
            return text(StatusCode::BAD_REQUEST, Some(d.reason), &d.message);
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, None, &format!("warden: {e}")),
    };
    match target {
        Target::Connect { host, port } => match eg.open(protocol, &host, port).await {
            Outcome::Denied(d) => denied(d),
            Outcome::Failed(f) => failed(f),
            Outcome::Connected(upstream, addr) => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                let eg2 = eg.clone();
                tokio::spawn(async move {
                    let Ok(up) = on_upgrade.await else { return };
                    let t = TunnelTarget { host: &host, port, addr, protocol: "connect" };
                    // The client connection is a plain socket underneath: take it back from hyper
                    // (with any bytes hyper already read) and splice.
                    match up.downcast::<TokioIo<TcpStream>>() {
                        Ok(parts) => {
                            let _ = tunnel_tcp(&eg2, parts.io.into_inner(), upstream, parts.read_buf.to_vec(), t).await;
                        }
                        Err(up) => {
                            let _ = tunnel(&eg2, TokioIo::new(up), upstream, Vec::new(), t).await;
                        }
                    }
                });
                let mut r = Response::new(full(String::new()));
                r.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Connection Established"));
                r
            }
        },
        Target::Absolute { host, port, path } => {
            // Decided on its own like every request; only then may an idle connection to one of
            // the addresses that passed the check be reused.
            let ok = match eg.decide(protocol, &host, port).await {
                Ok(ok) => ok,
                Err(d) => return denied(d),
            };
            let sender = match eg.pool().take(&ok) {
                Some(pooled) => pooled,
                None => match eg.connect(&host, port, &ok).await {
                    Outcome::Connected(upstream, addr) => match handshake(&eg, upstream).await {
                        Ok(s) => (s, addr),
                        Err(e) => {
                            return text(StatusCode::BAD_GATEWAY, None, &format!("warden: upstream {host}:{port}: {e}"))
                        }
                    },
                    Outcome::Failed(f) => return failed(f),
                    Outcome::Denied(d) => return denied(d),
                },
            };
            forward(&eg, req, sender, &host, port, path).await
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Incoming>;

/// Idle upstream HTTP/1.1 connections, by the address they are connected to. A connection is
/// offered again only while it is open, ready for a request and idle for less than [`POOL_IDLE`].
#[derive(Default)]
pub(crate) struct Pool {
    idle: std::sync::Mutex<std::collections::HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
}

/// How long an idle upstream connection is kept (shorter than common server keep-alive timeouts).
const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per address.
const POOL_PER_ADDR: usize = 32;

impl Pool {
    fn take(&self, allowed: &[SocketAddr]) -> Option<(Sender, SocketAddr)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for addr in allowed {
            if let Some(list) = idle.get_mut(addr) {
                list.retain(|(s, since)| !s.is_closed() && since.elapsed() < POOL_IDLE);
                if let Some(i) = list.iter().position(|(s, _)| s.is_ready()) {
                    return Some((list.swap_remove(i).0, *addr));
                }
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        list.retain(|(s, since)| !s.is_closed() && since.elapsed() < POOL_IDLE);
        if list.len() < POOL_PER_ADDR {
            list.push((sender, Instant::now()));
        }
    }
}

async fn handshake(eg: &Egress, upstream: TcpStream) -> Result<Sender, hyper::Error> {
    let mut b = hyper::client::conn::http1::Builder::new();
    b.max_buf_size(eg.limits().max_header_bytes.max(8192));
    let (sender, conn) = b.handshake::<_, Incoming>(TokioIo::new(upstream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn forward(
    eg: &Egress,
    req: Request<Incoming>,
    (mut sender, addr): (Sender, SocketAddr),
    host: &Host,
    port: u16,
    path: String,
) -> Response<Body> {
    let limits = eg.limits();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = match path.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return text(StatusCode::BAD_REQUEST, None, "warden: malformed request path"),
    };
    parts.version = http::Version::HTTP_11;
    if !parts.headers.contains_key(header::HOST) {
        let authority = match (host, port) {
            (Host::Ip(std::net::IpAddr::V6(v6)), 80) => format!("[{v6}]"),
            (Host::Ip(std::net::IpAddr::V6(v6)), p) => format!("[{v6}]:{p}"),
            (h, 80) => h.to_string(),
            (h, p) => format!("{h}:{p}"),
        };
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let resp = match tokio::time::timeout(limits.idle_timeout, sender.send_request(Request::from_parts(parts, body)))
        .await
    {
        Err(_) => {
            return text(StatusCode::GATEWAY_TIMEOUT, None, &format!("warden: upstream {host}:{port} did not answer"))
        }
        Ok(Err(e)) => return text(StatusCode::BAD_GATEWAY, None, &format!("warden: upstream {host}:{port}: {e}")),
        Ok(Ok(r)) => r,
    };
    // The connection serves the next request once this response's body is through; the pool
    // only hands it out when it is ready again.
    eg.pool().put(addr, sender);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
    t: Duration,
) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let room = cap.saturating_sub(buf.len()).min(chunk.len());
    if room == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"));
    }
    let n = tokio::time::timeout(t, r.read(&mut chunk[..room]))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client too slow"))??;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

async fn serve_socks_conn(eg: Egress, s: TcpStream) {
    let _ = socks_conn(&eg, s).await;
}

async fn socks_conn(eg: &Egress, mut s: TcpStream) -> std::io::Result<()> {
    let t = eg.limits().connect_timeout;
    let mut buf = Vec::with_capacity(512);
    let greeting = loop {
        match socks::parse_greeting(&buf) {
            Ok(Some((g, n))) => {
                buf.drain(..n);
                break g;
            }
            Ok(None) => {
                if !read_more(&mut s, &mut buf, socks::MAX_GREETING_LEN, t).await? {
                    return Ok(());
                }
            }
            Err(_) => return Ok(()),
        }
    };
    if !greeting.no_auth {
        return s.write_all(&[5, 0xff]).await;
    }
    s.write_all(&[5, 0]).await?;
    let req = loop {
        match socks::parse_request(&buf) {
            Ok(Some((r, n))) => {
                buf.drain(..n);
                break r;
            }
            Ok(None) => {
                if !read_more(&mut s, &mut buf, socks::MAX_REQUEST_LEN, t).await? {
                    return Ok(());
                }
            }
            Err(socks::SocksError::AddressType(_)) => {
                return s.write_all(&socks::encode_reply(reply::ADDRESS_TYPE_NOT_SUPPORTED, None)).await;
            }
            Err(_) => return s.write_all(&socks::encode_reply(reply::GENERAL_FAILURE, None)).await,
        }
    };
    if req.command != socks::CMD_CONNECT {
        return s.write_all(&socks::encode_reply(reply::COMMAND_NOT_SUPPORTED, None)).await;
    }
    let host = match req.addr {
        socks::Addr::V4(ip) => Host::Ip(ip.into()),
        socks::Addr::V6(ip) => Host::Ip(ip.into()),
        socks::Addr::Domain(name) => {
            let text = String::from_utf8_lossy(&name).into_owned();
            match normalize_host(&text) {
                Ok(h) => h,
                Err(e) => {
                    eg.deny("socks5", crate::rules::shown(&text), req.port, "invalid-name", e.to_string());
                    return s.write_all(&socks::encode_reply(reply::NOT_ALLOWED, None)).await;
                }
            }
        }
    };
    match eg.open("socks5", &host, req.port).await {
        Outcome::Denied(d) => {
            let code = if d.reason == "resolve-failed" { reply::HOST_UNREACHABLE } else { reply::NOT_ALLOWED };
            s.write_all(&socks::encode_reply(code, None)).await
        }
        Outcome::Failed(Failure::Timeout(_)) => s.write_all(&socks::encode_reply(reply::HOST_UNREACHABLE, None)).await,
        Outcome::Failed(Failure::Refused(_)) => {
            s.write_all(&socks::encode_reply(reply::CONNECTION_REFUSED, None)).await
        }
        Outcome::Connected(upstream, addr) => {
            let bound = upstream.local_addr().ok();
            s.write_all(&socks::encode_reply(reply::SUCCEEDED, bound)).await?;
            let t = TunnelTarget { host: &host, port: req.port, addr, protocol: "socks5" };
            tunnel_tcp(eg, s, upstream, buf, t).await
        }
    }
}

/// Copies `r` to `w` until EOF (then shuts `w` down), or until neither direction saw traffic for `idle`.
async fn pump<R, W>(r: &mut R, w: &mut W, idle: Duration, start: Instant, last: &AtomicU64) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::time::timeout(idle, r.read(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => {
                let since = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if since >= idle.as_millis() as u64 {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle"));
                }
                continue;
            }
        };
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Where a tunnel goes and how it was asked for (for decisions).
pub(crate) struct TunnelTarget<'a> {
    pub(crate) host: &'a Host,
    pub(crate) port: u16,
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: &'static str,
}

/// Where `screen` reads more of the client's first bytes from.
trait ClientBytes {
    /// Appends what is available (at most up to [`MAX_SCAN_BYTES`] in all); `false` at EOF.
    fn more<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send + 'a;
}

struct SocketBytes<'s> {
    socket: &'s TcpStream,
    clock: &'s crate::splice::IdleClock,
}

impl ClientBytes for SocketBytes<'_> {
    fn more<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send + 'a {
        crate::splice::read_more(self.socket, buf, MAX_SCAN_BYTES, self.clock)
    }
}

struct ReaderBytes<'r, R> {
    reader: &'r mut R,
    idle: Duration,
}

impl<R: AsyncRead + Unpin + Send> ClientBytes for ReaderBytes<'_, R> {
    fn more<'a>(
        &'a mut self,
        buf: &'a mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<bool>> + Send + 'a {
        read_more(self.reader, buf, MAX_SCAN_BYTES, self.idle)
    }
}

/// Holds back the client's first bytes until they are known not to be a TLS ClientHello for
/// another host: `Ok(Some(bytes))` to forward, `Ok(None)` at EOF before any byte, an error (and a
/// recorded `sni-mismatch`) otherwise. `more` reads more client bytes (`false` at EOF).
async fn screen<S: ClientBytes>(
    eg: &Egress,
    t: &TunnelTarget<'_>,
    initial: Vec<u8>,
    src: &mut S,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = initial;
    loop {
        match scan_client_hello(&buf) {
            Scan::NeedMore => {
                if !src.more(&mut buf).await? {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "partial ClientHello"));
                }
            }
            Scan::NotTls | Scan::Hello { sni: None } => return Ok(Some(buf)),
            Scan::Hello { sni: Some(sni) } => {
                if normalize_host(&sni).ok().as_ref() == Some(t.host) {
                    return Ok(Some(buf));
                }
                let why = format!("SNI {:?}", crate::rules::shown(&sni));
                eg.sni_mismatch(t.protocol, t.host, t.port, t.addr, why);
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "sni mismatch"));
            }
            Scan::Malformed(why) => {
                eg.sni_mismatch(t.protocol, t.host, t.port, t.addr, format!("malformed ClientHello: {why}"));
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "malformed ClientHello"));
            }
        }
    }
}

/// A tunnel between two TCP sockets: screened, then zero-copy (`splice`). Upstream-to-client
/// bytes flow from the start, so protocols where the server speaks first work.
async fn tunnel_tcp(
    eg: &Egress,
    client: TcpStream,
    upstream: TcpStream,
    initial: Vec<u8>,
    t: TunnelTarget<'_>,
) -> std::io::Result<()> {
    let clock = crate::splice::IdleClock::new(eg.limits().idle_timeout);
    let down = crate::splice::pump(&upstream, &client, &clock);
    let up = async {
        let mut src = SocketBytes { socket: &client, clock: &clock };
        match screen(eg, &t, initial, &mut src).await? {
            None => crate::splice::shutdown_write(&upstream),
            Some(first) => {
                crate::splice::write_all(&upstream, &first, &clock).await?;
                clock.touch();
                crate::splice::pump(&client, &upstream, &clock).await
            }
        }
    };
    tokio::try_join!(down, up).map(|_| ())
}

/// The same for a client stream that is not a plain socket (copying, 64 KiB at a time).
async fn tunnel<C>(
    eg: &Egress,
    client: C,
    upstream: TcpStream,
    initial: Vec<u8>,
    t: TunnelTarget<'_>,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let idle = eg.limits().idle_timeout;
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = upstream.into_split();
    let down = pump(&mut ur, &mut cw, idle, start, &last);
    let up = async {
        let mut src = ReaderBytes { reader: &mut cr, idle };
        let Some(first) = screen(eg, &t, initial, &mut src).await? else {
            return uw.shutdown().await;
        };
        uw.write_all(&first).await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        drop(first);
        pump(&mut cr, &mut uw, idle, start, &last).await
    };
    tokio::try_join!(down, up).map(|_| ())
}
