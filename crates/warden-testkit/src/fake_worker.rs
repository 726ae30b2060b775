//! A fake Codex app-server worker: the v2 subset warden drives, over stdio, with fault modes.
//!
//! It behaves like `codex app-server` 0.169.0 where `shared/reference/codex-app-server.md` says
//! how that behaves: JSON-RPC 2.0 **without** the `jsonrpc` field, one JSON object per line;
//! requests before `initialize` get `-32600 "Not initialized"`, a second `initialize` gets
//! `"Already initialized"`, unknown methods `-32600`; non-JSON lines are ignored; notifications
//! carry `threadId`/`turnId` and `emittedAtMs`; its own requests to the client (approvals) have
//! their own id numbering from 0; it exits at stdin EOF.
//!
//! Methods: `initialize`, `initialized` (notification), `thread/start` (approval policies
//! `untrusted | on-request | never`, sandboxes `read-only | workspace-write | danger-full-access`,
//! like the real binary), `turn/start` (a turn streams `turn/started`, the user message item, an
//! `agentMessage` item with its deltas, `thread/tokenUsage/updated`, `turn/completed`),
//! `turn/interrupt` (`{}`, then `turn/completed` with `status: "interrupted"`),
//! `thread/unsubscribe`, and two of its own for tests: `fake/sleep {ms, value}` (answered with
//! `{value}` after `ms`, on its own thread, so answers come out of order) and `fake/exit {code}`.
//!
//! The reply text of a turn is `You said: <input> [turn N of <thread>]` unless `--delta` options
//! give the deltas. Options (argv; faults also from `FAKE_WORKER_FAULTS=a,b`; Codex's own `app-server`
//! and `-c key=value` are accepted and ignored, so the fake can be a sandboxed worker's Codex binary):
//!
//! | option | effect |
//! | --- | --- |
//! | `--fault crash-mid-turn` | exits with status 70 right after the first delta |
//! | `--fault hang-before-handshake` | answers nothing at all (still exits at stdin EOF) |
//! | `--fault hang-mid-turn` | after the first delta, the turn sends nothing more |
//! | `--fault garbage` | a non-JSON line before every message it writes |
//! | `--fault oversized` | answers the first request after `initialize` with one line of `--oversize-bytes` (default 9 MiB) |
//! | `--fault bad-response` | answers requests after `initialize` with `{"id":N}` (neither result nor error) |
//! | `--fault slow-deltas` | waits `--delta-ms` (default 200) between deltas |
//! | `--fault error-notification` | an `error` notification (`willRetry: true`) mid-turn, another (`false`) at the end, and the turn fails |
//! | `--fault approvals` | mid-turn, sends every server request of 0.169.0 (see [`APPROVAL_PROBES`]) and reports the answers as the reply text |
//! | `--fault overloaded` | answers requests after `initialize` with `-32001 "Server overloaded; retry later."` |
//! | `--fault ignore-eof` | at stdin EOF, lingers up to 60 s instead of exiting (a stuck worker to kill) |
//! | `--trace` | writes `fake-worker: <method> <params>` to stderr for every request after `initialize` |
//! | `--delta TEXT` (repeated) | the deltas of the reply |
//! | `--command STR` | the `command` of the v2 command approval (default `/bin/bash -lc 'git status'`) |
//! | `--v1-command WORD` (repeated) | the `command` argv of the v1 `execCommandApproval` (default `git status`) |
//! | `--path P` (repeated) | the paths of the file change (default `/tmp/fake-worker-file`) |
//! | `--approval-wait-ms N` | how long it waits for each answer before it writes `silence` (default 5000) |
//!
//! With `approvals`, the reply text is one `label=answer` line per request, in the order of
//! [`APPROVAL_PROBES`]: the `decision` of a result (JSON), `granted:<permissions JSON>` for the
//! permissions request, `error:<code>` for an error response, `silence` for no answer in time.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// A fault the fake worker can be told to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Exit (status 70) right after the first delta of a turn.
    CrashMidTurn,
    /// Never answer anything.
    HangBeforeHandshake,
    /// Stop sending a turn's events after its first delta.
    HangMidTurn,
    /// A non-JSON line before every message.
    Garbage,
    /// Answer the first request after `initialize` with an oversized line.
    Oversized,
    /// Answer requests after `initialize` with neither `result` nor `error`.
    BadResponse,
    /// Wait between deltas.
    SlowDeltas,
    /// `error` notifications and a failed turn.
    ErrorNotification,
    /// Send every kind of server request mid-turn and report the answers.
    Approvals,
    /// Answer requests after `initialize` with `-32001`.
    Overloaded,
    /// Linger at stdin EOF instead of exiting.
    IgnoreEof,
}

impl Fault {
    /// Every fault with its option name.
    pub const ALL: &'static [(&'static str, Fault)] = &[
        ("crash-mid-turn", Fault::CrashMidTurn),
        ("hang-before-handshake", Fault::HangBeforeHandshake),
        ("hang-mid-turn", Fault::HangMidTurn),
        ("garbage", Fault::Garbage),
        ("oversized", Fault::Oversized),
        ("bad-response", Fault::BadResponse),
        ("slow-deltas", Fault::SlowDeltas),
        ("error-notification", Fault::ErrorNotification),
        ("approvals", Fault::Approvals),
        ("overloaded", Fault::Overloaded),
        ("ignore-eof", Fault::IgnoreEof),
    ];

    /// The option name (`--fault NAME`).
    pub fn name(self) -> &'static str {
        Fault::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }

    fn parse(name: &str) -> Result<Fault, String> {
        Fault::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|(n, _)| *n).collect();
            format!("unknown fault {name:?} (accepted: {})", names.join(", "))
        })
    }
}

/// The server requests the `approvals` fault sends, in order: (label in the reply, method).
pub const APPROVAL_PROBES: &[(&str, &str)] = &[
    ("command", "item/commandExecution/requestApproval"),
    ("file", "item/fileChange/requestApproval"),
    ("permissions", "item/permissions/requestApproval"),
    ("v1command", "execCommandApproval"),
    ("v1patch", "applyPatchApproval"),
    ("userInput", "item/tool/requestUserInput"),
    ("elicitation", "mcpServer/elicitation/request"),
    ("tokenRefresh", "account/chatgptAuthTokens/refresh"),
    ("dynamicTool", "item/tool/call"),
    ("attestation", "attestation/generate"),
    ("unknown", "fake/unknownRequest"),
];

/// The fake worker's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Faults to commit.
    pub faults: Vec<Fault>,
    /// The deltas of every reply (empty: the echo reply).
    pub deltas: Vec<String>,
    /// Pause between deltas with [`Fault::SlowDeltas`].
    pub delta_pause: Duration,
    /// The v2 command approval's `command`.
    pub command: String,
    /// The v1 command approval's `command`.
    pub v1_command: Vec<String>,
    /// The file change's paths.
    pub paths: Vec<String>,
    /// The oversized line's length.
    pub oversize_bytes: usize,
    /// How long each approval answer is waited for.
    pub approval_wait: Duration,
    /// Write `fake-worker: <method> <params>` to stderr for every request received.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            faults: Vec::new(),
            deltas: Vec::new(),
            delta_pause: Duration::from_millis(200),
            command: "/bin/bash -lc 'git status'".to_owned(),
            v1_command: vec!["git".to_owned(), "status".to_owned()],
            paths: Vec::new(),
            oversize_bytes: 9 << 20,
            approval_wait: Duration::from_secs(5),
            trace: false,
        }
    }
}

impl Config {
    /// Parses the options (see the module docs) and `FAKE_WORKER_FAULTS`.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I, env_faults: Option<&str>) -> Result<Config, String> {
        let mut cfg = Config::default();
        let mut v1_command = Vec::new();
        let mut it = args.into_iter();
        let number = |opt: &str, v: Option<String>| -> Result<u64, String> {
            v.as_deref().and_then(|s| s.parse().ok()).ok_or_else(|| format!("{opt} needs a number"))
        };
        while let Some(arg) = it.next() {
            match arg.as_str() {
                // Codex's own argv (`app-server -c key=value ...`), so the fake can stand in for
                // the Codex binary of a sandboxed worker: accepted and ignored.
                "app-server" => {}
                "--trace" => cfg.trace = true,
                "-c" | "--config" => {
                    it.next().ok_or("-c needs key=value")?;
                }
                "--fault" => cfg.faults.push(Fault::parse(&it.next().unwrap_or_default())?),
                "--delta" => cfg.deltas.push(it.next().ok_or("--delta needs a text")?),
                "--delta-ms" => cfg.delta_pause = Duration::from_millis(number("--delta-ms", it.next())?),
                "--command" => cfg.command = it.next().ok_or("--command needs a string")?,
                "--v1-command" => v1_command.push(it.next().ok_or("--v1-command needs a word")?),
                "--path" => cfg.paths.push(it.next().ok_or("--path needs a path")?),
                "--oversize-bytes" => cfg.oversize_bytes = number("--oversize-bytes", it.next())? as usize,
                "--approval-wait-ms" => {
                    cfg.approval_wait = Duration::from_millis(number("--approval-wait-ms", it.next())?)
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        for name in env_faults.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
            cfg.faults.push(Fault::parse(name)?);
        }
        if !v1_command.is_empty() {
            cfg.v1_command = v1_command;
        }
        if cfg.paths.is_empty() {
            cfg.paths.push("/tmp/fake-worker-file".to_owned());
        }
        Ok(cfg)
    }

    fn has(&self, f: Fault) -> bool {
        self.faults.contains(&f)
    }
}

/// The longest stdin line the fake reads; longer ones are skipped.
const MAX_LINE: usize = 16 << 20;

struct ThreadState {
    turns: u64,
    active: Option<(String, Arc<AtomicBool>)>,
}

struct Worker {
    cfg: Config,
    out: Mutex<std::io::Stdout>,
    initialized: AtomicBool,
    oversized_sent: AtomicBool,
    next_server_id: AtomicU64,
    next_name: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::Sender<Value>>>,
    threads: Mutex<HashMap<String, ThreadState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs the fake worker on this process's stdin and stdout; returns the exit status.
pub fn run(cfg: Config) -> i32 {
    let w = Arc::new(Worker {
        cfg,
        out: Mutex::new(std::io::stdout()),
        initialized: AtomicBool::new(false),
        oversized_sent: AtomicBool::new(false),
        next_server_id: AtomicU64::new(0),
        next_name: AtomicU64::new(1),
        waiting: Mutex::new(HashMap::new()),
        threads: Mutex::new(HashMap::new()),
    });
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match std::io::Read::take(&mut input, MAX_LINE as u64 + 1).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.len() > MAX_LINE => {
                // Skip the rest of an overlong line.
                let mut rest = Vec::new();
                let _ = input.read_until(b'\n', &mut rest);
            }
            Ok(_) => w.line(&line),
        }
    }
    if w.cfg.has(Fault::IgnoreEof) {
        std::thread::sleep(Duration::from_secs(60));
    }
    0
}

impl Worker {
    fn has(&self, f: Fault) -> bool {
        self.cfg.has(f)
    }

    /// Writes one message (after a garbage line with [`Fault::Garbage`]); a closed stdout ends
    /// the process (status 3), as it would a real worker's.
    fn send(&self, v: &Value) {
        let mut text = serde_json::to_string(v).unwrap_or_default();
        text.push('\n');
        self.write_raw(text.as_bytes());
    }

    fn write_raw(&self, bytes: &[u8]) {
        let mut out = lock(&self.out);
        let garbage: &[u8] = if self.has(Fault::Garbage) { b"fake-worker: this line is not JSON {\n" } else { b"" };
        if out.write_all(garbage).and_then(|()| out.write_all(bytes)).and_then(|()| out.flush()).is_err() {
            std::process::exit(3);
        }
    }

    fn notify(&self, method: &str, mut params: Value) {
        if let Some(p) = params.as_object_mut() {
            p.entry("emittedAtMs").or_insert(json!(now_ms()));
        }
        self.send(&json!({ "method": method, "params": params }));
    }

    fn reply(&self, id: &Value, result: Value) {
        self.send(&json!({ "id": id, "result": result }));
    }

    fn error(&self, id: &Value, code: i64, message: &str) {
        self.send(&json!({ "id": id, "error": { "code": code, "message": message } }));
    }

    fn name(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.next_name.fetch_add(1, Ordering::SeqCst))
    }

    fn line(self: &Arc<Self>, line: &[u8]) {
        // Like Codex: what is not a JSON object is ignored.
        let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(line) else { return };
        let id = msg.get("id").cloned();
        match (msg.get("method").and_then(Value::as_str), id) {
            (Some(method), Some(id)) => {
                let params = msg.get("params").cloned().unwrap_or(Value::Null);
                self.request(id, method, params);
            }
            (Some("initialized"), None) | (Some(_), None) => {}
            (None, Some(id)) => {
                // An answer to one of our requests.
                let Some(n) = id.as_u64() else { return };
                if let Some(tx) = lock(&self.waiting).remove(&n) {
                    let _ = tx.send(Value::Object(msg));
                }
            }
            (None, None) => {}
        }
    }

    fn request(self: &Arc<Self>, id: Value, method: &str, params: Value) {
        if self.has(Fault::HangBeforeHandshake) {
            return;
        }
        if method == "initialize" {
            if self.initialized.swap(true, Ordering::SeqCst) {
                return self.error(&id, -32600, "Already initialized");
            }
            let name = params.pointer("/clientInfo/name").and_then(Value::as_str).unwrap_or("client");
            return self.reply(
                &id,
                json!({
                    "userAgent": format!("{name}/0.169.0 (fake-worker)"),
                    "codexHome": "/nonexistent/fake-codex-home",
                    "platformFamily": "unix",
                    "platformOs": "linux",
                }),
            );
        }
        if !self.initialized.load(Ordering::SeqCst) {
            return self.error(&id, -32600, "Not initialized");
        }
        if self.has(Fault::Overloaded) {
            return self.error(&id, -32001, "Server overloaded; retry later.");
        }
        if self.has(Fault::BadResponse) {
            return self.send(&json!({ "id": id }));
        }
        if self.has(Fault::Oversized) && !self.oversized_sent.swap(true, Ordering::SeqCst) {
            let head = format!("{{\"id\":{id},\"result\":{{\"pad\":\"");
            let mut line = Vec::with_capacity(self.cfg.oversize_bytes + 16);
            line.extend_from_slice(head.as_bytes());
            line.resize(self.cfg.oversize_bytes.max(head.len()), b'x');
            line.extend_from_slice(b"\"}}\n");
            return self.write_raw(&line);
        }
        if self.cfg.trace {
            eprintln!("fake-worker: {method} {params}");
        }
        match method {
            "thread/start" => self.thread_start(&id, &params),
            "turn/start" => self.turn_start(&id, &params),
            "turn/interrupt" => self.turn_interrupt(&id, &params),
            "thread/unsubscribe" => {
                let thread = params.get("threadId").and_then(Value::as_str).unwrap_or_default();
                let status = if lock(&self.threads).remove(thread).is_some() { "unsubscribed" } else { "notLoaded" };
                self.reply(&id, json!({ "status": status }));
            }
            "fake/sleep" => {
                let ms = params.get("ms").and_then(Value::as_u64).unwrap_or(0).min(60_000);
                let value = params.get("value").cloned().unwrap_or(Value::Null);
                let w = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    w.reply(&id, json!({ "value": value }));
                });
            }
            "fake/exit" => {
                let code = params.get("code").and_then(Value::as_i64).unwrap_or(0);
                std::process::exit(code as i32);
            }
            other => self.error(&id, -32600, &format!("Invalid request: unknown variant `{other}`")),
        }
    }

    fn thread_start(&self, id: &Value, params: &Value) {
        let policy = params.get("approvalPolicy").and_then(Value::as_str).unwrap_or("on-request");
        if !["untrusted", "on-request", "never"].contains(&policy) {
            let msg = format!(
                "Invalid request: unknown variant `{policy}`, expected one of `untrusted`, `on-request`, `granular`, `never`"
            );
            return self.error(id, -32600, &msg);
        }
        let sandbox = params.get("sandbox").and_then(Value::as_str).unwrap_or("read-only");
        let sandbox_type = match sandbox {
            "read-only" => "readOnly",
            "workspace-write" => "workspaceWrite",
            "danger-full-access" => "dangerFullAccess",
            other => {
                let msg = format!(
                    "Invalid request: unknown variant `{other}`, expected one of `read-only`, `workspace-write`, `danger-full-access`"
                );
                return self.error(id, -32600, &msg);
            }
        };
        let thread = self.name("thr");
        let cwd = params.get("cwd").cloned().unwrap_or(json!("/"));
        let ephemeral = params.get("ephemeral").and_then(Value::as_bool).unwrap_or(false);
        let info =
            json!({ "id": thread, "ephemeral": ephemeral, "cwd": cwd, "status": { "type": "idle" }, "turns": [] });
        lock(&self.threads).insert(thread.clone(), ThreadState { turns: 0, active: None });
        self.reply(
            id,
            json!({
                "thread": info,
                "model": params.get("model").cloned().unwrap_or(json!("fake-model")),
                "modelProvider": "fake",
                "cwd": cwd,
                "approvalPolicy": policy,
                "approvalsReviewer": "user",
                "sandbox": { "type": sandbox_type, "networkAccess": false },
            }),
        );
        self.notify("thread/started", json!({ "thread": info }));
    }

    fn turn_start(self: &Arc<Self>, id: &Value, params: &Value) {
        let thread = params.get("threadId").and_then(Value::as_str).unwrap_or_default().to_owned();
        let input: String = params
            .get("input")
            .and_then(Value::as_array)
            .map(|items| {
                items.iter().filter_map(|i| i.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
            })
            .unwrap_or_default();
        let turn = self.name("turn");
        let stop = Arc::new(AtomicBool::new(false));
        let number = {
            let mut threads = lock(&self.threads);
            let Some(state) = threads.get_mut(&thread) else {
                drop(threads);
                return self.error(id, -32600, &format!("thread not found: {thread}"));
            };
            if state.active.is_some() {
                drop(threads);
                return self.error(id, -32600, &format!("thread {thread} already has a turn in progress"));
            }
            state.turns += 1;
            state.active = Some((turn.clone(), stop.clone()));
            state.turns
        };
        self.reply(id, json!({ "turn": { "id": turn, "status": "inProgress", "items": [], "error": null } }));
        let w = self.clone();
        std::thread::spawn(move || w.run_turn(&thread, &turn, &input, number, &stop));
    }

    fn turn_interrupt(&self, id: &Value, params: &Value) {
        let thread = params.get("threadId").and_then(Value::as_str).unwrap_or_default();
        let turn = params.get("turnId").and_then(Value::as_str).unwrap_or_default();
        let found = lock(&self.threads)
            .get(thread)
            .and_then(|s| s.active.as_ref())
            .filter(|(t, _)| t == turn)
            .map(|(_, stop)| stop.store(true, Ordering::SeqCst))
            .is_some();
        if found {
            self.reply(id, json!({}));
        } else {
            self.error(id, -32600, &format!("no turn {turn} in progress on thread {thread}"));
        }
    }

    fn item(&self, phase: &str, thread: &str, turn: &str, item: Value) {
        let stamp = if phase == "started" { "startedAtMs" } else { "completedAtMs" };
        self.notify(
            &format!("item/{phase}"),
            json!({ "item": item, "threadId": thread, "turnId": turn, stamp: now_ms() }),
        );
    }

    fn run_turn(&self, thread: &str, turn: &str, input: &str, number: u64, stop: &AtomicBool) {
        let ids = json!({ "threadId": thread, "turnId": turn });
        let with = |extra: Value| {
            let mut v = ids.clone();
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        self.notify(
            "turn/started",
            json!({ "threadId": thread, "turn": { "id": turn, "status": "inProgress", "items": [] } }),
        );
        let user = json!({ "type": "userMessage", "id": format!("{turn}_user"), "content": [{ "type": "text", "text": input }] });
        self.item("started", thread, turn, user.clone());
        self.item("completed", thread, turn, user);
        let deltas: Vec<String> = if self.has(Fault::Approvals) {
            vec![self.approvals(thread, turn)]
        } else if self.cfg.deltas.is_empty() {
            vec!["You said: ".to_owned(), input.to_owned(), format!(" [turn {number} of {thread}]")]
        } else {
            self.cfg.deltas.clone()
        };
        let msg = format!("{turn}_msg");
        self.item("started", thread, turn, json!({ "type": "agentMessage", "id": msg, "text": "" }));
        let mut text = String::new();
        let mut interrupted = false;
        for (i, d) in deltas.iter().enumerate() {
            if i > 0 && self.has(Fault::SlowDeltas) {
                interrupted = pause(self.cfg.delta_pause, stop);
            }
            if interrupted || stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            self.notify("item/agentMessage/delta", with(json!({ "itemId": msg, "delta": d })));
            text.push_str(d);
            if i == 0 {
                if self.has(Fault::CrashMidTurn) {
                    std::process::exit(70);
                }
                if self.has(Fault::HangMidTurn) {
                    // Silent until the process ends (stdin EOF, a kill), or ten minutes passed.
                    std::thread::sleep(Duration::from_secs(600));
                    return;
                }
                if self.has(Fault::ErrorNotification) {
                    let error = json!({ "message": "fake upstream hiccup; retrying", "codexErrorInfo": null });
                    self.notify("error", with(json!({ "error": error, "willRetry": true })));
                }
            }
        }
        let finish = |status: &str, error: Value| {
            if let Some(s) = lock(&self.threads).get_mut(thread) {
                s.active = None;
            }
            self.notify(
                "turn/completed",
                json!({ "threadId": thread, "turn": { "id": turn, "status": status, "error": error, "items": [] } }),
            );
        };
        if interrupted {
            return finish("interrupted", Value::Null);
        }
        self.item("completed", thread, turn, json!({ "type": "agentMessage", "id": msg, "text": text }));
        let out = text.len() as u64 / 4 + 1;
        let usage = json!({ "totalTokens": 10 + out, "inputTokens": 10, "cachedInputTokens": 0,
                            "outputTokens": out, "reasoningOutputTokens": 0 });
        self.notify(
            "thread/tokenUsage/updated",
            with(json!({ "tokenUsage": { "total": usage, "last": usage, "modelContextWindow": 128000 } })),
        );
        if self.has(Fault::ErrorNotification) {
            let error = json!({ "message": "fake fatal error", "codexErrorInfo": "other", "additionalDetails": null });
            self.notify("error", with(json!({ "error": error, "willRetry": false })));
            return finish("failed", error);
        }
        finish("completed", Value::Null)
    }

    /// Sends one server request and waits (bounded) for its answer.
    fn ask(&self, method: &str, params: Value) -> Option<Value> {
        let id = self.next_server_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        lock(&self.waiting).insert(id, tx);
        self.send(&json!({ "id": id, "method": method, "params": params }));
        let answer = rx.recv_timeout(self.cfg.approval_wait).ok();
        lock(&self.waiting).remove(&id);
        answer
    }

    /// The `approvals` fault: every server request, answers summarised as the reply text.
    fn approvals(&self, thread: &str, turn: &str) -> String {
        let cwd = "/work";
        let cmd_item = format!("{turn}_cmd");
        let patch_item = format!("{turn}_patch");
        let changes: Vec<Value> =
            self.cfg.paths.iter().map(|p| json!({ "path": p, "kind": { "type": "add" }, "diff": "+x\n" })).collect();
        let v1_changes: serde_json::Map<String, Value> =
            self.cfg.paths.iter().map(|p| (p.clone(), json!({ "type": "add", "content": "x\n" }))).collect();
        let base = json!({ "threadId": thread, "turnId": turn, "startedAtMs": now_ms() });
        let with = |extra: Value| {
            let mut v = base.clone();
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            v
        };
        let mut summary = Vec::new();
        for (label, method) in APPROVAL_PROBES {
            let params = match *label {
                "command" => {
                    let item = json!({ "type": "commandExecution", "id": cmd_item, "command": self.cfg.command,
                                       "cwd": cwd, "status": "inProgress", "commandActions": [] });
                    self.item("started", thread, turn, item);
                    with(json!({ "itemId": cmd_item, "command": self.cfg.command, "cwd": cwd, "commandActions": [],
                                 "availableDecisions": ["accept", "decline", "cancel"] }))
                }
                "file" => {
                    let item =
                        json!({ "type": "fileChange", "id": patch_item, "changes": changes, "status": "inProgress" });
                    self.item("started", thread, turn, item);
                    with(json!({ "itemId": patch_item, "reason": null, "grantRoot": null }))
                }
                "permissions" => with(json!({ "itemId": format!("{turn}_perm"), "cwd": cwd, "reason": null,
                    "permissions": { "fileSystem": { "write": ["/"] }, "network": { "enabled": true } } })),
                "v1command" => json!({ "conversationId": thread, "callId": format!("{turn}_v1cmd"),
                    "command": self.cfg.v1_command, "cwd": cwd, "parsedCmd": [] }),
                "v1patch" => json!({ "conversationId": thread, "callId": format!("{turn}_v1patch"),
                    "fileChanges": v1_changes, "grantRoot": null }),
                "userInput" => with(json!({ "itemId": format!("{turn}_ask"), "questions": [] })),
                "elicitation" => with(json!({ "serverName": "fake", "message": "sign in", "requestedSchema": {} })),
                "tokenRefresh" => json!({ "reason": "unauthorized", "previousAccountId": null }),
                "dynamicTool" => {
                    with(json!({ "callId": format!("{turn}_tool"), "tool": "fake_tool", "arguments": {} }))
                }
                _ => json!({}),
            };
            let answer = self.ask(method, params);
            let shown = match &answer {
                None => "silence".to_owned(),
                Some(a) => match (a.get("result"), a.get("error")) {
                    (Some(r), None) if *label == "permissions" => {
                        format!("granted:{}", r.get("permissions").cloned().unwrap_or(Value::Null))
                    }
                    (Some(r), None) => r.get("decision").map_or_else(|| r.to_string(), Value::to_string),
                    (None, Some(e)) => format!("error:{}", e.get("code").cloned().unwrap_or(Value::Null)),
                    _ => "malformed".to_owned(),
                },
            };
            if answer.is_some() {
                let request_id = self.next_server_id.load(Ordering::SeqCst) - 1;
                self.notify("serverRequest/resolved", json!({ "threadId": thread, "requestId": request_id }));
            }
            for (probe, item, kind) in [("command", &cmd_item, "commandExecution"), ("file", &patch_item, "fileChange")]
            {
                if *label == probe {
                    let status = if shown == "\"accept\"" { "completed" } else { "declined" };
                    self.item("completed", thread, turn, json!({ "type": kind, "id": item, "status": status }));
                }
            }
            summary.push(format!("{label}={shown}"));
        }
        summary.join("\n")
    }
}

/// Sleeps `d` in short steps; `true` when `stop` was set meanwhile.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5).min(end.saturating_duration_since(Instant::now())));
    }
    stop.load(Ordering::SeqCst)
}
