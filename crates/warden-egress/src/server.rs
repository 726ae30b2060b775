//! Accept loops, the HTTP service, the SOCKS5 handshake, and tunnels with their first-flight check
//! (see [`crate::tunnel`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::request::{classify, classify_tunneled, strip_hop_by_hop, RequestError, Target};
use crate::rules::{normalize_host, Host};
use crate::socks::{self, reply};
use crate::splice::IdleClock;
use crate::tunnel::{incomplete, judge, Judgement, MAX_FLIGHT_BYTES};
use crate::{Decision, Denial, Egress, Failure, Limits, Outcome};

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

/// The HTTP/1.1 server settings of every connection the proxy serves.
fn http1_server(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(crate::request::MAX_HEADERS);
    b
}

async fn serve_http_conn(eg: Egress, stream: TcpStream) {
    let server = http1_server(eg.limits());
    let svc = hyper::service::service_fn(move |req| {
        let eg = eg.clone();
        async move { Ok::<_, Infallible>(handle(eg, req).await) }
    });
    let _ = server.serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
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

/// A 431 when the request head is over `Limits::max_header_bytes` (hyper's buffer is at least 8 KiB).
fn head_too_large(eg: &Egress, req: &Request<Incoming>) -> Option<Response<Body>> {
    let head_bytes: usize =
        req.uri().to_string().len() + req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    (head_bytes > eg.limits().max_header_bytes)
        .then(|| text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None, "warden: request head too large"))
}

fn host_values(req: &Request<Incoming>) -> Vec<&[u8]> {
    req.headers().get_all(header::HOST).iter().map(|v| v.as_bytes()).collect()
}

async fn handle(eg: Egress, mut req: Request<Incoming>) -> Response<Body> {
    if let Some(r) = head_too_large(&eg, &req) {
        return r;
    }
    let protocol = if req.method() == Method::CONNECT { "connect" } else { "http" };
    let target = match classify(req.method().as_str(), &req.uri().to_string(), &host_values(&req)) {
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
            Outcome::Connected(up) => {
                let on_upgrade = hyper::upgrade::on(&mut req);
                let eg2 = eg.clone();
                tokio::spawn(async move {
                    let Ok(upgraded) = on_upgrade.await else { return };
                    let t = TunnelTarget { host: &host, port, addr: up.addr, protocol: "connect", raw: up.raw };
                    // The client connection is a plain socket underneath (serve_http_conn gives hyper
                    // a TokioIo<TcpStream>, so the downcast cannot fail): take it back from hyper,
                    // with any bytes hyper already read.
                    if let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() {
                        let client = parts.io.into_inner();
                        let _ = tunnel_tcp(&eg2, client, up.stream, parts.read_buf.to_vec(), t).await;
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
            let allowed = match eg.decide(protocol, &host, port).await {
                Ok(allowed) => allowed,
                Err(d) => return denied(d),
            };
            let (mut sender, addr) = match eg.pool().take(&allowed.addrs) {
                Some(pooled) => pooled,
                None => match eg.connect(&host, port, &allowed).await {
                    Outcome::Connected(up) => match handshake(&eg, up.stream).await {
                        Ok(s) => (s, up.addr),
                        Err(e) => {
                            return text(StatusCode::BAD_GATEWAY, None, &format!("warden: upstream {host}:{port}: {e}"))
                        }
                    },
                    Outcome::Failed(f) => return failed(f),
                    Outcome::Denied(d) => return denied(d),
                },
            };
            match exchange(&eg, req, &mut sender, &host, port, path).await {
                Ok((resp, _)) => {
                    // The connection serves the next request once this response's body is through;
                    // the pool only hands it out when it is ready again.
                    eg.pool().put(addr, sender);
                    resp
                }
                Err(resp) => resp,
            }
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

/// Sends `req` upstream on `sender` as origin-form `path` (hop-by-hop headers removed, `Host` set
/// when the client sent none) and returns the upstream's response with its hop-by-hop headers
/// removed, and whether the upstream keeps the connection open after it; or an error response.
async fn exchange(
    eg: &Egress,
    req: Request<Incoming>,
    sender: &mut Sender,
    host: &Host,
    port: u16,
    path: String,
) -> Result<(Response<Body>, bool), Response<Body>> {
    let limits = eg.limits();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = match path.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return Err(text(StatusCode::BAD_REQUEST, None, "warden: malformed request path")),
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
            let msg = format!("warden: upstream {host}:{port} did not answer");
            return Err(text(StatusCode::GATEWAY_TIMEOUT, None, &msg));
        }
        Ok(Err(e)) => return Err(text(StatusCode::BAD_GATEWAY, None, &format!("warden: upstream {host}:{port}: {e}"))),
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = resp.into_parts();
    let keep_alive = keeps_alive(parts.version, &parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    Ok((Response::from_parts(parts, body.boxed()), keep_alive))
}

/// Whether an HTTP/1.x message with these headers leaves the connection open (RFC 9112 §9.3).
fn keeps_alive(version: http::Version, headers: &http::HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == http::Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
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
        Outcome::Connected(up) => {
            let bound = up.stream.local_addr().ok();
            s.write_all(&socks::encode_reply(reply::SUCCEEDED, bound)).await?;
            let t = TunnelTarget { host: &host, port: req.port, addr: up.addr, protocol: "socks5", raw: up.raw };
            tunnel_tcp(eg, s, up.stream, buf, t).await
        }
    }
}

/// Where a tunnel goes and how it was asked for (for decisions).
pub(crate) struct TunnelTarget<'a> {
    pub(crate) host: &'a Host,
    pub(crate) port: u16,
    pub(crate) addr: SocketAddr,
    pub(crate) protocol: &'static str,
    /// A raw rule allows it: not inspected.
    pub(crate) raw: bool,
}

/// How a tunnel goes on once its first flight is judged.
enum Screened {
    /// A ClientHello naming the host: forward these bytes, then splice.
    Tls(Vec<u8>),
    /// An HTTP/1.x request: serve the tunnel as plain HTTP, starting with these bytes.
    Http(Vec<u8>),
    /// Denied (and recorded), or the client left before sending a byte: close.
    Closed,
}

/// A tunnel between two TCP sockets (CONNECT or SOCKS5).
///
/// A raw tunnel is spliced (zero-copy) in both directions from the start, so protocols where the
/// server speaks first work. Any other tunnel forwards nothing, in either direction, until the
/// client's first flight is judged (TLS and HTTP clients speak first): a ClientHello naming the
/// host is forwarded and the rest spliced, unread; an HTTP/1.x request makes the proxy serve the
/// tunnel as plain HTTP ([`serve_tunneled_http`]); anything else closes both sockets.
async fn tunnel_tcp(
    eg: &Egress,
    client: TcpStream,
    upstream: TcpStream,
    initial: Vec<u8>,
    t: TunnelTarget<'_>,
) -> std::io::Result<()> {
    let clock = IdleClock::new(eg.limits().idle_timeout);
    let first = if t.raw {
        initial
    } else {
        match screen(eg, &t, initial, &client, &clock).await? {
            Screened::Closed => return Ok(()),
            Screened::Http(first) => return serve_tunneled_http(eg, &t, client, first, upstream).await,
            Screened::Tls(first) => first,
        }
    };
    if !first.is_empty() {
        crate::splice::write_all(&upstream, &first, &clock).await?;
        clock.touch();
    }
    drop(first);
    crate::splice::tunnel(client, upstream, clock).await
}

/// Reads the client's first flight (after `initial`, the bytes already read) until [`judge`]
/// decides, within [`MAX_FLIGHT_BYTES`] and `Limits::first_flight_timeout` from the tunnel's start.
/// A denial is recorded as a decision before the tunnel is closed.
async fn screen(
    eg: &Egress,
    t: &TunnelTarget<'_>,
    initial: Vec<u8>,
    client: &TcpStream,
    clock: &IdleClock,
) -> std::io::Result<Screened> {
    let cap = eg.limits().first_flight_timeout;
    let mut buf = initial;
    let judged = tokio::time::timeout(cap, async {
        // Bounded: every turn reads at least one byte, and `judge` decides by MAX_FLIGHT_BYTES.
        loop {
            match judge(&buf, t.host) {
                Judgement::NeedMore => {
                    if !crate::splice::read_more(client, &mut buf, MAX_FLIGHT_BYTES, clock).await? {
                        return Ok::<_, std::io::Error>(None);
                    }
                }
                decided => return Ok(Some(decided)),
            }
        }
    })
    .await;
    let denial = match judged {
        Ok(Ok(Some(Judgement::Tls))) => return Ok(Screened::Tls(buf)),
        Ok(Ok(Some(Judgement::Http))) => return Ok(Screened::Http(buf)),
        Ok(Ok(None)) if buf.is_empty() => return Ok(Screened::Closed),
        Ok(Ok(None)) => incomplete(&buf, "the client closed the tunnel"),
        Ok(Ok(Some(decided))) => decided,
        Ok(Err(e)) => return Err(e),
        Err(_) => incomplete(&buf, &format!("nothing to judge after {} s", cap.as_secs_f32())),
    };
    if let Judgement::Deny { reason, detail } = denial {
        deny_in_tunnel(eg, t, reason, detail);
    }
    Ok(Screened::Closed)
}

/// Records a denial inside an allowed tunnel (`rule` says what was seen).
fn deny_in_tunnel(eg: &Egress, t: &TunnelTarget<'_>, reason: &'static str, detail: String) {
    eg.record(Decision {
        protocol: t.protocol,
        host: t.host.to_string(),
        port: t.port,
        allowed: false,
        reason: Some(reason),
        rule: Some(detail),
        addr: Some(t.addr),
    });
}

/// A tunnel served as plain HTTP: hyper parses every request the client sends on it; each must
/// name the tunnel's host and port ([`classify_tunneled`]), or it is answered 403 `host-mismatch`
/// (recorded) and never reaches the upstream. Allowed requests go, one at a time, over the
/// tunnel's own upstream connection (already decided and checked when the tunnel was opened);
/// when the upstream ends that connection, the client's is ended after the response too.
async fn serve_tunneled_http(
    eg: &Egress,
    t: &TunnelTarget<'_>,
    client: TcpStream,
    first: Vec<u8>,
    upstream: TcpStream,
) -> std::io::Result<()> {
    let Ok(sender) = handshake(eg, upstream).await else { return Ok(()) };
    let tunnel = Arc::new(TunneledHttp {
        eg: eg.clone(),
        host: t.host.clone(),
        port: t.port,
        addr: t.addr,
        protocol: t.protocol,
        sender: tokio::sync::Mutex::new(sender),
    });
    let svc = hyper::service::service_fn(move |req| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, Infallible>(tunnel.handle(req).await) }
    });
    let io = TokioIo::new(Prefixed { head: first, at: 0, inner: client });
    let _ = http1_server(eg.limits()).serve_connection(io, svc).await;
    Ok(())
}

struct TunneledHttp {
    eg: Egress,
    host: Host,
    port: u16,
    addr: SocketAddr,
    protocol: &'static str,
    sender: tokio::sync::Mutex<Sender>,
}

impl TunneledHttp {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(r) = head_too_large(&self.eg, &req) {
            return r;
        }
        let (host, port) = (&self.host, self.port);
        let path =
            match classify_tunneled(req.method().as_str(), &req.uri().to_string(), &host_values(&req), host, port) {
                Ok(path) => path,
                Err(RequestError::HostMismatch { header, .. }) => {
                    let t = TunnelTarget { host, port, addr: self.addr, protocol: self.protocol, raw: false };
                    deny_in_tunnel(&self.eg, &t, "host-mismatch", format!("request for {header:?}"));
                    let msg = format!(
                        "warden: this tunnel goes to {host}:{port}; a request for {header:?} through it is refused \
                         (open a tunnel to that host instead)"
                    );
                    return text(StatusCode::FORBIDDEN, Some("host-mismatch"), &msg);
                }
                Err(e) => return text(StatusCode::BAD_REQUEST, None, &format!("warden: {e}")),
            };
        let mut sender = self.sender.lock().await;
        let ready = tokio::time::timeout(self.eg.limits().idle_timeout, sender.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            let msg = format!("warden: the upstream {host}:{port} closed this tunnel's connection");
            return closing(text(StatusCode::BAD_GATEWAY, None, &msg));
        }
        match exchange(&self.eg, req, &mut sender, host, port, path).await {
            Ok((resp, true)) => resp,
            Ok((resp, false)) | Err(resp) => closing(resp),
        }
    }
}

/// Marks a response as the last on its connection (hyper then closes it).
fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A stream that yields `head[at..]` (bytes already read from `inner`) before reading `inner`.
struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.head.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
