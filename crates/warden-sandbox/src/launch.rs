//! The parent side of `warden run`: clones the sandbox's PID 1 with a plan, relays signals and
//! the terminal, enforces the timeout and reports how the command ended.
//!
//! Guarantees: PID 1 talks back over a `SOCK_SEQPACKET` socket; it is killed (and with it the
//! whole sandbox) when the timeout expires, when the caller's [`Supervisor`] cancels the run, or
//! when this process dies (`PR_SET_PDEATHSIG`: PID 1's parent is the thread that called [`run`],
//! which must be the process's only thread at that moment and lives as long as the process);
//! the timeout is a wall-clock bound on the whole sandbox that PID 1 enforces too, so it holds
//! while this process is stopped (the outcome is [`Outcome::TimedOut`] once it is continued);
//! proxy listeners are handed to the supervisor, and the command starts only once it accepted
//! them; the sandbox never shares this process's session or terminal, and every signal that
//! would end warden (but a fault of its own, or `SIGKILL`) reaches the command through PID 1
//! instead; a job-control stop of warden (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`, or the command
//! stopping on the sandbox's terminal while warden holds the foreground) stops every process of
//! the sandbox first, and continuing warden continues them; warden's terminal is given back in
//! the modes warden found it in before warden stops or ends (see `relay`); the report comes only
//! after every process of the sandbox is gone.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup::PidsCgroup;
use crate::plan::{LaunchPlan, TtyPlan};
use crate::protect::Placeholders;
use crate::protocol::{CommandStatus, ListenerKind, Message, CONTROL_FD, MAX_MESSAGE_BYTES};
use crate::relay::Relay;
use crate::sys::{self, Errno, Forked, SigSet, SingleThreaded, WaitStatus};

/// The job-control stops warden takes itself, after stopping the sandbox: blocked while the
/// sandbox runs (so warden's own terminal access never raises them: warden reads the terminal
/// only in the foreground, and restores its modes only there or before it stops).
const JOB_STOPS: &[libc::c_int] = &[libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// How a launched command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and exited or was killed by a signal.
    Finished(CommandStatus),
    /// The command ran longer than the timeout and was killed with its whole tree.
    TimedOut,
    /// The init hook ([`LaunchPlan::init_hook`]) failed; the command never started.
    HookFailed {
        /// The hook's program.
        program: String,
        /// How it ended.
        status: CommandStatus,
    },
    /// A layer could not be set up; the command never ran.
    SetupFailed {
        /// The layer.
        layer: String,
        /// What failed.
        detail: String,
    },
    /// The command could not be executed.
    ExecFailed {
        /// The program.
        program: String,
        /// errno of execve.
        errno: Errno,
    },
    /// The supervisor cancelled the run ([`Control::Cancel`]); the whole sandbox was killed.
    Cancelled {
        /// Why, from the supervisor.
        reason: String,
    },
}

impl Outcome {
    /// The exit status `warden run` should exit with (see the README's exit-status table).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Finished(CommandStatus::Exited(c)) => *c,
            Outcome::Finished(CommandStatus::Signaled(s)) => 128 + s,
            Outcome::TimedOut => 124,
            Outcome::HookFailed { status: CommandStatus::Exited(c), .. } => *c,
            Outcome::HookFailed { status: CommandStatus::Signaled(s), .. } => 128 + s,
            Outcome::SetupFailed { .. } => 125,
            Outcome::ExecFailed { errno, .. } if errno.0 == libc::ENOENT => 127,
            Outcome::ExecFailed { .. } => 126,
            Outcome::Cancelled { .. } => 128 + libc::SIGKILL,
        }
    }
}

/// What `run` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time from spawn to the end.
    pub duration: Duration,
    /// Peak RSS of the largest process of the sandbox, KiB.
    pub peak_rss_kib: u64,
    /// Layers PID 1 skipped because the plan allows degrading: `(layer, why)`.
    pub degraded: Vec<(String, String)>,
}

/// Errors of the parent side itself (not of the sandbox).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// A system call in the parent failed.
    #[error("{what}: {errno}")]
    Sys {
        /// Which operation.
        what: &'static str,
        /// Why.
        errno: Errno,
    },
    /// `run` was called from a multi-threaded process, which must not fork.
    #[error("internal error: the sandbox must be started while warden is single-threaded ({threads} threads)")]
    NotSingleThreaded {
        /// How many threads there were.
        threads: usize,
    },
}

fn sys_err(what: &'static str) -> impl FnOnce(Errno) -> LaunchError {
    move |errno| LaunchError::Sys { what, errno }
}

/// Why a supervisor refuses to serve the listeners it was given: the run is refused (the command
/// never starts) with [`Outcome::SetupFailed`] naming `layer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The layer that cannot be provided, e.g. "egress proxy".
    pub layer: String,
    /// What failed.
    pub detail: String,
}

/// What a [`Supervisor`] wants done after its control descriptor became readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Nothing.
    Continue,
    /// Send this signal to the sandbox's PID 1 (which forwards it to the command).
    Signal(libc::c_int),
    /// Kill the whole sandbox now; the outcome is [`Outcome::Cancelled`].
    Cancel(String),
}

/// What the caller of [`run`] does while the sandbox runs. Every method has a default that does
/// nothing, so `&mut ()` supervises nothing.
pub trait Supervisor {
    /// The listeners PID 1 opened inside the sandbox's network namespace (`plan.proxy`,
    /// `plan.credential_port`), all at once, before the command starts. Start serving them here
    /// (the process may start threads from now on); an error refuses the run.
    fn listeners(&mut self, listeners: Vec<(ListenerKind, OwnedFd)>) -> Result<(), Refusal> {
        drop(listeners);
        Ok(())
    }

    /// PID 1 skips `layer`, which cannot be had here (the plan allows degrading).
    fn degraded(&mut self, layer: &str, why: &str) {
        let _ = (layer, why);
    }

    /// PID 1 (`pid`, in this process's pid namespace) was released and builds the sandbox.
    fn started(&mut self, pid: libc::pid_t) {
        let _ = pid;
    }

    /// A descriptor to watch while the sandbox runs; [`Supervisor::control`] is called whenever
    /// it is readable (or hung up).
    fn control_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The control descriptor is readable: read from it and say what to do.
    fn control(&mut self) -> Control {
        Control::Continue
    }
}

impl Supervisor for () {}

/// Runs `plan` in a cloned PID 1 and waits for the end.
///
/// Must be called while the process is single-threaded (it clones); otherwise it refuses with
/// [`LaunchError::NotSingleThreaded`]. A multi-threaded program uses warden-session's spawn path.
pub fn run(
    plan: &LaunchPlan,
    timeout: Option<Duration>,
    supervisor: &mut dyn Supervisor,
) -> Result<Report, LaunchError> {
    let proof = SingleThreaded::check().map_err(|threads| LaunchError::NotSingleThreaded { threads })?;
    let cgroup = match plan.pids_cgroup_max.map(PidsCgroup::create).transpose() {
        Ok(c) => c,
        Err(detail) => {
            return Ok(setup_failed("process limit (--max-procs as root needs a pids cgroup)", detail));
        }
    };
    let placeholders = match Placeholders::ensure(&crate::plan::placeholders(plan)) {
        Ok(p) => p,
        Err(detail) => return Ok(setup_failed("protected path", detail)),
    };
    let relayed =
        SigSet::of(&crate::init::forwarded_signals().into_iter().chain(JOB_STOPS.iter().copied()).collect::<Vec<_>>());
    relayed.block().map_err(sys_err("blocking signals"))?;
    let procs = cgroup.as_ref().map(|c| c.procs_file());
    let mut plan = plan.clone();
    // A pty of the sandbox's own in every mode: without namespaces it is a new pty of the host,
    // still not warden's terminal.
    plan.tty = detect_tty();
    let result = clone_and_wait(proof, &plan, timeout, &relayed, procs.as_deref(), supervisor);
    let _ = SigSet::unblock_all();
    drop(cgroup);
    drop(placeholders);
    result
}

/// A pty for the command when any of warden's standard descriptors is a terminal.
fn detect_tty() -> Option<TtyPlan> {
    let (stdin, stdout, stderr) = (sys::isatty(0), sys::isatty(1), sys::isatty(2));
    if !(stdin || stdout || stderr) {
        return None;
    }
    let size = [0, 1, 2].into_iter().find_map(sys::get_winsize).unwrap_or(crate::plan::WinSize { rows: 24, cols: 80 });
    Some(TtyPlan { stdin, stdout, stderr, size })
}

fn setup_failed(layer: &str, detail: String) -> Report {
    Report {
        outcome: Outcome::SetupFailed { layer: layer.into(), detail },
        duration: Duration::ZERO,
        peak_rss_kib: 0,
        degraded: Vec::new(),
    }
}

fn clone_and_wait(
    proof: SingleThreaded,
    plan: &LaunchPlan,
    timeout: Option<Duration>,
    relayed: &SigSet,
    cgroup_procs: Option<&Path>,
    supervisor: &mut dyn Supervisor,
) -> Result<Report, LaunchError> {
    let (ours, theirs) = sys::seqpacket_pair().map_err(sys_err("socketpair for the control channel"))?;
    let (sync_r, sync_w) = sys::pipe().map_err(sys_err("pipe"))?;
    let (ready_r, ready_w) = sys::pipe().map_err(sys_err("pipe"))?;
    // Without a cgroup to join, PID 1 writes its own id maps (a process may map its own ids) and
    // starts at once; otherwise the parent joins it to the cgroup and writes them, and PID 1 waits
    // for that. Only a non-dumpable warden (credential mode) must then wait for the child to become
    // dumpable before it can write the child's id maps (the handshake costs a round trip).
    let self_maps = flags_map_themselves(plan, cgroup_procs);
    let non_dumpable = matches!(sys::prctl(libc::PR_GET_DUMPABLE, 0, 0), Ok(0));
    let handshake = !self_maps && non_dumpable;
    let sigfd = relayed.signalfd().map_err(sys_err("signalfd"))?;
    let parent = sys::getpid();
    let start = Instant::now();
    // One deadline for both sides: PID 1 holds it while this process is stopped.
    let deadline = timeout.map(|t| start + t);
    let flags = namespace_flags(plan);
    let pid1 = match sys::clone_process(proof, flags) {
        Ok(Forked::Parent(p)) => p,
        Ok(Forked::Child(child)) => {
            // A copy of this single-threaded process, in the new namespaces.
            drop((ours, sigfd));
            let fds = Pid1Fds { theirs, sync_r, sync_w, ready_r, ready_w };
            become_pid1(child, plan, flags, parent, Maps { non_dumpable, handshake, self_maps }, deadline, fds)
        }
        Err(errno) if flags != 0 => return Ok(setup_failed(failing_namespace(plan), clone_detail(errno))),
        Err(errno) => return Err(LaunchError::Sys { what: "fork of the sandbox init", errno }),
    };
    drop(theirs);
    drop(sync_r);
    drop(ready_w);
    let pidfd = sys::pidfd_open(pid1).map_err(sys_err("pidfd_open"))?;
    // Wait until the child is ready for its id maps (EOF: it died; prepare_child then reports).
    if handshake {
        let mut byte = [0u8; 1];
        let _ = sys::read(ready_r.as_raw_fd(), &mut byte);
    }
    drop(ready_r);
    if self_maps {
        // PID 1 is on its way and needs nothing from us; our end of the pipe stays open while
        // the sandbox runs (PID 1 takes a closed one for our death before its PDEATHSIG was set).
        let _alive = sync_w;
        supervisor.started(pid1);
        return supervise(plan, pid1, pidfd, ours, sigfd, start, deadline, false, supervisor);
    }
    if let Err(outcome) = prepare_child(plan, pid1, cgroup_procs) {
        let _ = sys::kill(pid1, libc::SIGKILL);
        let _ = sys::waitpid(pid1, false);
        return Ok(Report { outcome, duration: start.elapsed(), peak_rss_kib: 0, degraded: Vec::new() });
    }
    sys::write_all(sync_w.as_raw_fd(), b"1").map_err(sys_err("releasing the sandbox init"))?;
    drop(sync_w);
    supervisor.started(pid1);
    supervise(plan, pid1, pidfd, ours, sigfd, start, deadline, cgroup_procs.is_some(), supervisor)
}

/// Whether PID 1 writes its own id maps: in new namespaces, with no cgroup for the parent to join
/// it to first. Saves the parent's three `/proc/PID` writes and PID 1's wait for them (the
/// parent has to return from `clone` first: 0.6–1.1 ms measured with `perf trace` here).
fn flags_map_themselves(plan: &LaunchPlan, cgroup_procs: Option<&Path>) -> bool {
    plan.namespaces && cgroup_procs.is_none()
}

/// Who writes PID 1's id maps: PID 1 itself (`self_maps`), or the parent, after PID 1 told it
/// that it became dumpable (`handshake`) when warden is not (`non_dumpable`).
#[derive(Debug, Clone, Copy)]
struct Maps {
    non_dumpable: bool,
    handshake: bool,
    self_maps: bool,
}

/// The descriptors PID 1 starts with (besides its standard ones).
struct Pid1Fds {
    theirs: OwnedFd,
    sync_r: OwnedFd,
    sync_w: OwnedFd,
    ready_r: OwnedFd,
    ready_w: OwnedFd,
}

/// The child side of the clone: become dumpable if needed, wait for the id maps, keep only the
/// control socket (at [`CONTROL_FD`]) and run PID 1.
fn become_pid1(
    child: sys::FreshChild,
    plan: &LaunchPlan,
    flags: libc::c_int,
    parent: libc::pid_t,
    maps: Maps,
    deadline: Option<Instant>,
    fds: Pid1Fds,
) -> ! {
    let Pid1Fds { theirs, sync_r, sync_w, ready_r, ready_w } = fds;
    let Maps { non_dumpable, handshake, self_maps } = maps;
    {
        drop(sync_w);
        // warden may have made itself non-dumpable (credential mode); then our /proc files would
        // belong to root and neither the parent nor we could write our id maps. The command cannot
        // use this: PID 1 holds capabilities the command lacks (no ptrace access) and Landlock
        // scopes ptrace.
        if non_dumpable {
            let _ = sys::prctl(libc::PR_SET_DUMPABLE, 1, 0);
        }
        if handshake {
            // Tell the parent it may write our id maps now.
            if sys::write_all(ready_w.as_raw_fd(), b"1").is_err() {
                sys::exit_now(125);
            }
        }
        drop(ready_w);
        drop(ready_r);
    }
    // The relayed signals stay blocked (as in the parent) until PID 1 has its handlers: a signal
    // the parent relays now stays pending instead of being dropped, which is what happens to a
    // signal from an ancestor namespace that finds the namespace's init without a handler.
    if sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0).is_err() {
        sys::exit_now(125);
    }
    if self_maps {
        // Our own id maps, written below (run_pid1) where a failure can be reported. The parent
        // sends nothing: if it died before PDEATHSIG was armed, its end of the pipe is closed.
        if sys::peer_closed(&sync_r) {
            sys::exit_now(125);
        }
    } else {
        // Wait until the parent has written our id maps (and joined us to the cgroup). EOF means
        // the parent died before that: there is nobody to run for.
        let mut go = [0u8; 1];
        if !matches!(sys::read(sync_r.as_raw_fd(), &mut go), Ok(1)) || (flags == 0 && sys::getppid() != parent) {
            sys::exit_now(125);
        }
    }
    drop(sync_r);
    if sys::dup2(&child, theirs.as_raw_fd(), CONTROL_FD).is_err()
        || sys::close_from(&child, CONTROL_FD as u32 + 1).is_err()
    {
        sys::exit_now(125);
    }
    crate::init::run_pid1(child, plan, deadline, self_maps)
}

/// The parent's loop while PID 1 runs: messages, signals, the terminal, the timeout and the
/// supervisor's control descriptor, until every process of the sandbox is gone.
#[allow(clippy::too_many_arguments)]
fn supervise(
    plan: &LaunchPlan,
    pid1: libc::pid_t,
    pidfd: OwnedFd,
    ours: OwnedFd,
    sigfd: OwnedFd,
    start: Instant,
    deadline: Option<Instant>,
    wait_for_exit: bool,
    supervisor: &mut dyn Supervisor,
) -> Result<Report, LaunchError> {
    let mut messages: Vec<Message> = Vec::new();
    let mut timed_out = false;
    let mut cancelled: Option<String> = None;
    let mut refused: Option<Refusal> = None;
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let mut init_status = None;
    let mut relay: Option<Relay> = None;
    let mut listeners: Vec<(ListenerKind, OwnedFd)> = Vec::new();
    let mut degraded = Vec::new();
    let mut control = supervisor.control_fd();
    loop {
        let wait_ms = match deadline {
            Some(d) if !timed_out => d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32,
            _ => 60_000,
        };
        let mut fds = vec![
            libc::pollfd { fd: ours.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sigfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            // A negative descriptor is skipped by poll.
            libc::pollfd { fd: control.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
        ];
        if let Some(r) = &relay {
            fds.extend(r.poll_fds());
        }
        sys::poll(&mut fds, wait_ms).map_err(sys_err("poll"))?;
        if let Some(r) = relay.as_mut() {
            r.handle(&fds[4..]);
        }
        if fds[0].revents != 0 {
            for (msg, fd) in drain_messages(&ours, &mut buf, &mut messages) {
                match (msg, fd) {
                    (Message::PtyMaster, Some(fd)) => {
                        if let Some(t) = &plan.tty {
                            relay = Some(Relay::new(fd, t));
                        }
                    }
                    (Message::ProxyListener { kind }, Some(fd)) => listeners.push((kind, fd)),
                    (Message::ListenersSent, _) => match supervisor.listeners(std::mem::take(&mut listeners)) {
                        // PID 1 starts the command on this go-ahead.
                        Ok(()) => {
                            if sys::write_all(ours.as_raw_fd(), b"go").is_err() {
                                let _ = sys::kill(pid1, libc::SIGKILL);
                            }
                        }
                        Err(r) => {
                            refused = Some(r);
                            let _ = sys::kill(pid1, libc::SIGKILL);
                        }
                    },
                    (Message::Stopped { .. }, _) => {
                        // When warden holds the foreground of its terminal, it stops like a job;
                        // otherwise the command stays stopped, as a shell would leave it.
                        if let Some(r) = relay.as_mut() {
                            if r.suspend() {
                                stop_like_a_job(Some(r), pid1, libc::SIGTSTP, true);
                            }
                        }
                    }
                    (Message::Degraded { layer, why }, _) => {
                        supervisor.degraded(&layer, &why);
                        degraded.push((layer, why));
                    }
                    _ => {}
                }
            }
            // Every process of the sandbox is dead and reaped once PID 1 says Finished (or
            // TimedOut); what is left is PID 1's own exit and the kernel's namespace teardown,
            // which need not delay the caller. PID 1 is killed (it would die with us by PDEATHSIG
            // anyway).
            let ended = |m: &Message| matches!(m, Message::Finished { .. } | Message::TimedOut { .. });
            if !wait_for_exit && messages.iter().any(ended) {
                let _ = sys::kill(pid1, libc::SIGKILL);
                break;
            }
        }
        if fds[1].revents != 0 {
            // Bounded: each read takes one pending signal, and the kernel coalesces each standard
            // signal into one pending instance.
            for _ in 0..1024 {
                let Ok(Some((sig, _code))) = sys::read_signalfd(&sigfd) else { break };
                match (sig, relay.as_mut()) {
                    (libc::SIGWINCH, Some(r)) => r.resize(),
                    (libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU, r) => stop_like_a_job(r, pid1, sig, false),
                    (_, r) => {
                        if sig == libc::SIGCONT {
                            // `fg` or `bg` after a stop: take the terminal back if it is ours again.
                            if let Some(r) = r {
                                r.resume();
                            }
                        }
                        // From a process or from warden's terminal (Ctrl-C with the standard
                        // streams redirected, a hangup): the sandbox has a session of its own, so
                        // it gets the signal only from us.
                        let _ = sys::kill(pid1, sig);
                    }
                }
            }
        }
        if fds[3].revents != 0 {
            match supervisor.control() {
                Control::Continue => {}
                Control::Signal(sig) => {
                    let _ = sys::kill(pid1, sig);
                }
                Control::Cancel(reason) => {
                    // Once cancelled, the supervisor is not asked again: PID 1 is dying.
                    control = None;
                    cancelled.get_or_insert(reason);
                    let _ = sys::kill(pid1, libc::SIGKILL);
                }
            }
        }
        if fds[2].revents != 0 {
            init_status = sys::waitpid(pid1, false).map_err(sys_err("waitpid"))?.map(|(_, s)| s);
            drain_messages(&ours, &mut buf, &mut messages);
            break;
        }
        if let Some(d) = deadline {
            if !timed_out && Instant::now() >= d {
                timed_out = true;
                let _ = sys::kill(pid1, libc::SIGKILL);
            }
        }
    }
    if let Some(r) = relay.as_mut() {
        r.finish();
    }
    let duration = start.elapsed();
    let peak_rss_kib = messages
        .iter()
        .find_map(|m| match m {
            Message::Finished { peak_rss_kib, .. } | Message::TimedOut { peak_rss_kib } => Some(*peak_rss_kib),
            _ => None,
        })
        .unwrap_or(0);
    // What PID 1 reported before a cancellation still wins: the command had already ended.
    let reported = messages.iter().any(|m| {
        matches!(
            m,
            Message::Finished { .. }
                | Message::TimedOut { .. }
                | Message::SetupFailed { .. }
                | Message::ExecFailed { .. }
        )
    });
    let outcome = match (refused, cancelled) {
        (Some(r), _) => Outcome::SetupFailed { layer: r.layer, detail: r.detail },
        (None, Some(reason)) if !reported => Outcome::Cancelled { reason },
        _ => decide(&messages, timed_out, init_status),
    };
    Ok(Report { outcome, duration, peak_rss_kib, degraded })
}

/// Stops the way a job does, with `sig`: PID 1 stops every process of the sandbox (`SIGTSTP` to
/// PID 1), the terminal goes back in the modes warden found it in, and warden stops (`group`:
/// its whole process group, as the terminal would stop a job; otherwise itself, which is what
/// the signal it received reached), so the shell reports the job stopped. Once continued (`fg`,
/// `bg`), warden takes the terminal back if it is in the foreground again and continues the
/// sandbox (`SIGCONT` to PID 1). The stop takes effect before [`stop_self`] returns, so the code
/// after it runs only when warden was continued, or when no stop happened at all (an orphaned
/// process group, whose stops the kernel discards): either way the sandbox must not stay stopped.
/// A `--timeout` deadline passing meanwhile is PID 1's to enforce.
fn stop_like_a_job(relay: Option<&mut Relay>, pid1: libc::pid_t, sig: libc::c_int, group: bool) {
    let _ = sys::kill(pid1, libc::SIGTSTP);
    let mut relay = relay;
    if let Some(r) = relay.as_mut() {
        r.suspend();
    }
    stop_self(sig, group);
    if let Some(r) = relay {
        r.resume();
    }
    let _ = sys::kill(pid1, libc::SIGCONT);
}

/// Stops this process with the job-control signal `sig` (blocked while the sandbox runs), sent
/// to its process group when `group`: the signal is raised while blocked, then unblocked, so its
/// default action (stop) takes effect before the unblocking returns; then it is blocked again.
fn stop_self(sig: libc::c_int, group: bool) {
    let one = SigSet::of(&[sig]);
    let _ = sys::kill(if group { 0 } else { sys::getpid() }, sig);
    let _ = one.unblock();
    let _ = one.block();
}

fn namespace_flags(plan: &LaunchPlan) -> libc::c_int {
    if !plan.namespaces {
        return 0;
    }
    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if plan.new_network {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

fn clone_detail(errno: Errno) -> String {
    let hint = match errno.0 {
        libc::EPERM | libc::EACCES => {
            " (user namespaces may be disabled: kernel.unprivileged_userns_clone, \
             kernel.apparmor_restrict_unprivileged_userns, or a container without CAP_SYS_ADMIN)"
        }
        libc::ENOSPC | libc::EUSERS => " (user.max_user_namespaces or another namespace limit reached)",
        _ => "",
    };
    format!("clone() into new namespaces failed: {errno}{hint}")
}

/// Which namespace cannot be created: probe them one by one in throwaway children.
fn failing_namespace(plan: &LaunchPlan) -> &'static str {
    let all = namespace_flags(plan);
    let steps: [(libc::c_int, &'static str); 6] = [
        (libc::CLONE_NEWUSER, "user namespace"),
        (libc::CLONE_NEWNS, "mount namespace"),
        (libc::CLONE_NEWPID, "pid namespace"),
        (libc::CLONE_NEWIPC, "ipc namespace"),
        (libc::CLONE_NEWUTS, "uts namespace"),
        (libc::CLONE_NEWNET, "network namespace"),
    ];
    let mut flags = 0;
    for (flag, name) in steps {
        if all & flag == 0 {
            continue;
        }
        flags |= flag;
        // Still single-threaded: the clone of the sandbox itself just failed.
        let Ok(proof) = SingleThreaded::check() else { return "namespaces" };
        match sys::clone_process(proof, flags) {
            Ok(Forked::Child(_)) => sys::exit_now(0),
            Ok(Forked::Parent(pid)) => {
                let _ = sys::waitpid(pid, false);
            }
            Err(_) => return name,
        }
    }
    "namespaces"
}

/// Before PID 1 may go on: its uid/gid maps (same ids inside as outside) and its cgroup.
fn prepare_child(plan: &LaunchPlan, pid: libc::pid_t, cgroup_procs: Option<&Path>) -> Result<(), Outcome> {
    let failed = |layer: &str, detail: String| Outcome::SetupFailed { layer: layer.into(), detail };
    if let Some(procs) = cgroup_procs {
        std::fs::write(procs, pid.to_string())
            .map_err(|e| failed("process limit", format!("cannot join {}: {e}", procs.display())))?;
    }
    if plan.namespaces {
        crate::init::write_id_maps(&format!("/proc/{pid}"), plan.uid, plan.gid)
            .map_err(|detail| failed("user namespace", detail))?;
    }
    Ok(())
}

/// Reads every pending message. Those that call for action now (a descriptor came with it, the
/// listeners are all there, or the command stopped) are returned; the rest, which decide the
/// outcome, go to `out`.
fn drain_messages(sock: &OwnedFd, buf: &mut [u8], out: &mut Vec<Message>) -> Vec<(Message, Option<OwnedFd>)> {
    let mut act = Vec::new();
    loop {
        match sys::recv_with_fd(sock.as_raw_fd(), buf) {
            Ok((0, _)) | Err(_) => return act,
            Ok((n, fd)) => match Message::decode(&buf[..n]) {
                Some(m @ (Message::Stopped { .. } | Message::ListenersSent | Message::Degraded { .. })) => {
                    act.push((m, fd))
                }
                Some(m) => {
                    if fd.is_some() {
                        act.push((m.clone(), fd));
                    }
                    out.push(m);
                }
                None => {}
            },
        }
    }
}

fn decide(messages: &[Message], timed_out: bool, init: Option<WaitStatus>) -> Outcome {
    for m in messages {
        if let Message::SetupFailed { layer, detail } = m {
            return Outcome::SetupFailed { layer: layer.clone(), detail: detail.clone() };
        }
    }
    for m in messages {
        if let Message::ExecFailed { program, errno } = m {
            return Outcome::ExecFailed { program: program.clone(), errno: Errno(*errno) };
        }
    }
    if timed_out || messages.iter().any(|m| matches!(m, Message::TimedOut { .. })) {
        return Outcome::TimedOut;
    }
    for m in messages {
        match m {
            Message::Finished { status, hook: Some(program), .. } => {
                return Outcome::HookFailed { program: program.clone(), status: *status }
            }
            Message::Finished { status, hook: None, .. } => return Outcome::Finished(*status),
            _ => {}
        }
    }
    match init {
        Some(WaitStatus::Signaled(s)) => Outcome::SetupFailed {
            layer: "init".into(),
            detail: format!("the sandbox init was killed by signal {s} before the command finished"),
        },
        _ => Outcome::SetupFailed {
            layer: "init".into(),
            detail: "the sandbox init ended without reporting the command's status".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Outcome::Finished(CommandStatus::Exited(3)).exit_code(), 3);
        assert_eq!(Outcome::Finished(CommandStatus::Signaled(9)).exit_code(), 137);
        assert_eq!(Outcome::TimedOut.exit_code(), 124);
        assert_eq!(Outcome::SetupFailed { layer: "x".into(), detail: "y".into() }.exit_code(), 125);
        assert_eq!(Outcome::ExecFailed { program: "p".into(), errno: Errno(libc::ENOENT) }.exit_code(), 127);
        assert_eq!(Outcome::ExecFailed { program: "p".into(), errno: Errno(libc::EACCES) }.exit_code(), 126);
    }

    #[test]
    fn setup_failure_wins_over_everything() {
        let msgs = vec![
            Message::Finished { status: CommandStatus::Exited(0), hook: None, peak_rss_kib: 0 },
            Message::SetupFailed { layer: "landlock".into(), detail: "d".into() },
        ];
        assert!(matches!(decide(&msgs, true, None), Outcome::SetupFailed { .. }));
    }
}
