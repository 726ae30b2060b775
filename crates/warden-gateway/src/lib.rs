//! `warden serve`: an OpenAI-compatible HTTP gateway over a pool of sandboxed Codex app-server
//! workers (see `docs/serve.md`).
//!
//! - [`settings`]: every setting from flag, environment (codex-completions-api's names),
//!   `[serve]` or default, checked;
//! - [`keys`]: client keys, compared in constant time, with per-key limits;
//! - [`api`]: chat completions and responses requests mapped onto a Codex turn;
//! - [`run`]: one request's turn on the pool, interrupted when the client goes away;
//! - [`render`]: the JSON answers and the SSE streams the official SDKs parse;
//! - [`Gateway`]: routes, auth, CORS, `X-Request-Id`, body caps, health, metrics, drain.
//!
//! Guarantees: every non-2xx answer is the OpenAI error envelope; no answer, log line or audit
//! record holds a client key, the model key or prompt text; every request that reaches a
//! worker is one `serve.request` audit record; bodies, headers, connections and requests in
//! flight are capped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod body;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod render;
pub mod run;
pub mod settings;
pub mod workers;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use warden_agent::approval::ApprovalMode;
use warden_agent::pool::Pool;
use warden_agent::turn::Threads;
use warden_session::{fields, Recorder};

use crate::body::Body;
use crate::error::ApiError;
use crate::keys::{ClientKeys, KeyLease, Limited};
use crate::metrics::Metrics;
use crate::run::{Event, Kept, RequestCtx};
use crate::settings::ModelEntry;

/// Request header bytes accepted, at most (431 above it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the gateway needs besides its pool.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The models served.
    pub models: Vec<ModelEntry>,
    /// Request body cap.
    pub max_body_bytes: u64,
    /// Requests in flight (streams included), at most.
    pub max_streams: usize,
    /// The longest a request may take.
    pub timeout: Duration,
    /// The longest one turn may run.
    pub request_timeout: Duration,
    /// The longest a turn may be silent.
    pub idle_timeout: Duration,
    /// SSE keepalive interval.
    pub sse_keepalive: Duration,
    /// Allowed CORS origins (empty: CORS off).
    pub cors_origins: Vec<String>,
    /// Kept conversations: idle TTL and how many.
    pub thread_ttl: Duration,
    /// How many conversations are kept at most.
    pub max_threads: usize,
    /// Drain time at shutdown.
    pub shutdown_grace: Duration,
    /// The threads' working directory.
    pub cwd: PathBuf,
    /// Codex's approval policy for threads.
    pub approval: ApprovalMode,
    /// `/healthz`: warden's profile name.
    pub profile: String,
    /// `/healthz`: the profile's name in Codex's terms (`read-only`, ...).
    pub sandbox_mode: String,
    /// `/healthz`: where the model credential lives.
    pub credential: String,
}

/// Shared by every request.
pub struct State {
    settings: GatewaySettings,
    pool: Pool,
    keys: Option<Arc<ClientKeys>>,
    threads: Threads<Kept>,
    metrics: Metrics,
    recorder: Recorder,
    streams: Arc<Semaphore>,
    draining: AtomicBool,
    ids: IdSource,
    cwd: PathBuf,
    approval: ApprovalMode,
}

/// Unpredictable ids (a response id lets its holder continue a conversation).
struct IdSource {
    seed: [u8; 32],
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> IdSource {
        let mut seed = [0u8; 32];
        let got = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
        if got.is_err() {
            // No /dev/urandom: the clock, pid and an address, hashed (ids stay unique).
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            let local = 0u8;
            let material = format!("{t}:{}:{:p}", std::process::id(), &local);
            seed = Sha256::digest(material.as_bytes()).into();
        }
        IdSource { seed, counter: AtomicU64::new(0) }
    }

    /// `prefix` and 32 hex digits.
    fn next(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(n.to_le_bytes());
        let d = h.finalize();
        let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{hex}")
    }
}

/// The gateway (cheap to clone).
#[derive(Clone)]
pub struct Gateway {
    state: Arc<State>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A client's `X-Request-Id` when it is 1-128 of `[A-Za-z0-9._-]`.
fn client_request_id(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?;
    let ok =
        !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then(|| v.to_owned())
}

fn respond(status: StatusCode, body: Body, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    respond(status, body::json(v), "application/json")
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.status, &e.body());
    if let Some(s) = e.retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"warden\""));
    }
    if matches!(e.status, StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT) {
        // The body was not read to its end: this connection cannot carry another request.
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The routes and what they take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Responses,
    Models,
    Model,
    Health,
    Ready,
    Live,
    Metrics,
    Workers,
}

fn route(path: &str) -> Option<(Route, &'static str)> {
    Some(match path {
        "/v1/chat/completions" | "/chat/completions" => (Route::Chat, "POST"),
        "/v1/responses" | "/responses" => (Route::Responses, "POST"),
        "/v1/models" | "/models" => (Route::Models, "GET"),
        p if p.starts_with("/v1/models/") && p.len() > "/v1/models/".len() => (Route::Model, "GET"),
        "/healthz" | "/health" => (Route::Health, "GET"),
        "/readyz" => (Route::Ready, "GET"),
        "/livez" => (Route::Live, "GET"),
        "/metrics" => (Route::Metrics, "GET"),
        "/debug/workers" => (Route::Workers, "GET"),
        _ => return None,
    })
}

impl Gateway {
    /// A gateway over `pool`: `keys` `None` serves without authentication; request records go
    /// to `recorder`.
    pub fn new(settings: GatewaySettings, pool: Pool, keys: Option<ClientKeys>, recorder: Recorder) -> Gateway {
        let threads = Threads::new(settings.thread_ttl, settings.max_threads);
        let streams = Arc::new(Semaphore::new(settings.max_streams.max(1)));
        Gateway {
            state: Arc::new(State {
                cwd: settings.cwd.clone(),
                approval: settings.approval,
                settings,
                pool,
                keys: keys.map(Arc::new),
                threads,
                metrics: Metrics::default(),
                recorder,
                streams,
                draining: AtomicBool::new(false),
                ids: IdSource::new(),
            }),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.state.pool
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting, lets the requests in
    /// flight finish within the grace period, and shuts the pool down.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        let (drain_tx, drain_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(self.state.settings.max_streams + 256));
        let sweeper = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    for (_, k) in state.threads.sweep() {
                        k.forget();
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = &mut shutdown => break,
            };
            let (stream, _) = match accepted {
                Ok(a) => a,
                Err(_) => {
                    // EMFILE and friends: wait a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let mut drain = drain_rx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let gw = gw.clone();
                    async move { Ok::<_, Infallible>(gw.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                let draining = async move { drain.wait_for(|d| *d).await.is_ok() };
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = draining => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(listener);
        self.state.draining.store(true, Ordering::SeqCst);
        let _ = drain_tx.send(true);
        let grace = self.state.settings.shutdown_grace;
        let drained = async {
            while self.state.metrics.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(grace, drained).await;
        sweeper.abort();
        let left = self.state.metrics.in_flight.load(Ordering::SeqCst);
        self.state.pool.shutdown().await;
        self.state.recorder.record("serve.stop", fields([("in_flight_at_drain_end", json!(left))]));
        self.state.recorder.flush();
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = client_request_id(&req).unwrap_or_else(|| self.state.ids.next("req_"));
        let origin = req.headers().get(header::ORIGIN).cloned();
        let started = Instant::now();
        let mut resp = self.dispatch(req, &request_id, started).await;
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        if let Some(o) = origin.filter(|o| self.origin_allowed(o)) {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-request-id, retry-after"));
        }
        resp
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let o = origin.to_str().unwrap_or_default();
        self.state.settings.cors_origins.iter().any(|a| a == "*" || a == o)
    }

    /// Checks the bearer key (when keys are configured).
    fn authorize(&self, req: &Request<Incoming>) -> Result<Option<KeyLease>, ApiError> {
        let Some(keys) = &self.state.keys else { return Ok(None) };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("missing bearer key: send Authorization: Bearer <key>"))?;
        match keys.admit(presented.as_bytes()) {
            Ok(lease) => Ok(Some(lease)),
            Err(None) => Err(ApiError::unauthorized("invalid API key")),
            Err(Some(Limited::Concurrency(n))) => Err(ApiError::too_many(
                "concurrency_exceeded",
                format!("this key already has {n} requests in flight (key_concurrency); retry when one ends"),
                1,
            )),
            Err(Some(Limited::Rate(n, retry))) => Err(ApiError::too_many(
                "rate_limited",
                format!("this key started {n} requests within a minute (key_rate_per_minute); retry in {retry} s"),
                retry,
            )),
        }
    }

    async fn dispatch(&self, req: Request<Incoming>, request_id: &str, started: Instant) -> Response<Body> {
        let st = &self.state;
        let path = req.uri().path().to_owned();
        let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if header_bytes + req.uri().to_string().len() > MAX_HEADER_BYTES {
            return error_response(&ApiError {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                message: format!("the request's headers are over the cap of {MAX_HEADER_BYTES} bytes"),
                kind: "invalid_request_error",
                param: None,
                code: "headers_too_large",
                retry_after: None,
            });
        }
        let Some((route, method)) = route(&path) else {
            if req.method() == Method::OPTIONS {
                return self.preflight(&req);
            }
            return error_response(&ApiError::no_route(req.method(), &path));
        };
        if req.method() == Method::OPTIONS {
            return self.preflight(&req);
        }
        let head_ok = method == "GET" && req.method() == Method::HEAD;
        if req.method().as_str() != method && !head_ok {
            let mut r = error_response(&ApiError::method_not_allowed(req.method(), &path, method));
            if let Ok(v) = HeaderValue::from_str(&format!("{method}, OPTIONS")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        match route {
            Route::Health | Route::Ready | Route::Live => return self.probe(route),
            _ => {}
        }
        let lease = match self.authorize(&req) {
            Ok(l) => l,
            Err(e) => {
                st.metrics.request(route_name(route), e.status.as_u16(), 0);
                if matches!(route, Route::Chat | Route::Responses) {
                    self.record_rejected(route_name(route), request_id, None, None, &e, started);
                }
                let mut r = error_response(&e);
                if !http_body::Body::is_end_stream(req.body()) {
                    // The body is not read: drop it in the background, and this connection.
                    drain_in_background(req.into_body());
                    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return r;
            }
        };
        match route {
            Route::Models => {
                let data: Vec<Value> = st.settings.models.iter().map(model_object).collect();
                json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
            }
            Route::Model => {
                let id = &path["/v1/models/".len()..];
                match st.settings.models.iter().find(|m| m.id == id) {
                    Some(m) => json_response(StatusCode::OK, &model_object(m)),
                    None => {
                        let served: Vec<String> = st.settings.models.iter().map(|m| m.id.clone()).collect();
                        error_response(&ApiError::model_not_found(id, &served))
                    }
                }
            }
            Route::Metrics => {
                let text = st.metrics.render(&st.pool, st.threads.len());
                respond(StatusCode::OK, body::full(text), "text/plain; version=0.0.4")
            }
            Route::Workers => json_response(StatusCode::OK, &self.workers(true)),
            Route::Chat | Route::Responses => self.turn(req, route, lease, request_id, started).await,
            Route::Health | Route::Ready | Route::Live => self.probe(route),
        }
    }

    /// `/healthz`, `/readyz`, `/livez`: no key needed.
    fn probe(&self, route: Route) -> Response<Body> {
        let st = &self.state;
        let (name, up) = match route {
            Route::Ready => ("ready", st.pool.is_ready() && !st.draining.load(Ordering::SeqCst)),
            Route::Live => ("live", st.pool.is_live()),
            _ => return json_response(StatusCode::OK, &self.health()),
        };
        let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &json!({ name: up }))
    }

    fn preflight(&self, req: &Request<Incoming>) -> Response<Body> {
        let origin = req.headers().get(header::ORIGIN);
        match origin {
            Some(o) if self.origin_allowed(o) => {
                let mut r = respond(StatusCode::NO_CONTENT, body::full(Bytes::new()), "text/plain");
                let h = r.headers_mut();
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
                let asked = req
                    .headers()
                    .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type, x-request-id"));
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                r
            }
            Some(_) => error_response(&ApiError {
                status: StatusCode::FORBIDDEN,
                message: "this origin is not allowed (CORS is off unless cors_origins lists it)".into(),
                kind: "invalid_request_error",
                param: None,
                code: "cors_origin_not_allowed",
                retry_after: None,
            }),
            None => {
                let mut r = respond(StatusCode::NO_CONTENT, body::full(Bytes::new()), "text/plain");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, OPTIONS"));
                r
            }
        }
    }

    /// The audit record of a turn request refused before it reached a worker.
    fn record_rejected(
        &self,
        route: &str,
        request_id: &str,
        key: Option<&str>,
        model: Option<&str>,
        e: &ApiError,
        started: Instant,
    ) {
        self.state.recorder.record(
            "serve.request",
            fields([
                ("request_id", json!(request_id)),
                ("route", json!(route)),
                ("client_key", json!(key)),
                ("model", json!(model)),
                ("status", json!(e.status.as_u16())),
                ("outcome", json!("rejected")),
                ("code", json!(e.code)),
                ("duration_ms", json!(started.elapsed().as_millis() as u64)),
            ]),
        );
    }

    fn workers(&self, diagnostics: bool) -> Value {
        let list: Vec<Value> = self
            .state
            .pool
            .supervisors()
            .iter()
            .map(|s| {
                let m = s.metrics();
                let current = s.current();
                let mut w = json!({
                    "name": s.name(),
                    "state": s.state(),
                    "ready": current.is_some(),
                    "pid": current.as_ref().and_then(|w| w.pid),
                    "in_flight": current.as_ref().map_or(0, |w| w.in_flight.load(Ordering::Relaxed)),
                    "turns": m.turns.load(Ordering::Relaxed),
                    "failures": m.failures.load(Ordering::Relaxed),
                    "restarts": m.restarts.load(Ordering::Relaxed),
                    "last_exit": s.last_exit(),
                });
                if diagnostics {
                    w["stderr_tail"] = json!(warden_audit::redact::redact_str(&s.stderr_tail()));
                }
                w
            })
            .collect();
        json!(list)
    }

    fn health(&self) -> Value {
        let st = &self.state;
        json!({
            "ok": st.pool.is_live(),
            "ready": st.pool.is_ready() && !st.draining.load(Ordering::SeqCst),
            "draining": st.draining.load(Ordering::SeqCst),
            "profile": st.settings.profile,
            "sandbox_mode": st.settings.sandbox_mode,
            "credential": st.settings.credential,
            "models": st.settings.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            "workers": self.workers(false),
            "version": env!("CARGO_PKG_VERSION"),
        })
    }

    async fn read_json(&self, req: Request<Incoming>) -> Result<Value, ApiError> {
        let cap = self.state.settings.max_body_bytes;
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let mut body = req.into_body();
        if declared.is_some_and(|n| n > cap) {
            drain_in_background(body);
            return Err(ApiError::too_large(cap));
        }
        let mut buf: Vec<u8> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // Bounded: each pass takes one frame, until the end, the cap or the deadline.
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    return Err(ApiError {
                        status: StatusCode::REQUEST_TIMEOUT,
                        message: "the request body did not arrive within 60 s".into(),
                        kind: "invalid_request_error",
                        param: None,
                        code: "request_timeout",
                        retry_after: None,
                    })
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(ApiError::invalid("", format!("cannot read the request body: {e}"))),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                if (buf.len() + data.len()) as u64 > cap {
                    drain_in_background(body);
                    return Err(ApiError::too_large(cap));
                }
                buf.extend_from_slice(&data);
            }
        }
        serde_json::from_slice(&buf).map_err(ApiError::invalid_json)
    }

    async fn turn(
        &self,
        req: Request<Incoming>,
        route: Route,
        lease: Option<KeyLease>,
        request_id: &str,
        started: Instant,
    ) -> Response<Body> {
        let st = self.state.clone();
        let name = route_name(route);
        let key = lease.as_ref().map(|l| l.name().to_owned());
        let mut model: Option<String> = None;
        let fail = |e: ApiError, model: Option<&str>| {
            st.metrics.request(name, e.status.as_u16(), u64::try_from(started.elapsed().as_micros()).unwrap_or(0));
            self.record_rejected(name, request_id, key.as_deref(), model, &e, started);
            error_response(&e)
        };
        if st.draining.load(Ordering::SeqCst) {
            return fail(ApiError::draining(), None);
        }
        let Ok(stream_permit) = st.streams.clone().try_acquire_owned() else {
            return fail(
                ApiError::too_many(
                    "concurrency_exceeded",
                    format!("{} requests are in flight (max_streams); retry later", st.settings.max_streams),
                    1,
                ),
                None,
            );
        };
        let body = match self.read_json(req).await {
            Ok(b) => b,
            Err(e) => return fail(e, None),
        };
        if let Some(m) = body.get("model").and_then(Value::as_str) {
            model = Some(m.chars().take(128).collect());
        }
        let parsed = match route {
            Route::Chat => api::chat(&body, &st.settings.models),
            _ => api::responses(&body, &st.settings.models),
        };
        let treq = match parsed {
            Ok(r) => r,
            Err(e) => return fail(e, model.as_deref()),
        };
        let response_id = match route {
            Route::Chat => st.ids.next("chatcmpl-"),
            _ => st.ids.next("resp_"),
        };
        let ctx = RequestCtx {
            request_id: request_id.to_owned(),
            route: name,
            key: lease.as_ref().map(|l| l.name().to_owned()),
            response_id: response_id.clone(),
            started,
        };
        let created = now_secs();
        let (tx, mut rx) = mpsc::channel::<Event>(256);
        st.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight { state: st.clone(), _lease: lease, _permit: stream_permit };
        {
            let (st, treq) = (st.clone(), treq.clone());
            tokio::spawn(async move {
                let _guard = guard;
                run::run(st, treq, ctx, tx).await;
            });
        }
        if treq.stream {
            // Errors before the first event still get a status: wait for the first event.
            let first = rx.recv().await;
            let first = match first {
                Some(Event::Done(Err(e))) => return error_response(&e),
                None => return error_response(&ApiError::internal("the turn ended without an answer")),
                Some(e) => e,
            };
            let (events_tx, events_rx) = mpsc::channel::<Event>(256);
            let _ = events_tx.try_send(first);
            tokio::spawn(async move {
                // Bounded by the runner (it sends Done last, then drops its sender), or ended by a
                // client that left (the renderer dropped events_rx): the runner then interrupts.
                while let Some(e) = tokio::select! { e = rx.recv() => e, _ = events_tx.closed() => None } {
                    if events_tx.send(e).await.is_err() {
                        break;
                    }
                }
            });
            let (body_tx, body) = body::channel(64);
            let keepalive = st.settings.sse_keepalive;
            let sse = render::Sse { events: events_rx, tx: body_tx, id: response_id, created, req: treq, keepalive };
            match route {
                Route::Chat => tokio::spawn(render::chat_stream(sse)),
                _ => tokio::spawn(render::responses_stream(sse)),
            };
            let mut r = respond(StatusCode::OK, body, "text/event-stream");
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
            return r;
        }
        // One JSON answer: the deltas are not needed, only the end.
        let done = loop {
            match rx.recv().await {
                Some(Event::Done(d)) => break d,
                Some(Event::Delta { .. }) => continue,
                None => break Err(ApiError::internal("the turn ended without an answer")),
            }
        };
        match done {
            Ok(f) => {
                let v = match route {
                    Route::Chat => render::chat_completion(&response_id, created, &treq.model.id, &f),
                    _ => render::response_object(&response_id, created, &treq, "completed", Some(&f), None),
                };
                json_response(StatusCode::OK, &v)
            }
            Err(e) => error_response(&e),
        }
    }
}

/// Held by a request's runner: counts it in flight, holds its key's and the streams' places.
struct InFlight {
    state: Arc<State>,
    _lease: Option<KeyLease>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The most bytes of a refused request's body read (and dropped) so that the client, which is
/// still sending it, reads the answer instead of a connection reset.
const DRAIN_MAX_BYTES: usize = 64 << 20;

/// Reads what is left of a refused request's body and drops it, within [`DRAIN_MAX_BYTES`] and
/// 10 s; the answer says `Connection: close`.
fn drain_in_background(mut body: Incoming) {
    tokio::spawn(async move {
        let mut seen = 0usize;
        let drain = async {
            while let Some(Ok(f)) = body.frame().await {
                seen += f.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    });
}

fn route_name(r: Route) -> &'static str {
    match r {
        Route::Chat => "chat.completions",
        Route::Responses => "responses",
        Route::Models | Route::Model => "models",
        Route::Health => "healthz",
        Route::Ready => "readyz",
        Route::Live => "livez",
        Route::Metrics => "metrics",
        Route::Workers => "debug.workers",
    }
}

fn model_object(m: &ModelEntry) -> Value {
    json!({ "id": m.id, "object": "model", "created": 0, "owned_by": "warden" })
}
