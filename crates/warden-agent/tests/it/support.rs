//! Workers for the tests: the testkit's fake worker (or real Codex) as a child process with a
//! [`Connection`] on its stdio, short deadlines, and a reaping check.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_agent::approval::{ApprovalMode, ApprovalPolicy, ApprovalRecord};
use warden_agent::rpc::{ClientInfo, Connection, ConnectionOptions, RefuseAll, ServerRequestHandler};
use warden_agent::turn::{self, SandboxMode, ThreadId, ThreadParams, TurnEvent, TurnParams};
use warden_agent::AgentError;
use warden_policy::{AgentRule, RuleDecision};

/// Short deadlines: a fault must show within these.
pub fn fast_options() -> ConnectionOptions {
    ConnectionOptions {
        request_timeout: Duration::from_secs(3),
        handler_timeout: Duration::from_millis(500),
        subscriber_stall: Duration::from_millis(500),
        ..ConnectionOptions::default()
    }
}

/// How long a fault may take to show, beyond its own timeout.
pub const SLACK: Duration = Duration::from_secs(3);

/// A child process with a connection on its stdio.
pub struct Worker {
    pub conn: Connection,
    pub reader: tokio::task::JoinHandle<AgentError>,
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Its stderr, collected.
    pub stderr: Arc<Mutex<String>>,
}

impl Worker {
    /// The fake worker with these options.
    pub fn fake(args: &[&str], handler: Arc<dyn ServerRequestHandler>, opts: ConnectionOptions) -> Worker {
        let mut cmd = tokio::process::Command::new(warden_testkit::fake_worker_bin());
        cmd.args(args).env_remove("FAKE_WORKER_FAULTS");
        Worker::spawn(cmd, handler, opts)
    }

    /// The fake worker, answering server requests with errors.
    pub fn plain(args: &[&str]) -> Worker {
        Worker::fake(args, Arc::new(RefuseAll), fast_options())
    }

    pub fn spawn(
        mut cmd: tokio::process::Command,
        handler: Arc<dyn ServerRequestHandler>,
        opts: ConnectionOptions,
    ) -> Worker {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let pid = child.id().expect("a pid");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let collected = Arc::new(Mutex::new(String::new()));
        let sink = collected.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(1 << 20).read_to_end(&mut buf).await;
            sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buf));
        });
        let (conn, reader) = Connection::new(stdout, stdin, handler, opts);
        Worker { conn, reader, child, pid, stderr: collected }
    }

    /// `initialize` within 3 s.
    pub async fn init(&self) {
        let r = self.conn.initialize(&ClientInfo::warden(), Duration::from_secs(3)).await;
        let info = r.unwrap_or_else(|e| panic!("initialize: {e}; stderr: {}", self.stderr()));
        assert!(info.user_agent.starts_with("warden/"), "{info:?}");
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits (bounded) for the process to end by itself; then checks it is reaped.
    pub async fn exits_within(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                panic!("the worker {} did not exit within {limit:?}; stderr: {}", self.pid, self.stderr());
            }
        };
        assert_no_zombie(self.pid);
        status
    }

    /// Closes its stdin; it must then end by itself (and is reaped).
    pub async fn finish(mut self) -> ExitStatus {
        self.conn.shutdown();
        self.exits_within(SLACK).await
    }

    /// The fake worker with `args`, initialized, with a thread (mode `never`).
    pub async fn with_thread(args: &[&str]) -> (Worker, ThreadId) {
        let w = Worker::plain(args);
        w.init().await;
        let thread = start(&w.conn, ApprovalMode::Never).await;
        (w, thread)
    }

    /// One turn on `thread`: its events and the error that ended it, if any.
    pub async fn turn(&self, thread: &ThreadId, text: &str, idle: Duration) -> (Vec<TurnEvent>, Option<AgentError>) {
        let mut stream = turn::start_turn(&self.conn, thread, turn_params(text, idle))
            .await
            .unwrap_or_else(|e| panic!("turn/start: {e}; stderr: {}", self.stderr()));
        drain(&mut stream).await
    }

    /// Kills the process (a worker that does not end by itself), then checks it is reaped.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.start_kill().expect("kill");
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .expect("a killed worker ends within 5 s")
            .expect("wait");
        assert_no_zombie(self.pid);
        status
    }
}

/// `/proc/<pid>` is gone, or is not a zombie child of this process (a reused pid).
pub fn assert_no_zombie(pid: u32) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return };
    // The command may contain spaces and parentheses: the fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (state, ppid) = (fields.first().copied(), fields.get(1).copied());
    let ours = ppid == Some(std::process::id().to_string().as_str());
    assert!(!(ours && state == Some("Z")), "worker {pid} is a zombie: {stat}");
    assert!(!ours, "worker {pid} is still a child of this process: {stat}");
}

/// Asserts `fut` ends within `limit` and returns what it gave.
pub async fn within<T>(limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| panic!("{what}: nothing within {limit:?}"));
    assert!(start.elapsed() <= limit);
    out
}

/// A read-only, ephemeral thread that never asks (the fake's defaults elsewhere).
pub fn thread_params(mode: ApprovalMode) -> ThreadParams {
    ThreadParams {
        cwd: "/".into(),
        sandbox: SandboxMode::ReadOnly,
        approval_policy: mode,
        developer_instructions: None,
        model: None,
        ephemeral: true,
    }
}

pub async fn start(conn: &Connection, mode: ApprovalMode) -> ThreadId {
    turn::start_thread(conn, &thread_params(mode)).await.expect("thread/start")
}

pub fn turn_params(text: &str, idle: Duration) -> TurnParams {
    TurnParams { idle_timeout: idle, ..TurnParams::text(text) }
}

/// Every event of a turn up to its end (bounded in count), and the error that ended it, if any.
pub async fn drain(stream: &mut turn::TurnStream) -> (Vec<TurnEvent>, Option<AgentError>) {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match stream.next().await {
            Some(Ok(e)) => events.push(e),
            Some(Err(e)) => return (events, Some(e)),
            None => return (events, None),
        }
    }
    panic!("more than 10000 events: {events:?}");
}

/// The text of a turn's deltas.
pub fn text_of(events: &[TurnEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::TextDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

pub fn rule(prefix: &[&str], decision: RuleDecision) -> AgentRule {
    AgentRule { prefix: prefix.iter().map(|s| s.to_string()).collect(), decision, line: None }
}

/// A policy whose records are kept.
pub fn policy(
    mode: ApprovalMode,
    rules: Vec<AgentRule>,
    roots: &[&Path],
) -> (Arc<ApprovalPolicy>, Arc<Mutex<Vec<ApprovalRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    let policy = ApprovalPolicy::new(
        mode,
        rules,
        roots.iter().map(|p| p.to_path_buf()).collect(),
        Arc::new(move |r: &ApprovalRecord| sink.lock().expect("lock").push(r.clone())),
    );
    (Arc::new(policy), records)
}
