//! `launch::run` with a real sandbox, driven by test supervisors: proxy listeners refused or
//! served, the start reported, cancellation and signals through the control descriptor.
//!
//! No test harness: `launch::run` clones PID 1 and needs a single-threaded caller, so `main` runs
//! the cases one after the other on the only thread. Each case prints its name; a failure panics
//! (exit 101) with what happened.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warden_sandbox::launch::{self, Control, Outcome, Refusal, Supervisor};
use warden_sandbox::plan::{self, CompileOptions, LaunchPlan};
use warden_sandbox::{CommandStatus, ListenerKind};

/// A host-visible scratch directory (not /tmp, which is private inside the sandbox).
fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("WARDEN_TEST_HOST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let d = tempfile::Builder::new().prefix("warden-launch-").tempdir_in(base).expect("tempdir");
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    d
}

/// workspace-write on `ws` (network as given), no audit, a neutral host.
fn plan_for(ws: &Path, net: warden_policy::NetMode, argv: &[&str]) -> LaunchPlan {
    let path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".to_owned();
    let host = warden_policy::HostContext { cwd: ws.to_path_buf(), home: None, env: vec![("PATH".into(), path)] };
    let mut opts = warden_policy::PolicyOptions {
        profile: Some(warden_policy::Profile::WorkspaceWrite),
        workdir: Some(ws.to_path_buf()),
        net: Some(net),
        no_audit: true,
        ..Default::default()
    };
    if net == warden_policy::NetMode::Allowlist {
        opts.network.allow.push(warden_policy::AllowRule { pattern: "example.test".into(), expires: None, raw: false });
    }
    let policy = warden_policy::resolve(&opts, &host).expect("policy").policy;
    let env = policy.env.apply(&host.env);
    let (uid, gid) = warden_sandbox::current_ids();
    let opts = CompileOptions { allow_nested_userns: false, landlock_abi: warden_sandbox::landlock_abi() };
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    plan::compile(&policy, &argv, env, uid, gid, &opts).expect("plan")
}

#[derive(Default)]
struct Test {
    refuse: bool,
    kinds: Vec<ListenerKind>,
    started: Option<i32>,
    control: Option<(std::io::PipeReader, std::io::PipeWriter)>,
    on_control: Option<Control>,
}

impl Supervisor for Test {
    fn listeners(&mut self, listeners: Vec<(ListenerKind, OwnedFd)>) -> Result<(), Refusal> {
        self.kinds = listeners.iter().map(|(k, _)| *k).collect();
        if self.refuse {
            return Err(Refusal { layer: "egress proxy".into(), detail: "refused by the test".into() });
        }
        Ok(())
    }

    fn started(&mut self, pid: i32) {
        self.started = Some(pid);
        // Make the control descriptor readable right away.
        if let Some((_, w)) = self.control.as_mut() {
            w.write_all(b"x").expect("write the control pipe");
        }
    }

    fn control_fd(&self) -> Option<RawFd> {
        self.control.as_ref().map(|(r, _)| r.as_raw_fd())
    }

    fn control(&mut self) -> Control {
        if let Some((r, _)) = self.control.as_mut() {
            let mut b = [0u8; 1];
            let _ = r.read(&mut b);
        }
        self.on_control.take().unwrap_or(Control::Continue)
    }
}

/// Whether any process but this one has `marker` in its command line.
fn marker_alive(marker: &str) -> bool {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries
        .flatten()
        .filter(|e| e.file_name() != me.as_str())
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker)))
}

/// Polls `cond` every 20 ms for at most `limit`.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Keeps the parent's loop from running, as a stopped warden would, until the processes with
/// `marker` appeared and then went (bounded): only PID 1 can kill them meanwhile.
struct Busy {
    control: (std::io::PipeReader, std::io::PipeWriter),
    marker: String,
    start: Instant,
    appeared: bool,
    gone_after: Option<Duration>,
}

impl Supervisor for Busy {
    fn started(&mut self, _pid: i32) {
        self.control.1.write_all(b"x").expect("write the control pipe");
    }

    fn control_fd(&self) -> Option<RawFd> {
        Some(self.control.0.as_raw_fd())
    }

    fn control(&mut self) -> Control {
        let mut b = [0u8; 1];
        let _ = self.control.0.read(&mut b);
        self.appeared = wait_until(Duration::from_secs(10), || marker_alive(&self.marker));
        if self.appeared && wait_until(Duration::from_secs(15), || !marker_alive(&self.marker)) {
            self.gone_after = Some(self.start.elapsed());
        }
        Control::Continue
    }
}

fn case(name: &str, f: impl FnOnce()) {
    println!("launch: {name} ...");
    f();
    println!("launch: {name} ok");
}

fn main() {
    case("a refused listener means the command never runs", || {
        let d = scratch();
        let marker = d.path().join("ran");
        let touch = format!("touch {}", marker.display());
        let plan = plan_for(d.path(), warden_policy::NetMode::Allowlist, &["sh", "-c", &touch]);
        let mut sup = Test { refuse: true, ..Default::default() };
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut sup).expect("launch");
        assert_eq!(sup.kinds, [ListenerKind::EgressHttp, ListenerKind::EgressSocks5], "both egress listeners");
        assert_eq!(
            r.outcome,
            Outcome::SetupFailed { layer: "egress proxy".into(), detail: "refused by the test".into() },
            "{r:?}"
        );
        assert!(!marker.exists(), "the command ran although its proxy was refused");
    });
    case("served listeners let the command run; the start is reported", || {
        let d = scratch();
        let marker = d.path().join("ran");
        let touch = format!("touch {}", marker.display());
        let plan = plan_for(d.path(), warden_policy::NetMode::Allowlist, &["sh", "-c", &touch]);
        let mut sup = Test::default();
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut sup).expect("launch");
        assert_eq!(r.outcome, Outcome::Finished(CommandStatus::Exited(0)), "{r:?}");
        assert!(marker.exists(), "the command did not run");
        assert!(sup.started.is_some_and(|p| p > 1), "started() with PID 1's host pid: {:?}", sup.started);
    });
    case("without proxies no listener is offered", || {
        let d = scratch();
        let plan = plan_for(d.path(), warden_policy::NetMode::None, &["true"]);
        let mut sup = Test { refuse: true, ..Default::default() };
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut sup).expect("launch");
        assert_eq!(r.outcome, Outcome::Finished(CommandStatus::Exited(0)), "{r:?}");
        assert!(sup.kinds.is_empty());
    });
    case("the control descriptor can cancel the whole sandbox", || {
        let d = scratch();
        let plan = plan_for(d.path(), warden_policy::NetMode::None, &["sh", "-c", "sleep 30 & sleep 30"]);
        let mut sup = Test {
            control: Some(std::io::pipe().expect("pipe")),
            on_control: Some(Control::Cancel("cancelled by the test".into())),
            ..Default::default()
        };
        let t = Instant::now();
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut sup).expect("launch");
        assert_eq!(r.outcome, Outcome::Cancelled { reason: "cancelled by the test".into() }, "{r:?}");
        assert_eq!(r.outcome.exit_code(), 137);
        assert!(t.elapsed() < Duration::from_secs(10), "cancelled, not timed out: {:?}", t.elapsed());
    });
    case("the control descriptor can signal the command", || {
        let d = scratch();
        let plan = plan_for(d.path(), warden_policy::NetMode::None, &["sleep", "30"]);
        let mut sup = Test {
            control: Some(std::io::pipe().expect("pipe")),
            on_control: Some(Control::Signal(libc::SIGTERM)),
            ..Default::default()
        };
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut sup).expect("launch");
        assert_eq!(r.outcome, Outcome::Finished(CommandStatus::Signaled(libc::SIGTERM)), "{r:?}");
    });
    case("PID 1 kills the sandbox at the deadline while the parent is not acting", || {
        let d = scratch();
        let marker = format!("1000.{}77", std::process::id());
        let script = format!("sleep {marker} & exec sleep {marker}");
        let plan = plan_for(d.path(), warden_policy::NetMode::None, &["sh", "-c", &script]);
        let start = Instant::now();
        let mut sup =
            Busy { control: std::io::pipe().expect("pipe"), marker, start, appeared: false, gone_after: None };
        let r = launch::run(&plan, Some(Duration::from_secs(2)), &mut sup).expect("launch");
        assert!(sup.appeared, "the command did not start");
        let gone = sup.gone_after.expect("the sandbox outlived the deadline while the parent was busy");
        assert!(gone >= Duration::from_secs(2) && gone < Duration::from_secs(12), "killed after {gone:?}");
        assert_eq!(r.outcome, Outcome::TimedOut, "{r:?}");
        assert_eq!(r.outcome.exit_code(), 124);
    });
    case("the init hook runs first, its leftovers die, then the command runs", || {
        let d = scratch();
        let ws = d.path().display().to_string();
        let cmd = format!(
            "echo cmd >> {ws}/order; kill -0 $(cat {ws}/bgpid) 2>/dev/null && echo hook-leftover-alive >> {ws}/order; true"
        );
        let mut plan = plan_for(d.path(), warden_policy::NetMode::None, &["sh", "-c", &cmd]);
        let hook = format!("echo hook > {ws}/order; sleep 100 & echo $! > {ws}/bgpid");
        plan.init_hook = Some(vec!["sh".into(), "-c".into(), hook]);
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut Test::default()).expect("launch");
        assert_eq!(r.outcome, Outcome::Finished(CommandStatus::Exited(0)), "{r:?}");
        let order = std::fs::read_to_string(d.path().join("order")).expect("order");
        assert_eq!(order, "hook\ncmd\n");
    });
    case("a failing init hook ends the run with its status; the command never starts", || {
        let d = scratch();
        let marker = d.path().join("ran");
        let touch = format!("touch {}", marker.display());
        let mut plan = plan_for(d.path(), warden_policy::NetMode::None, &["sh", "-c", &touch]);
        plan.init_hook = Some(vec!["sh".into(), "-c".into(), "exit 4".into()]);
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut Test::default()).expect("launch");
        assert_eq!(r.outcome, Outcome::HookFailed { program: "sh".into(), status: CommandStatus::Exited(4) }, "{r:?}");
        assert_eq!(r.outcome.exit_code(), 4);
        assert!(!marker.exists(), "the command ran after a failing hook");
    });
    case("a host file is shown read-only at another path, even one a mask hides, and only for the run", || {
        let d = scratch();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).expect("mkdir");
        let src = d.path().join("login.json");
        std::fs::write(&src, "the login\n").expect("write");
        let path = "/usr/local/bin:/usr/bin:/bin".to_owned();
        let host = warden_policy::HostContext { cwd: ws.clone(), home: None, env: vec![("PATH".into(), path)] };
        let opts = warden_policy::PolicyOptions {
            profile: Some(warden_policy::Profile::WorkspaceWrite),
            workdir: Some(ws.clone()),
            no_audit: true,
            deny_read: vec![src.clone()],
            bind_at: vec![warden_policy::BindAt { source: src.clone(), target: ws.join("shown"), writable: false }],
            ..Default::default()
        };
        let policy = warden_policy::resolve(&opts, &host).expect("policy").policy;
        let (uid, gid) = warden_sandbox::current_ids();
        let copts = CompileOptions { allow_nested_userns: false, landlock_abi: warden_sandbox::landlock_abi() };
        let script = format!(
            "cat {src} 2>/dev/null && echo SOURCE-READABLE; cat shown; (echo x > shown) 2>/dev/null && echo WRITTEN; \
             rm shown 2>/dev/null && echo REMOVED; true",
            src = src.display()
        );
        let argv: Vec<String> = ["sh", "-c", &script].iter().map(|s| (*s).to_owned()).collect();
        let mut plan = plan::compile(&policy, &argv, policy.env.apply(&host.env), uid, gid, &copts).expect("plan");
        let out = ws.join("out");
        plan.argv = vec!["sh".into(), "-c".into(), format!("{{ {script}; }} > {} 2>&1", out.display())];
        let r = launch::run(&plan, Some(Duration::from_secs(20)), &mut Test::default()).expect("launch");
        assert_eq!(r.outcome, Outcome::Finished(CommandStatus::Exited(0)), "{r:?}");
        let out = std::fs::read_to_string(&out).expect("out");
        assert_eq!(out.trim(), "the login", "masked at its own path, read-only at the other: {out}");
        assert_eq!(std::fs::read_to_string(&src).expect("src"), "the login\n");
        assert!(!ws.join("shown").exists(), "the placeholder is gone after the run");
    });
    case("a multi-threaded caller is refused", || {
        let d = scratch();
        let plan = plan_for(d.path(), warden_policy::NetMode::None, &["true"]);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        let r = launch::run(&plan, None, &mut ());
        drop(tx);
        t.join().expect("join");
        assert!(matches!(r, Err(launch::LaunchError::NotSingleThreaded { threads: 2 })), "{r:?}");
    });
    println!("launch: all cases passed");
}
