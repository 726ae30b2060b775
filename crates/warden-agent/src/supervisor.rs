//! Keeping one worker alive: start it (inside warden's sandbox), handshake, watch it, restart it
//! with backoff, give up after too many restarts, shut it down.
//!
//! Guarantees:
//! - a worker that is not up within [`SupervisorSettings::startup_timeout`], or whose
//!   `initialize` does not answer within [`SupervisorSettings::handshake_timeout`], is ended
//!   (SIGTERM, [`SupervisorSettings::shutdown_grace`], SIGKILL) and started again;
//! - restarts back off exponentially with jitter from `backoff_initial` to `backoff_max`, reset
//!   after a worker stayed up `healthy_after`; more than `restart_limit` restarts within
//!   `restart_window` stop the supervisor and turn [`Supervisor::is_live`] false;
//! - every process it started is waited for (no zombies), on every path;
//! - the worker's stderr is kept in a bounded ring ([`Supervisor::stderr_tail`]) for diagnostics
//!   (the caller decides who may see it: never an unauthenticated endpoint);
//! - per-worker counters ([`WorkerMetrics`]): turns, failures, restarts, latency;
//! - a worker found broken by its user ([`LiveWorker::recycle`]) is ended at once and replaced.
//!
//! Workers are started by a [`Launcher`]: [`SandboxLauncher`] (the one to use) starts a
//! [`crate::worker::PreparedWorker`]'s spec through warden-session's spawn path, so the worker
//! runs inside warden's sandbox; [`CommandLauncher`] starts a plain command, for tests of the
//! supervision itself with the testkit's fake worker.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use warden_policy::HostContext;
use warden_session::{LockedSecret, SessionHandle, SessionSpec};

use crate::rpc::{ClientInfo, Connection, ConnectionOptions, ServerRequestHandler};
use crate::worker::{PreparedWorker, WorkerError, WorkerHome, WorkerSettings};
use crate::AgentError;

/// Bounds and deadlines of a [`Supervisor`].
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// From the start of the process until it is up (the sandbox's PID 1 released); default 8 s.
    pub startup_timeout: Duration,
    /// From then until `initialize` answers; default 15 s.
    pub handshake_timeout: Duration,
    /// The first wait before a restart; default 500 ms.
    pub backoff_initial: Duration,
    /// The longest wait before a restart; default 5 s.
    pub backoff_max: Duration,
    /// A worker up this long resets the backoff; default 60 s.
    pub healthy_after: Duration,
    /// Restarts allowed within `restart_window`; default 25.
    pub restart_limit: u32,
    /// See `restart_limit`; default 10 minutes.
    pub restart_window: Duration,
    /// SIGTERM to SIGKILL when a worker is ended, and the longest drain at shutdown; default 5 s.
    pub shutdown_grace: Duration,
    /// Bytes of the worker's stderr kept; default 64 KiB.
    pub stderr_ring_bytes: usize,
    /// The JSON-RPC connection's bounds.
    pub connection: ConnectionOptions,
}

impl Default for SupervisorSettings {
    fn default() -> SupervisorSettings {
        SupervisorSettings {
            startup_timeout: Duration::from_secs(8),
            handshake_timeout: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            healthy_after: Duration::from_secs(60),
            restart_limit: 25,
            restart_window: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(5),
            stderr_ring_bytes: 64 << 10,
            connection: ConnectionOptions::default(),
        }
    }
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// How a started worker process is ended and waited for.
enum Control {
    Session(SessionHandle),
    Child(tokio::process::Child),
}

/// A started worker process: its standard streams and its end.
pub struct WorkerProcess {
    stdin: Option<BoxWrite>,
    stdout: Option<BoxRead>,
    stderr: Option<BoxRead>,
    control: Control,
}

impl std::fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess").field("pid", &self.pid()).finish_non_exhaustive()
    }
}

impl WorkerProcess {
    /// The pid of the process warden started (`warden __session`, or the command).
    pub fn pid(&self) -> Option<u32> {
        match &self.control {
            Control::Session(h) => h.pid(),
            Control::Child(c) => c.id(),
        }
    }

    /// Ends it (SIGTERM, `grace`, SIGKILL) and waits for it.
    async fn end(&mut self, grace: Duration) {
        match &mut self.control {
            Control::Session(h) => {
                let _ = h.kill(grace).await;
            }
            Control::Child(c) => {
                if let Some(pid) = c.id() {
                    terminate(pid);
                }
                if tokio::time::timeout(grace, c.wait()).await.is_err() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
            }
        }
    }
}

/// SIGTERM to `pid` (a child of this process, not yet reaped, so the pid is still ours).
fn terminate(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
}

/// A future a [`Launcher`] returns.
pub type LaunchFuture<'a> = Pin<Box<dyn std::future::Future<Output = Result<WorkerProcess, AgentError>> + Send + 'a>>;

/// Starts worker processes.
pub trait Launcher: Send + Sync {
    /// Starts one; resolves when it is up (or failed to come up).
    fn launch(&self) -> LaunchFuture<'_>;
}

/// Starts a worker inside warden's sandbox through warden-session's spawn path.
///
/// Every start gets a fresh home: the first uses the worker prepared by [`SandboxLauncher::new`],
/// each restart removes the home and prepares it again from the settings, so nothing a worker
/// wrote into its `CODEX_HOME` (a changed `config.toml`, a planted prompt) survives into the
/// next process. The home is removed when the launcher is dropped (when the pool stops).
pub struct SandboxLauncher {
    warden: PathBuf,
    settings: WorkerSettings,
    host: HostContext,
    name: String,
    key: Option<Arc<LockedSecret>>,
    state: Mutex<Homes>,
    recorder: Option<warden_session::Recorder>,
}

struct Homes {
    /// Prepared and not yet started.
    fresh: Option<PreparedWorker>,
    /// The home of the process started last.
    current: Option<WorkerHome>,
}

impl SandboxLauncher {
    /// Prepares worker `name` now (so a bad setting fails here, not at the first start) and
    /// returns the launcher with the startup warnings.
    pub fn new(
        warden: PathBuf,
        settings: WorkerSettings,
        host: HostContext,
        name: &str,
        key: Option<Arc<LockedSecret>>,
    ) -> Result<(SandboxLauncher, Vec<String>), WorkerError> {
        let prepared = crate::worker::prepare(&settings, &host, name)?;
        let warnings = prepared.warnings.clone();
        let state = Mutex::new(Homes { fresh: Some(prepared), current: None });
        Ok((SandboxLauncher { warden, settings, host, name: name.to_owned(), key, state, recorder: None }, warnings))
    }

    /// The workers' sessions' audit records are appended by `recorder` (the owner's log, e.g. on
    /// standard output) instead of by each session.
    pub fn with_recorder(mut self, recorder: warden_session::Recorder) -> SandboxLauncher {
        self.recorder = Some(recorder);
        self
    }

    /// The worker's home directory (of the process started last, or about to start).
    pub fn home(&self) -> Option<PathBuf> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.fresh
            .as_ref()
            .map(|p| p.home.path().to_path_buf())
            .or_else(|| st.current.as_ref().map(|h| h.path().to_path_buf()))
    }

    /// The spec of the next start: the fresh one, or the home prepared again.
    fn next_spec(&self) -> Result<SessionSpec, AgentError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let prepared = match st.fresh.take() {
            Some(p) => p,
            None => {
                // Dropping the old home removes it before the same path is prepared again.
                st.current = None;
                crate::worker::prepare(&self.settings, &self.host, &self.name)
                    .map_err(|e| AgentError::Protocol(format!("cannot prepare worker {}: {e}", self.name)))?
            }
        };
        st.current = Some(prepared.home);
        Ok(prepared.spec)
    }
}

impl Launcher for SandboxLauncher {
    fn launch(&self) -> LaunchFuture<'_> {
        Box::pin(async move {
            let spec = self.next_spec()?;
            let mut h = warden_session::spawn_recorded(&self.warden, spec, self.key.as_deref(), self.recorder.clone())
                .await
                .map_err(|e| AgentError::Protocol(format!("cannot start the worker: {e}")))?;
            if let Err(e) = h.started().await {
                let _ = h.kill(Duration::from_secs(1)).await;
                return Err(AgentError::Protocol(format!("the worker's sandbox did not start: {e}")));
            }
            let stdin: Option<BoxWrite> = h.stdin.take().map(|s| Box::new(s) as BoxWrite);
            let stdout: Option<BoxRead> = h.stdout.take().map(|s| Box::new(s) as BoxRead);
            let stderr: Option<BoxRead> = h.stderr.take().map(|s| Box::new(s) as BoxRead);
            Ok(WorkerProcess { stdin, stdout, stderr, control: Control::Session(h) })
        })
    }
}

/// Starts a plain command (argv only, an explicit environment): for tests of the supervision
/// with the testkit's fake worker. Production workers use [`SandboxLauncher`].
pub struct CommandLauncher {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
}

impl Launcher for CommandLauncher {
    fn launch(&self) -> LaunchFuture<'_> {
        Box::pin(async move {
            let Some((program, args)) = self.argv.split_first() else {
                return Err(AgentError::Protocol("no worker command".into()));
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .env_clear()
                .envs(self.env.iter().cloned())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn().map_err(|e| AgentError::Protocol(format!("cannot start {program}: {e}")))?;
            let stdin = child.stdin.take().map(|s| Box::new(s) as BoxWrite);
            let stdout = child.stdout.take().map(|s| Box::new(s) as BoxRead);
            let stderr = child.stderr.take().map(|s| Box::new(s) as BoxRead);
            Ok(WorkerProcess { stdin, stdout, stderr, control: Control::Child(child) })
        })
    }
}

/// Counters of one supervised worker (all generations).
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Turns started on it.
    pub turns: AtomicU64,
    /// Turns that ended in an error (of the worker or the connection).
    pub failures: AtomicU64,
    /// Restarts (a worker that ended or never came up).
    pub restarts: AtomicU64,
    /// Sum of turn durations, microseconds.
    pub latency_us_total: AtomicU64,
    /// Starts that timed out or failed before the worker was ready.
    pub failed_starts: AtomicU64,
    /// Workers ended because they were found broken ([`LiveWorker::recycle`]).
    pub recycled: AtomicU64,
}

/// A ready worker: initialized, serving.
#[derive(Debug)]
pub struct LiveWorker {
    /// Its connection.
    pub conn: Connection,
    /// Which start of its supervisor this is (1, 2, ...).
    pub generation: u64,
    /// The pid of the process warden started for it (`warden __session`, or the command).
    pub pid: Option<u32>,
    /// Turns it serves now.
    pub in_flight: AtomicUsize,
    /// The supervisor's counters.
    pub metrics: Arc<WorkerMetrics>,
    /// The supervisor's name.
    pub name: String,
    /// Turns in a row that went silent past their idle timeout.
    pub stuck_turns: std::sync::atomic::AtomicU32,
    recycle: std::sync::Weak<Shared>,
}

impl LiveWorker {
    /// Ends this worker now (no drain) because it was found broken (it violated the protocol,
    /// or it stopped making progress); its supervisor starts a new one after the backoff. A
    /// worker that was already replaced is left alone.
    pub fn recycle(&self) {
        if let Some(shared) = self.recycle.upgrade() {
            shared.recycle.send_if_modified(|g| {
                let newer = *g < self.generation;
                if newer {
                    *g = self.generation;
                }
                newer
            });
        }
    }
}

/// A bounded tail of bytes.
#[derive(Debug)]
struct Ring {
    cap: usize,
    bytes: VecDeque<u8>,
}

impl Ring {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let over = self.bytes.len().saturating_sub(self.cap);
        self.bytes.drain(..over);
    }
}

struct Shared {
    name: String,
    settings: SupervisorSettings,
    ready: watch::Sender<Option<Arc<LiveWorker>>>,
    stop: watch::Sender<bool>,
    /// The latest generation asked to be recycled.
    recycle: watch::Sender<u64>,
    live: AtomicBool,
    stderr: Mutex<Ring>,
    metrics: Arc<WorkerMetrics>,
    /// How the last process ended, or why the last start failed.
    last_exit: Mutex<Option<String>>,
}

/// Keeps one worker alive (see the module docs).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("name", &self.shared.name).field("live", &self.is_live()).finish()
    }
}

impl Supervisor {
    /// Starts supervising (on the current tokio runtime): the first worker starts at once.
    pub fn start(
        name: impl Into<String>,
        launcher: Arc<dyn Launcher>,
        handler: Arc<dyn ServerRequestHandler>,
        settings: SupervisorSettings,
    ) -> Supervisor {
        let shared = Arc::new(Shared {
            name: name.into(),
            stderr: Mutex::new(Ring { cap: settings.stderr_ring_bytes, bytes: VecDeque::new() }),
            settings,
            ready: watch::channel(None).0,
            stop: watch::channel(false).0,
            recycle: watch::channel(0).0,
            live: AtomicBool::new(true),
            metrics: Arc::new(WorkerMetrics::default()),
            last_exit: Mutex::new(None),
        });
        let task = tokio::spawn(run(shared.clone(), launcher, handler));
        Supervisor { shared, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// The ready worker, if one is.
    pub fn current(&self) -> Option<Arc<LiveWorker>> {
        self.shared.ready.borrow().clone()
    }

    /// Waits at most `timeout` for a ready worker.
    pub async fn ready(&self, timeout: Duration) -> Option<Arc<LiveWorker>> {
        let mut rx = self.shared.ready.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|w| w.is_some())).await;
        waited.ok().and_then(Result::ok).and_then(|w| w.clone())
    }

    /// A receiver that sees every change of the ready worker.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<LiveWorker>>> {
        self.shared.ready.subscribe()
    }

    /// False once the restart limit was hit (or after shutdown).
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its counters.
    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.shared.metrics
    }

    /// How its last process ended, or why its last start failed (`None`: none ended yet).
    pub fn last_exit(&self) -> Option<String> {
        self.shared.last_exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `ready` (serving), `stopped` (restart limit hit, or shut down), else `starting`.
    pub fn state(&self) -> &'static str {
        if !self.is_live() {
            "stopped"
        } else if self.current().is_some() {
            "ready"
        } else {
            "starting"
        }
    }

    /// The last bytes the worker wrote to stderr (lossy UTF-8).
    pub fn stderr_tail(&self) -> String {
        let ring = self.shared.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = ring.bytes.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Stops restarting, drains (waits up to the grace period for the turns in flight), ends the
    /// worker and waits for it.
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        self.shared.live.store(false, Ordering::SeqCst);
    }
}

/// A pseudo-random jitter in [0.5, 1.0) of `d` (xorshift seeded from the clock).
fn jittered(d: Duration, seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let frac = 0.5 + (*seed % 1000) as f64 / 2000.0;
    d.mul_f64(frac)
}

async fn run(shared: Arc<Shared>, launcher: Arc<dyn Launcher>, handler: Arc<dyn ServerRequestHandler>) {
    let s = &shared.settings;
    let mut stop = shared.stop.subscribe();
    let mut recycle = shared.recycle.subscribe();
    let mut backoff = s.backoff_initial;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let mut generation = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        generation += 1;
        let started = Instant::now();
        let outcome = start_one(&shared, &*launcher, handler.clone(), generation).await;
        let note = |what: String| *shared.last_exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        match outcome {
            Ok((worker, mut process)) => {
                shared.ready.send_replace(Some(worker.clone()));
                let ended = tokio::select! {
                    e = worker.conn.closed() => Some(e),
                    _ = recycle.wait_for(|g| *g >= generation) => {
                        shared.metrics.recycled.fetch_add(1, Ordering::SeqCst);
                        worker.conn.shutdown();
                        Some(AgentError::Protocol("recycled".into()))
                    }
                    _ = stop.wait_for(|s| *s) => None,
                };
                shared.ready.send_replace(None);
                if let Some(e) = &ended {
                    note(format!("generation {generation}: {e}"));
                }
                if ended.is_none() {
                    // Shutdown: let the turns in flight finish, within the grace period.
                    let drain = async {
                        while worker.in_flight.load(Ordering::SeqCst) > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    let _ = tokio::time::timeout(s.shutdown_grace, drain).await;
                    worker.conn.shutdown();
                    process.end(s.shutdown_grace).await;
                    break;
                }
                process.end(s.shutdown_grace).await;
                if started.elapsed() >= s.healthy_after {
                    backoff = s.backoff_initial;
                }
            }
            Err(e) => {
                note(format!("generation {generation} did not start: {e}"));
                shared.metrics.failed_starts.fetch_add(1, Ordering::SeqCst);
            }
        }
        // Restart, within the limit.
        shared.metrics.restarts.fetch_add(1, Ordering::SeqCst);
        let now = Instant::now();
        restarts.push_back(now);
        while restarts.front().is_some_and(|t| now.duration_since(*t) > s.restart_window) {
            restarts.pop_front();
        }
        if restarts.len() > s.restart_limit as usize {
            shared.live.store(false, Ordering::SeqCst);
            break;
        }
        let wait = jittered(backoff, &mut seed);
        backoff = (backoff * 2).min(s.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
}

/// Starts one worker and handshakes; on any failure the process is ended and waited for.
async fn start_one(
    shared: &Arc<Shared>,
    launcher: &dyn Launcher,
    handler: Arc<dyn ServerRequestHandler>,
    generation: u64,
) -> Result<(Arc<LiveWorker>, WorkerProcess), AgentError> {
    let s = &shared.settings;
    let mut process = tokio::time::timeout(s.startup_timeout, launcher.launch())
        .await
        .map_err(|_| AgentError::Timeout { method: "worker startup".into(), after: s.startup_timeout })??;
    let (Some(stdout), Some(stdin)) = (process.stdout.take(), process.stdin.take()) else {
        process.end(s.shutdown_grace).await;
        return Err(AgentError::Protocol("the worker has no piped stdin and stdout".into()));
    };
    if let Some(mut err) = process.stderr.take() {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                shared.stderr.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]);
            }
        });
    }
    let (conn, _reader) = Connection::new(stdout, stdin, handler, s.connection.clone());
    match conn.initialize(&ClientInfo::warden(), s.handshake_timeout).await {
        Ok(_) => {
            let worker = Arc::new(LiveWorker {
                conn,
                generation,
                pid: process.pid(),
                stuck_turns: std::sync::atomic::AtomicU32::new(0),
                recycle: Arc::downgrade(shared),
                in_flight: AtomicUsize::new(0),
                metrics: shared.metrics.clone(),
                name: shared.name.clone(),
            });
            Ok((worker, process))
        }
        Err(e) => {
            conn.shutdown();
            process.end(s.shutdown_grace).await;
            Err(e)
        }
    }
}
