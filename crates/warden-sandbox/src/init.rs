//! The sandbox init: turns a [`LaunchPlan`] into a running, confined command.
//!
//! Process layout: the parent (`warden run`, or `warden __session` of warden-session's spawn
//! path), still single-threaded, clones the sandbox's PID 1
//! straight into new user, mount, pid, ipc, uts and network namespaces and writes its uid/gid
//! maps (see `launch`). (design.md has the init exec'd as `warden __sandbox-init` which then
//! unshares and forks; a second exec of warden costs ~1.2 ms here, mostly glibc start-up and
//! CPUID traps in a VM, and the extra process another ~0.3 ms: together a third of the start-up
//! budget. A clone of a single-threaded parent gives the same clean process; `launch::run`
//! refuses to clone from a multi-threaded one.) PID 1 builds the mount tree in place (no
//! pivot_root: bind sources are cloned, then `/` is made read-only), brings up `lo`, opens the
//! proxies' listeners and waits until the parent serves them, starts a session of its own
//! (always: the host's terminal is never the sandbox's controlling terminal), opens the
//! sandbox's pty when there is a terminal (PID 1 leads its session; the command's process group is
//! the foreground one, so job control works), and forks the command child; it then reaps zombies,
//! reports stops of the command, forwards signals, stops and continues the whole sandbox when
//! the parent stops and continues as a job, until the command ends or the deadline passes, kills
//! whatever is left and reports. The command child sets rlimits, `no_new_privs`,
//! Landlock, drops every capability, installs seccomp last, and execs.
//!
//! Guarantees: any failure before exec is reported as [`Message::SetupFailed`] naming the
//! layer, and the command does not run; the command starts only after the parent accepted its
//! proxy listeners; the command never inherits the control descriptors; no process of the
//! sandbox has the host's terminal as its controlling terminal (`/dev/tty` is the sandbox's pty
//! or fails with `ENXIO`); `--timeout` holds even while the parent is stopped: at the deadline
//! PID 1 kills every process of the sandbox itself (in a pid namespace, `kill(-1, SIGKILL)`;
//! without one, every descendant) and reports [`Message::TimedOut`];
//! when PID 1 goes, the kernel kills every process of the sandbox (without a pid namespace, the
//! command only: its descendants may outlive a killed PID 1).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::landlock::{self, LandlockPlan};
use crate::plan::{LaunchPlan, MountStep, Rlimit, TtyPlan};
use crate::protocol::{CommandStatus, ListenerKind, Message, CONTROL_FD};
use crate::seccomp;
use crate::sys::{self, mount_attr, ChildEvent, Errno, Forked, FreshChild, Resolve, SigSet, WaitStatus};

/// Exit code of the init when setup failed (the parent maps it to 125).
const SETUP_FAILED: i32 = 125;

/// Exit code of the init when it killed the sandbox at the deadline.
const TIMED_OUT: i32 = 124;

/// The signals `warden run` relays to PID 1, which forwards them to the command: every signal
/// that would end warden by default and that a process sends, not a fault of warden's own
/// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGSYS`, `SIGABRT`), plus `SIGWINCH` and
/// `SIGCONT`. So no such signal ends warden with the terminal left in raw mode; `SIGCONT` also
/// continues the whole sandbox after a job stop.
pub(crate) fn forwarded_signals() -> Vec<libc::c_int> {
    let mut v = vec![
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
    ];
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v
}

/// A setup failure: which layer, and what exactly.
#[derive(Debug)]
struct SetupError {
    layer: &'static str,
    detail: String,
}

fn fail(layer: &'static str, what: impl std::fmt::Display, errno: Errno) -> SetupError {
    SetupError { layer, detail: format!("{what}: {errno}") }
}

/// A layer that cannot be had here (`problem`: what failed and what restores it): with
/// `--allow-degraded`, reported and replaced by `fallback`; otherwise the setup fails naming it.
fn degrade(
    plan: &LaunchPlan,
    control: &Control,
    layer: &'static str,
    problem: String,
    fallback: &str,
) -> Result<(), SetupError> {
    if !plan.allow_degraded {
        return Err(SetupError {
            layer,
            detail: format!("{problem}; --allow-degraded accepts this on purpose: {fallback}"),
        });
    }
    control.send(&Message::Degraded { layer: layer.to_owned(), why: format!("{problem}; {fallback}") });
    Ok(())
}

struct Control(OwnedFd);

impl Control {
    fn send(&self, msg: &Message) {
        // Best effort: if the parent is gone we are about to be killed anyway.
        let _ = sys::write_all(self.0.as_raw_fd(), &msg.encode());
    }

    fn report(&self, e: &SetupError) {
        self.send(&Message::SetupFailed { layer: e.layer.to_owned(), detail: e.detail.clone() });
    }
}

/// Entry point of the sandbox's PID 1, in a child just cloned (into the new namespaces, with
/// its id maps written) from the single-threaded `warden run` parent, with the control socket at
/// [`CONTROL_FD`] and every other descriptor above 2 closed. At `deadline` (`--timeout`, the
/// same instant as the parent's) it kills the whole sandbox itself and reports
/// [`Message::TimedOut`]. Never returns.
pub(crate) fn run_pid1(me: FreshChild, plan: &LaunchPlan, deadline: Option<Instant>, self_maps: bool) -> ! {
    let Some(fd) = sys::take_fd(&me, CONTROL_FD) else { sys::exit_now(SETUP_FAILED) };
    let control = Control(fd);
    let started = if self_maps {
        write_id_maps("/proc/self", plan.uid, plan.gid).map_err(|detail| SetupError { layer: "user namespace", detail })
    } else {
        Ok(())
    };
    let code = match started.and_then(|()| pid1(&me, plan, &control, deadline)) {
        Ok(code) => code,
        Err(e) => {
            control.report(&e);
            SETUP_FAILED
        }
    };
    sys::exit_now(code)
}

/// Writes the id maps of the user namespace of the process whose `/proc` directory is `proc_dir`
/// (`/proc/self` or `/proc/PID`): the same uid and gid inside as outside. A process may map its
/// own ids; `setgroups` must be denied before the gid map. Errors name the file.
pub(crate) fn write_id_maps(proc_dir: &str, uid: u32, gid: u32) -> Result<(), String> {
    let write = |file: &str, data: String| {
        let path = format!("{proc_dir}/{file}");
        std::fs::write(&path, data).map_err(|e| format!("cannot write {path}: {e}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}

/// PID 1 of the sandbox (or, without namespaces, a subreaper).
fn pid1(me: &FreshChild, plan: &LaunchPlan, control: &Control, deadline: Option<Instant>) -> Result<i32, SetupError> {
    sys::set_name(c"warden-init");
    // SIGTSTP from the parent: stop the whole sandbox (its job stops); SIGCONT continues it.
    let handled: Vec<libc::c_int> = forwarded_signals().into_iter().chain([libc::SIGTSTP]).collect();
    let set = SigSet::of(&handled.iter().copied().chain([libc::SIGCHLD]).collect::<Vec<_>>());
    // Blocked before the handlers exist, so none of them ever runs.
    set.block().map_err(|e| fail("init", "sigprocmask", e))?;
    for &s in &handled {
        sys::install_noop_handler(s).map_err(|e| fail("init", format!("sigaction({s})"), e))?;
    }

    // The mount tree's descriptors live as long as PID 1: closing the last reference to the
    // detached private tmpfs unmounts it, and every unmount waits for an RCU grace period
    // (`synchronize_rcu_expedited`, 0.5–1.3 ms measured with `perf trace` here), which would sit
    // between the mount set-up and the command's exec. PID 1 exits with the sandbox and the
    // kernel closes them then, after the command's end was reported. The command never holds
    // them (close-on-exec), and it cannot reach PID 1's descriptors (PID 1 keeps capabilities
    // the command lacks, so ptrace access, /proc/1/fd included, is denied).
    let mut _mount_tree = None;
    if plan.namespaces {
        _mount_tree = Some(build_mount_tree(plan, control)?);
        // A container's seccomp profile may deny sethostname (Docker's and podman's do without
        // CAP_SYS_ADMIN): that costs the hostname only, the uts namespace is still ours.
        if let Err(e) = sys::sethostname(&plan.hostname) {
            let problem = format!(
                "sethostname: {e} (in a container, the runtime's seccomp profile denies it; restore with podman/docker \
                 --security-opt seccomp=unconfined or --cap-add SYS_ADMIN, Kubernetes securityContext.seccompProfile)"
            );
            let fallback =
                "the sandbox keeps the outer hostname (in a uts namespace of its own, so it cannot change it)";
            degrade(plan, control, "hostname", problem, fallback)?;
        }
        if plan.new_network {
            sys::bring_up_loopback().map_err(|e| fail("network namespace", "bringing up lo", e))?;
        }
        // The only ways out of this network namespace: listeners the parent serves. They exist
        // before the command starts, so its first connection already queues on them.
        let mut listeners = Vec::new();
        if let Some(p) = &plan.proxy {
            listeners.extend([(ListenerKind::EgressHttp, p.http_port), (ListenerKind::EgressSocks5, p.socks_port)]);
        }
        if let Some(port) = plan.credential_port {
            listeners.push((ListenerKind::Credential, port));
        }
        if plan.new_network && !listeners.is_empty() {
            for (kind, port) in listeners {
                let layer = kind.layer();
                let l = std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| SetupError {
                    layer,
                    detail: format!("cannot listen on 127.0.0.1:{port} inside the sandbox: {e}"),
                })?;
                let msg = Message::ProxyListener { kind }.encode();
                sys::send_with_fd(control.0.as_raw_fd(), &msg, l.as_raw_fd())
                    .map_err(|e| fail(layer, "passing the listener to warden", e))?;
            }
            // The command starts only once warden serves them (it answers with one packet); no
            // answer means warden refused the run, and it is about to kill us.
            control.send(&Message::ListenersSent);
            if !await_go(control, deadline) {
                sys::exit_now(SETUP_FAILED);
            }
        }
    } else {
        sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0).map_err(|e| fail("init", "PR_SET_CHILD_SUBREAPER", e))?;
    }
    sys::chdir(&plan.workdir).map_err(|e| fail("mount", format!("chdir {}", plan.workdir.display()), e))?;
    // A session of the sandbox's own, always: the host's terminal is never the sandbox's
    // controlling terminal, so `/dev/tty` is the sandbox's pty or fails with ENXIO, and no
    // process of the sandbox can read the host's terminal, change its modes or make itself its
    // foreground group (warden's standard streams redirected or not, in the foreground or not).
    sys::setsid().map_err(|e| fail("tty", "setsid (a session without the host's terminal)", e))?;
    // The command's terminal is a pty of the sandbox's own (its private devpts; without a mount
    // namespace, a new pty of the host's): warden's terminal is never handed to the command (no
    // ioctls on it, nothing to inject into), and ttyname() works. PID 1 leads the pty's session
    // and the command gets a process group of its own in it, the foreground one: a group whose
    // parent is in the same session is not orphaned, so the kernel delivers Ctrl-Z's SIGTSTP
    // instead of discarding it, and job control works.
    let pty = match &plan.tty {
        Some(t) => {
            let (master, _) =
                sys::open_pty_master(Path::new("/dev/ptmx")).map_err(|e| fail("tty", "opening /dev/ptmx", e))?;
            let _ = sys::set_winsize(master.as_raw_fd(), t.size);
            let slave = sys::open_controlling_pty_peer(&master)
                .map_err(|e| fail("tty", "opening the pty's slave as the controlling terminal", e))?;
            sys::send_with_fd(control.0.as_raw_fd(), &Message::PtyMaster.encode(), master.as_raw_fd())
                .map_err(|e| fail("tty", "passing the pty to warden", e))?;
            drop(master);
            // Its name, for a Landlock rule without a mount namespace (programs reopen it by name).
            let path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).ok();
            Some(Pty { slave, which: *t, path })
        }
        None => None,
    };

    // The init hook first, when there is one: the command starts only once it exited 0.
    let stages = plan.init_hook.iter().map(|h| (h.as_slice(), true)).chain([(plan.argv.as_slice(), false)]);
    for (argv, is_hook) in stages {
        let child = start_command(me, plan, argv, pty.as_ref(), control)?;
        let ended = supervise(child, &set, plan.namespaces, control, deadline);
        let status = match ended {
            Ended::Command(CommandStatus::Exited(0)) if is_hook => continue,
            Ended::Command(status) => status,
            Ended::TimedOut => {
                control.send(&Message::TimedOut { peak_rss_kib: sys::children_max_rss_kib() });
                return Ok(TIMED_OUT);
            }
        };
        let hook = is_hook.then(|| argv[0].clone());
        control.send(&Message::Finished { status, hook, peak_rss_kib: sys::children_max_rss_kib() });
        return Ok(match status {
            CommandStatus::Exited(c) => c,
            CommandStatus::Signaled(s) => 128 + s,
        });
    }
    // The last stage always returns.
    Ok(SETUP_FAILED)
}

/// Forks the child that becomes `argv` (reporting an exec failure to the parent) and returns its
/// pid.
fn start_command(
    me: &FreshChild,
    plan: &LaunchPlan,
    argv: &[String],
    pty: Option<&Pty>,
    control: &Control,
) -> Result<libc::pid_t, SetupError> {
    let (exec_r, exec_w) = sys::pipe().map_err(|e| fail("init", "pipe", e))?;
    let child = match sys::clone_process(me.single_threaded(), 0).map_err(|e| fail("init", "fork", e))? {
        Forked::Parent(pid) => pid,
        Forked::Child(fresh) => {
            drop(exec_r);
            let err = match command_child(&fresh, plan, argv, &exec_w, pty) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            control.report(&err);
            sys::exit_now(SETUP_FAILED);
        }
    };
    drop(exec_w);
    if pty.is_some() {
        // Also here, so that no signal to the group can precede the child's own setpgid.
        let _ = sys::setpgid(child, child);
    }
    let mut errno_buf = [0u8; 4];
    if let Ok(4) = sys::read(exec_r.as_raw_fd(), &mut errno_buf) {
        control.send(&Message::ExecFailed { program: argv[0].clone(), errno: i32::from_ne_bytes(errno_buf) });
    }
    Ok(child)
}

/// The sandbox's pty, as the command's terminal.
struct Pty {
    /// The slave, PID 1's controlling terminal (the command's after `attach_tty`).
    slave: OwnedFd,
    /// Which of the command's standard descriptors it becomes.
    which: TtyPlan,
    /// Its path, when it could be read.
    path: Option<PathBuf>,
}

/// Waits for the parent's go-ahead after the listeners were sent: `true` once it came. `false`
/// when the parent refused the run (it is about to kill us); at the deadline, reports
/// [`Message::TimedOut`] and ends PID 1 (the command never started).
fn await_go(control: &Control, deadline: Option<Instant>) -> bool {
    let fd = control.0.as_raw_fd();
    if let Some(d) = deadline {
        // Bounded by the deadline: poll wakes at the latest 60 s apart to look at the clock.
        loop {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                control.send(&Message::TimedOut { peak_rss_kib: 0 });
                sys::exit_now(TIMED_OUT);
            }
            let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
            if sys::poll(&mut fds, left.as_millis().clamp(1, 60_000) as i32).is_err() {
                return false;
            }
            if fds[0].revents != 0 {
                break;
            }
        }
    }
    let mut go = [0u8; 8];
    matches!(sys::read(fd, &mut go), Ok(n) if n > 0)
}

/// How supervision ended.
enum Ended {
    /// The command ended; every other process of the sandbox was killed.
    Command(CommandStatus),
    /// The deadline passed: every process of the sandbox was killed.
    TimedOut,
}

/// Reaps and forwards until `child` ends or `deadline` passes; then kills and reaps everything
/// else. A stop of `child` is reported to the parent, which stops like a job: it sends `SIGTSTP`
/// (PID 1 stops every other process of the sandbox too) and, once continued, `SIGCONT` (PID 1
/// continues the command, its process group, and what it stopped). The deadline holds whatever
/// the parent does, stopped or not.
fn supervise(
    child: libc::pid_t,
    set: &SigSet,
    pid_namespace: bool,
    control: &Control,
    deadline: Option<Instant>,
) -> Ended {
    let mut status = None;
    let mut timed_out = false;
    // While the sandbox is stopped as a job: the processes that were stopped already (by
    // themselves or each other), which the job's SIGCONT must leave stopped.
    let mut job_stop: Option<Vec<libc::pid_t>> = None;
    // A child may have exited before we started waiting.
    reap(child, &mut status, control);
    while status.is_none() {
        let next = match deadline {
            None => set.wait().ok(),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    timed_out = true;
                    break;
                }
                match set.wait_timeout(left) {
                    Ok(None) => continue,
                    Ok(Some(s)) => Some(s),
                    Err(_) => None,
                }
            }
        };
        let Some((sig, code)) = next else { break };
        if sig == libc::SIGCHLD {
            reap(child, &mut status, control);
        } else if code > 0 {
            // Generated by the kernel, not sent by the parent: PID 1 leads a session of its own,
            // so this is at most the hangup of the sandbox's pty, whose master the parent holds.
        } else if sig == libc::SIGTSTP {
            if job_stop.is_none() {
                job_stop = Some(stop_sandbox(pid_namespace));
            }
        } else {
            let _ = sys::kill(child, sig);
            if sig == libc::SIGCONT {
                // Ctrl-Z stopped the terminal's whole foreground group: the command's own group
                // when it runs on the sandbox's pty (it is a session leader there).
                let _ = sys::kill(-child, sig);
                if let Some(already) = job_stop.take() {
                    continue_sandbox(pid_namespace, &already);
                }
            }
        }
    }
    if pid_namespace {
        let _ = sys::kill(-1, libc::SIGKILL);
    } else {
        kill_descendants();
    }
    while let Ok(Some(_)) = sys::waitpid(-1, false) {}
    match status {
        _ if timed_out => Ended::TimedOut,
        Some(s) => Ended::Command(s),
        None => Ended::Command(CommandStatus::Exited(SETUP_FAILED)),
    }
}

/// Stops every process of the sandbox but PID 1 (its job stops): `kill(-1, SIGSTOP)` inside the
/// pid namespace, which no fork escapes; without one, every descendant. Returns the processes
/// that were stopped already.
fn stop_sandbox(pid_namespace: bool) -> Vec<libc::pid_t> {
    let already = sandbox_pids(pid_namespace).unwrap_or_default().into_iter().filter(|&p| is_stopped(p)).collect();
    if pid_namespace {
        let _ = sys::kill(-1, libc::SIGSTOP);
    } else {
        // Stopped processes do not fork: pass after pass until a pass finds nobody new (bounded).
        let mut stopped: Vec<libc::pid_t> = Vec::new();
        for _ in 0..64 {
            let fresh: Vec<libc::pid_t> = descendants().into_iter().filter(|p| !stopped.contains(p)).collect();
            if fresh.is_empty() {
                break;
            }
            for &p in &fresh {
                let _ = sys::kill(p, libc::SIGSTOP);
            }
            stopped.extend(fresh);
        }
    }
    already
}

/// Continues what [`stop_sandbox`] stopped: every process of the sandbox but those in `already`.
/// Where PID 1 cannot list the sandbox's processes (a degraded `/proc` shows the outer pid
/// namespace), every process of the pid namespace is continued.
fn continue_sandbox(pid_namespace: bool, already: &[libc::pid_t]) {
    match sandbox_pids(pid_namespace) {
        Some(pids) => {
            for p in pids.into_iter().filter(|p| !already.contains(p)) {
                let _ = sys::kill(p, libc::SIGCONT);
            }
        }
        None => {
            let _ = sys::kill(-1, libc::SIGCONT);
        }
    }
}

/// The processes of the sandbox but PID 1: with a pid namespace, those its own `/proc` lists
/// (`None` when `/proc` is not the namespace's own: a degraded `proc` layer); without one, the
/// descendants.
fn sandbox_pids(pid_namespace: bool) -> Option<Vec<libc::pid_t>> {
    if !pid_namespace {
        return Some(descendants());
    }
    // In the namespace's own /proc, PID 1 is 1.
    if std::fs::read_link("/proc/self").ok()? != Path::new("1") {
        return None;
    }
    let entries = std::fs::read_dir("/proc").ok()?;
    let pids = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<libc::pid_t>().ok()))
        .filter(|&p| p != 1)
        .collect();
    Some(pids)
}

/// Whether `pid` is stopped (state `T` in `/proc/PID/stat`).
fn is_stopped(pid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may contain anything.
    stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')).unwrap_or(false)
}

fn reap(child: libc::pid_t, status: &mut Option<CommandStatus>, control: &Control) {
    let ended = |ws| match ws {
        WaitStatus::Exited(c) => CommandStatus::Exited(c),
        WaitStatus::Signaled(s) => CommandStatus::Signaled(s),
    };
    if status.is_none() {
        match sys::wait_stop_or_end(child) {
            Ok(Some(ChildEvent::Stopped(signal))) => control.send(&Message::Stopped { signal }),
            Ok(Some(ChildEvent::Ended(ws))) => *status = Some(ended(ws)),
            _ => {}
        }
    }
    while let Ok(Some((pid, ws))) = sys::waitpid(-1, true) {
        if pid == child {
            *status = Some(ended(ws));
        }
    }
}

/// Without a pid namespace: SIGKILL every descendant, repeatedly, until none is left (bounded).
fn kill_descendants() {
    for _ in 0..64 {
        let found = descendants();
        for &c in &found {
            let _ = sys::kill(c, libc::SIGKILL);
        }
        while let Ok(Some(_)) = sys::waitpid(-1, true) {}
        if found.is_empty() {
            return;
        }
    }
}

/// Every descendant of this process listed in `/proc/PID/task/*/children` (bounded: a process
/// is visited once).
fn descendants() -> Vec<libc::pid_t> {
    let mut found = Vec::new();
    let mut stack = vec![sys::getpid()];
    while let Some(pid) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in tasks.flatten() {
            let Ok(list) = std::fs::read_to_string(t.path().join("children")) else { continue };
            for c in list.split_whitespace().filter_map(|s| s.parse::<libc::pid_t>().ok()) {
                if !found.contains(&c) {
                    found.push(c);
                    stack.push(c);
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The command child
// ---------------------------------------------------------------------------------------------

enum Never {}

/// Puts the command in a process group of its own, makes it the terminal's foreground group and
/// the terminal its standard streams (per `which`).
fn attach_tty(me: &FreshChild, tty: &OwnedFd, which: &TtyPlan) -> Result<(), SetupError> {
    sys::setpgid(0, 0).map_err(|e| fail("tty", "setpgid", e))?;
    // Still in a background group until tcsetpgrp returns, which would stop us with SIGTTOU;
    // every disposition is reset to the default before exec.
    let _ = sys::set_signal_default(libc::SIGTTOU, true);
    sys::tcsetpgrp(tty.as_raw_fd(), sys::getpid()).map_err(|e| fail("tty", "tcsetpgrp", e))?;
    for (fd, on) in [(0, which.stdin), (1, which.stdout), (2, which.stderr)] {
        if on {
            sys::dup2(me, tty.as_raw_fd(), fd).map_err(|e| fail("tty", format!("dup2 onto {fd}"), e))?;
        }
    }
    Ok(())
}

fn command_child(
    me: &FreshChild,
    plan: &LaunchPlan,
    argv: &[String],
    exec_w: &OwnedFd,
    pty: Option<&Pty>,
) -> Result<Never, SetupError> {
    if let Some(pty) = pty {
        attach_tty(me, &pty.slave, &pty.which)?;
    }
    if !plan.namespaces {
        // No pid namespace to take the command down with PID 1: at least the command itself
        // dies with it.
        let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0);
    }
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let _ = sys::set_signal_default(sig, false);
        }
    }
    SigSet::unblock_all().map_err(|e| fail("init", "sigprocmask", e))?;
    for r in &plan.rlimits {
        let (res, value, name) = match *r {
            Rlimit::AddressSpace(v) => (libc::RLIMIT_AS, v, "RLIMIT_AS (--memory)"),
            Rlimit::CpuSeconds(v) => (libc::RLIMIT_CPU, v, "RLIMIT_CPU (--cpu-seconds)"),
            Rlimit::Processes(v) => (libc::RLIMIT_NPROC, v, "RLIMIT_NPROC (--max-procs)"),
            Rlimit::FileSize(v) => (libc::RLIMIT_FSIZE, v, "RLIMIT_FSIZE (--max-file-size)"),
            Rlimit::CoreSize(v) => (libc::RLIMIT_CORE, v, "RLIMIT_CORE"),
        };
        sys::setrlimit(res, value).map_err(|e| fail("rlimits", format!("setrlimit {name} = {value}"), e))?;
    }
    if plan.drop_privileges {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(|e| fail("no_new_privs", "PR_SET_NO_NEW_PRIVS", e))?;
    }
    if let Some(ll) = &plan.landlock {
        // The command's pty by name (the rules cover /dev/pts only with a mount namespace).
        apply_landlock(ll, pty.and_then(|p| p.path.as_deref()))?;
    }
    if plan.drop_privileges {
        drop_capabilities()?;
    }
    let (program, argv, envp) = exec_args(plan, argv)?;
    if let Some(sc) = &plan.seccomp {
        let filter = seccomp::build_filter(&sc.filter_options());
        sys::seccomp_install(&filter).map_err(|e| fail("seccomp", "installing the filter", e))?;
    }
    let errno = exec_search(&program, &argv, &envp, plan);
    let _ = sys::write_all(exec_w.as_raw_fd(), &errno.0.to_ne_bytes());
    sys::exit_now(if errno.0 == libc::ENOENT { 127 } else { 126 })
}

fn exec_args(plan: &LaunchPlan, argv: &[String]) -> Result<(String, Vec<CString>, Vec<CString>), SetupError> {
    let bad = |what: &str| SetupError { layer: "exec", detail: format!("{what} contains a NUL byte") };
    let program = argv[0].clone();
    let argv =
        argv.iter().map(|a| CString::new(a.as_str()).map_err(|_| bad("an argument"))).collect::<Result<Vec<_>, _>>()?;
    let envp = plan
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")).map_err(|_| bad("an environment variable")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((program, argv, envp))
}

/// `execvpe` semantics with the child's own `PATH`: returns the errno to report.
fn exec_search(program: &str, argv: &[CString], envp: &[CString], plan: &LaunchPlan) -> Errno {
    let to_c = |p: &str| CString::new(p).unwrap_or_default();
    if program.contains('/') {
        return sys::execve(&to_c(program), argv, envp);
    }
    let path =
        plan.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/local/bin:/usr/bin:/bin");
    let mut seen_eacces = false;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = to_c(&format!("{dir}/{program}"));
        let e = sys::execve(&candidate, argv, envp);
        match e.0 {
            libc::EACCES => seen_eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
            _ => return e,
        }
    }
    Errno(if seen_eacces { libc::EACCES } else { libc::ENOENT })
}

fn apply_landlock(plan: &LandlockPlan, own_tty: Option<&Path>) -> Result<(), SetupError> {
    let handled = landlock::handled_fs(plan.abi);
    let net = if plan.deny_tcp && plan.abi >= 4 {
        landlock::net_access::BIND_TCP | landlock::net_access::CONNECT_TCP
    } else {
        0
    };
    let scoped =
        if plan.scoped && plan.abi >= 6 { landlock::scope::ABSTRACT_UNIX_SOCKET | landlock::scope::SIGNAL } else { 0 };
    let ruleset = sys::landlock_create_ruleset(handled, net, scoped, plan.abi)
        .map_err(|e| fail("landlock", format!("landlock_create_ruleset (ABI {})", plan.abi), e))?;
    let device = landlock::access::READ_FILE | landlock::access::WRITE_FILE | landlock::access::IOCTL_DEV;
    let tty_rule = own_tty.map(|p| landlock::PathRule { path: p.to_path_buf(), access: device });
    for rule in plan.rules.iter().chain(tty_rule.as_ref()) {
        let fd = match sys::open_path(&rule.path, false) {
            Ok(fd) => fd,
            // A rule for a path that does not exist grants nothing: skip it.
            Err(Errno(libc::ENOENT)) => continue,
            Err(e) => return Err(fail("landlock", format!("open {}", rule.path.display()), e)),
        };
        let is_dir = sys::fstat(&fd).map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(false);
        let mut allowed = rule.access & handled;
        if !is_dir {
            // Only file rights may be granted on a file.
            allowed &= landlock::access::EXECUTE
                | landlock::access::WRITE_FILE
                | landlock::access::READ_FILE
                | landlock::access::TRUNCATE
                | landlock::access::IOCTL_DEV;
        }
        sys::landlock_add_path(&ruleset, &fd, allowed)
            .map_err(|e| fail("landlock", format!("adding a rule for {}", rule.path.display()), e))?;
    }
    sys::landlock_restrict_self(&ruleset).map_err(|e| fail("landlock", "landlock_restrict_self", e))
}

/// Whether the permitted capability set is not empty (`CapPrm` in /proc/self/status).
fn holds_capabilities() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .map(|v| match u64::from_str_radix(v.trim(), 16) {
            Ok(bits) => bits != 0,
            // Unreadable: assume capabilities are held, so that no EPERM is excused.
            Err(_) => true,
        })
        .unwrap_or(true)
}

fn drop_capabilities() -> Result<(), SetupError> {
    // A process without any capability (an unprivileged user in the degraded mode, without a
    // user namespace) may not change securebits or the bounding set, and has nothing to drop:
    // with no_new_privs set, exec cannot grant it any.
    let tolerate_eperm = !holds_capabilities();
    let ok_or_tolerated = |r: Result<libc::c_int, Errno>| match r {
        Err(Errno(libc::EPERM)) if tolerate_eperm => Ok(0),
        other => other,
    };
    // No privilege through uid 0 or setuid fixups, ever, and no raising ambient capabilities.
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    ok_or_tolerated(sys::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0))
        .map_err(|e| fail("capabilities", "PR_SET_SECUREBITS", e))?;
    let mut cap = 0;
    loop {
        match ok_or_tolerated(sys::prctl(libc::PR_CAPBSET_DROP, cap, 0)) {
            Ok(_) => cap += 1,
            Err(Errno(libc::EINVAL)) => break,
            Err(e) => return Err(fail("capabilities", format!("PR_CAPBSET_DROP {cap}"), e)),
        }
    }
    sys::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0)
        .map_err(|e| fail("capabilities", "PR_CAP_AMBIENT_CLEAR_ALL", e))?;
    sys::clear_capability_sets().map_err(|e| fail("capabilities", "capset(0, 0, 0)", e))
}

// ---------------------------------------------------------------------------------------------
// The mount tree
// ---------------------------------------------------------------------------------------------
//
// No pivot: the mount namespace's own copy of the host tree becomes the sandbox's root. Bind
// sources are cloned from that pristine tree first (so they keep the host's flags and content),
// then the whole tree is made read-only, nosuid, nodev, and the steps are applied on top. This
// copies the host's mount table once (at unshare) instead of three times.

/// Created in the sandbox's /dev tmpfs, bound over masked files, unlinked before exec.
const MASK_FILE: &str = "/dev/.warden-mask";

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

struct Tree {
    root: OwnedFd,
    /// Detached clones of host paths, taken before the root became read-only.
    sources: std::collections::HashMap<PathBuf, Result<OwnedFd, Errno>>,
    /// The /dev tmpfs, made read-only at the end.
    dev: Option<OwnedFd>,
    /// Sources that are not directories (bound onto files).
    files: Vec<PathBuf>,
    /// Detached clones of the sources of [`MountStep::BindAt`] steps, in the plan's order.
    at_sources: std::collections::VecDeque<Result<OwnedFd, Errno>>,
    /// The one tmpfs instance, of `plan.tmp_size` bytes, behind every private writable directory
    /// (/tmp, /var/tmp, /run, $TMPDIR, /dev/shm): they share one cap.
    shared_tmp: Option<OwnedFd>,
    /// The read-only bind of the mask file that masks of files are cloned from (made on first use).
    mask_template: Option<Result<OwnedFd, Errno>>,
}

impl Tree {
    /// A fresh directory of `mode` in the shared tmpfs (made on first use), as a detached mount
    /// ready to be moved onto `path`.
    fn private_dir(&mut self, path: &Path, mode: u32, size: u64) -> Result<OwnedFd, SetupError> {
        const L: &str = "mount";
        if self.shared_tmp.is_none() {
            let size = size.to_string();
            let fs = sys::new_filesystem(
                "tmpfs",
                &[("mode", Some("755")), ("size", Some(&size))],
                mount_attr::NOSUID | mount_attr::NODEV,
            )
            .map_err(|e| fail(L, format!("the private tmpfs ({size} bytes)"), e))?;
            self.shared_tmp = Some(fs);
        }
        let Some(shared) = self.shared_tmp.as_ref() else { unreachable_tmp() };
        let name = path.display().to_string().trim_start_matches('/').replace('/', "-");
        let dir = sys::mkdir_in(shared, &name, mode)
            .map_err(|e| fail(L, format!("creating the private directory for {}", path.display()), e))?;
        match sys::clone_tree(&dir, false) {
            Ok(clone) => Ok(clone),
            // An older kernel may not clone a subtree of a detached mount: then each private
            // directory is a tmpfs of its own, each of that size (documented in the README).
            Err(Errno(libc::EINVAL)) => {
                let (mode, size) = (format!("{mode:o}"), size.to_string());
                sys::new_filesystem(
                    "tmpfs",
                    &[("mode", Some(&mode)), ("size", Some(&size))],
                    mount_attr::NOSUID | mount_attr::NODEV,
                )
                .map_err(|e| fail(L, format!("tmpfs for {}", path.display()), e))
            }
            Err(e) => Err(fail(L, format!("the private directory for {}", path.display()), e)),
        }
    }

    fn target(&self, path: &Path, resolve: Resolve) -> Result<OwnedFd, Errno> {
        if path == Path::new("/") {
            return sys::open_path(Path::new("/"), true);
        }
        sys::openat2_path(&self.root, &rel(path), resolve)
    }

    /// Clones the host object at `path` (no symlink anywhere in it), recursively.
    fn clone_host(&mut self, path: &Path, recursive: bool) {
        if self.sources.contains_key(path) {
            return;
        }
        let opened = if path == Path::new("/") {
            sys::open_path(path, true)
        } else {
            sys::openat2_path(&self.root, &rel(path), Resolve::NoSymlinks)
        };
        let clone = opened.and_then(|fd| sys::clone_tree(&fd, recursive).map(|c| (fd, c))).map(|(fd, c)| {
            let is_dir = sys::fstat(&fd).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR).unwrap_or(true);
            (c, is_dir)
        });
        let clone = clone.map(|(c, is_dir)| {
            if !is_dir {
                self.files.push(path.to_path_buf());
            }
            c
        });
        self.sources.insert(path.to_path_buf(), clone);
    }

    /// A read-only bind of the mask file, ready to be moved over a file. Cloned from one
    /// read-only template (clones keep its flags): one `open_tree` per masked file instead of an
    /// open, a clone and a `mount_setattr`. An older kernel that cannot clone a detached mount
    /// gets a fresh read-only bind each time.
    fn file_cover(&mut self) -> Result<OwnedFd, Errno> {
        let fresh = || {
            let f = sys::open_path(Path::new(MASK_FILE), false)?;
            let c = sys::clone_tree(&f, false)?;
            sys::mount_setattr(&c, false, mount_attr::RDONLY | mount_attr::NOSUID | mount_attr::NODEV, 0)?;
            Ok(c)
        };
        let template = self.mask_template.get_or_insert_with(fresh);
        match template {
            Ok(t) => match sys::clone_tree(t, false) {
                Err(Errno(libc::EINVAL)) => fresh(),
                other => other,
            },
            Err(e) => Err(*e),
        }
    }

    fn take_source(&mut self, path: &Path) -> Result<OwnedFd, Errno> {
        self.sources.remove(path).unwrap_or(Err(Errno(libc::ENOENT)))
    }
}

fn unreachable_tmp() -> ! {
    // `private_dir` sets `shared_tmp` right before reading it.
    sys::exit_now(SETUP_FAILED)
}

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the sandbox's mount tree in place; returns the descriptors it still holds (the detached
/// private tmpfs among them), for the caller to keep until the sandbox ends.
fn build_mount_tree(plan: &LaunchPlan, control: &Control) -> Result<Tree, SetupError> {
    const L: &str = "mount";
    sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| fail(L, "making / private", e))?;
    let root = sys::open_path(Path::new("/"), true).map_err(|e| fail(L, "open /", e))?;
    let mut tree = Tree {
        root,
        sources: Default::default(),
        dev: None,
        files: Vec::new(),
        at_sources: Default::default(),
        shared_tmp: None,
        mask_template: None,
    };
    for step in &plan.mounts {
        match step {
            MountStep::Bind { path, .. } | MountStep::Protect { path, .. } => tree.clone_host(path, true),
            MountStep::BindAt { source, .. } => {
                let clone = sys::openat2_path(&tree.root, &rel(source), Resolve::NoSymlinks)
                    .and_then(|fd| sys::clone_tree(&fd, true));
                tree.at_sources.push_back(clone);
            }
            MountStep::Dev => {
                for node in DEV_NODES {
                    tree.clone_host(&Path::new("/dev").join(node), false);
                }
            }
            _ => {}
        }
    }
    sys::mount_setattr(&tree.root, true, mount_attr::RDONLY | mount_attr::NOSUID | mount_attr::NODEV, 0)
        .map_err(|e| fail(L, "making the root read-only", e))?;
    for step in &plan.mounts {
        apply_step(&mut tree, step, plan, control)?;
    }
    if let Some(dev) = &tree.dev {
        let _ = std::fs::remove_file(MASK_FILE);
        sys::mount_setattr(dev, false, mount_attr::RDONLY, 0).map_err(|e| fail("dev", "making /dev read-only", e))?;
    }
    Ok(tree)
}

fn apply_step(tree: &mut Tree, step: &MountStep, plan: &LaunchPlan, control: &Control) -> Result<(), SetupError> {
    const L: &str = "mount";
    let nosuid_nodev = mount_attr::NOSUID | mount_attr::NODEV;
    match step {
        MountStep::ReadOnlyRoot => Ok(()), // done while building the tree
        MountStep::Tmpfs { path, writable, mode } => {
            let target = match tree.target(path, Resolve::NoSymlinks) {
                Ok(t) => t,
                // Absent (or a symlink, like /var/run -> /run): nothing to cover.
                Err(Errno(libc::ENOENT)) | Err(Errno(libc::ELOOP)) => return Ok(()),
                Err(e) => return Err(fail(L, format!("open {}", path.display()), e)),
            };
            if !writable {
                let mode = format!("{mode:o}");
                let fs = sys::new_filesystem(
                    "tmpfs",
                    &[("mode", Some(&mode)), ("size", Some("4k"))],
                    nosuid_nodev | mount_attr::RDONLY,
                )
                .map_err(|e| fail(L, format!("tmpfs for {}", path.display()), e))?;
                return sys::move_mount(&fs, &target)
                    .map_err(|e| fail(L, format!("mounting tmpfs on {}", path.display()), e));
            }
            let dir = tree.private_dir(path, *mode, plan.tmp_size)?;
            sys::move_mount(&dir, &target).map_err(|e| fail(L, format!("mounting tmpfs on {}", path.display()), e))
        }
        MountStep::Proc => mount_proc(tree, plan, control),
        MountStep::Dev => mount_dev(tree, plan),
        MountStep::Bind { path, writable } => {
            let is_dir = !tree.files.contains(path);
            let clone = tree.take_source(path).map_err(|e| bind_error(path, e))?;
            let mut attrs = nosuid_nodev;
            if !writable {
                attrs |= mount_attr::RDONLY;
            }
            sys::mount_setattr(&clone, true, attrs, 0)
                .map_err(|e| fail(L, format!("setting attributes on {}", path.display()), e))?;
            let target = ensure_mountpoint(tree, path, is_dir)?;
            sys::move_mount(&clone, &target).map_err(|e| fail(L, format!("binding {}", path.display()), e))
        }
        MountStep::Protect { path, .. } => {
            let clone = match tree.take_source(path) {
                Ok(s) => s,
                Err(Errno(libc::ENOENT)) => return Ok(()),
                Err(Errno(libc::ELOOP)) => {
                    return Err(SetupError {
                        layer: "protected path",
                        detail: format!(
                            "{} is (or passes through) a symlink; warden keeps it read-only and will not follow it. \
                             Replace the link with the real directory, or use `--profile trusted` to run without protection",
                            path.display()
                        ),
                    })
                }
                Err(e) => return Err(fail(L, format!("open {}", path.display()), e)),
            };
            sys::mount_setattr(&clone, true, mount_attr::RDONLY | nosuid_nodev, 0)
                .map_err(|e| fail(L, format!("making {} read-only", path.display()), e))?;
            let target =
                tree.target(path, Resolve::NoSymlinks).map_err(|e| fail(L, format!("open {}", path.display()), e))?;
            sys::move_mount(&clone, &target).map_err(|e| fail(L, format!("protecting {}", path.display()), e))
        }
        MountStep::Mask { path } => {
            let target = match tree.target(path, Resolve::InRoot) {
                Ok(t) => t,
                Err(Errno(libc::ENOENT)) | Err(Errno(libc::ENOTDIR)) => return Ok(()),
                Err(e) => return Err(fail("mask", format!("open {}", path.display()), e)),
            };
            let st = sys::fstat(&target).map_err(|e| fail("mask", format!("stat {}", path.display()), e))?;
            let cover = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                sys::new_filesystem(
                    "tmpfs",
                    &[("mode", Some("000")), ("size", Some("4k")), ("nr_inodes", Some("1"))],
                    mount_attr::RDONLY | nosuid_nodev | MOUNT_ATTR_NOEXEC,
                )
            } else {
                tree.file_cover()
            }
            .map_err(|e| fail("mask", format!("preparing the mask for {}", path.display()), e))?;
            sys::move_mount(&cover, &target).map_err(|e| fail("mask", format!("masking {}", path.display()), e))
        }
        MountStep::BindAt { source, target, writable } => {
            let what = || format!("showing {} at {}", source.display(), target.display());
            let clone =
                tree.at_sources.pop_front().unwrap_or(Err(Errno(libc::ENOENT))).map_err(|e| bind_error(source, e))?;
            let mut attrs = nosuid_nodev;
            if !writable {
                attrs |= mount_attr::RDONLY;
            }
            sys::mount_setattr(&clone, true, attrs, 0).map_err(|e| fail(L, what(), e))?;
            // The parent made a placeholder there for the run; the writable root it lies in is
            // the host's, so nothing is created here.
            let at = tree
                .target(target, Resolve::NoSymlinks)
                .map_err(|e| fail(L, format!("{}: the mount point", what()), e))?;
            sys::move_mount(&clone, &at).map_err(|e| fail(L, what(), e))
        }
    }
}

const MOUNT_ATTR_NOEXEC: u64 = 0x0000_0008;

fn bind_error(path: &Path, e: Errno) -> SetupError {
    match e.0 {
        libc::ELOOP => SetupError {
            layer: "mount",
            detail: format!("{} became a symlink after the policy was resolved; refusing to follow it", path.display()),
        },
        _ => fail("mount", format!("open {} on the host", path.display()), e),
    }
}

/// Opens the mount target for `path`, creating it when its parent is one of our tmpfs
/// directories (e.g. a workdir under `/tmp`). Elsewhere the root is read-only and creation fails.
fn ensure_mountpoint(tree: &Tree, path: &Path, is_dir: bool) -> Result<OwnedFd, SetupError> {
    match tree.target(path, Resolve::NoSymlinks) {
        Ok(t) => return Ok(t),
        Err(Errno(libc::ENOENT)) => {}
        Err(e) => return Err(bind_error(path, e)),
    }
    if let Some(parent) = path.parent() {
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            sys::mkdir_if_missing(&cur, 0o755)
                .map_err(|e| fail("mount", format!("creating mount point {}", cur.display()), e))?;
        }
    }
    if is_dir { sys::mkdir_if_missing(path, 0o755) } else { sys::create_file(path, 0o644) }
        .map_err(|e| fail("mount", format!("creating mount point {}", path.display()), e))?;
    tree.target(path, Resolve::NoSymlinks).map_err(|e| bind_error(path, e))
}

fn mount_proc(tree: &Tree, plan: &LaunchPlan, control: &Control) -> Result<(), SetupError> {
    const L: &str = "proc";
    let fresh = sys::mount(
        Some("proc"),
        Path::new("/proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    );
    match fresh {
        Ok(()) => {}
        // The kernel refuses a new procfs where the existing one has paths masked by overmounts
        // (a container's /proc/kcore, /proc/keys, ...): mounting it would reveal them. The
        // narrowest safe fallback is the existing /proc as the tree has it: read-only, nosuid,
        // nodev, its masks kept. It shows the outer pid namespace's processes; Landlock still
        // denies ptrace-style access (memory, environment) to any of them outside the sandbox.
        Err(e @ Errno(libc::EPERM)) => {
            let problem = format!(
                "mounting a fresh /proc: {e} (the existing /proc has masked paths, as in a container; restore with \
                 podman/docker --security-opt systempaths=unconfined, podman also unmask=ALL, Kubernetes \
                 securityContext.procMount: Unmasked)"
            );
            let fallback = "the sandbox gets the outer /proc read-only, masks kept; it lists the outer processes";
            return degrade(plan, control, L, problem, fallback);
        }
        Err(e) => return Err(fail(L, "mounting a fresh /proc", e)),
    }
    // Kernel knobs stay read-only: when warden runs as root, the sandbox's uid 0 owns them.
    for sub in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
        let p = Path::new("/proc").join(sub);
        let fd = match tree.target(&p, Resolve::NoSymlinks) {
            Ok(fd) => fd,
            Err(Errno(libc::ENOENT)) => continue,
            Err(e) => return Err(fail(L, format!("open {}", p.display()), e)),
        };
        let clone = sys::clone_tree(&fd, true).map_err(|e| fail(L, format!("cloning {}", p.display()), e))?;
        sys::mount_setattr(&clone, true, mount_attr::RDONLY | mount_attr::NOSUID | mount_attr::NODEV, 0)
            .map_err(|e| fail(L, format!("making {} read-only", p.display()), e))?;
        sys::move_mount(&clone, &fd).map_err(|e| fail(L, format!("making {} read-only", p.display()), e))?;
    }
    Ok(())
}

fn mount_dev(tree: &mut Tree, plan: &LaunchPlan) -> Result<(), SetupError> {
    const L: &str = "dev";
    let dev = Path::new("/dev");
    let target = tree.target(dev, Resolve::NoSymlinks).map_err(|e| fail(L, "open /dev", e))?;
    let fs = sys::new_filesystem("tmpfs", &[("mode", Some("755"))], mount_attr::NOSUID | MOUNT_ATTR_NOEXEC)
        .map_err(|e| fail(L, "tmpfs for /dev", e))?;
    sys::move_mount(&fs, &target).map_err(|e| fail(L, "mounting /dev", e))?;
    for node in DEV_NODES {
        let path = dev.join(node);
        let clone = match tree.take_source(&path) {
            Ok(c) => c,
            Err(Errno(libc::ENOENT)) => continue,
            Err(e) => return Err(fail(L, format!("open host {}", path.display()), e)),
        };
        sys::create_file(&path, 0o666).map_err(|e| fail(L, format!("creating {}", path.display()), e))?;
        sys::mount_setattr(&clone, false, mount_attr::NOSUID | MOUNT_ATTR_NOEXEC, mount_attr::NODEV)
            .map_err(|e| fail(L, format!("attributes of {}", path.display()), e))?;
        let t = tree.target(&path, Resolve::NoSymlinks).map_err(|e| fail(L, format!("open {}", path.display()), e))?;
        sys::move_mount(&clone, &t).map_err(|e| fail(L, format!("binding {}", path.display()), e))?;
    }
    for d in ["pts", "shm"] {
        sys::mkdir_if_missing(&dev.join(d), 0o755).map_err(|e| fail(L, format!("mkdir /dev/{d}"), e))?;
    }
    sys::mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| fail(L, "mounting a private /dev/pts", e))?;
    let shm = dev.join("shm");
    let shm_target = tree.target(&shm, Resolve::NoSymlinks).map_err(|e| fail(L, "open /dev/shm", e))?;
    let shm_dir = tree.private_dir(&shm, 0o1777, plan.tmp_size)?;
    sys::move_mount(&shm_dir, &shm_target).map_err(|e| fail(L, "mounting /dev/shm", e))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys::symlink(to, &dev.join(link)).map_err(|e| fail(L, format!("symlink /dev/{link}"), e))?;
    }
    sys::create_file(Path::new(MASK_FILE), 0).map_err(|e| fail(L, "creating the mask file", e))?;
    tree.dev = Some(fs);
    Ok(())
}
