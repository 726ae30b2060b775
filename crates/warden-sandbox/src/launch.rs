//! The parent side of `warden run`: forks the sandbox init with a plan, relays signals,
//! enforces the timeout and reports how the command ended.
//!
//! Guarantees: the init talks back over a `SOCK_SEQPACKET` socket; it is killed (and with it the whole sandbox) when the timeout expires or when this
//! process dies (`PR_SET_PDEATHSIG`); signals sent to `warden` by other processes reach the
//! command; terminal-generated signals are not duplicated.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cgroup::PidsCgroup;
use crate::plan::LaunchPlan;
use crate::protect::Placeholders;
use crate::protocol::{CommandStatus, Message, CONTROL_FD, MAX_MESSAGE_BYTES};
use crate::sys::{self, Errno, SigSet, WaitStatus};

/// Signals `warden run` relays to the sandbox.
const RELAYED: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
];

/// How a launched command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran and exited or was killed by a signal.
    Finished(CommandStatus),
    /// The command ran longer than the timeout and was killed with its whole tree.
    TimedOut,
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
}

impl Outcome {
    /// The exit status `warden run` should exit with (see the README's exit-status table).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Finished(CommandStatus::Exited(c)) => *c,
            Outcome::Finished(CommandStatus::Signaled(s)) => 128 + s,
            Outcome::TimedOut => 124,
            Outcome::SetupFailed { .. } => 125,
            Outcome::ExecFailed { errno, .. } if errno.0 == libc::ENOENT => 127,
            Outcome::ExecFailed { .. } => 126,
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

/// Runs `plan` in a forked init and waits for the end.
///
/// Must be called while the process is single-threaded (it forks); otherwise it refuses.
pub fn run(plan: &LaunchPlan, timeout: Option<Duration>) -> Result<Report, LaunchError> {
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads != 1 {
        return Err(LaunchError::NotSingleThreaded { threads });
    }
    let cgroup = match plan.pids_cgroup_max.map(PidsCgroup::create).transpose() {
        Ok(c) => c,
        Err(detail) => {
            return Ok(setup_failed("process limit (--max-procs as root needs a pids cgroup)", detail));
        }
    };
    let placeholders = match Placeholders::ensure(&crate::plan::protected_paths(plan)) {
        Ok(p) => p,
        Err(detail) => return Ok(setup_failed("protected path", detail)),
    };
    let relayed = SigSet::of(RELAYED);
    relayed.block().map_err(sys_err("blocking signals"))?;
    let procs = cgroup.as_ref().map(|c| c.procs_file());
    let result = fork_and_wait(plan, timeout, &relayed, procs.as_deref());
    let _ = SigSet::unblock_all();
    drop(cgroup);
    drop(placeholders);
    result
}

fn setup_failed(layer: &str, detail: String) -> Report {
    Report { outcome: Outcome::SetupFailed { layer: layer.into(), detail }, duration: Duration::ZERO, peak_rss_kib: 0 }
}

fn fork_and_wait(
    plan: &LaunchPlan,
    timeout: Option<Duration>,
    relayed: &SigSet,
    cgroup_procs: Option<&Path>,
) -> Result<Report, LaunchError> {
    let (ours, theirs) = sys::seqpacket_pair().map_err(sys_err("socketpair for the control channel"))?;
    let sigfd = relayed.signalfd().map_err(sys_err("signalfd"))?;
    let parent = sys::getpid();
    let start = Instant::now();
    let outer = sys::fork_single_threaded().map_err(sys_err("fork of the sandbox init"))?;
    if outer == 0 {
        // The child: a copy of this single-threaded process.
        let _ = SigSet::unblock_all();
        if sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0).is_err() || sys::getppid() != parent {
            sys::exit_now(125);
        }
        if let Some(procs) = cgroup_procs {
            if std::fs::write(procs, "0").is_err() {
                sys::exit_now(125);
            }
        }
        if sys::dup2(theirs.as_raw_fd(), CONTROL_FD).is_err() || sys::close_from(CONTROL_FD as u32 + 1).is_err() {
            sys::exit_now(125);
        }
        crate::init::run_forked(plan);
    }
    drop(theirs);
    let pidfd = sys::pidfd_open(outer).map_err(sys_err("pidfd_open"))?;

    let deadline = timeout.map(|t| start + t);
    let mut init_pid: Option<libc::pid_t> = None;
    let mut messages: Vec<Message> = Vec::new();
    let mut timed_out = false;
    let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
    let outer_status;
    loop {
        let wait_ms = match deadline {
            Some(d) if !timed_out => d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32,
            _ => 60_000,
        };
        let ready = sys::poll_readable(&[ours.as_raw_fd(), sigfd.as_raw_fd(), pidfd.as_raw_fd()], wait_ms)
            .map_err(sys_err("poll"))?;
        if ready[0] {
            drain_messages(&ours, &mut buf, &mut messages, &mut init_pid);
        }
        if ready[1] {
            while let Ok(Some((sig, code))) = sys::read_signalfd(&sigfd) {
                // code > 0: generated by the kernel (the terminal), which already signalled the
                // command in our process group. Otherwise another process asked us: relay.
                if code <= 0 {
                    let _ = sys::kill(init_pid.unwrap_or(outer), sig);
                }
            }
        }
        if ready[2] {
            outer_status = sys::waitpid(outer, false).map_err(sys_err("waitpid"))?;
            drain_messages(&ours, &mut buf, &mut messages, &mut init_pid);
            break;
        }
        if let Some(d) = deadline {
            if !timed_out && Instant::now() >= d {
                timed_out = true;
                if let Some(p) = init_pid {
                    let _ = sys::kill(p, libc::SIGKILL);
                }
                let _ = sys::kill(outer, libc::SIGKILL);
            }
        }
    }
    let duration = start.elapsed();
    let outcome = decide(&messages, timed_out, outer_status.map(|(_, s)| s));
    Ok(Report { outcome, duration, peak_rss_kib: sys::children_max_rss_kib() })
}

fn drain_messages(sock: &OwnedFd, buf: &mut [u8], out: &mut Vec<Message>, init_pid: &mut Option<libc::pid_t>) {
    loop {
        let ready = sys::poll_readable(&[sock.as_raw_fd()], 0).unwrap_or_default();
        if !ready.first().copied().unwrap_or(false) {
            return;
        }
        match sys::read(sock.as_raw_fd(), buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(m) = Message::decode(&buf[..n]) {
                    if let Message::Started { init_pid: p } = m {
                        *init_pid = Some(p);
                    }
                    out.push(m);
                }
            }
        }
    }
}

fn decide(messages: &[Message], timed_out: bool, outer: Option<WaitStatus>) -> Outcome {
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
    if timed_out {
        return Outcome::TimedOut;
    }
    for m in messages {
        if let Message::Finished { status } = m {
            return Outcome::Finished(*status);
        }
    }
    match outer {
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
            Message::Finished { status: CommandStatus::Exited(0) },
            Message::SetupFailed { layer: "landlock".into(), detail: "d".into() },
        ];
        assert!(matches!(decide(&msgs, true, None), Outcome::SetupFailed { .. }));
    }
}
