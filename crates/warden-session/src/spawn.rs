//! The spawn path: sandboxed sessions for multi-threaded (tokio) programs.
//!
//! [`spawn`] re-executes the warden binary as `warden __session --control-fd 3` (see
//! [`crate::child`]) with an empty environment, `/` as its directory, the command's standard
//! streams (pipes, a pty, or the caller's own) and one end of a fresh socketpair at descriptor 3.
//! The spec goes over the socket as a frame, the key (if any) as the next one: neither ever
//! passes through argv or the environment. The child does everything `warden run` does, with
//! its own single thread at the moment it clones the sandbox.
//!
//! The socket stays open as the control channel. Guarantees:
//! - its end kills the whole sandbox: when the [`SessionHandle`] is dropped (its half of the
//!   socket is shut down) or this process dies (the kernel closes it). This does not depend on
//!   `PR_SET_PDEATHSIG`, which would fire when the *thread* that spawned the child exits, and
//!   tokio retires its threads; a dropped handle's child is also killed (`SIGKILL`) if it is still
//!   there after [`DROP_GRACE`], and reaped;
//! - events come back in order, at most [`EVENT_BUFFER`] of them waiting (more are counted in
//!   [`SessionHandle::dropped_events`], never blocking the session); the start and the end are
//!   kept aside as well, so [`SessionHandle::wait`] always knows how the session ended;
//! - the child runs in a process group of its own (a session of its own with a pty), so a
//!   terminal's Ctrl-C to this program's group does not reach it.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, watch};

use crate::frame::{self, Request, MAX_FRAME};
use crate::{
    CredentialSource, LockedSecret, Recorder, SessionError, SessionEvent, SessionExit, SessionSpec, StdioMode,
};

/// The descriptor number of the control socket in the child.
pub const CONTROL_FD: i32 = 3;
/// Events held for [`SessionHandle::next_event`] before newer ones are dropped (and counted).
pub const EVENT_BUFFER: usize = 4096;
/// How long a dropped handle's child has to end after its control channel closed.
pub const DROP_GRACE: Duration = Duration::from_secs(5);
/// How long [`SessionHandle::kill`] waits after its kill request before it kills the child itself.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What the reader task learned, for [`SessionHandle::wait`] and [`SessionHandle::started`].
#[derive(Debug, Clone, Default)]
struct State {
    started: Option<i32>,
    exit: Option<SessionExit>,
    refused: Option<String>,
    dropped: u64,
    /// The channel reached its end (the child closed it or died).
    closed: bool,
}

/// How a spawned session ended.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The session's own report, unless the child died before it could send one.
    pub exit: Option<SessionExit>,
    /// Why the session did not start, when it did not.
    pub refused: Option<String>,
    /// How the `warden __session` process ended.
    pub status: ExitStatus,
}

impl SessionEnd {
    /// The exit status `warden run` would have exited with: the report's, else the process's
    /// (128+N for signal N).
    pub fn exit_code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        if let Some(e) = &self.exit {
            return e.exit_code;
        }
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 125,
        }
    }
}

/// A running spawned session.
#[derive(Debug)]
pub struct SessionHandle {
    child: Option<Child>,
    /// The command's standard input ([`StdioMode::Pipes`]).
    pub stdin: Option<ChildStdin>,
    /// The command's standard output ([`StdioMode::Pipes`]).
    pub stdout: Option<ChildStdout>,
    /// The command's standard error ([`StdioMode::Pipes`]).
    pub stderr: Option<ChildStderr>,
    pty: Option<OwnedFd>,
    control: Option<OwnedWriteHalf>,
    events: mpsc::Receiver<SessionEvent>,
    state: watch::Receiver<State>,
    pid: Option<u32>,
}

/// Starts `spec` in a sandbox from a multi-threaded program: `warden` is the warden binary (for a
/// program that is warden itself, `std::env::current_exe()`).
///
/// A credential must be [`CredentialSource::Given`] with `key` (the key is sent as its own frame
/// and never copied into this process's heap by warden), [`CredentialSource::File`] (the child
/// reads the file), or [`CredentialSource::Env`] (read here, without changing this process's
/// environment, and sent like a given key).
pub async fn spawn(
    warden: &Path,
    spec: SessionSpec,
    key: Option<&LockedSecret>,
) -> Result<SessionHandle, SessionError> {
    spawn_recorded(warden, spec, key, None).await
}

/// [`spawn`], the session's audit records appended by `recorder` (this process's log) instead
/// of by the child: one writer, one chain, also for a log on standard output.
pub async fn spawn_recorded(
    warden: &Path,
    mut spec: SessionSpec,
    key: Option<&LockedSecret>,
    recorder: Option<Recorder>,
) -> Result<SessionHandle, SessionError> {
    if recorder.is_some() && spec.policy.audit.enabled {
        spec.policy.audit.forward = true;
    }
    let env_key = match spec.credential.as_mut() {
        Some(c) => match &c.source {
            CredentialSource::Env { var } => {
                let value = std::env::var(var)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|_| SessionError::CredentialVarUnset { var: var.clone() })?;
                let k = warden_credproxy::key_from_str(&value)
                    .map_err(|error| SessionError::CredentialKey { source_desc: c.source.describe(), error })?;
                c.source = CredentialSource::Given;
                Some(k)
            }
            _ => None,
        },
        None => None,
    };
    let key = env_key.as_ref().or(key);
    let given = spec.credential.as_ref().is_some_and(|c| c.source == CredentialSource::Given);
    match (given, key.is_some()) {
        (true, false) => return Err(SessionError::CredentialMismatch("a `given` credential needs the key")),
        (false, true) => {
            return Err(SessionError::CredentialMismatch("a key was passed but the credential is not `given`"))
        }
        _ => {}
    }
    let channel = |step| move |source| SessionError::Channel { step, source };
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(channel("socketpair"))?;
    let mut cmd = std::process::Command::new(warden);
    cmd.arg("__session").arg("--control-fd").arg(CONTROL_FD.to_string()).env_clear().current_dir("/");
    let mut pty = None;
    match spec.stdio {
        StdioMode::Inherit => {
            cmd.process_group(0);
        }
        StdioMode::Pipes => {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        }
        StdioMode::Pty { rows, cols } => {
            let (master, slave) = warden_sandbox::process::open_pty(warden_sandbox::plan::WinSize { rows, cols })
                .map_err(channel("opening a pty"))?;
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(channel("duplicating the pty"));
            cmd.stdin(dup(&slave)?).stdout(dup(&slave)?).stderr(Stdio::from(slave));
            warden_sandbox::process::controlling_terminal(&mut cmd);
            pty = Some(master);
        }
    }
    warden_sandbox::process::pass_fd(&mut cmd, OwnedFd::from(theirs), CONTROL_FD);
    let mut cmd = tokio::process::Command::from(cmd);
    let spawned = cmd.spawn();
    // The Command owns our copy of the child's end: close it now, so that the child's exit is
    // the channel's end.
    drop(cmd);
    let mut child = spawned.map_err(|source| SessionError::Spawn { binary: PathBuf::from(warden), source })?;
    let pid = child.id();
    ours.set_nonblocking(true).map_err(channel("non-blocking mode"))?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(channel("registering the socket"))?;
    let (mut rd, mut wr) = stream.into_split();
    let start = frame::encode(&Request::Start { spec: Box::new(spec), key_follows: key.is_some() })
        .map_err(channel("encoding the start request"))?;
    let sent = async {
        wr.write_all(&start).await?;
        if let Some(k) = key {
            wr.write_all(&frame::header(k.len())?).await?;
            wr.write_all(k.expose()).await?;
        }
        wr.flush().await
    }
    .await;
    if let Err(e) = sent {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(SessionError::Channel { step: "sending the start request", source: e });
    }
    let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
    let (state_tx, state) = watch::channel(State::default());
    tokio::spawn(async move {
        loop {
            let body = match frame::read_async(&mut rd, MAX_FRAME).await {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => break,
            };
            let Ok(event) = serde_json::from_slice::<SessionEvent>(&body) else { continue };
            if let SessionEvent::Record { name, mut fields } = event {
                if let Some(r) = &recorder {
                    // Which session it came from: the pid of its `warden __session` process.
                    fields.insert("session_pid".into(), serde_json::json!(pid));
                    r.record(&name, fields);
                }
                continue;
            }
            state_tx.send_modify(|s| match &event {
                SessionEvent::Started { pid, .. } => s.started = Some(*pid),
                SessionEvent::Exited(e) => s.exit = Some(e.clone()),
                SessionEvent::Refused { message } => s.refused = Some(message.clone()),
                _ => {}
            });
            if events_tx.try_send(event).is_err() {
                state_tx.send_modify(|s| s.dropped += 1);
            }
        }
        state_tx.send_modify(|s| s.closed = true);
    });
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    Ok(SessionHandle { child: Some(child), stdin, stdout, stderr, pty, control: Some(wr), events, state, pid })
}

impl SessionHandle {
    /// The pid of the `warden __session` process.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The sandbox's PID 1 once it was released (see [`SessionEvent::Started`]).
    pub fn sandbox_pid(&self) -> Option<i32> {
        self.state.borrow().started
    }

    /// The master side of the pty ([`StdioMode::Pty`]); the command's terminal is its slave.
    pub fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// The next event, in order; `None` once the session ended and every event was taken.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Events that did not fit the buffer (they were dropped, not blocking the session).
    pub fn dropped_events(&self) -> u64 {
        self.state.borrow().dropped
    }

    /// Waits until the sandbox's PID 1 was released: its pid; or why the session did not start.
    pub async fn started(&mut self) -> Result<i32, SessionError> {
        let state = self
            .state
            .wait_for(|s| s.started.is_some() || s.closed)
            .await
            .map_err(|_| SessionError::Protocol("the session's reader ended".into()))?
            .clone();
        match (state.started, state.refused) {
            (Some(pid), _) => Ok(pid),
            (None, Some(message)) => Err(SessionError::Refused(message)),
            (None, None) => Err(SessionError::Protocol("the session ended before it started".into())),
        }
    }

    async fn request(&mut self, r: &Request) -> Result<(), SessionError> {
        let bytes = frame::encode(r).map_err(|source| SessionError::Channel { step: "encoding a request", source })?;
        match self.control.as_mut() {
            Some(w) => {
                w.write_all(&bytes).await.map_err(|source| SessionError::Channel { step: "sending a request", source })
            }
            None => Ok(()),
        }
    }

    /// Sends `SIGTERM` to the command (through the sandbox's PID 1).
    pub async fn terminate(&mut self) -> Result<(), SessionError> {
        self.request(&Request::Terminate).await
    }

    /// Ends the session: `SIGTERM` to the command, then after `grace` the whole sandbox killed
    /// (and, should the child not end, the child itself); waits for the end.
    pub async fn kill(&mut self, grace: Duration) -> Result<SessionEnd, SessionError> {
        // A child that already ended does not read requests: ignore failures to send them.
        let _ = self.terminate().await;
        if let Ok(end) = tokio::time::timeout(grace, self.wait()).await {
            return end;
        }
        let _ = self.request(&Request::Kill).await;
        if let Ok(end) = tokio::time::timeout(KILL_GRACE, self.wait()).await {
            return end;
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        self.wait().await
    }

    /// Waits for the session's end (every process of the sandbox is gone by then).
    pub async fn wait(&mut self) -> Result<SessionEnd, SessionError> {
        let child =
            self.child.as_mut().ok_or_else(|| SessionError::Protocol("the session was already waited for".into()))?;
        let status =
            child.wait().await.map_err(|source| SessionError::Channel { step: "waiting for the session", source })?;
        // The child closed its end by exiting; the reader has the last frames, or gets them now.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.state.wait_for(|s| s.closed)).await;
        self.child = None;
        self.control = None;
        let state = self.state.borrow().clone();
        Ok(SessionEnd { exit: state.exit, refused: state.refused, status })
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // Dropping the write half shuts the channel down: the child kills its sandbox, records the
        // end and exits. Make sure it does, and reap it.
        self.control = None;
        let Some(mut child) = self.child.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if tokio::time::timeout(DROP_GRACE, child.wait()).await.is_err() {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                });
            }
            Err(_) => {
                let _ = child.start_kill();
            }
        }
    }
}

// A handle moves between tasks.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<SessionHandle>();
};
