//! `warden serve` on the testkit's fake worker, in one run (bench/serve.sh runs it):
//!
//!     cargo run --release -p warden-gateway --example serve_bench -- \
//!         --warden WARDEN --fake FAKE_WORKER --scratch DIR --home-base DIR [--turns N] \
//!         [--conns N] [--secs N] [--rps-workers N] [--rps-concurrency M] [--streams N] \
//!         [--stream-deltas N] [--delta-ms N] [--tries N] [--only overhead|rps|streams|disconnect]
//!
//! 1. **Overhead**: the same non-streamed chat turn, alternating, `--turns` times each after 100
//!    warm-ups: `Pool::turn` driven directly (thread/start, turn/start, every event, then
//!    `thread/unsubscribe` in the background, as the gateway does) next to a `POST
//!    /v1/chat/completions` through an in-process [`Gateway`] over the same pool, on one HTTP/1.1
//!    keep-alive connection on 127.0.0.1. The difference of the medians is the gateway's cost.
//! 2. **Requests per second**: `--conns` keep-alive connections each sending chat completions
//!    back to back for `--secs` seconds (after 1 s of warm-up), against the in-process gateway
//!    (plain fake workers) and against the real `warden serve` binary (fake workers in warden's
//!    sandbox), both `--rps-workers` x `--rps-concurrency`; any non-200 answer or I/O error
//!    counts as an error.
//! 3. **Concurrent streams**: `--streams` streamed chat completions opened at once against
//!    `warden serve --workers 4 --worker-concurrency 256`, whose fake worker sends
//!    `--stream-deltas` deltas `--delta-ms` apart (a wrapper script under `--scratch`, which must
//!    be visible inside the sandbox: not under /tmp or /var/tmp); every stream must end with
//!    `data: [DONE]` and no error. The `warden serve` process's VmRSS is sampled every 10 ms
//!    (and its VmHWM read at the end); the sum of its descendants' VmRSS every 100 ms; the
//!    kernel's count of connections dropped at a full accept queue (`TcpExt: ListenOverflows`)
//!    while the streams run.
//! 4. **Disconnect to interrupt**: a streamed turn on an in-process gateway whose fake worker
//!    runs with `--trace --fault slow-deltas --delta-ms 1000`; after the first content delta
//!    the client closes its connection, and the time until the worker's `fake-worker:
//!    turn/interrupt` trace line reaches the supervisor's stderr ring (polled every 100 µs
//!    from a blocking thread) is measured, `--tries` times; the same for a non-streamed
//!    request closed once its turn started.
//!
//! The driver raises no limit itself: run it with a `ulimit -n` above `--streams` + 100 (the
//! `warden serve` it starts inherits the limit). `warden serve` runs with `--no-auth` (so no
//! per-key limit applies: `key_concurrency` would refuse the 65th stream of one key) and
//! `--no-audit`; the in-process gateway has `warden serve`'s default settings and no audit log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_agent::approval::ApprovalMode;
use warden_agent::pool::{Pool, PoolSettings};
use warden_agent::rpc::RefuseAll;
use warden_agent::supervisor::{CommandLauncher, Launcher, SupervisorSettings};
use warden_agent::turn::{self, SandboxMode, ThreadParams, TurnEvent, TurnParams};
use warden_gateway::settings::ModelEntry;
use warden_gateway::{Gateway, GatewaySettings};
use warden_session::{NullEvents, Recorder};

struct Args {
    warden: PathBuf,
    fake: PathBuf,
    scratch: PathBuf,
    home_base: PathBuf,
    turns: usize,
    conns: usize,
    secs: u64,
    rps_workers: usize,
    rps_concurrency: usize,
    streams: usize,
    stream_deltas: usize,
    delta_ms: u64,
    tries: usize,
    only: Option<String>,
}

const USAGE: &str = "usage: serve_bench --warden WARDEN --fake FAKE_WORKER --scratch DIR --home-base DIR [--turns N] \
[--conns N] [--secs N] [--rps-workers N] [--rps-concurrency M] [--streams N] [--stream-deltas N] [--delta-ms N] [--tries N] \
[--only overhead|rps|streams|disconnect]";

/// The parts of a run, in order (`--only` picks one).
const SECTIONS: &[&str] = &["overhead", "rps", "streams", "disconnect"];

fn parse() -> Args {
    let mut a = Args {
        warden: PathBuf::new(),
        fake: PathBuf::new(),
        scratch: PathBuf::new(),
        home_base: PathBuf::new(),
        turns: 2000,
        conns: 64,
        secs: 10,
        rps_workers: 2,
        rps_concurrency: 4,
        streams: 1000,
        stream_deltas: 10,
        delta_ms: 200,
        tries: 20,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
        let n = || v.parse::<usize>().unwrap_or_else(|_| usage(&format!("{k} needs a number")));
        match k.as_str() {
            "--warden" => a.warden = v.into(),
            "--fake" => a.fake = v.into(),
            "--scratch" => a.scratch = v.into(),
            "--home-base" => a.home_base = v.into(),
            "--turns" => a.turns = n(),
            "--conns" => a.conns = n().max(1),
            "--secs" => a.secs = n().max(1) as u64,
            "--rps-workers" => a.rps_workers = n().max(1),
            "--rps-concurrency" => a.rps_concurrency = n().max(1),
            "--streams" => a.streams = n().max(1),
            "--stream-deltas" => a.stream_deltas = n().max(1),
            "--delta-ms" => a.delta_ms = n() as u64,
            "--tries" => a.tries = n().max(1),
            "--only" if SECTIONS.contains(&v.as_str()) => a.only = Some(v),
            _ => usage(&format!("unknown option {k}")),
        }
    }
    let required =
        [("--warden", &a.warden), ("--fake", &a.fake), ("--scratch", &a.scratch), ("--home-base", &a.home_base)];
    if let Some((name, _)) = required.iter().find(|(_, p)| p.as_os_str().is_empty()) {
        usage(&format!("{name} is required"));
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("serve_bench: {why}\n{USAGE}");
    std::process::exit(2);
}

/// A sample's p50, p99 and maximum, in milliseconds (zeros when empty).
#[derive(Debug, Clone, Copy, Default)]
struct Dist {
    p50: f64,
    p99: f64,
    max: f64,
    n: usize,
}

impl Dist {
    fn of(mut v: Vec<Duration>) -> Dist {
        v.sort_unstable();
        let Some(last) = v.len().checked_sub(1) else { return Dist::default() };
        let at = |q: f64| v[(last as f64 * q).round() as usize].as_secs_f64() * 1e3;
        Dist { p50: at(0.5), p99: at(0.99), max: at(1.0), n: v.len() }
    }

    /// Prints it on one line and returns it.
    fn print(self, label: &str) -> Dist {
        println!(
            "  {label:<46} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n={})",
            self.p50, self.p99, self.max, self.n
        );
        self
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: keep-alive, Content-Length or chunked answers.

const CHAT: &str = r#"{"model":"codex","messages":[{"role":"user","content":"hello there"}]}"#;
const CHAT_STREAM: &str = r#"{"model":"codex","stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;

struct Http {
    s: TcpStream,
    buf: Vec<u8>,
}

fn io_err(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Http {
    async fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Http { s, buf: Vec::with_capacity(16 << 10) })
    }

    async fn post(&mut self, path: &str, body: &str) -> std::io::Result<()> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).await
    }

    /// Reads more bytes into the buffer; EOF is an error.
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The status and whether the body is chunked (else its length).
    async fn head(&mut self) -> std::io::Result<(u16, Option<usize>)> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > 64 << 10 {
                return Err(io_err("a response head of more than 64 KiB"));
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end + 4);
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| io_err("no status line"))?;
        let mut length = None;
        for l in lines {
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            }
        }
        Ok((status, length))
    }

    /// The body: `length` bytes, or chunks (each passed to `on_chunk`, which may stop early by
    /// returning false) up to the last one.
    async fn body(
        &mut self,
        length: Option<usize>,
        mut on_chunk: impl FnMut(&[u8]) -> bool,
    ) -> std::io::Result<Vec<u8>> {
        if let Some(n) = length {
            while self.buf.len() < n {
                self.fill().await?;
            }
            let rest = self.buf.split_off(n);
            return Ok(std::mem::replace(&mut self.buf, rest));
        }
        let mut out = Vec::new();
        loop {
            let nl = loop {
                if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                self.fill().await?;
            };
            let size = std::str::from_utf8(&self.buf[..nl])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| io_err("a bad chunk size"))?;
            if size == 0 {
                while self.buf.len() < nl + 4 {
                    self.fill().await?;
                }
                self.buf.drain(..nl + 4);
                return Ok(out);
            }
            while self.buf.len() < nl + 2 + size + 2 {
                self.fill().await?;
            }
            let chunk = &self.buf[nl + 2..nl + 2 + size];
            out.extend_from_slice(chunk);
            let go_on = on_chunk(chunk);
            self.buf.drain(..nl + 2 + size + 2);
            if !go_on {
                return Ok(out);
            }
        }
    }

    /// One non-streamed chat completion: the status and the body.
    async fn chat(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        self.post("/v1/chat/completions", CHAT).await?;
        let (status, length) = self.head().await?;
        let body = self.body(length, |_| true).await?;
        Ok((status, body))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The in-process gateway over plain fake workers.

fn pool_settings(workers: usize, per_worker: usize) -> PoolSettings {
    PoolSettings {
        workers,
        per_worker,
        queue: 256,
        queue_timeout: Duration::from_secs(30),
        // A ring large enough for every trace line of the disconnect runs.
        supervisor: SupervisorSettings { stderr_ring_bytes: 4 << 20, ..SupervisorSettings::default() },
    }
}

fn fake_pool(fake: &Path, args: &[&str], ps: PoolSettings) -> Pool {
    let mut argv = vec![fake.display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Pool::start(
        ps,
        move |_| Arc::new(CommandLauncher { argv: argv.clone(), env: vec![] }) as Arc<dyn Launcher>,
        Arc::new(RefuseAll),
    )
}

/// `warden serve`'s defaults, but plain workers.
fn gateway_settings() -> GatewaySettings {
    GatewaySettings {
        models: vec![ModelEntry { id: "codex".into(), codex_model: None, effort: None }],
        max_body_bytes: 16 << 20,
        max_streams: 4096,
        timeout: Duration::from_secs(300),
        request_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(15),
        sse_keepalive: Duration::from_secs(15),
        cors_origins: vec![],
        thread_ttl: Duration::from_secs(3600),
        max_threads: 10_000,
        shutdown_grace: Duration::from_secs(5),
        cwd: PathBuf::from("/"),
        approval: ApprovalMode::Never,
        profile: "none (plain fake workers)".into(),
        sandbox_mode: "danger-full-access".into(),
        credential: "none".into(),
    }
}

struct InProcess {
    addr: SocketAddr,
    gateway: Gateway,
    /// Notified once: the gateway drains and stops its pool.
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    async fn start(pool: Pool) -> InProcess {
        for s in pool.supervisors() {
            s.ready(Duration::from_secs(10)).await.expect("a fake worker ready within 10 s");
        }
        let gateway = Gateway::new(gateway_settings(), pool, None, Recorder::disabled(Arc::new(NullEvents)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the listener's address");
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (gw, stopped) = (gateway.clone(), stop.clone().notified_owned());
            async move { gw.serve(listener, stopped).await }
        });
        InProcess { addr, gateway, stop, task }
    }

    async fn stop(self) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// What the gateway starts for a new conversation.
fn thread_params() -> ThreadParams {
    ThreadParams {
        cwd: "/".into(),
        sandbox: SandboxMode::DangerFullAccess,
        approval_policy: ApprovalMode::Never,
        developer_instructions: None,
        model: None,
        ephemeral: true,
    }
}

/// One turn through `Pool::turn`, to its `turn/completed`; the thread unsubscribed in the
/// background, as the gateway does.
async fn pool_turn(pool: &Pool) -> Duration {
    let t = Instant::now();
    let params = TurnParams { idle_timeout: Duration::from_secs(15), ..TurnParams::text("hello there") };
    let mut pt = pool.turn(&thread_params(), params).await.expect("a pool turn");
    // Bounded: a fake turn has a handful of events.
    for _ in 0..10_000 {
        match pt.next().await {
            Some(Ok(TurnEvent::Completed { .. })) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the pool turn failed: {e}"),
            None => panic!("the pool turn ended before turn/completed"),
        }
    }
    let d = t.elapsed();
    let (worker, thread) = (pt.worker.clone(), pt.stream.thread_id().clone());
    drop(pt);
    tokio::spawn(async move {
        let _ = turn::unsubscribe(&worker.conn, &thread).await;
    });
    d
}

async fn gateway_turn(c: &mut Http) -> Duration {
    let t = Instant::now();
    let (status, body) = c.chat().await.expect("a chat completion through the gateway");
    let d = t.elapsed();
    assert!(status == 200 && contains(&body, b"You said"), "{status}: {}", String::from_utf8_lossy(&body));
    d
}

struct Summary(Vec<String>);

impl Summary {
    fn line(&mut self, s: String) {
        self.0.push(s);
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

async fn overhead(a: &Args, sum: &mut Summary) {
    println!("1. overhead: the same non-streamed fake turn, Pool::turn directly vs through the gateway (HTTP/1.1 keep-alive), alternating, after 100 warm-ups");
    let srv = InProcess::start(fake_pool(&a.fake, &[], pool_settings(1, 4))).await;
    let pool = srv.gateway.pool().clone();
    let mut c = Http::connect(srv.addr).await.expect("connect to the gateway");
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for i in 0..a.turns + 100 {
        let (d, g) = if i % 2 == 0 {
            let d = pool_turn(&pool).await;
            (d, gateway_turn(&mut c).await)
        } else {
            let g = gateway_turn(&mut c).await;
            (pool_turn(&pool).await, g)
        };
        if i >= 100 {
            direct.push(d);
            through.push(g);
        }
    }
    let d = Dist::of(direct).print("Pool::turn directly");
    let g = Dist::of(through).print("through the gateway");
    let (add50, add99) = (g.p50 - d.p50, g.p99 - d.p99);
    println!("  the gateway adds {add50:+.3} ms at p50, {add99:+.3} ms at p99");
    sum.line(format!(
        "overhead p50 {add50:+.3} ms, p99 {add99:+.3} ms (direct {:.3}/{:.3} ms, gateway {:.3}/{:.3} ms; goal p50 < 1 ms: {})",
        d.p50,
        d.p99,
        g.p50,
        g.p99,
        met(add50 < 1.0)
    ));
    drop(c);
    srv.stop().await;
}

/// What a load run measured.
struct Load {
    rps: f64,
    errors: u64,
    latency: Dist,
    first_error: Option<String>,
}

/// Load for `secs` after 1 s of warm-up.
async fn load(label: &str, addr: SocketAddr, conns: usize, secs: u64) -> Load {
    let t0 = Instant::now();
    let (from, until) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(1 + secs));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (errors, first_error) = (errors.clone(), first_error.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let fail = |e: String| {
                if Instant::now() >= from {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
            };
            let mut conn: Option<Http> = None;
            while Instant::now() < until {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Http::connect(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            fail(format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let t = Instant::now();
                match c.chat().await {
                    Ok((200, body)) if contains(&body, b"You said") => {
                        if t >= from && Instant::now() <= until {
                            lat.push(t.elapsed());
                        }
                    }
                    Ok((status, body)) => fail(format!("status {status}: {}", String::from_utf8_lossy(&body))),
                    Err(e) => {
                        fail(format!("{e}"));
                        conn = None;
                    }
                }
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("a load connection"));
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let l = Load {
        rps: all.len() as f64 / secs as f64,
        errors: errors.load(Ordering::Relaxed),
        latency: Dist::of(all),
        first_error,
    };
    println!(
        "  {label:<46} {:>8.0} req/s  errors {}  latency p50 {:.3} ms  p99 {:.3} ms",
        l.rps, l.errors, l.latency.p50, l.latency.p99
    );
    if let Some(e) = &l.first_error {
        println!("    first error: {e}");
    }
    l
}

// ---------------------------------------------------------------------------------------------
// The real `warden serve`.

const MODEL_KEY_VAR: &str = "WARDEN_BENCH_MODEL_KEY";

struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// `warden serve --no-auth --no-audit` on 127.0.0.1:0 with `args`; waits for its "serving"
    /// line (60 s) and for `/readyz` (60 s).
    async fn start(a: &Args, args: &[&str]) -> Serve {
        let mut cmd = Command::new(&a.warden);
        cmd.arg("serve")
            .args(["--no-auth", "--no-audit", "--listen", "127.0.0.1:0", "--credential-env", MODEL_KEY_VAR])
            .arg("--worker-home")
            .arg(&a.home_base)
            .args(args)
            .env(MODEL_KEY_VAR, "sk-bench-dummy-0123456789abcdef0123456789")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn warden serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("serve's stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("warden: serving http://").and_then(|r| r.split('/').next()) {
                    if let Ok(addr) = addr.parse() {
                        let _ = tx.send(addr);
                    }
                }
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                if s.len() < 1 << 20 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("warden serve did not start within 60 s: {}", stderr.lock().unwrap_or_else(|p| p.into_inner()))
        });
        let s = Serve { child, addr, stderr };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = async {
                let mut c = Http::connect(s.addr).await.ok()?;
                c.s.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\n\r\n").await.ok()?;
                let (status, length) = c.head().await.ok()?;
                c.body(length, |_| true).await.ok()?;
                Some(status)
            };
            if ready.await == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "warden serve not ready within 60 s: {}", s.stderr_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGTERM, then its exit within 30 s.
    async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("serve_bench: warden serve did not stop within 30 s of SIGTERM; killing it");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` (or another `/proc/PID/status` field) in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// The sum of `VmRSS` over every descendant of `pid` (shared pages count in each).
fn descendants_rss_kib(pid: u32) -> (usize, u64) {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // The fields after the command's closing parenthesis: state, ppid, ...
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(pp) = ppid {
            parent_of.push((p, pp));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    let kids = &tree[1..];
    (kids.len(), kids.iter().filter_map(|p| status_kib(*p, "VmRSS:")).sum())
}

/// `TcpExt: ListenOverflows` and `ListenDrops` of this network namespace (SYNs dropped because
/// an accept queue was full: the client retries after 1 s).
fn listen_drops() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else { return (0, 0) };
    let field = |name: &str| {
        let i = names.split_whitespace().position(|n| n == name)?;
        values.split_whitespace().nth(i)?.parse().ok()
    };
    (field("ListenOverflows").unwrap_or(0), field("ListenDrops").unwrap_or(0))
}

async fn rps(a: &Args, sum: &mut Summary) {
    println!(
        "2. requests per second: {} keep-alive connections, non-streamed chat completions back to back for {} s after 1 s of warm-up, pool {} workers x {} turns",
        a.conns, a.secs, a.rps_workers, a.rps_concurrency
    );
    let srv = InProcess::start(fake_pool(&a.fake, &[], pool_settings(a.rps_workers, a.rps_concurrency))).await;
    let inproc = load("in-process gateway, plain fake workers", srv.addr, a.conns, a.secs).await;
    srv.stop().await;
    let (w, c) = (a.rps_workers.to_string(), a.rps_concurrency.to_string());
    let fake = a.fake.display().to_string();
    let serve = Serve::start(a, &["--codex-bin", &fake, "--workers", &w, "--worker-concurrency", &c]).await;
    let real = load("warden serve, fake workers in the sandbox", serve.addr, a.conns, a.secs).await;
    serve.stop().await;
    for (label, r) in [("in-process", &inproc), ("warden serve (sandboxed workers)", &real)] {
        sum.line(format!(
            "requests/s {label}: {:.0} req/s, {} errors, p50 {:.2} ms, p99 {:.2} ms ({} conns, {w}x{c}; goal >= 2000 req/s and 0 errors: {})",
            r.rps,
            r.errors,
            r.latency.p50,
            r.latency.p99,
            a.conns,
            met(r.rps >= 2000.0 && r.errors == 0)
        ));
    }
}

/// The fake worker with slow deltas, as a Codex binary `warden serve` can run in the sandbox.
fn slow_wrapper(a: &Args) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&a.scratch).expect("the scratch directory");
    let path = a.scratch.join("fake-worker-slow");
    let deltas: String = (0..a.stream_deltas).map(|i| format!(" --delta 'tok{i} '")).collect();
    let script = format!(
        "#!/bin/sh\nexec '{}' --fault slow-deltas --delta-ms {}{deltas} \"$@\"\n",
        a.fake.display(),
        a.delta_ms
    );
    std::fs::write(&path, script).expect("write the wrapper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the wrapper");
    path
}

async fn streams(a: &Args, sum: &mut Summary) {
    let turn_ms = (a.stream_deltas.saturating_sub(1) as u64) * a.delta_ms;
    println!(
        "3. {} concurrent SSE streams: warden serve --workers 4 --worker-concurrency 256, the fake worker's {} deltas {} ms apart (~{turn_ms} ms a turn)",
        a.streams, a.stream_deltas, a.delta_ms
    );
    let wrapper = slow_wrapper(a).display().to_string();
    let serve = Serve::start(a, &["--codex-bin", &wrapper, "--workers", "4", "--worker-concurrency", "256"]).await;
    let pid = serve.pid();
    let idle_rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let (idle_kids, idle_kids_rss) = descendants_rss_kib(pid);
    let open = Arc::new(AtomicUsize::new(0));
    let peak_open = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (open, done) = (open.clone(), done.clone());
        tokio::spawn(async move {
            let (mut peak, mut peak_kids, mut kids_n, mut rss_at_peak_open) = (0u64, 0u64, 0usize, (0usize, 0u64));
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let stop = done.notified();
            tokio::pin!(stop);
            for i in 0u64.. {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tick.tick() => {}
                }
                let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
                peak = peak.max(rss);
                let n = open.load(Ordering::Relaxed);
                if n >= rss_at_peak_open.0 {
                    rss_at_peak_open = (n, rss);
                }
                if i % 10 == 0 {
                    let (k, r) = descendants_rss_kib(pid);
                    if r > peak_kids {
                        (peak_kids, kids_n) = (r, k);
                    }
                }
            }
            (peak, peak_kids, kids_n, rss_at_peak_open)
        })
    };
    let drops_before = listen_drops();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.streams {
        let (open, peak_open, addr) = (open.clone(), peak_open.clone(), serve.addr);
        set.spawn(async move {
            let t = Instant::now();
            let run = async {
                let mut c = Http::connect(addr).await?;
                c.post("/v1/chat/completions", CHAT_STREAM).await?;
                let (status, length) = c.head().await?;
                let first = t.elapsed();
                let n = open.fetch_add(1, Ordering::SeqCst) + 1;
                peak_open.fetch_max(n, Ordering::SeqCst);
                let body = c.body(length, |_| true).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let body = body?;
                let ok = status == 200 && contains(&body, b"data: [DONE]") && !contains(&body, b"\"error\"");
                if ok {
                    Ok((first, t.elapsed()))
                } else {
                    Err(io_err(&format!("status {status}: {}", String::from_utf8_lossy(&body))))
                }
            };
            tokio::time::timeout(Duration::from_secs(120), run)
                .await
                .unwrap_or_else(|_| Err(io_err("no end within 120 s")))
        });
    }
    let (mut firsts, mut totals, mut errors, mut first_error) = (Vec::new(), Vec::new(), 0usize, None);
    while let Some(r) = set.join_next().await {
        match r.expect("a stream task") {
            Ok((f, t)) => {
                firsts.push(f);
                totals.push(t);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let wall = t0.elapsed();
    let drops_after = listen_drops();
    let overflows = drops_after.0.saturating_sub(drops_before.0);
    done.notify_one();
    let (peak, peak_kids, kids_n, (open_at, rss_at)) = sampler.await.expect("the sampler");
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "  completed with [DONE] {} of {}, errors {errors}, all done in {:.2} s, at most {} streams open at once",
        totals.len(),
        a.streams,
        wall.as_secs_f64(),
        peak_open.load(Ordering::SeqCst)
    );
    if let Some(e) = &first_error {
        println!("    first error: {e}");
    }
    println!(
        "  accept queue overflows meanwhile (TcpExt ListenOverflows, ListenDrops): {overflows}, {}",
        drops_after.1.saturating_sub(drops_before.1)
    );
    let late = firsts.iter().filter(|d| **d >= Duration::from_secs(1)).count();
    println!("  streams whose response head came after 1 s: {late}");
    let completed = totals.len();
    Dist::of(firsts).print("time to the response head");
    Dist::of(totals).print("whole stream");
    println!(
        "  warden serve RSS: idle {:.1} MiB, peak {:.1} MiB sampled ({:.1} MiB with {open_at} open), VmHWM {:.1} MiB",
        mib(idle_rss),
        mib(peak),
        mib(rss_at),
        mib(hwm)
    );
    println!(
        "  its descendants (sum of VmRSS, shared pages in each): idle {:.1} MiB in {idle_kids} processes, peak {:.1} MiB in {kids_n}",
        mib(idle_kids_rss),
        mib(peak_kids)
    );
    let ok = errors == 0 && completed == a.streams;
    sum.line(format!(
        "{} concurrent SSE streams: {} completed, {errors} errors, at most {} open at once; warden serve peak RSS {:.1} MiB (VmHWM {:.1} MiB), descendants {:.1} MiB, {overflows} SYNs dropped at a full accept queue (goal: no error, RSS < 200 MB: {})",
        a.streams,
        completed,
        peak_open.load(Ordering::SeqCst),
        mib(peak),
        mib(hwm),
        mib(peak_kids),
        met(ok && (hwm.max(peak) * 1024) < 200_000_000)
    ));
    serve.stop().await;
}

fn interrupts_seen(pool: &Pool) -> usize {
    pool.supervisors().iter().map(|s| s.stderr_tail().matches("fake-worker: turn/interrupt").count()).sum()
}

fn turn_starts_seen(pool: &Pool) -> usize {
    pool.supervisors().iter().map(|s| s.stderr_tail().matches("fake-worker: turn/start").count()).sum()
}

/// Polls (every 100 µs, on a blocking thread) until `pred`; when it held, or `None` after 5 s.
async fn poll_until(pool: &Pool, pred: impl Fn(&Pool) -> bool + Send + 'static) -> Option<Instant> {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if pred(&pool) {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        None
    })
    .await
    .expect("the poller")
}

async fn disconnect(a: &Args, sum: &mut Summary) {
    println!(
        "4. disconnect to turn/interrupt at the worker (fake worker --trace --fault slow-deltas --delta-ms 1000), {} tries each after 2 warm-ups",
        a.tries
    );
    let args = ["--trace", "--fault", "slow-deltas", "--delta-ms", "1000"];
    let srv = InProcess::start(fake_pool(&a.fake, &args, pool_settings(1, 4))).await;
    let pool = srv.gateway.pool().clone();
    for stream in [true, false] {
        let (mut lat, mut missed) = (Vec::new(), 0);
        for i in 0..a.tries + 2 {
            let starts = turn_starts_seen(&pool);
            let mut c = Http::connect(srv.addr).await.expect("connect to the gateway");
            c.post("/v1/chat/completions", if stream { CHAT_STREAM } else { CHAT }).await.expect("send");
            if stream {
                let (status, length) = c.head().await.expect("the stream's head");
                assert_eq!(status, 200);
                let mut seen = Vec::new();
                c.body(length, |chunk| {
                    seen.extend_from_slice(chunk);
                    !contains(&seen, b"You said")
                })
                .await
                .expect("the first delta");
            } else {
                poll_until(&pool, move |p| turn_starts_seen(p) > starts).await.expect("the turn started");
                // The first delta is out (the next is 1 s away).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let before = interrupts_seen(&pool);
            let t0 = Instant::now();
            drop(c);
            match poll_until(&pool, move |p| interrupts_seen(p) > before).await {
                Some(t1) if i >= 2 => lat.push(t1 - t0),
                Some(_) => {}
                None => missed += 1,
            }
            // Let the interrupted turn end before the next.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let label = if stream { "streamed (SSE)" } else { "non-streamed (JSON)" };
        if missed > 0 {
            println!("  {label}: no turn/interrupt within 5 s in {missed} tries");
        }
        let d = Dist::of(lat).print(label);
        sum.line(format!(
            "disconnect to interrupt, {label}: p50 {:.2} ms, max {:.2} ms, {} of {} tries without an interrupt within 5 s (goal < 100 ms: {})",
            d.p50,
            d.max,
            missed,
            a.tries + 2,
            met(missed == 0 && d.n > 0 && d.max < 100.0)
        ));
    }
    srv.stop().await;
}

fn main() {
    let a = parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    rt.block_on(async {
        let mut sum = Summary(Vec::new());
        let run = |s: &str| a.only.as_deref().is_none_or(|o| o == s);
        if run("overhead") {
            overhead(&a, &mut sum).await;
        }
        if run("rps") {
            rps(&a, &mut sum).await;
        }
        if run("streams") {
            streams(&a, &mut sum).await;
        }
        if run("disconnect") {
            disconnect(&a, &mut sum).await;
        }
        println!("\nsummary");
        for l in &sum.0 {
            println!("  {l}");
        }
    });
}
