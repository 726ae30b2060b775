//! JSON-RPC 2.0 over a worker's stdio, the way Codex's app-server speaks it: no `jsonrpc`
//! field, one JSON object per line.
//!
//! A [`Connection`] owns two tasks: a reader of the worker's stdout and a writer of its stdin.
//!
//! Guarantees:
//! - **Lines are capped** ([`ConnectionOptions::max_line_bytes`], 8 MiB by default) while they are
//!   read, never buffered past the cap. A longer line is a [`AgentError::Protocol`] error that
//!   closes the connection: every waiting request fails with it, the reader stops reading
//!   (dropping the read end of the worker's stdout) and the writer closes the worker's stdin. A
//!   Codex worker exits at stdin EOF; killing one that does not is the supervisor's job.
//! - **Ids are per connection** (integers from 0), responses are matched by id in any order, and
//!   an answer that arrives after its request gave up is counted and dropped. An answer with
//!   neither `result` nor `error` fails its request with a protocol error.
//! - **Every server-to-client request is answered** (a message with both `method` and `id`): by
//!   the [`ServerRequestHandler`], within [`ConnectionOptions::handler_timeout`], else with a
//!   JSON-RPC error; past [`ConnectionOptions::max_server_requests`] in flight, at once with an
//!   error. Never silence, as long as the worker's stdin is open.
//! - **Notifications are routed** by their thread id (`params.threadId`, `params.thread.id`, or
//!   v1's `params.conversationId`) and optionally turn id to [`Subscription`]s, in order. A
//!   subscriber that falls [`ConnectionOptions::subscriber_buffer`] behind holds the reader for
//!   at most [`ConnectionOptions::subscriber_stall`], then is dropped ([`AgentError::Lagged`]).
//!   The handler sees every notification first ([`ServerRequestHandler::notification`]), before
//!   any later request is dispatched.
//! - **The end is typed**: when the worker's stdout ends, [`Connection::closed`] resolves with
//!   [`AgentError::WorkerExited`] and every waiting request fails with it (naming its method);
//!   requests after that fail at once. Every request has a deadline ([`AgentError::Timeout`]).
//! - Non-JSON lines (and JSON that is not an object) are ignored, as Codex ignores them, and
//!   counted; more than [`ConnectionOptions::max_garbage_lines`] close the connection with a
//!   protocol error.
//! - Dropping every clone of the [`Connection`] (or [`Connection::shutdown`]) closes the worker's
//!   stdin; the reader keeps reading until the worker's stdout ends.
//!
//! It trusts nothing the worker sends; it does not own or kill the worker's process.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{AgentError, INTERNAL_ERROR, OVERLOADED};

/// The default cap on one line from the worker (8 MiB).
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Bounds and deadlines of a [`Connection`].
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// The longest line accepted from the worker, without its newline.
    pub max_line_bytes: usize,
    /// The deadline of requests the [`crate::turn`] helpers send.
    pub request_timeout: Duration,
    /// How long a server request's handler may take before it is answered with an error.
    pub handler_timeout: Duration,
    /// Requests waiting for answers at once; more fail with [`AgentError::TooManyRequests`].
    pub max_pending: usize,
    /// Server requests being handled at once; more are answered with an error at once.
    pub max_server_requests: usize,
    /// Outgoing lines queued for the worker's stdin.
    pub write_queue: usize,
    /// Notifications queued per [`Subscription`].
    pub subscriber_buffer: usize,
    /// How long a full subscription may hold the reader before it is dropped.
    pub subscriber_stall: Duration,
    /// Non-JSON lines tolerated before the connection is closed as broken.
    pub max_garbage_lines: u64,
}

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            max_line_bytes: MAX_LINE_BYTES,
            request_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(10),
            max_pending: 4096,
            max_server_requests: 256,
            write_queue: 1024,
            subscriber_buffer: 4096,
            subscriber_stall: Duration::from_secs(5),
            max_garbage_lines: 1000,
        }
    }
}

/// Who the client is (`initialize`'s `clientInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// `name` (Codex puts it in its user agent).
    pub name: String,
    /// `title`.
    pub title: Option<String>,
    /// `version`.
    pub version: String,
}

impl ClientInfo {
    /// warden itself, with this crate's version.
    pub fn warden() -> ClientInfo {
        ClientInfo { name: "warden".into(), title: None, version: env!("CARGO_PKG_VERSION").into() }
    }
}

/// What `initialize` answered.
#[derive(Debug, Clone, PartialEq)]
pub struct InitializeResult {
    /// `userAgent`.
    pub user_agent: String,
    /// `codexHome`, when given.
    pub codex_home: Option<String>,
    /// The whole result.
    pub raw: Value,
}

/// A notification from the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `method`.
    pub method: String,
    /// `params` (`Null` when absent).
    pub params: Value,
}

/// The thread a message's params concern: `threadId`, `thread.id` or v1's `conversationId`.
pub fn thread_of(params: &Value) -> Option<&str> {
    params
        .get("threadId")
        .or_else(|| params.pointer("/thread/id"))
        .or_else(|| params.get("conversationId"))
        .and_then(Value::as_str)
}

/// The turn a message's params concern: `turnId` or `turn.id`.
pub fn turn_of(params: &Value) -> Option<&str> {
    params.get("turnId").or_else(|| params.pointer("/turn/id")).and_then(Value::as_str)
}

/// `thread_id` and `turn_id` of a message with `params`.
macro_rules! ids_of_params {
    ($t:ty) => {
        impl $t {
            /// See [`thread_of`].
            pub fn thread_id(&self) -> Option<&str> {
                thread_of(&self.params)
            }

            /// See [`turn_of`].
            pub fn turn_id(&self) -> Option<&str> {
                turn_of(&self.params)
            }
        }
    };
}

ids_of_params!(Notification);
ids_of_params!(ServerRequest);

/// A request from the worker to the client (an approval, a question, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerRequest {
    /// The worker's id for it (answered as is).
    pub id: Value,
    /// `method`.
    pub method: String,
    /// `params` (`Null` when absent).
    pub params: Value,
}

/// The answer to a [`ServerRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"id": .., "result": ..}`.
    Result(Value),
    /// `{"id": .., "error": {"code": .., "message": ..}}`.
    Error {
        /// The JSON-RPC error code.
        code: i64,
        /// The message.
        message: String,
    },
}

impl Reply {
    fn to_message(&self, id: &Value) -> Value {
        match self {
            Reply::Result(v) => json!({ "id": id, "result": v }),
            Reply::Error { code, message } => json!({ "id": id, "error": { "code": code, "message": message } }),
        }
    }
}

/// A handler's answer, possibly computed asynchronously.
pub type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// Answers the worker's requests to the client; sees every notification first.
pub trait ServerRequestHandler: Send + Sync {
    /// The answer to `request`. Called on a task of its own; bounded by
    /// [`ConnectionOptions::handler_timeout`].
    fn handle(&self, request: ServerRequest) -> ReplyFuture<'_>;

    /// Every notification, in order, before it is routed and before any later server request
    /// is handled (keep it short: it runs on the reader).
    fn notification(&self, _notification: &Notification) {}
}

/// Answers every server request with a JSON-RPC error (for connections that expect none).
#[derive(Debug, Clone, Copy, Default)]
pub struct RefuseAll;

impl ServerRequestHandler for RefuseAll {
    fn handle(&self, request: ServerRequest) -> ReplyFuture<'_> {
        let message = format!("warden does not serve {} requests on this connection", request.method);
        Box::pin(std::future::ready(Reply::Error { code: crate::error::METHOD_NOT_FOUND, message }))
    }
}

/// What a connection has seen that it dropped or answered on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Lines that were not a JSON object (ignored).
    pub garbage_lines: u64,
    /// Answers whose request was no longer waiting (timed out, or an unknown id).
    pub unmatched_responses: u64,
    /// Notifications no subscription took.
    pub unrouted_notifications: u64,
    /// Requests the worker sent to the client (each was answered).
    pub server_requests: u64,
    /// Subscriptions dropped because they fell behind.
    pub lagged_subscriptions: u64,
}

struct Pending {
    method: String,
    tx: oneshot::Sender<Result<Value, AgentError>>,
}

struct Subscriber {
    id: u64,
    turn: Option<String>,
    tx: mpsc::Sender<Notification>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    pending: HashMap<i64, Pending>,
    subscribers: HashMap<String, Vec<Subscriber>>,
    closed: Option<AgentError>,
    stats: ConnectionStats,
}

struct Shared {
    opts: ConnectionOptions,
    state: Mutex<State>,
    closed_tx: watch::Sender<Option<AgentError>>,
    stop_writer: watch::Sender<bool>,
    initialized: AtomicBool,
    next_id: AtomicI64,
    next_subscriber: AtomicU64,
    handler_slots: Arc<Semaphore>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the connection with `reason`: waiting requests fail, subscriptions end, the writer
    /// closes the worker's stdin.
    fn close(&self, reason: AgentError) {
        let (pending, subscribers) = {
            let mut st = self.lock();
            if st.closed.is_none() {
                st.closed = Some(reason.clone());
            }
            (std::mem::take(&mut st.pending), std::mem::take(&mut st.subscribers))
        };
        for (_, p) in pending {
            let _ = p.tx.send(Err(reason.for_pending(&p.method)));
        }
        drop(subscribers);
        self.closed_tx.send_replace(Some(reason));
        self.stop_writer.send_replace(true);
    }

    fn closed_error(&self) -> Option<AgentError> {
        self.lock().closed.clone()
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: mpsc::Sender<Vec<u8>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: close the worker's stdin once the queue is written.
        self.shared.stop_writer.send_replace(true);
    }
}

/// A JSON-RPC connection to one worker. Cheap to clone; every clone is the same connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("initialized", &self.is_initialized())
            .field("closed", &self.inner.shared.closed_error())
            .finish_non_exhaustive()
    }
}

/// Removes a request's entry when its caller stops waiting (answer, timeout or cancellation).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.lock().pending.remove(&self.id);
    }
}

impl Connection {
    /// Starts the reader (of `reader`, the worker's stdout) and the writer (of `writer`, its
    /// stdin) on the current tokio runtime. The returned task ends, with the reason, when the
    /// worker's stdout ends or the connection breaks.
    pub fn new<R, W>(
        reader: R,
        writer: W,
        handler: Arc<dyn ServerRequestHandler>,
        opts: ConnectionOptions,
    ) -> (Connection, JoinHandle<AgentError>)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (closed_tx, _) = watch::channel(None);
        let (stop_writer, stop_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(opts.write_queue.max(1));
        let shared = Arc::new(Shared {
            handler_slots: Arc::new(Semaphore::new(opts.max_server_requests.max(1))),
            opts,
            state: Mutex::new(State::default()),
            closed_tx,
            stop_writer,
            initialized: AtomicBool::new(false),
            next_id: AtomicI64::new(0),
            next_subscriber: AtomicU64::new(0),
        });
        let inner = Arc::new(Inner { shared: shared.clone(), writer: tx });
        tokio::spawn(write_loop(writer, rx, stop_rx, shared.closed_tx.subscribe()));
        let cap = shared.opts.max_line_bytes;
        let input = BufReader::with_capacity(64 * 1024, reader);
        let task = tokio::spawn(Reader { shared, inner: Arc::downgrade(&inner), handler }.run(input, cap));
        (Connection { inner }, task)
    }

    /// The options this connection was made with.
    pub fn options(&self) -> &ConnectionOptions {
        &self.inner.shared.opts
    }

    /// `initialize` with `client` (and `capabilities: {experimentalApi: false}`), then the
    /// `initialized` notification. Requests other than `initialize` are refused locally
    /// ([`AgentError::NotInitialized`]) until this succeeded.
    pub async fn initialize(&self, client: &ClientInfo, timeout: Duration) -> Result<InitializeResult, AgentError> {
        let params = json!({
            "clientInfo": { "name": client.name, "title": client.title, "version": client.version },
            "capabilities": { "experimentalApi": false },
        });
        let raw = self.call("initialize", params, timeout).await?;
        let user_agent = raw
            .get("userAgent")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::Protocol(format!("the initialize result has no userAgent: {raw}")))?
            .to_owned();
        let codex_home = raw.get("codexHome").and_then(Value::as_str).map(str::to_owned);
        self.send_notification("initialized", Value::Null, timeout).await?;
        self.inner.shared.initialized.store(true, Ordering::SeqCst);
        Ok(InitializeResult { user_agent, codex_home, raw })
    }

    /// Whether [`Connection::initialize`] succeeded.
    pub fn is_initialized(&self) -> bool {
        self.inner.shared.initialized.load(Ordering::SeqCst)
    }

    /// Sends `method` with `params` (`Null`: none) and waits at most `timeout` for the answer.
    pub async fn request(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, AgentError> {
        if !self.is_initialized() {
            return Err(AgentError::NotInitialized { method: method.to_owned() });
        }
        self.call(method, params, timeout).await
    }

    async fn call(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, AgentError> {
        let shared = &*self.inner.shared;
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if let Some(e) = &st.closed {
                return Err(e.for_pending(method));
            }
            if st.pending.len() >= shared.opts.max_pending {
                return Err(AgentError::TooManyRequests { method: method.to_owned(), limit: shared.opts.max_pending });
            }
            st.pending.insert(id, Pending { method: method.to_owned(), tx });
        }
        let _guard = PendingGuard { shared, id };
        let mut msg = Map::new();
        msg.insert("id".into(), json!(id));
        msg.insert("method".into(), json!(method));
        if !params.is_null() {
            msg.insert("params".into(), params);
        }
        let line = encode(&Value::Object(msg), method)?;
        let exchange = async {
            self.inner.writer.send(line).await.map_err(|_| self.gone(method))?;
            rx.await.map_err(|_| self.gone(method))?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| AgentError::Timeout { method: method.to_owned(), after: timeout })?
    }

    fn gone(&self, method: &str) -> AgentError {
        self.inner.shared.closed_error().unwrap_or(AgentError::WorkerExited { pending: None }).for_pending(method)
    }

    /// Sends the notification `method` (no answer), queued within the connection's request
    /// timeout.
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), AgentError> {
        if !self.is_initialized() {
            return Err(AgentError::NotInitialized { method: method.to_owned() });
        }
        self.send_notification(method, params, self.options().request_timeout).await
    }

    async fn send_notification(&self, method: &str, params: Value, timeout: Duration) -> Result<(), AgentError> {
        if let Some(e) = self.inner.shared.closed_error() {
            return Err(e.for_pending(method));
        }
        let mut msg = Map::new();
        msg.insert("method".into(), json!(method));
        if !params.is_null() {
            msg.insert("params".into(), params);
        }
        let line = encode(&Value::Object(msg), method)?;
        match tokio::time::timeout(timeout, self.inner.writer.send(line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.gone(method)),
            Err(_) => Err(AgentError::Timeout { method: method.to_owned(), after: timeout }),
        }
    }

    /// Notifications of `thread` (and, with `turn`, of that turn only), in order, from now on.
    pub fn subscribe(&self, thread: &str, turn: Option<&str>) -> Subscription {
        let shared = &self.inner.shared;
        let capacity = shared.opts.subscriber_buffer.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let id = shared.next_subscriber.fetch_add(1, Ordering::SeqCst);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut st = shared.lock();
        // On a closed connection the sender is dropped at once: the subscription ends with the
        // connection's error.
        if st.closed.is_none() {
            let sub = Subscriber { id, turn: turn.map(str::to_owned), tx, lagged: lagged.clone() };
            st.subscribers.entry(thread.to_owned()).or_default().push(sub);
        }
        drop(st);
        Subscription { rx, lagged, shared: Arc::downgrade(shared), thread: thread.to_owned(), id, capacity }
    }

    /// Resolves when the connection ended: [`AgentError::WorkerExited`] when the worker's stdout
    /// ended, [`AgentError::Protocol`] when the worker broke the protocol.
    pub async fn closed(&self) -> AgentError {
        let mut rx = self.inner.shared.closed_tx.subscribe();
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        result.unwrap_or(AgentError::WorkerExited { pending: None })
    }

    /// Whether requests can still reach the worker: the connection is not closed and its writer
    /// has not failed (a worker that died is seen by a failed write before its stdout ends).
    pub fn is_open(&self) -> bool {
        self.close_reason().is_none() && !self.inner.writer.is_closed()
    }

    /// Why the connection ended, if it did.
    pub fn close_reason(&self) -> Option<AgentError> {
        self.inner.shared.closed_error()
    }

    /// Closes the worker's stdin (after what is queued), the graceful way to stop a Codex
    /// worker; the reader goes on until its stdout ends.
    pub fn shutdown(&self) {
        self.inner.shared.stop_writer.send_replace(true);
    }

    /// Requests waiting for answers now.
    pub fn pending(&self) -> usize {
        self.inner.shared.lock().pending.len()
    }

    /// Counters of what the connection dropped or answered on its own.
    pub fn stats(&self) -> ConnectionStats {
        self.inner.shared.lock().stats
    }
}

fn encode(msg: &Value, method: &str) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec(msg)
        .map_err(|e| AgentError::InvalidParams { method: method.to_owned(), reason: format!("not serializable: {e}") })
}

/// Writes queued lines to the worker's stdin until told to stop (then after what is queued),
/// the queue's senders are gone, or a write fails; then closes it. A write the worker does not
/// take holds it only until the connection ends.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
    mut closed: watch::Receiver<Option<AgentError>>,
) {
    loop {
        let line = tokio::select! {
            biased;
            line = rx.recv() => line,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(mut line) = line else { break };
        line.push(b'\n');
        let written = tokio::select! {
            r = async { w.write_all(&line).await?; w.flush().await } => r.is_ok(),
            _ = closed.wait_for(Option::is_some) => false,
        };
        if !written {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), w.shutdown()).await;
}

/// How a capped line read ended.
enum LineEnd {
    /// A line (maybe the last, without a newline).
    Line,
    /// The stream ended.
    Eof,
    /// The line passed the cap.
    TooLong,
}

/// Reads one line into `buf` (without the newline), never holding more than `cap` bytes.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineEnd> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() { LineEnd::Eof } else { LineEnd::Line });
        }
        match avail.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                if buf.len() + pos > cap {
                    return Ok(LineEnd::TooLong);
                }
                buf.extend_from_slice(&avail[..pos]);
                r.consume(pos + 1);
                return Ok(LineEnd::Line);
            }
            None => {
                let n = avail.len();
                if buf.len() + n > cap {
                    return Ok(LineEnd::TooLong);
                }
                buf.extend_from_slice(avail);
                r.consume(n);
            }
        }
    }
}

struct Reader {
    shared: Arc<Shared>,
    inner: Weak<Inner>,
    handler: Arc<dyn ServerRequestHandler>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(self, mut input: BufReader<R>, cap: usize) -> AgentError {
        let mut line = Vec::new();
        let reason = loop {
            line.clear();
            match read_line(&mut input, &mut line, cap).await {
                Ok(LineEnd::Line) => {
                    if let Some(broken) = self.dispatch(&line).await {
                        break broken;
                    }
                }
                Ok(LineEnd::Eof) => break AgentError::WorkerExited { pending: None },
                Ok(LineEnd::TooLong) => {
                    break AgentError::Protocol(format!(
                        "a line from the worker is longer than {cap} bytes; the connection is closed"
                    ))
                }
                Err(e) => break AgentError::Protocol(format!("cannot read the worker's stdout: {e}")),
            }
        };
        // Stop reading first: the worker sees its stdout closed as well as its stdin.
        drop(input);
        self.shared.close(reason.clone());
        reason
    }

    /// Handles one line; `Some` when the connection must close.
    async fn dispatch(&self, line: &[u8]) -> Option<AgentError> {
        let Ok(Value::Object(mut msg)) = serde_json::from_slice::<Value>(line) else {
            let garbage = {
                let mut st = self.shared.lock();
                st.stats.garbage_lines += 1;
                st.stats.garbage_lines
            };
            return (garbage > self.shared.opts.max_garbage_lines)
                .then(|| AgentError::Protocol(format!("the worker wrote {garbage} lines that are not JSON objects")));
        };
        let params = msg.remove("params").unwrap_or(Value::Null);
        match (msg.remove("method"), msg.remove("id")) {
            (Some(Value::String(method)), Some(id)) => self.serve(ServerRequest { id, method, params }),
            (Some(Value::String(method)), None) => self.route(Notification { method, params }).await,
            (Some(_), _) => self.shared.lock().stats.garbage_lines += 1,
            (None, Some(id)) => self.answer(&id, &msg),
            (None, None) => self.shared.lock().stats.unmatched_responses += 1,
        }
        None
    }

    /// A response: completes the waiting request with the same id.
    fn answer(&self, id: &Value, msg: &Map<String, Value>) {
        let pending = {
            let mut st = self.shared.lock();
            let p = id.as_i64().and_then(|id| st.pending.remove(&id));
            if p.is_none() {
                st.stats.unmatched_responses += 1;
            }
            p
        };
        let Some(Pending { method, tx }) = pending else { return };
        let outcome = match (msg.get("result"), msg.get("error")) {
            (Some(result), _) => Ok(result.clone()),
            (None, Some(error)) => {
                match (error.get("code").and_then(Value::as_i64), error.get("message").and_then(Value::as_str)) {
                    (Some(code), Some(message)) => Err(AgentError::from_rpc(&method, code, message)),
                    _ => Err(AgentError::Protocol(format!(
                        "the error answer to {method} (id {id}) has no integer code and string message: {error}"
                    ))),
                }
            }
            (None, None) => {
                Err(AgentError::Protocol(format!("the answer to {method} (id {id}) has neither result nor error")))
            }
        };
        let _ = tx.send(outcome);
    }

    /// A server request: answered on a task of its own, always.
    fn serve(&self, request: ServerRequest) {
        self.shared.lock().stats.server_requests += 1;
        let Some(inner) = self.inner.upgrade() else {
            // Every handle is gone and the worker's stdin is closing: nobody can answer.
            return;
        };
        let writer = inner.writer.clone();
        drop(inner);
        let slot = self.shared.handler_slots.clone().try_acquire_owned();
        let handler = self.handler.clone();
        let limit = self.shared.opts.handler_timeout;
        tokio::spawn(async move {
            let id = request.id.clone();
            let method = request.method.clone();
            let reply = match slot {
                Err(_) => Reply::Error {
                    code: OVERLOADED,
                    message: format!("warden is handling too many requests from this worker; {method} is refused"),
                },
                Ok(_slot) => match tokio::time::timeout(limit, handler.handle(request)).await {
                    Ok(reply) => reply,
                    Err(_) => Reply::Error {
                        code: INTERNAL_ERROR,
                        message: format!("warden could not decide {method} within {limit:?}"),
                    },
                },
            };
            if let Ok(line) = serde_json::to_vec(&reply.to_message(&id)) {
                let _ = tokio::time::timeout(limit, writer.send(line)).await;
            }
        });
    }

    /// A notification: to the handler, then to the subscriptions of its thread (and turn).
    async fn route(&self, n: Notification) {
        self.handler.notification(&n);
        let targets: Vec<(u64, mpsc::Sender<Notification>, Arc<AtomicBool>)> = {
            let st = self.shared.lock();
            match n.thread_id().and_then(|t| st.subscribers.get(t)) {
                Some(subs) => subs
                    .iter()
                    .filter(|s| s.turn.is_none() || s.turn.as_deref() == n.turn_id())
                    .map(|s| (s.id, s.tx.clone(), s.lagged.clone()))
                    .collect(),
                None => Vec::new(),
            }
        };
        if targets.is_empty() {
            self.shared.lock().stats.unrouted_notifications += 1;
            return;
        }
        for (id, tx, lagged) in targets {
            let delivered = match tx.try_send(n.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => true,
                Err(mpsc::error::TrySendError::Full(n)) => {
                    tokio::time::timeout(self.shared.opts.subscriber_stall, tx.send(n)).await.is_ok()
                }
            };
            if !delivered {
                lagged.store(true, Ordering::SeqCst);
                let mut st = self.shared.lock();
                st.stats.lagged_subscriptions += 1;
                if let Some(thread) = n.thread_id() {
                    if let Some(subs) = st.subscribers.get_mut(thread) {
                        subs.retain(|s| s.id != id);
                    }
                }
            }
        }
    }
}

/// The notifications of one thread (or turn), in order; ends with the connection.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Notification>,
    lagged: Arc<AtomicBool>,
    shared: Weak<Shared>,
    thread: String,
    id: u64,
    capacity: usize,
}

impl Subscription {
    /// The next notification; after the last one, why there are no more: the connection's end
    /// ([`AgentError::WorkerExited`], [`AgentError::Protocol`]) or [`AgentError::Lagged`].
    pub async fn recv(&mut self) -> Result<Notification, AgentError> {
        match self.rx.recv().await {
            Some(n) => Ok(n),
            None => Err(self.end()),
        }
    }

    fn end(&self) -> AgentError {
        if self.lagged.load(Ordering::SeqCst) {
            return AgentError::Lagged { thread: self.thread.clone(), capacity: self.capacity };
        }
        self.shared.upgrade().and_then(|s| s.closed_error()).unwrap_or(AgentError::WorkerExited { pending: None })
    }

    /// The thread it follows.
    pub fn thread(&self) -> &str {
        &self.thread
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut st = shared.lock();
            if let Some(subs) = st.subscribers.get_mut(&self.thread) {
                subs.retain(|s| s.id != self.id);
                if subs.is_empty() {
                    st.subscribers.remove(&self.thread);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_capped_while_read() {
        let data: &[u8] = b"short\nexactly10\n0123456789A\nlast";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for _ in 0..4 {
            buf.clear();
            match read_line(&mut r, &mut buf, 10).await.expect("read") {
                LineEnd::Line => got.push(String::from_utf8_lossy(&buf).into_owned()),
                LineEnd::TooLong => {
                    got.push("TOO LONG".into());
                    break;
                }
                LineEnd::Eof => break,
            }
        }
        assert_eq!(got, ["short", "exactly10", "TOO LONG"]);
        let mut r = BufReader::new(&b"a\nb"[..]);
        let mut lines = Vec::new();
        for _ in 0..3 {
            buf.clear();
            if let LineEnd::Eof = read_line(&mut r, &mut buf, 10).await.expect("read") {
                break;
            }
            lines.push(buf.clone());
        }
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec()], "a last line without a newline counts");
    }

    #[test]
    fn ids_of_threads_and_turns() {
        let p = json!({ "threadId": "t", "turnId": "u" });
        assert_eq!((thread_of(&p), turn_of(&p)), (Some("t"), Some("u")));
        let p = json!({ "thread": { "id": "t2" }, "turn": { "id": "u2" } });
        assert_eq!((thread_of(&p), turn_of(&p)), (Some("t2"), Some("u2")));
        assert_eq!(thread_of(&json!({ "conversationId": "c" })), Some("c"));
        assert_eq!(thread_of(&json!({ "x": 1 })), None);
    }
}
