//! The supervisor and the pool over the testkit's fake worker (started as a plain command, so the
//! supervision itself is what is tested): restarts with backoff, startup and handshake timeouts
//! that kill, the restart limit, least-loaded dispatch, the bounded queue, crashes that fail only
//! their own turns, 1,000 turns with random kills, shutdown that leaves no process behind.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;
use warden_agent::approval::ApprovalMode;
use warden_agent::pool::{Pool, PoolSettings};
use warden_agent::rpc::RefuseAll;
use warden_agent::supervisor::{CommandLauncher, Launcher, Supervisor, SupervisorSettings};
use warden_agent::turn::{TurnEvent, TurnStatus};
use warden_agent::AgentError;

use crate::support::*;

/// Short deadlines and backoff: every fault shows within a second or two.
fn settings() -> SupervisorSettings {
    SupervisorSettings {
        startup_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_millis(600),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        healthy_after: Duration::from_secs(60),
        restart_limit: 1000,
        restart_window: Duration::from_secs(600),
        shutdown_grace: Duration::from_millis(500),
        stderr_ring_bytes: 4096,
        connection: fast_options(),
    }
}

fn fake(args: &[&str]) -> Arc<dyn Launcher> {
    let mut argv = vec![warden_testkit::fake_worker_bin().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Arc::new(CommandLauncher { argv, env: vec![] })
}

fn supervise(args: &[&str], settings: SupervisorSettings) -> Supervisor {
    Supervisor::start("test", fake(args), Arc::new(RefuseAll), settings)
}

/// Waits (bounded) for `cond`.
async fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drains a pool turn (bounded): its events and the error that ended it.
async fn drain_pool(t: &mut warden_agent::pool::PoolTurn) -> (Vec<TurnEvent>, Option<AgentError>) {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        match t.next().await {
            Some(Ok(e)) => events.push(e),
            Some(Err(e)) => return (events, Some(e)),
            None => return (events, None),
        }
    }
    panic!("more than 10000 events");
}

fn completed(events: &[TurnEvent]) -> bool {
    events.iter().any(|e| matches!(e, TurnEvent::Completed { status: TurnStatus::Completed, .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_is_restarted_and_the_old_process_is_reaped() {
    let sup = supervise(&[], settings());
    let first = within(SLACK, "the first worker", sup.ready(SLACK)).await.expect("ready");
    assert_eq!(first.generation, 1);
    let old_pid = first.pid.expect("a pid");
    // The worker exits by itself (status 3): the pending request fails with a typed error.
    let r = first.conn.request("fake/exit", json!({ "code": 3 }), Duration::from_secs(2)).await;
    assert!(matches!(r, Err(AgentError::WorkerExited { .. })), "{r:?}");
    drop(first);
    let mut rx = sup.watch();
    let second = within(SLACK, "the restarted worker", async {
        loop {
            if let Some(w) = rx.borrow_and_update().clone().filter(|w| w.generation > 1) {
                return w;
            }
            rx.changed().await.expect("the supervisor runs");
        }
    })
    .await;
    assert_eq!(second.generation, 2);
    assert_ne!(second.pid, Some(old_pid));
    assert_no_zombie(old_pid);
    assert_eq!(sup.metrics().restarts.load(Ordering::SeqCst), 1);
    assert!(sup.is_live());
    // The new worker serves.
    let thread = start(&second.conn, ApprovalMode::Never).await;
    let mut stream =
        warden_agent::turn::start_turn(&second.conn, &thread, turn_params("hi", SLACK)).await.expect("turn");
    let (events, err) = drain(&mut stream).await;
    assert!(err.is_none() && completed(&events), "{err:?} {events:?}");
    let pid = second.pid.expect("a pid");
    drop(second);
    sup.shutdown().await;
    assert!(!sup.is_live());
    assert_no_zombie(pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_handshakes_is_killed_and_the_restart_limit_ends_liveness() {
    // `ignore-eof` too: the worker would not end when its stdin closes, only when killed.
    let s = SupervisorSettings { restart_limit: 2, handshake_timeout: Duration::from_millis(300), ..settings() };
    let sup = supervise(&["--fault", "hang-before-handshake", "--fault", "ignore-eof"], s);
    let start = Instant::now();
    // 3 handshakes of 300 ms, each ended (SIGTERM; the fake ignores nothing but EOF), 2 backoffs.
    eventually("liveness false", Duration::from_secs(10), || !sup.is_live()).await;
    let took = start.elapsed();
    assert!(sup.current().is_none());
    let m = sup.metrics();
    assert_eq!(m.failed_starts.load(Ordering::SeqCst), 3, "the first start and two restarts failed");
    assert_eq!(m.restarts.load(Ordering::SeqCst), 3);
    assert!(took >= Duration::from_millis(900), "three handshake timeouts take at least 900 ms: {took:?}");
    sup.shutdown().await;
    // Every process it started was reaped: none of our children is left.
    assert_no_children();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_does_not_come_up_in_time_is_a_failed_start() {
    struct Never;
    impl Launcher for Never {
        fn launch(&self) -> warden_agent::supervisor::LaunchFuture<'_> {
            Box::pin(std::future::pending())
        }
    }
    let s = SupervisorSettings { startup_timeout: Duration::from_millis(200), restart_limit: 1, ..settings() };
    let sup = Supervisor::start("never", Arc::new(Never), Arc::new(RefuseAll), s);
    eventually("liveness false", Duration::from_secs(5), || !sup.is_live()).await;
    assert_eq!(sup.metrics().failed_starts.load(Ordering::SeqCst), 2);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_stderr_is_kept_in_a_bounded_ring() {
    // The fake worker reports a bad option on stderr and exits 2: the supervisor keeps the tail
    // (bounded) and restarts it.
    let s = SupervisorSettings { stderr_ring_bytes: 64, restart_limit: 3, ..settings() };
    let sup = supervise(&["--no-such-option"], s);
    eventually("liveness false", Duration::from_secs(10), || !sup.is_live()).await;
    let tail = sup.stderr_tail();
    assert!(!tail.is_empty() && tail.len() <= 64, "{tail:?}");
    sup.shutdown().await;
    assert_no_children();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_runs_a_warm_spare_and_dispatches_to_the_least_loaded_worker() {
    let ps = PoolSettings {
        workers: 2,
        per_worker: 2,
        queue: 0,
        queue_timeout: Duration::from_millis(200),
        supervisor: settings(),
    };
    let pool = Pool::start(ps, |_| fake(&["--fault", "slow-deltas", "--delta-ms", "300"]), Arc::new(RefuseAll));
    assert_eq!(pool.supervisors().len(), 3, "two workers and one warm spare");
    eventually("every worker ready", SLACK, || pool.supervisors().iter().all(|s| s.current().is_some())).await;
    let tp = thread_params(ApprovalMode::Never);
    let mut turns = Vec::new();
    for i in 0..4 {
        turns.push(pool.turn(&tp, turn_params(&format!("t{i}"), SLACK)).await.expect("a slot"));
    }
    // Four turns on three workers, two at most on one: the least-loaded rule spreads them.
    let mut per: std::collections::HashMap<String, usize> = Default::default();
    for t in &turns {
        *per.entry(t.worker.name.clone()).or_default() += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    assert!(per.values().all(|n| *n <= 2), "{per:?}");
    // Capacity is workers × per_worker = 4 and the queue is empty: the fifth is busy at once.
    let t0 = Instant::now();
    let busy = pool.turn(&tp, turn_params("t5", SLACK)).await;
    assert!(matches!(busy, Err(AgentError::Busy { .. })), "{busy:?}");
    assert!(busy.as_ref().err().is_some_and(AgentError::is_retryable));
    assert!(t0.elapsed() < Duration::from_millis(150), "no queue: refused without waiting");
    for mut t in turns {
        let (events, err) = drain_pool(&mut t).await;
        assert!(err.is_none() && completed(&events), "{err:?}");
    }
    pool.shutdown().await;
    assert_no_children();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_waits_for_a_slot_then_times_out_as_busy() {
    let ps = PoolSettings {
        workers: 1,
        per_worker: 1,
        queue: 1,
        queue_timeout: Duration::from_millis(300),
        supervisor: settings(),
    };
    let pool = Pool::start(ps, |_| fake(&["--fault", "slow-deltas", "--delta-ms", "400"]), Arc::new(RefuseAll));
    eventually("a worker ready", SLACK, || pool.is_ready()).await;
    let tp = thread_params(ApprovalMode::Never);
    let mut running = pool.turn(&tp, turn_params("first", SLACK)).await.expect("a slot");
    // The second waits in the queue; a third finds the queue full and is refused at once.
    let (p2, tp2) = (pool.clone(), tp.clone());
    let waiting = tokio::spawn(async move {
        let t0 = Instant::now();
        (p2.turn(&tp2, turn_params("second", SLACK)).await, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = pool.turn(&tp, turn_params("third", SLACK)).await;
    assert!(matches!(third, Err(AgentError::Busy { .. })), "{third:?}");
    let (second, waited) = within(SLACK, "the queued request", waiting).await.expect("join");
    assert!(matches!(second, Err(AgentError::Busy { .. })), "{second:?}");
    assert!(waited >= Duration::from_millis(250), "it waited its timeout: {waited:?}");
    let (_, err) = drain_pool(&mut running).await;
    assert!(err.is_none(), "{err:?}");
    drop(running);
    // A freed slot serves the next request at once.
    let mut next = pool.turn(&tp, turn_params("next", SLACK)).await.expect("the freed slot");
    let (events, err) = drain_pool(&mut next).await;
    assert!(err.is_none() && completed(&events), "{err:?}");
    drop(next);
    pool.shutdown().await;
    assert_no_children();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_fails_only_the_turns_of_that_worker_and_the_pool_recovers() {
    let ps = PoolSettings {
        workers: 2,
        per_worker: 2,
        queue: 8,
        queue_timeout: Duration::from_secs(3),
        supervisor: settings(),
    };
    let pool = Pool::start(ps, |_| fake(&["--fault", "slow-deltas", "--delta-ms", "250"]), Arc::new(RefuseAll));
    eventually("every worker ready", SLACK, || pool.supervisors().iter().all(|s| s.current().is_some())).await;
    let tp = thread_params(ApprovalMode::Never);
    let mut turns = Vec::new();
    for i in 0..4 {
        turns.push(pool.turn(&tp, turn_params(&format!("t{i}"), SLACK)).await.expect("a slot"));
    }
    let victim = turns[0].worker.clone();
    let victim_pid = victim.pid.expect("a pid");
    kill(victim_pid);
    let mut failed = 0;
    for mut t in turns {
        let on_victim = Arc::ptr_eq(&t.worker, &victim);
        let (events, err) = within(SLACK * 2, "a turn's end", drain_pool(&mut t)).await;
        if on_victim {
            assert!(matches!(err, Some(AgentError::WorkerExited { .. })), "{err:?}");
            failed += 1;
        } else {
            assert!(err.is_none() && completed(&events), "a turn on another worker failed: {err:?}");
        }
    }
    assert!(failed >= 1);
    assert_no_zombie(victim_pid);
    let sup = pool.supervisors().iter().find(|s| s.name() == victim.name).expect("its supervisor");
    eventually("the victim restarted", SLACK, || sup.current().is_some_and(|w| w.generation == 2)).await;
    assert_eq!(sup.metrics().failures.load(Ordering::SeqCst), failed);
    drop(victim);
    // The pool serves again on every worker.
    let mut t = pool.turn(&tp, turn_params("after", SLACK)).await.expect("a slot");
    let (events, err) = drain_pool(&mut t).await;
    assert!(err.is_none() && completed(&events), "{err:?}");
    drop(t);
    pool.shutdown().await;
    assert_no_children();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_turns_with_random_worker_kills_never_hang_and_fail_only_with_typed_errors() {
    let ps = PoolSettings {
        workers: 3,
        per_worker: 3,
        queue: 64,
        queue_timeout: Duration::from_secs(5),
        supervisor: settings(),
    };
    let pool = Pool::start(ps, |_| fake(&[]), Arc::new(RefuseAll));
    eventually("every worker ready", SLACK, || pool.supervisors().iter().all(|s| s.current().is_some())).await;
    let tp = thread_params(ApprovalMode::Never);
    let started = Instant::now();
    let mut killed: HashSet<u32> = HashSet::new();
    // xorshift: reproducible randomness without a dependency.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut set = JoinSet::new();
    for i in 0..1000u32 {
        // At most 16 turns in flight (the pool queues the rest).
        while set.len() >= 16 {
            let (done, err) = set.join_next().await.expect("a task").expect("join");
            tally(done, err, &mut ok, &mut failed);
        }
        if rand() % 40 == 0 {
            let live: Vec<u32> = pool.supervisors().iter().filter_map(|s| s.current()).filter_map(|w| w.pid).collect();
            if !live.is_empty() {
                let pid = live[(rand() % live.len() as u64) as usize];
                kill(pid);
                killed.insert(pid);
            }
        }
        let (pool, tp) = (pool.clone(), tp.clone());
        set.spawn(async move {
            // Every turn ends (completed, or a typed error) within a bound: none hangs.
            let one = async {
                let mut t = pool.turn(&tp, turn_params(&format!("turn {i}"), Duration::from_secs(3))).await?;
                let (events, err) = drain_pool(&mut t).await;
                match err {
                    Some(e) => Err(e),
                    None if completed(&events) => Ok(()),
                    None => Err(AgentError::Protocol(format!("a turn ended without completing: {events:?}"))),
                }
            };
            match tokio::time::timeout(Duration::from_secs(20), one).await {
                Ok(Ok(())) => (true, None),
                Ok(Err(e)) => (false, Some(e)),
                Err(_) => panic!("turn {i} hung for 20 s"),
            }
        });
    }
    while let Some(r) = set.join_next().await {
        let (done, err) = r.expect("join");
        tally(done, err, &mut ok, &mut failed);
    }
    eprintln!("1000 turns: {ok} completed, {failed} failed, {} workers killed, {:?}", killed.len(), started.elapsed());
    assert_eq!(ok + failed, 1000);
    assert!(killed.len() >= 5, "the test killed workers: {killed:?}");
    // A kill fails at most the turns its worker was serving (3 at most): a turn sent to a worker
    // that was already dead is started on another one.
    assert!(failed as usize <= killed.len() * 3, "{failed} failures for {} kills", killed.len());
    assert!(started.elapsed() < Duration::from_secs(120), "1000 turns took {:?}", started.elapsed());
    for pid in &killed {
        assert_no_zombie(*pid);
    }
    assert!(pool.is_live());
    pool.shutdown().await;
    assert_no_children();
}

/// Every failure is the typed error of a crash (the queue never fills and a worker is ready well
/// within the queue's timeout, so `Busy` and `NotReady` would be defects here too).
fn tally(done: bool, err: Option<AgentError>, ok: &mut u32, failed: &mut u32) {
    if done {
        *ok += 1;
        return;
    }
    *failed += 1;
    let e = err.expect("a failed turn has its error");
    if std::env::var_os("WARDEN_TEST_VERBOSE").is_some() {
        eprintln!("failed: {e}");
    }
    assert!(matches!(e, AgentError::WorkerExited { .. }), "an untyped or unexpected failure: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_turns_in_flight_then_ends_every_worker() {
    let s = SupervisorSettings { shutdown_grace: Duration::from_secs(3), ..settings() };
    let ps =
        PoolSettings { workers: 1, per_worker: 1, queue: 0, queue_timeout: Duration::from_millis(100), supervisor: s };
    let pool = Pool::start(ps, |_| fake(&["--fault", "slow-deltas", "--delta-ms", "200"]), Arc::new(RefuseAll));
    eventually("a worker ready", SLACK, || pool.is_ready()).await;
    let mut t = pool.turn(&thread_params(ApprovalMode::Never), turn_params("drain me", SLACK)).await.expect("a slot");
    let pids: Vec<u32> = pool.supervisors().iter().filter_map(|s| s.current()).filter_map(|w| w.pid).collect();
    assert_eq!(pids.len(), 2);
    let reader = tokio::spawn(async move {
        let r = drain_pool(&mut t).await;
        drop(t);
        r
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    within(Duration::from_secs(8), "shutdown", pool.shutdown()).await;
    let (events, err) = reader.await.expect("join");
    assert!(err.is_none() && completed(&events), "the turn in flight finished before the end: {err:?}");
    assert!(!pool.is_live() && !pool.is_ready());
    for pid in pids {
        assert_no_zombie(pid);
    }
    assert_no_children();
}

/// SIGKILL to a worker of this process.
fn kill(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the worker");
}

/// No child of this test process stays a zombie: other tests run in parallel in this process, so
/// a zombie may be seen for a moment before tokio reaps it; one that stays for 2 s was never
/// waited for.
fn assert_no_children() {
    let zombies = || -> HashSet<String> {
        let me = std::process::id().to_string();
        let Ok(dir) = std::fs::read_dir("/proc") else { return HashSet::new() };
        dir.flatten()
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let zombie = fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str());
                zombie.then(|| stat.clone())
            })
            .collect()
    };
    let mut lasting = zombies();
    let start = Instant::now();
    while !lasting.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "zombie children: {lasting:?}");
        std::thread::sleep(Duration::from_millis(50));
        lasting = lasting.intersection(&zombies()).cloned().collect();
    }
}

/// Worker 0's first process commits `fault`; every later process (and worker 1) is healthy.
struct FirstFaulty {
    faulty: CommandLauncher,
    healthy: CommandLauncher,
    launches: std::sync::atomic::AtomicUsize,
}

impl Launcher for FirstFaulty {
    fn launch(&self) -> warden_agent::supervisor::LaunchFuture<'_> {
        if self.launches.fetch_add(1, Ordering::SeqCst) == 0 {
            self.faulty.launch()
        } else {
            self.healthy.launch()
        }
    }
}

fn command(args: &[&str]) -> CommandLauncher {
    let mut argv = vec![warden_testkit::fake_worker_bin().display().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    CommandLauncher { argv, env: vec![] }
}

/// How the first turn of a fault must end.
#[derive(Debug)]
enum First {
    Fails(fn(&AgentError) -> bool),
    /// The turn completes with this status (the fault is the model's, or another worker served).
    Ends(TurnStatus),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_gives_its_typed_error_and_the_pool_recovers() {
    use First::*;
    let cases: [(&str, First); 8] = [
        ("crash-mid-turn", Fails(|e| matches!(e, AgentError::WorkerExited { .. }))),
        ("hang-mid-turn", Fails(|e| matches!(e, AgentError::Timeout { .. }))),
        ("oversized", Fails(|e| matches!(e, AgentError::Protocol(_) | AgentError::WorkerExited { .. }))),
        ("bad-response", Fails(|e| matches!(e, AgentError::Protocol(_)))),
        ("garbage", Ends(TurnStatus::Completed)),
        ("error-notification", Ends(TurnStatus::Failed)),
        // The overloaded worker refuses `thread/start`: the thread starts on the other worker.
        ("overloaded", Ends(TurnStatus::Completed)),
        // Worker 0 never becomes ready (killed at the handshake timeout, then restarted).
        ("hang-before-handshake", Ends(TurnStatus::Completed)),
    ];
    for (fault, first) in cases {
        let ps = PoolSettings {
            workers: 1,
            per_worker: 1,
            queue: 4,
            queue_timeout: Duration::from_secs(5),
            supervisor: settings(),
        };
        let launcher = |i: usize| -> Arc<dyn Launcher> {
            let faulty =
                if i == 0 { command(&["--fault", fault, "--oversize-bytes", "9437184"]) } else { command(&[]) };
            Arc::new(FirstFaulty { faulty, healthy: command(&[]), launches: Default::default() })
        };
        let pool = Pool::start(ps, launcher, Arc::new(RefuseAll));
        eventually("worker 1 ready", SLACK, || pool.supervisors()[1].current().is_some()).await;
        if fault != "hang-before-handshake" {
            eventually("worker 0 ready", SLACK, || pool.supervisors()[0].current().is_some()).await;
        }
        let tp = thread_params(ApprovalMode::Never);
        let idle = Duration::from_millis(700);
        // One turn: (how it ended, the worker that served it).
        let one = |text: String| {
            let (pool, tp) = (pool.clone(), tp.clone());
            async move {
                let mut t = match pool.turn(&tp, turn_params(&text, idle)).await {
                    Ok(t) => t,
                    Err(e) => return (Err(e), None),
                };
                let (events, err) = drain_pool(&mut t).await;
                let status = events.iter().find_map(|e| match e {
                    TurnEvent::Completed { status, .. } => Some(status.clone()),
                    _ => None,
                });
                let name = Some(t.worker.name.clone());
                match (err, status) {
                    (Some(e), _) => (Err(e), name),
                    (None, Some(s)) => (Ok(s), name),
                    (None, None) => (Err(AgentError::Protocol("no turn/completed".into())), name),
                }
            }
        };
        let started = Instant::now();
        let (r, by) = within(Duration::from_secs(6), fault, one(format!("{fault} first"))).await;
        match (&first, &r) {
            (Fails(ok), Err(e)) => assert!(ok(e), "{fault}: the first turn failed with {e:?}"),
            (Ends(want), Ok(got)) => assert_eq!(want, got, "{fault}: served by {by:?}"),
            _ => panic!("{fault}: the first turn gave {r:?} (served by {by:?}), expected {first:?}"),
        }
        if fault == "overloaded" || fault == "hang-before-handshake" {
            assert_eq!(by.as_deref(), Some("worker-1"), "{fault}: the healthy worker served");
        }
        // The pool recovers: after at most STUCK_TURNS more failures of the faulty worker, turns
        // complete again (on a new process of worker 0, or on worker 1).
        let mut tail = Vec::new();
        for i in 0..8 {
            let (r, by) = within(Duration::from_secs(6), fault, one(format!("{fault} again {i}"))).await;
            if let Err(e) = &r {
                assert!(
                    matches!(e, AgentError::Timeout { .. } | AgentError::WorkerExited { .. } | AgentError::Protocol(_)),
                    "{fault}: an untyped failure {e:?}"
                );
            }
            tail.push((r.map_err(|e| e.to_string()), by));
        }
        if std::env::var_os("WARDEN_TEST_VERBOSE").is_some() {
            eprintln!("{fault}: first {r:?} by {by:?}; then {tail:?}");
        }
        let last3 = &tail[tail.len() - 3..];
        let healthy = fault == "error-notification";
        assert!(
            last3.iter().all(|(r, _)| r.as_ref().is_ok_and(|s| healthy || *s == TurnStatus::Completed)),
            "{fault}: the pool did not recover: {tail:?}"
        );
        if matches!(first, Fails(_)) || fault == "hang-before-handshake" {
            let s0 = &pool.supervisors()[0];
            eventually(&format!("{fault}: worker 0 replaced"), SLACK, || {
                s0.current().is_some_and(|w| w.generation >= 2)
            })
            .await;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{fault}: {:?}", started.elapsed());
        pool.shutdown().await;
    }
    assert_no_children();
}
