//! A fake OpenAI Responses upstream on `127.0.0.1:0` (plain HTTP), for testing proxies in front of it.
//!
//! It records every request (method, path with query, headers, body) and answers `POST …/responses`
//! with an SSE stream in the shape Codex expects (`response.created`, `response.output_item.added`,
//! a few `response.output_text.delta`, `response.output_item.done`, `response.completed`; see
//! `shared/reference/responses-upstream.md`). Other `POST`s get a small JSON answer; [`FakeUpstream::
//! stream_bytes`] switches every `POST` to a streamed body of N bytes (throughput runs).
//!
//! With [`FakeUpstream::set_tool_call`], a request whose last `input` item is not a
//! `function_call_output` (a new user turn) is answered with that function call instead
//! (`response.output_item.added`/`done` of a `function_call` item), and the follow-up request
//! that carries the call's output gets the message: how Codex is made to run a command.
//!
//! With [`FakeUpstream::gate_events`], every event after the first waits for one
//! [`FakeUpstream::release`]: a test can read event 1 at the client, check [`FakeUpstream::events_sent`]
//! is still 1, then release the rest (ordering by causality, not by timing).
//!
//! It owns a runtime thread, so it is usable from sync and async tests alike; dropping it stops it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Largest request body the fake reads (bigger ones get 413 from the fake itself).
pub const FAKE_MAX_BODY: usize = 64 << 20;

/// One request as the fake upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// Headers in arrival order (name lowercase, raw value).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The values of header `name` (case-insensitive), lossily decoded.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    deltas: Mutex<Vec<String>>,
    stream_bytes: Mutex<Option<u64>>,
    gated: AtomicBool,
    gate: Arc<Semaphore>,
    events_sent: AtomicUsize,
    tool_call: Mutex<Option<(String, String)>>,
    calls: AtomicUsize,
}

/// See the module docs.
pub struct FakeUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeUpstream").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// Starts on `127.0.0.1:0` with a one-thread runtime.
    pub fn start() -> FakeUpstream {
        FakeUpstream::start_with_threads(1)
    }

    /// Starts on `127.0.0.1:0` with a runtime of `threads` workers (benchmarks want more than one).
    pub fn start_with_threads(threads: usize) -> FakeUpstream {
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            deltas: Mutex::new(vec!["Hello".into(), ", ".into(), "world".into()]),
            stream_bytes: Mutex::new(None),
            gated: AtomicBool::new(false),
            gate: Arc::new(Semaphore::new(0)),
            events_sent: AtomicUsize::new(0),
            tool_call: Mutex::new(None),
            calls: AtomicUsize::new(0),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake upstream on 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = std_listener.local_addr().expect("local address");
        let (stop_tx, stop_rx) = oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .enable_all()
                    .build()
                    .expect("fake upstream runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                    tokio::select! {
                        _ = accept_loop(listener, st) => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn the fake upstream thread");
        FakeUpstream { addr, state, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The text deltas of the SSE answer (default `["Hello", ", ", "world"]`).
    pub fn set_deltas(&self, deltas: &[&str]) {
        *self.state.deltas.lock().unwrap_or_else(|p| p.into_inner()) = deltas.iter().map(|s| s.to_string()).collect();
    }

    /// Answers each new user turn with a call of the function `name` with `arguments` (a JSON
    /// string, e.g. `{"cmd":"git status"}` for Codex's `exec_command`); `None` restores plain
    /// messages.
    pub fn set_tool_call(&self, call: Option<(&str, &str)>) {
        *self.state.tool_call.lock().unwrap_or_else(|p| p.into_inner()) =
            call.map(|(n, a)| (n.to_owned(), a.to_owned()));
    }

    /// The `output` of every `function_call_output` the requests so far carried, in order.
    pub fn function_outputs(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for r in self.requests() {
            let Ok(body) = serde_json::from_slice::<serde_json::Value>(&r.body) else { continue };
            for item in body["input"].as_array().into_iter().flatten() {
                if item["type"] == "function_call_output" {
                    let out = item["output"].as_str().map(str::to_owned).unwrap_or_else(|| item["output"].to_string());
                    if !seen.contains(&out) {
                        seen.push(out);
                    }
                }
            }
        }
        seen
    }

    /// Answers every `POST` with `n` streamed bytes (`application/octet-stream`, chunked) instead;
    /// `None` restores the normal answers.
    pub fn stream_bytes(&self, n: Option<u64>) {
        *self.state.stream_bytes.lock().unwrap_or_else(|p| p.into_inner()) = n;
    }

    /// Makes every SSE event after the first wait for one [`FakeUpstream::release`].
    pub fn gate_events(&self, on: bool) {
        self.state.gated.store(on, Ordering::SeqCst);
    }

    /// Lets `n` more gated events go.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// SSE events written to the socket so far (all streams together).
    pub fn events_sent(&self) -> usize {
        self.state.events_sent.load(Ordering::SeqCst)
    }

    /// The SSE events of one answer, as the fake sends them.
    pub fn sse_events(&self) -> Vec<String> {
        sse_events(&self.state.deltas.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // Wake gated streams so the runtime can wind down.
        self.state.gate.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

type Out = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, ct: &'static str, body: impl Into<Bytes>) -> Response<Out> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
    r
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<Out> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, FAKE_MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return full(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "fake upstream: body too large\n"),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| parts.uri.path().to_owned());
    let headers = parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
    let last_is_output = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["input"].as_array().and_then(|i| i.last()).map(|l| l["type"] == "function_call_output"))
        .unwrap_or(false);
    state.requests.lock().unwrap_or_else(|p| p.into_inner()).push(Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
        body,
    });
    if parts.method != http::Method::POST {
        return full(StatusCode::NOT_FOUND, "text/plain", "fake upstream: POST only\n");
    }
    if let Some(n) = *state.stream_bytes.lock().unwrap_or_else(|p| p.into_inner()) {
        let mut r = Response::new(Repeat { chunk: Bytes::from(vec![b'x'; 256 * 1024]), left: n }.boxed());
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
        r.headers_mut().insert("x-fake-upstream", http::HeaderValue::from_static("bytes"));
        return r;
    }
    if !parts.uri.path().ends_with("/responses") {
        let v = serde_json::json!({ "object": "fake", "path": parts.uri.path() });
        return full(StatusCode::OK, "application/json", v.to_string());
    }
    let tool_call = state.tool_call.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let events = match tool_call {
        Some((name, arguments)) if !last_is_output => {
            let n = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
            function_call_events(&name, &arguments, n)
        }
        _ => sse_events(&state.deltas.lock().unwrap_or_else(|p| p.into_inner())),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let st = state.clone();
    tokio::spawn(async move {
        for (i, ev) in events.into_iter().enumerate() {
            if i > 0 && st.gated.load(Ordering::SeqCst) {
                match st.gate.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
            }
            if tx.send(Bytes::from(ev)).await.is_err() {
                return;
            }
            st.events_sent.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut r = Response::new(Events(rx).boxed());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
    r.headers_mut().insert("set-cookie", http::HeaderValue::from_static("fake_session=s3cr3t-cookie; Path=/"));
    r
}

/// The SSE frames of an answer that calls function `name` (call number `n`).
pub fn function_call_events(name: &str, arguments: &str, n: usize) -> Vec<String> {
    let id = format!("resp_fake_call_{n}");
    let item = serde_json::json!({
        "type": "function_call", "id": format!("fc_fake_{n}"), "call_id": format!("call_fake_{n}"),
        "name": name, "arguments": arguments
    });
    frames(vec![
        serde_json::json!({ "type": "response.created", "response": { "id": id } }),
        serde_json::json!({ "type": "response.output_item.added", "item": item }),
        serde_json::json!({ "type": "response.output_item.done", "item": item }),
        serde_json::json!({ "type": "response.completed", "response": { "id": id } }),
    ])
}

fn frames(events: Vec<serde_json::Value>) -> Vec<String> {
    events
        .into_iter()
        .map(|v| {
            let ty = v["type"].as_str().unwrap_or_default().to_owned();
            format!("event: {ty}\ndata: {v}\n\n")
        })
        .collect()
}

/// The SSE frames of one answer (`event: TYPE\ndata: JSON\n\n` each).
pub fn sse_events(deltas: &[String]) -> Vec<String> {
    let id = "resp_fake_1";
    let text: String = deltas.concat();
    let item = serde_json::json!({
        "type": "message", "role": "assistant", "id": "msg_fake_1",
        "content": [{ "type": "output_text", "text": text }]
    });
    let mut evs = vec![serde_json::json!({ "type": "response.created", "response": { "id": id } })];
    evs.push(serde_json::json!({
        "type": "response.output_item.added",
        "item": { "type": "message", "role": "assistant", "id": "msg_fake_1", "content": [] }
    }));
    for d in deltas {
        evs.push(serde_json::json!({ "type": "response.output_text.delta", "delta": d }));
    }
    evs.push(serde_json::json!({ "type": "response.output_item.done", "item": item }));
    evs.push(serde_json::json!({
        "type": "response.completed",
        "response": { "id": id, "usage": {
            "input_tokens": 10, "input_tokens_details": { "cached_tokens": 0 },
            "output_tokens": 3, "output_tokens_details": { "reasoning_tokens": 0 }, "total_tokens": 13 } }
    }));
    frames(evs)
}

/// The SSE frames handed over by the producer task, each as soon as it is produced.
struct Events(mpsc::Receiver<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// `left` bytes made of clones of `chunk` (no copying).
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.left) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
