//! The proxy: accept loops, the route check and the forwarding of one request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::resolve::HickoryResolve;
use crate::upstream::{Driven, Upstream, UpstreamError};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::body::{Finish, Tap};
use crate::dump::{Dumper, MAX_DUMP_BODY};
use crate::secret::header_value;
use crate::{AuthScheme, CredConfig, CredError, LockedSecret, RequestRecord, RequestSink};

type ReqBody = Tap<Incoming>;
type RespBody = Either<Full<Bytes>, Tap<Driven<ReqBody>>>;

/// Longest request head accepted from a client.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long an idle upstream connection is kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Connections over [`CredConfig::max_connections`] answered with a `503` at once; more are closed.
const OVERFLOW_ANSWERS: usize = 16;

/// The credential-injecting proxy. Cheap to clone (an `Arc` inside); one value may serve several
/// listeners at once.
#[derive(Clone)]
pub struct CredProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CredProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredProxy")
            .field("upstream", &self.inner.cfg.upstream)
            .field("routes", &self.inner.cfg.routes)
            .field("auth_header", &self.inner.cfg.auth_header)
            .field("key", &self.inner.auth_value)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: CredConfig,
    /// The whole auth header value (`Bearer <key>` or the key), in locked memory.
    auth_value: Arc<LockedSecret>,
    host: HeaderValue,
    /// Per route (same order as `cfg.routes`): the upstream URI and its text (for dumps).
    targets: Vec<(http::Uri, String)>,
    upstream: Upstream<ReqBody>,
    sink: Arc<dyn RequestSink>,
    dumper: Option<Dumper>,
    shutdown: watch::Sender<bool>,
    /// One permit per client connection served ([`CredConfig::max_connections`]).
    slots: Arc<Semaphore>,
    /// One permit per over-the-cap connection being answered with a `503`.
    overflow: Arc<Semaphore>,
}

/// Lets a `Bytes` (and so a `HeaderValue`) point straight into the locked secret: no unlocked copy.
struct SecretOwner(Arc<LockedSecret>);

impl AsRef<[u8]> for SecretOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.expose()
    }
}

impl CredProxy {
    /// Checks the configuration and builds the proxy. `key` is consumed: the header value is built
    /// from it into a new [`LockedSecret`] and `key` is zeroized when this returns.
    pub fn new(cfg: CredConfig, key: LockedSecret, sink: Arc<dyn RequestSink>) -> Result<CredProxy, CredError> {
        let url = cfg.upstream.to_string();
        let bad = |reason| CredError::Upstream { url: url.clone(), reason };
        match cfg.upstream.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("the scheme must be http or https")),
        }
        let authority = cfg.upstream.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if authority.host().is_empty() {
            return Err(bad("no host"));
        }
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| bad("the host is not a valid header value"))?;
        if cfg.routes.is_empty() {
            return Err(CredError::Route { route: String::new(), reason: "at least one route is needed" });
        }
        let auth_value = Arc::new(header_value(&key, cfg.auth_scheme == AuthScheme::Bearer)?);
        drop(key);
        HeaderValue::from_bytes(auth_value.expose())
            .map_err(|_| CredError::HeaderValue { header: cfg.auth_header.to_string() })?;

        let mut http = HttpConnector::new_with_resolver(HickoryResolve::new(cfg.connect_timeout));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| CredError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let targets = upstream_targets(&cfg).map_err(bad)?;
        let dumper = cfg.dump_dir.clone().map(|d| Dumper::new(d, cfg.auth_header.clone()));
        let (shutdown, _) = watch::channel(false);
        if cfg.max_connections == 0 {
            return Err(CredError::Limit { what: "max_connections", why: "must be at least 1" });
        }
        let slots = Arc::new(Semaphore::new(cfg.max_connections.min(Semaphore::MAX_PERMITS)));
        let upstream = Upstream::new(https, cfg.upstream.clone(), cfg.max_connections, POOL_IDLE.min(cfg.idle_timeout));
        let overflow = Arc::new(Semaphore::new(OVERFLOW_ANSWERS));
        Ok(CredProxy {
            inner: Arc::new(Inner {
                targets,
                host,
                auth_value,
                upstream,
                sink,
                dumper,
                shutdown,
                slots,
                overflow,
                cfg,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &CredConfig {
        &self.inner.cfg
    }

    /// Serves `listener` until `GET /shutdown` (when enabled; then returns `Ok(())` once the shutdown
    /// response is written) or a fatal accept error. Connections in flight are not waited for.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let l = &listener;
        self.serve_accepted(move || async move {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(s)
        })
        .await
    }

    /// Like [`CredProxy::serve`], on a Unix socket.
    #[cfg(unix)]
    pub async fn serve_unix(&self, listener: tokio::net::UnixListener) -> std::io::Result<()> {
        let l = &listener;
        self.serve_accepted(move || async move { l.accept().await.map(|(s, _)| s) }).await
    }

    /// The accept loop of [`CredProxy::serve`] and [`CredProxy::serve_unix`]: transient errors
    /// (descriptor or memory exhaustion, aborted connections) pause it briefly, others end it.
    async fn serve_accepted<IO, A, F>(&self, mut accept: A) -> std::io::Result<()>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        A: FnMut() -> F,
        F: std::future::Future<Output = std::io::Result<IO>>,
    {
        let mut stop = self.inner.shutdown.subscribe();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                r = accept() => match r {
                    Ok(s) => self.spawn_conn(s),
                    Err(e) if transient(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return Err(e),
                },
                _ = stop.changed() => {}
            }
        }
    }

    fn spawn_conn<IO>(&self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = self.inner.slots.clone().try_acquire_owned() else {
            if let Ok(answering) = self.inner.overflow.clone().try_acquire_owned() {
                let limit = self.inner.cfg.max_connections;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), answer_overflow(io, limit)).await;
                    drop(answering);
                });
            }
            return;
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let asked = Arc::new(AtomicBool::new(false));
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(inner.cfg.idle_timeout).max_buf_size(MAX_HEAD_BYTES);
            let svc = {
                let inner = inner.clone();
                let asked = asked.clone();
                hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    let asked = asked.clone();
                    async move { Ok::<_, Infallible>(handle(inner, req, &asked).await) }
                })
            };
            let _ = b.serve_connection(TokioIo::new(io), svc).await;
            // Only now is the shutdown answer written out: stop the accept loops.
            if asked.load(Ordering::Relaxed) {
                inner.shutdown.send_replace(true);
            }
        });
    }
}

/// Where each route goes. The first route goes to the upstream URL itself (Codex's contract: the
/// client's path only selects the route). Another route goes to the upstream URL with the first
/// route's path, when the upstream path ends with it, replaced by the route's own path
/// (`https://api.openai.com/v1/responses` + `POST:/v1/chat/completions` →
/// `https://api.openai.com/v1/chat/completions`); when it does not end with it, to the upstream URL too.
fn upstream_targets(cfg: &CredConfig) -> Result<Vec<(http::Uri, String)>, &'static str> {
    let up = &cfg.upstream;
    let path = up.path();
    let query = up.query().map(|q| format!("?{q}")).unwrap_or_default();
    let first = cfg.routes.first().map(|r| r.path.as_str()).unwrap_or("");
    let base = path.strip_suffix(first).filter(|_| !first.is_empty());
    cfg.routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let uri = match base {
                Some(base) if i > 0 => {
                    let mut p = up.clone().into_parts();
                    let pq = format!("{}{}{query}", base.trim_end_matches('/'), r.path);
                    p.path_and_query = Some(pq.parse().map_err(|_| "cannot join the upstream path and a route")?);
                    http::Uri::from_parts(p).map_err(|_| "cannot join the upstream path and a route")?
                }
                _ => up.clone(),
            };
            let text = uri.to_string();
            Ok((uri, text))
        })
        .collect()
}

/// The answer to a connection over the cap: `503` with the proxy's JSON error body, then close.
async fn answer_overflow<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, limit: usize) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    // Take in the start of the request first: closing a socket with unread data resets it, and the
    // client would not see the answer.
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), io.read(&mut buf)).await;
    let body = serde_json::json!({ "error": {
        "message": format!("warden credproxy: too many connections (limit {limit}); try again later"),
        "type": "warden_credproxy",
        "code": "too_many_connections",
    } })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(body.as_bytes()).await?;
    io.shutdown().await
}

fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut)
        || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) // ENFILE, EMFILE, ENOBUFS, ENOMEM
}

fn full(status: StatusCode, content_type: &'static str, body: String) -> Response<RespBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, msg: &str) -> Response<RespBody> {
    full(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

/// `{"error":{"message":..,"type":"warden_credproxy","code":..}}`.
fn json_error(status: StatusCode, code: &'static str, message: String) -> Response<RespBody> {
    let v = serde_json::json!({ "error": { "message": message, "type": "warden_credproxy", "code": code } });
    full(status, "application/json", v.to_string())
}

/// Hop-by-hop headers (RFC 9110 7.6.1), plus those named by `Connection`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization"] {
        h.remove(n);
    }
    for n in [header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE] {
        h.remove(n);
    }
}

struct Exchange {
    inner: Arc<Inner>,
    method: String,
    path: String,
    start: Instant,
}

impl Exchange {
    fn record(&self, status: u16, bytes_in: u64, bytes_out: u64) {
        self.inner.sink.request(&RequestRecord {
            method: self.method.clone(),
            path: self.path.clone(),
            status,
            bytes_in,
            bytes_out,
            duration_ms: self.start.elapsed().as_millis() as u64,
        });
    }

    /// Reports a response built here (not streamed from the upstream).
    fn local(&self, r: Response<RespBody>, bytes_in: u64) -> Response<RespBody> {
        let out = match r.body() {
            Either::Left(f) => hyper::body::Body::size_hint(f).exact().unwrap_or(0),
            Either::Right(_) => 0,
        };
        self.record(r.status().as_u16(), bytes_in, out);
        r
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>, shutdown_asked: &AtomicBool) -> Response<RespBody> {
    let x = Exchange {
        inner: inner.clone(),
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        start: Instant::now(),
    };
    let origin_form = req.uri().scheme().is_none() && req.uri().authority().is_none();
    let no_query = req.uri().query().is_none();
    if inner.cfg.http_shutdown && req.method() == Method::GET && origin_form && no_query && x.path == "/shutdown" {
        shutdown_asked.store(true, Ordering::Relaxed);
        let mut r = text(StatusCode::OK, "shutting down");
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return x.local(r, 0);
    }
    let route = inner.cfg.routes.iter().position(|r| r.method == req.method() && r.path == req.uri().path());
    let Some(route) = route.filter(|_| origin_form && no_query) else {
        let routes: Vec<String> = inner.cfg.routes.iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        let msg = format!("forbidden: warden credproxy forwards only {} (without a query string)", routes.join(", "));
        return x.local(text(StatusCode::FORBIDDEN, &msg), 0);
    };
    let (target, url) = &inner.targets[route];
    let cap = inner.cfg.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return x.local(too_large(cap), 0);
    }

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.remove(&inner.cfg.auth_header);
    parts.headers.insert(header::HOST, inner.host.clone());
    // The value's bytes are the locked secret itself (no copy); dropped with the request.
    let mut auth = HeaderValue::from_maybe_shared(Bytes::from_owner(SecretOwner(inner.auth_value.clone())))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    auth.set_sensitive(true);
    parts.headers.insert(inner.cfg.auth_header.clone(), auth);
    // Origin form (`/v1/responses?..`): the connection is to the upstream's authority already.
    parts.uri = target.path_and_query().cloned().map(http::Uri::from).unwrap_or_else(|| http::Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;

    let over_cap = Arc::new(AtomicBool::new(false));
    let bytes_in = Arc::new(AtomicU64::new(0));
    let slot = inner.dumper.as_ref().map(|d| d.slot());
    let mut req_body = Tap::new(body).cap(cap, over_cap.clone()).idle(inner.cfg.idle_timeout).counter(bytes_in.clone());
    if let (Some(slot), Some(d)) = (&slot, &inner.dumper) {
        let (slot, headers, method, url) = (slot.clone(), d.headers(&parts.headers), x.method.clone(), url.clone());
        req_body = req_body.tee(MAX_DUMP_BODY).on_done(move |f: Finish| {
            slot.request(&method, &url, headers, f);
        });
    }
    let upstream_req = Request::from_parts(parts, req_body);

    let resp = match tokio::time::timeout(inner.cfg.idle_timeout, inner.upstream.request(upstream_req)).await {
        Err(_) => {
            let msg = format!(
                "the upstream {} did not answer within {} s",
                inner.host.to_str().unwrap_or("?"),
                inner.cfg.idle_timeout.as_secs()
            );
            return x.local(
                json_error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", msg),
                bytes_in.load(Ordering::Relaxed),
            );
        }
        Ok(Err(e)) => {
            let n = bytes_in.load(Ordering::Relaxed);
            if over_cap.load(Ordering::Relaxed) {
                return x.local(too_large(cap), n);
            }
            let host = inner.host.to_str().unwrap_or("?");
            let r = if timed_out(&e) {
                let msg = format!("cannot connect to the upstream {host}: timed out");
                json_error(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", msg)
            } else {
                let msg = format!("cannot reach the upstream {host}: {}", chain(&e));
                json_error(StatusCode::BAD_GATEWAY, "upstream_unreachable", msg)
            };
            return x.local(r, n);
        }
        Ok(Ok(r)) => r,
    };

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let status = parts.status.as_u16();
    let mut resp_body = Tap::new(body).idle(inner.cfg.idle_timeout);
    let resp_dump = match (&slot, &inner.dumper) {
        (Some(slot), Some(d)) => {
            resp_body = resp_body.tee(MAX_DUMP_BODY);
            Some((slot.clone(), d.headers(&parts.headers)))
        }
        _ => None,
    };
    let resp_body = resp_body.on_done(move |f: Finish| {
        x.record(status, bytes_in.load(Ordering::Relaxed), f.bytes);
        if let Some((slot, headers)) = resp_dump {
            slot.response(status, headers, f);
        }
    });
    Response::from_parts(parts, Either::Right(resp_body))
}

fn too_large(cap: u64) -> Response<RespBody> {
    text(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body larger than {cap} bytes (warden credproxy limit)"))
}

/// Whether a connect failure was a timeout (`504`) rather than a refusal (`502`).
fn timed_out(e: &UpstreamError) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        src = s.source();
    }
    false
}

/// `a: b: c` from an error and its sources.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(upstream: &str, routes: &[&str]) -> Vec<String> {
        let cfg = CredConfig {
            upstream: upstream.parse().expect("uri"),
            routes: routes.iter().map(|r| r.parse().expect("route")).collect(),
            ..CredConfig::default()
        };
        upstream_targets(&cfg).expect("targets").into_iter().map(|(_, s)| s).collect()
    }

    #[test]
    fn routes_map_onto_the_upstream() {
        let r = ["POST:/v1/responses", "POST:/v1/chat/completions"];
        assert_eq!(
            targets("https://api.openai.com/v1/responses", &r),
            ["https://api.openai.com/v1/responses", "https://api.openai.com/v1/chat/completions"]
        );
        assert_eq!(
            targets("https://x.azure.com/openai/v1/responses?api-version=1", &r),
            [
                "https://x.azure.com/openai/v1/responses?api-version=1",
                "https://x.azure.com/openai/v1/chat/completions?api-version=1"
            ]
        );
        assert_eq!(
            targets("http://127.0.0.1:9/custom", &r),
            ["http://127.0.0.1:9/custom", "http://127.0.0.1:9/custom"]
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-private, keep-alive"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }
}
