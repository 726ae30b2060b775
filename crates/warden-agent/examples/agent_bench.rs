//! Worker cold start and pool turn overhead, in one process, alternating, so both sides of each
//! comparison see the same machine state (bench/agent.sh runs it).
//!
//!     cargo run --release -p warden-agent --example agent_bench -- \
//!         --warden WARDEN --fake FAKE_WORKER [--codex CODEX] --home-base DIR [--runs N] [--turns N]
//!
//! 1. **Cold start** (spawn until `initialize` answered), one worker at a time: the worker bare
//!    (a plain child, `CODEX_HOME` set up by `worker::prepare`) next to the same worker inside
//!    warden's sandbox (`worker::prepare`'s spec through `warden_session::spawn`, with its
//!    credential proxy and a dummy key, no audit log).
//!    For the fake worker and, with `--codex`, real Codex 0.169.0.
//! 2. **8 in parallel**: 8 sandboxed workers started at once, until all 8 answered.
//! 3. **Turn overhead**: `thread/start` + `turn/start` + every event of the turn, driving one fake
//!    worker's connection directly, next to the same through a `Pool` (1 worker, its spare) over
//!    the same kind of process, alternating. The difference of the medians is the pool's cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden_agent::approval::ApprovalMode;
use warden_session::LockedSecret;

use warden_agent::pool::{Pool, PoolSettings};
use warden_agent::rpc::{ClientInfo, Connection, ConnectionOptions, RefuseAll};
use warden_agent::supervisor::{CommandLauncher, Launcher};
use warden_agent::turn::{self, SandboxMode, ThreadParams, TurnParams, TurnStream};
use warden_agent::worker::{self, PreparedWorker, WorkerSettings};

struct Args {
    warden: PathBuf,
    fake: PathBuf,
    codex: Option<PathBuf>,
    home_base: PathBuf,
    runs: usize,
    turns: usize,
}

fn parse() -> Args {
    let mut a = Args {
        warden: PathBuf::new(),
        fake: PathBuf::new(),
        codex: None,
        home_base: PathBuf::new(),
        runs: 30,
        turns: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
        match k.as_str() {
            "--warden" => a.warden = v.into(),
            "--fake" => a.fake = v.into(),
            "--codex" => a.codex = Some(v.into()),
            "--home-base" => a.home_base = v.into(),
            "--runs" => a.runs = v.parse().unwrap_or_else(|_| usage("--runs needs a number")),
            "--turns" => a.turns = v.parse().unwrap_or_else(|_| usage("--turns needs a number")),
            _ => usage(&format!("unknown option {k}")),
        }
    }
    if a.warden.as_os_str().is_empty() || a.fake.as_os_str().is_empty() || a.home_base.as_os_str().is_empty() {
        usage("--warden, --fake and --home-base are required");
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("agent_bench: {why}\nusage: agent_bench --warden WARDEN --fake FAKE_WORKER [--codex CODEX] --home-base DIR [--runs N] [--turns N]");
    std::process::exit(2);
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(label: &str, v: &mut [Duration]) -> Duration {
    let (p50, p90) = (quantile(v, 0.5), quantile(v, 0.9));
    println!("  {label:<44} median {:>8.3} ms  p90 {:>8.3} ms  (n={})", ms(p50), ms(p90), v.len());
    p50
}

fn settings(bin: &Path, base: &Path) -> WorkerSettings {
    WorkerSettings {
        model: Some("bench-model".into()),
        approval_policy: "never".into(),
        base_options: warden_policy::PolicyOptions { no_audit: true, ..Default::default() },
        ..WorkerSettings::new(bin, base, "http://127.0.0.1:9/v1/responses")
    }
}

/// A prepared worker for `bin` (the fake worker takes no `app-server` argument).
fn prepare(a: &Args, bin: &Path, fake: bool, name: &str) -> PreparedWorker {
    let host = warden_policy::HostContext::from_process().expect("cwd");
    let mut p = worker::prepare(&settings(bin, &a.home_base), &host, name).expect("prepare the worker");
    if fake {
        p.spec.argv = vec![bin.display().to_string()];
    }
    p
}

fn options() -> ConnectionOptions {
    ConnectionOptions { request_timeout: Duration::from_secs(30), ..ConnectionOptions::default() }
}

async fn initialize(conn: &Connection) {
    conn.initialize(&ClientInfo::warden(), Duration::from_secs(30)).await.expect("initialize");
}

/// Spawn until `initialize` answered, bare: the worker as a plain child.
async fn cold_bare(p: &PreparedWorker) -> Duration {
    let t = Instant::now();
    let mut cmd = tokio::process::Command::new(&p.spec.argv[0]);
    cmd.args(&p.spec.argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", p.home.path())
        .env("CODEX_HOME", p.home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn the bare worker");
    let (stdout, stdin) = (child.stdout.take().expect("stdout"), child.stdin.take().expect("stdin"));
    let (conn, _reader) = Connection::new(stdout, stdin, Arc::new(RefuseAll), options());
    initialize(&conn).await;
    let d = t.elapsed();
    conn.shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    d
}

/// Spawn until `initialize` answered, inside warden's sandbox.
async fn cold_sandboxed(warden: PathBuf, spec: warden_session::SessionSpec, key: Arc<LockedSecret>) -> Duration {
    let t = Instant::now();
    let mut h = warden_session::spawn(&warden, spec, Some(&key)).await.expect("spawn the sandboxed worker");
    let (stdout, stdin) = (h.stdout.take().expect("stdout"), h.stdin.take().expect("stdin"));
    let (conn, _reader) = Connection::new(stdout, stdin, Arc::new(RefuseAll), options());
    initialize(&conn).await;
    let d = t.elapsed();
    conn.shutdown();
    let _ = h.kill(Duration::from_secs(5)).await;
    d
}

fn thread_params() -> ThreadParams {
    ThreadParams {
        cwd: "/".into(),
        sandbox: SandboxMode::ReadOnly,
        approval_policy: ApprovalMode::Never,
        developer_instructions: None,
        model: None,
        ephemeral: true,
    }
}

async fn drain(next: impl AsyncFnMut() -> Option<Result<turn::TurnEvent, warden_agent::AgentError>>) {
    let mut next = next;
    for _ in 0..10_000 {
        match next().await {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the turn failed: {e}"),
            None => return,
        }
    }
    panic!("a turn of more than 10000 events");
}

async fn direct_turn(conn: &Connection, text: &str) -> Duration {
    let t = Instant::now();
    let tid = turn::start_thread(conn, &thread_params()).await.expect("thread/start");
    let mut s: TurnStream = turn::start_turn(conn, &tid, TurnParams::text(text)).await.expect("turn/start");
    drain(async || s.next().await).await;
    t.elapsed()
}

async fn pool_turn(pool: &Pool, text: &str) -> Duration {
    let t = Instant::now();
    let mut pt = pool.turn(&thread_params(), TurnParams::text(text)).await.expect("pool turn");
    drain(async || pt.next().await).await;
    drop(pt);
    t.elapsed()
}

fn main() {
    let a = parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // A dummy key: the credential proxy runs in each sandboxed worker as in production, and
    // nothing in these runs talks to a model.
    let key = Arc::new(LockedSecret::from_bytes(b"sk-bench-0123456789abcdef").expect("a locked key"));
    rt.block_on(async {
        let mut kinds: Vec<(&str, PathBuf, bool)> = vec![("fake worker", a.fake.clone(), true)];
        if let Some(c) = &a.codex {
            kinds.push(("codex app-server 0.169.0", c.clone(), false));
        }
        println!("cold start: spawn until `initialize` answered, alternating, after 3 warm-ups each");
        for (label, bin, fake) in &kinds {
            let p = prepare(&a, bin, *fake, "cold");
            let (mut bare, mut boxed) = (Vec::new(), Vec::new());
            for i in 0..a.runs + 3 {
                let (b, s) = (cold_bare(&p).await, cold_sandboxed(a.warden.clone(), p.spec.clone(), key.clone()).await);
                if i >= 3 {
                    bare.push(b);
                    boxed.push(s);
                }
            }
            println!(" {label}");
            let mb = report("bare", &mut bare);
            let ms_ = report("inside warden's sandbox", &mut boxed);
            println!("  the sandbox adds {:+.2} ms to the median (goal < 10 ms)", ms(ms_) - ms(mb));
        }
        println!("8 sandboxed workers started at once, until all 8 answered `initialize`");
        for (label, bin, fake) in &kinds {
            let prepared: Vec<PreparedWorker> = (0..8).map(|i| prepare(&a, bin, *fake, &format!("par{i}"))).collect();
            let mut all = Vec::new();
            for i in 0..(a.runs / 3).max(5) + 1 {
                let t = Instant::now();
                let mut set = tokio::task::JoinSet::new();
                for p in &prepared {
                    set.spawn(cold_sandboxed(a.warden.clone(), p.spec.clone(), key.clone()));
                }
                while let Some(r) = set.join_next().await {
                    r.expect("a worker start");
                }
                if i >= 1 {
                    all.push(t.elapsed());
                }
            }
            report(&format!("{label}: all 8 ready"), &mut all);
        }
        println!("turn overhead: thread/start + turn/start + every event, fake worker, alternating");
        let launcher = {
            let fake = a.fake.display().to_string();
            move |_| Arc::new(CommandLauncher { argv: vec![fake.clone()], env: vec![] }) as Arc<dyn Launcher>
        };
        let ps = PoolSettings { workers: 1, per_worker: 1, queue: 1, ..PoolSettings::default() };
        let pool = Pool::start(ps, launcher, Arc::new(RefuseAll));
        for s in pool.supervisors() {
            s.ready(Duration::from_secs(10)).await.expect("a pool worker ready");
        }
        let mut child = tokio::process::Command::new(&a.fake)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the direct worker");
        let (stdout, stdin) = (child.stdout.take().expect("stdout"), child.stdin.take().expect("stdin"));
        let (conn, _reader) = Connection::new(stdout, stdin, Arc::new(RefuseAll), options());
        initialize(&conn).await;
        let (mut direct, mut pooled) = (Vec::new(), Vec::new());
        for i in 0..a.turns + 100 {
            let text = format!("turn {i}");
            let (d, p) = (direct_turn(&conn, &text).await, pool_turn(&pool, &text).await);
            if i >= 100 {
                direct.push(d);
                pooled.push(p);
            }
        }
        let md = report("direct (one connection)", &mut direct);
        let mp = report("through the pool", &mut pooled);
        println!("  the pool adds {:+.3} ms to the median (goal < 0.5 ms)", ms(mp) - ms(md));
        conn.shutdown();
        let _ = child.wait().await;
        pool.shutdown().await;
    });
}
