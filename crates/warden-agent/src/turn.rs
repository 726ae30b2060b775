//! Threads and turns of the app-server v2 protocol, as typed calls and a typed event stream.
//!
//! - [`start_thread`] sends `thread/start` (cwd, sandbox mode, approval policy, developer
//!   instructions, model, ephemeral or kept) and returns the thread's id.
//! - [`start_turn`] subscribes to the thread *before* it sends `turn/start` (so no event of the
//!   turn can be missed, whatever the order of the answer and the first notifications), then
//!   returns a [`TurnStream`] of the turn's [`TurnEvent`]s: notifications of other turns of the
//!   thread are skipped.
//! - [`TurnStream::next`] is bounded: no event for [`TurnParams::idle_timeout`] is an
//!   [`AgentError::Timeout`]; the worker's end is [`AgentError::WorkerExited`]. The stream ends
//!   after [`TurnEvent::Completed`] or its first error.
//! - [`interrupt`] sends `turn/interrupt`; the stream then ends with `Completed { status:
//!   Interrupted }`.
//! - [`Threads`] keeps threads that take further turns (conversations): one turn at a time per
//!   thread, an idle TTL, a bound on how many are kept.
//!
//! Field names are those of `codex app-server generate-json-schema` (Codex 0.169.0).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::approval::ApprovalMode;
use crate::error::AgentError;
use crate::rpc::{Connection, Notification, Subscription};

/// A thread's id, as the worker named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(pub String);

/// A turn's id, as the worker named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TurnId(pub String);

impl ThreadId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TurnId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for TurnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Codex's own sandbox mode for a thread (`thread/start.sandbox`). Inside warden the worker
/// runs with `danger-full-access`: warden is the sandbox (see the design's nested-sandbox note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// `read-only`.
    ReadOnly,
    /// `workspace-write`.
    WorkspaceWrite,
    /// `danger-full-access`.
    DangerFullAccess,
}

impl SandboxMode {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SandboxMode::ReadOnly => "read-only",
            SandboxMode::WorkspaceWrite => "workspace-write",
            SandboxMode::DangerFullAccess => "danger-full-access",
        }
    }
}

/// What `thread/start` gets.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadParams {
    /// The working directory (absolute, UTF-8).
    pub cwd: PathBuf,
    /// Codex's own sandbox.
    pub sandbox: SandboxMode,
    /// When Codex asks for approval (the worker's [`crate::approval::ApprovalPolicy`] answers).
    pub approval_policy: ApprovalMode,
    /// Developer instructions for the whole thread.
    pub developer_instructions: Option<String>,
    /// The model (`None`: the worker's default).
    pub model: Option<String>,
    /// `true`: the thread is not persisted (one-shot requests); `false`: kept for further turns.
    pub ephemeral: bool,
}

impl ThreadParams {
    /// The JSON params of `thread/start`.
    pub fn to_params(&self) -> Result<Value, AgentError> {
        let invalid = |reason: String| AgentError::InvalidParams { method: "thread/start".into(), reason };
        let cwd = self.cwd.to_str().ok_or_else(|| invalid(format!("cwd {} is not UTF-8", self.cwd.display())))?;
        if !self.cwd.is_absolute() {
            return Err(invalid(format!("cwd {cwd} is not absolute")));
        }
        let mut p = Map::new();
        p.insert("cwd".into(), json!(cwd));
        p.insert("sandbox".into(), json!(self.sandbox.name()));
        p.insert("approvalPolicy".into(), json!(self.approval_policy.name()));
        p.insert("ephemeral".into(), json!(self.ephemeral));
        if let Some(d) = &self.developer_instructions {
            p.insert("developerInstructions".into(), json!(d));
        }
        if let Some(m) = &self.model {
            p.insert("model".into(), json!(m));
        }
        Ok(Value::Object(p))
    }
}

/// Starts a thread; its id.
pub async fn start_thread(conn: &Connection, params: &ThreadParams) -> Result<ThreadId, AgentError> {
    let result = conn.request("thread/start", params.to_params()?, conn.options().request_timeout).await?;
    result
        .pointer("/thread/id")
        .and_then(Value::as_str)
        .map(|id| ThreadId(id.to_owned()))
        .ok_or_else(|| AgentError::Protocol(format!("the thread/start result has no thread.id: {result}")))
}

/// Tells the worker to forget a kept thread (`thread/unsubscribe`).
pub async fn unsubscribe(conn: &Connection, thread: &ThreadId) -> Result<(), AgentError> {
    conn.request("thread/unsubscribe", json!({ "threadId": thread.as_str() }), conn.options().request_timeout)
        .await
        .map(|_| ())
}

/// One input item of a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserInput {
    /// `{"type": "text", "text": ...}`.
    Text(String),
}

/// What `turn/start` gets, and how long its stream may be silent.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnParams {
    /// The input.
    pub input: Vec<UserInput>,
    /// `effort` (a reasoning effort the model advertises), if any.
    pub effort: Option<String>,
    /// `outputSchema`: a JSON Schema for the final assistant message.
    pub output_schema: Option<Value>,
    /// The longest the turn's stream may go without an event.
    pub idle_timeout: Duration,
}

impl TurnParams {
    /// One text input, no effort, no schema, a 5-minute idle timeout.
    pub fn text(text: impl Into<String>) -> TurnParams {
        TurnParams {
            input: vec![UserInput::Text(text.into())],
            effort: None,
            output_schema: None,
            idle_timeout: Duration::from_secs(300),
        }
    }

    fn to_params(&self, thread: &ThreadId) -> Value {
        let input: Vec<Value> = self
            .input
            .iter()
            .map(|i| match i {
                UserInput::Text(t) => json!({ "type": "text", "text": t }),
            })
            .collect();
        let mut p = Map::new();
        p.insert("threadId".into(), json!(thread.as_str()));
        p.insert("input".into(), Value::Array(input));
        if let Some(e) = &self.effort {
            p.insert("effort".into(), json!(e));
        }
        if let Some(s) = &self.output_schema {
            p.insert("outputSchema".into(), s.clone());
        }
        Value::Object(p)
    }
}

/// A thread item (`item/started`, `item/completed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `id`.
    pub id: String,
    /// `type`: `userMessage`, `agentMessage`, `commandExecution`, `fileChange`, `reasoning`, ...
    pub kind: String,
    /// The whole item.
    pub raw: Value,
}

impl Item {
    fn from(raw: &Value) -> Item {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        Item { id: s("id"), kind: s("type"), raw: raw.clone() }
    }

    /// `text`, for agent messages.
    pub fn text(&self) -> Option<&str> {
        self.raw.get("text").and_then(Value::as_str)
    }
}

/// Token counts (`TokenUsageBreakdown`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenBreakdown {
    /// `totalTokens`.
    pub total_tokens: u64,
    /// `inputTokens`.
    pub input_tokens: u64,
    /// `cachedInputTokens`.
    pub cached_input_tokens: u64,
    /// `outputTokens`.
    pub output_tokens: u64,
    /// `reasoningOutputTokens`.
    pub reasoning_output_tokens: u64,
}

impl TokenBreakdown {
    fn from(v: &Value) -> TokenBreakdown {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        TokenBreakdown {
            total_tokens: n("totalTokens"),
            input_tokens: n("inputTokens"),
            cached_input_tokens: n("cachedInputTokens"),
            output_tokens: n("outputTokens"),
            reasoning_output_tokens: n("reasoningOutputTokens"),
        }
    }
}

/// `thread/tokenUsage/updated`'s `tokenUsage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// The thread's total so far.
    pub total: TokenBreakdown,
    /// The last model call's.
    pub last: TokenBreakdown,
    /// `modelContextWindow`.
    pub model_context_window: Option<u64>,
}

/// How a turn ended (`turn.status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnStatus {
    /// `completed`.
    Completed,
    /// `interrupted`.
    Interrupted,
    /// `failed` (see the error).
    Failed,
    /// `inProgress` (not an end; kept as sent).
    InProgress,
    /// A status this client does not know, as sent.
    Other(String),
}

impl TurnStatus {
    fn parse(s: &str) -> TurnStatus {
        match s {
            "completed" => TurnStatus::Completed,
            "interrupted" => TurnStatus::Interrupted,
            "failed" => TurnStatus::Failed,
            "inProgress" => TurnStatus::InProgress,
            other => TurnStatus::Other(other.to_owned()),
        }
    }
}

/// A turn's error (`TurnError`).
#[derive(Debug, Clone, PartialEq)]
pub struct TurnError {
    /// `message`.
    pub message: String,
    /// `codexErrorInfo` (a string or an object such as `{"httpConnectionFailed": ...}`).
    pub codex_error_info: Option<Value>,
    /// `additionalDetails`.
    pub additional_details: Option<String>,
}

impl TurnError {
    fn from(v: &Value) -> Option<TurnError> {
        let message = v.get("message")?.as_str()?.to_owned();
        Some(TurnError {
            message,
            codex_error_info: v.get("codexErrorInfo").filter(|v| !v.is_null()).cloned(),
            additional_details: v.get("additionalDetails").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// What happens in a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// `item/agentMessage/delta`.
    TextDelta {
        /// The agent message item.
        item_id: String,
        /// The text.
        delta: String,
    },
    /// `item/started`.
    ItemStarted(Item),
    /// `item/completed`.
    ItemCompleted(Item),
    /// `thread/tokenUsage/updated`.
    TokenUsage(TokenUsage),
    /// `error`: with `will_retry` the worker goes on (a retried model call), else the turn fails.
    Error {
        /// `error.message`.
        message: String,
        /// `willRetry`.
        will_retry: bool,
    },
    /// `turn/completed`: the last event.
    Completed {
        /// `turn.status`.
        status: TurnStatus,
        /// `turn.error`.
        error: Option<TurnError>,
        /// The last token usage the turn reported.
        usage: Option<TokenUsage>,
    },
}

/// A running turn's events (see the module docs).
#[derive(Debug)]
pub struct TurnStream {
    conn: Connection,
    thread: ThreadId,
    turn: TurnId,
    sub: Subscription,
    idle: Duration,
    usage: Option<TokenUsage>,
    done: bool,
}

/// Starts a turn on `thread`; its event stream.
pub async fn start_turn(conn: &Connection, thread: &ThreadId, params: TurnParams) -> Result<TurnStream, AgentError> {
    let sub = conn.subscribe(thread.as_str(), None);
    let result = conn.request("turn/start", params.to_params(thread), conn.options().request_timeout).await?;
    let turn = result
        .pointer("/turn/id")
        .and_then(Value::as_str)
        .map(|id| TurnId(id.to_owned()))
        .ok_or_else(|| AgentError::Protocol(format!("the turn/start result has no turn.id: {result}")))?;
    Ok(TurnStream {
        conn: conn.clone(),
        thread: thread.clone(),
        turn,
        sub,
        idle: params.idle_timeout,
        usage: None,
        done: false,
    })
}

/// Asks the worker to stop `turn` (`turn/interrupt`); its stream then ends with
/// `Completed { status: Interrupted }`.
pub async fn interrupt(conn: &Connection, thread: &ThreadId, turn: &TurnId) -> Result<(), AgentError> {
    let params = json!({ "threadId": thread.as_str(), "turnId": turn.as_str() });
    conn.request("turn/interrupt", params, conn.options().request_timeout).await.map(|_| ())
}

impl TurnStream {
    /// The thread.
    pub fn thread_id(&self) -> &ThreadId {
        &self.thread
    }

    /// The turn.
    pub fn turn_id(&self) -> &TurnId {
        &self.turn
    }

    /// [`interrupt`] of this turn.
    pub async fn interrupt(&self) -> Result<(), AgentError> {
        interrupt(&self.conn, &self.thread, &self.turn).await
    }

    /// The next event; `None` after `Completed` or an error.
    pub async fn next(&mut self) -> Option<Result<TurnEvent, AgentError>> {
        // Bounded: each pass either returns or consumes one notification of the thread, and
        // each wait for one is bounded by the idle timeout.
        while !self.done {
            let n = match tokio::time::timeout(self.idle, self.sub.recv()).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return self.fail(e),
                Err(_) => {
                    let method = format!("turn events of {}/{}", self.thread, self.turn);
                    return self.fail(AgentError::Timeout { method, after: self.idle });
                }
            };
            if n.turn_id() != Some(self.turn.as_str()) {
                continue;
            }
            if let Some(event) = self.event(&n) {
                return Some(Ok(event));
            }
        }
        None
    }

    fn fail(&mut self, e: AgentError) -> Option<Result<TurnEvent, AgentError>> {
        self.done = true;
        Some(Err(e))
    }

    fn event(&mut self, n: &Notification) -> Option<TurnEvent> {
        let p = &n.params;
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        match n.method.as_str() {
            "item/agentMessage/delta" => Some(TurnEvent::TextDelta { item_id: s("itemId"), delta: s("delta") }),
            "item/started" => p.get("item").map(|i| TurnEvent::ItemStarted(Item::from(i))),
            "item/completed" => p.get("item").map(|i| TurnEvent::ItemCompleted(Item::from(i))),
            "thread/tokenUsage/updated" => {
                let u = p.get("tokenUsage")?;
                let usage = TokenUsage {
                    total: u.get("total").map(TokenBreakdown::from).unwrap_or_default(),
                    last: u.get("last").map(TokenBreakdown::from).unwrap_or_default(),
                    model_context_window: u.get("modelContextWindow").and_then(Value::as_u64),
                };
                self.usage = Some(usage);
                Some(TurnEvent::TokenUsage(usage))
            }
            "error" => Some(TurnEvent::Error {
                message: p.pointer("/error/message").and_then(Value::as_str).unwrap_or_default().to_owned(),
                will_retry: p.get("willRetry").and_then(Value::as_bool).unwrap_or(false),
            }),
            "turn/completed" => {
                self.done = true;
                let turn = p.get("turn").cloned().unwrap_or(Value::Null);
                let status = TurnStatus::parse(turn.get("status").and_then(Value::as_str).unwrap_or_default());
                let error = turn.get("error").and_then(TurnError::from);
                Some(TurnEvent::Completed { status, error, usage: self.usage })
            }
            _ => None,
        }
    }
}

/// How [`Threads::checkout`] found a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkout<V> {
    /// Idle and now leased to the caller: give it back with [`Threads::checkin`] (or drop it
    /// with [`Threads::remove`]).
    Ready(V),
    /// A turn is running on it.
    Busy,
    /// Not kept (never, evicted, or expired).
    Unknown,
}

struct Kept<V> {
    value: V,
    busy: bool,
    last_used: Instant,
}

/// Kept threads by a caller's key (a conversation id): one turn at a time each, evicted after
/// an idle TTL or when more than `capacity` are kept (the least recently used idle one first).
/// Evicted values are returned to the caller, who tells the worker ([`unsubscribe`]).
pub struct Threads<V> {
    ttl: Duration,
    capacity: usize,
    map: Mutex<HashMap<String, Kept<V>>>,
}

impl<V> std::fmt::Debug for Threads<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads").field("ttl", &self.ttl).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl<V: Clone> Threads<V> {
    /// An empty registry.
    pub fn new(ttl: Duration, capacity: usize) -> Threads<V> {
        Threads { ttl, capacity: capacity.max(1), map: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept<V>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `value` under `key`, leased (busy) to the caller, who runs a turn on it and then
    /// checks it in. Returns what had to go to stay within capacity (a replaced value under the
    /// same key, the least recently used idle entries); if every other entry is busy, the
    /// registry grows past capacity rather than evict a running thread.
    pub fn insert_busy(&self, key: &str, value: V) -> Vec<(String, V)> {
        self.insert_at(key, value, Instant::now())
    }

    /// [`Threads::insert_busy`] at `now`.
    pub fn insert_at(&self, key: &str, value: V, now: Instant) -> Vec<(String, V)> {
        let mut map = self.lock();
        let mut evicted: Vec<(String, V)> = Vec::new();
        if let Some(old) = map.insert(key.to_owned(), Kept { value, busy: true, last_used: now }) {
            evicted.push((key.to_owned(), old.value));
        }
        // Bounded: each pass removes one entry or stops.
        while map.len() > self.capacity {
            let oldest =
                map.iter().filter(|(_, k)| !k.busy).min_by_key(|(_, k)| k.last_used).map(|(key, _)| key.clone());
            let Some(oldest) = oldest else { break };
            if let Some(k) = map.remove(&oldest) {
                evicted.push((oldest, k.value));
            }
        }
        evicted
    }

    /// Leases the thread kept under `key` for a turn.
    pub fn checkout(&self, key: &str) -> Checkout<V> {
        self.checkout_at(key, Instant::now())
    }

    /// [`Threads::checkout`] at `now` (an expired entry is [`Checkout::Unknown`]; the next sweep
    /// returns it).
    pub fn checkout_at(&self, key: &str, now: Instant) -> Checkout<V> {
        let mut map = self.lock();
        match map.get_mut(key) {
            None => Checkout::Unknown,
            Some(k) if k.busy => Checkout::Busy,
            Some(k) if now.saturating_duration_since(k.last_used) >= self.ttl => Checkout::Unknown,
            Some(k) => {
                k.busy = true;
                k.last_used = now;
                Checkout::Ready(k.value.clone())
            }
        }
    }

    /// Gives a leased thread back: idle from now on.
    pub fn checkin(&self, key: &str) {
        self.checkin_at(key, Instant::now());
    }

    /// [`Threads::checkin`] at `now`.
    pub fn checkin_at(&self, key: &str, now: Instant) {
        if let Some(k) = self.lock().get_mut(key) {
            k.busy = false;
            k.last_used = now;
        }
    }

    /// Forgets `key` (a thread whose worker failed, or that the caller ends).
    pub fn remove(&self, key: &str) -> Option<V> {
        self.lock().remove(key).map(|k| k.value)
    }

    /// Removes and returns the idle entries whose TTL passed.
    pub fn sweep(&self) -> Vec<(String, V)> {
        self.sweep_at(Instant::now())
    }

    /// [`Threads::sweep`] at `now`.
    pub fn sweep_at(&self, now: Instant) -> Vec<(String, V)> {
        let mut map = self.lock();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, k)| !k.busy && now.saturating_duration_since(k.last_used) >= self.ttl)
            .map(|(key, _)| key.clone())
            .collect();
        expired.into_iter().filter_map(|key| map.remove(&key).map(|k| (key, k.value))).collect()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_params_use_the_schema_names() {
        let p = ThreadParams {
            cwd: PathBuf::from("/work"),
            sandbox: SandboxMode::WorkspaceWrite,
            approval_policy: ApprovalMode::Untrusted,
            developer_instructions: Some("be brief".into()),
            model: Some("m".into()),
            ephemeral: false,
        };
        assert_eq!(
            p.to_params().expect("params"),
            json!({ "cwd": "/work", "sandbox": "workspace-write", "approvalPolicy": "untrusted", "ephemeral": false,
                    "developerInstructions": "be brief", "model": "m" })
        );
        let rel = ThreadParams { cwd: PathBuf::from("rel"), ..p };
        assert!(matches!(rel.to_params(), Err(AgentError::InvalidParams { .. })));
        let t = TurnParams {
            effort: Some("low".into()),
            output_schema: Some(json!({"type": "object"})),
            ..TurnParams::text("hi")
        };
        assert_eq!(
            t.to_params(&ThreadId("T".into())),
            json!({ "threadId": "T", "input": [{ "type": "text", "text": "hi" }], "effort": "low",
                    "outputSchema": { "type": "object" } })
        );
    }

    #[test]
    fn kept_threads_take_one_turn_at_a_time_and_expire_when_idle() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let threads = Threads::new(ttl, 2);
        assert!(threads.insert_at("a", 1, t0).is_empty());
        assert_eq!(threads.checkout_at("a", t0), Checkout::Busy, "a new thread is leased to its creator");
        threads.checkin_at("a", t0);
        assert_eq!(threads.checkout_at("a", t0 + Duration::from_secs(10)), Checkout::Ready(1));
        assert_eq!(threads.checkout_at("a", t0 + Duration::from_secs(11)), Checkout::Busy);
        // A busy thread never expires.
        assert!(threads.sweep_at(t0 + Duration::from_secs(600)).is_empty());
        threads.checkin_at("a", t0 + Duration::from_secs(20));
        assert_eq!(threads.checkout_at("b", t0), Checkout::Unknown);
        assert_eq!(threads.checkout_at("a", t0 + Duration::from_secs(80)), Checkout::Unknown, "expired");
        assert_eq!(threads.sweep_at(t0 + Duration::from_secs(79)), Vec::new());
        assert_eq!(threads.sweep_at(t0 + Duration::from_secs(80)), [("a".to_owned(), 1)]);
        assert!(threads.is_empty());
    }

    #[test]
    fn capacity_evicts_the_least_recently_used_idle_thread() {
        let t0 = Instant::now();
        let threads = Threads::new(Duration::from_secs(60), 2);
        threads.insert_at("a", 1, t0);
        threads.checkin_at("a", t0);
        threads.insert_at("b", 2, t0);
        threads.checkin_at("b", t0 + Duration::from_secs(1));
        assert_eq!(threads.insert_at("c", 3, t0 + Duration::from_secs(2)), [("a".to_owned(), 1)]);
        // Every other entry busy: grow rather than evict a running thread.
        assert_eq!(threads.checkout_at("b", t0 + Duration::from_secs(3)), Checkout::Ready(2));
        assert!(threads.insert_at("d", 4, t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(threads.len(), 3);
        assert_eq!(threads.insert_at("d", 5, t0 + Duration::from_secs(5)), [("d".to_owned(), 4)]);
        assert_eq!(threads.remove("c"), Some(3));
    }
}
