//! The child side of the spawn path: `warden __session --control-fd N`.
//!
//! The parent ([`crate::spawn`]) re-executes the warden binary with the control socket at
//! descriptor N and the command's standard streams as its own. [`serve`] reads the start request
//! and, when one follows, the key, with raw `read(2)` while this process still has one thread;
//! then it prepares, opens and runs the session exactly as `warden run` does. While the sandbox
//! runs, the control socket is watched: its end (the parent died, or dropped its handle) or a
//! kill request kills the whole sandbox, a terminate request sends `SIGTERM` to the command.
//! Every event goes back over it as a frame, the end (`Exited`) last.
//!
//! Guarantees: nothing is printed (errors travel as [`SessionEvent::Refused`]); the process exits
//! with the session's exit status (125 when it did not start).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warden_sandbox::launch::Control;

use crate::frame::{self, Request, MAX_FRAME};
use crate::session::Controller;
use crate::{CredentialSource, EventSink, LockedSecret, Session, SessionError, SessionEvent, SessionExit};

/// Exit status when the session did not start.
const NOT_STARTED: i32 = 125;

/// Runs the session the parent sends over `control`; returns the exit status for the process.
/// Call it from `main` before any thread exists.
pub fn serve(control: OwnedFd) -> i32 {
    let stream = UnixStream::from(control);
    let events = match stream.try_clone() {
        Ok(out) => Arc::new(ChannelEvents { out: Mutex::new(out), exited: AtomicBool::new(false) }),
        Err(_) => return NOT_STARTED,
    };
    let result = start(&stream, &events);
    match result {
        Ok(code) => code,
        Err(e) => {
            events.event(&SessionEvent::Refused { message: e.to_string() });
            if !events.exited.load(Ordering::SeqCst) {
                events.event(&SessionEvent::Exited(SessionExit {
                    exit_code: NOT_STARTED,
                    outcome: "refused".into(),
                    signal: None,
                    detail: Some(e.to_string()),
                    duration_ms: 0,
                    peak_rss_kib: 0,
                    denied_connections: 0,
                }));
            }
            NOT_STARTED
        }
    }
}

fn start(stream: &UnixStream, events: &Arc<ChannelEvents>) -> Result<i32, SessionError> {
    let channel = |step| move |source| SessionError::Channel { step, source };
    let first = frame::read_blocking(&mut &*stream, MAX_FRAME)
        .map_err(channel("reading the start request"))?
        .ok_or_else(|| SessionError::Protocol("the parent closed the channel before the start request".into()))?;
    let (spec, key_follows) = match serde_json::from_slice::<Request>(&first) {
        Ok(Request::Start { spec, key_follows }) => (*spec, key_follows),
        Ok(_) => return Err(SessionError::Protocol("the first frame is not a start request".into())),
        Err(e) => return Err(SessionError::Protocol(format!("the start request is not valid: {e}"))),
    };
    if spec.policy.audit.enabled && spec.policy.audit.is_stdout() && !spec.policy.audit.forward {
        return Err(SessionError::Audit(
            "a spawned session cannot write its audit log to standard output (its standard output is the command's): \
             its owner appends the records (spawn_recorded)"
                .into(),
        ));
    }
    let given = spec.credential.as_ref().is_some_and(|c| c.source == CredentialSource::Given);
    if given != key_follows {
        return Err(SessionError::CredentialMismatch("the key frame must follow exactly when the credential is given"));
    }
    let key: Option<LockedSecret> = match &spec.credential {
        None => None,
        Some(c) if given => {
            // No core dumps, not ptrace-able, before the key is in memory.
            warden_credproxy::harden_process().map_err(SessionError::Harden)?;
            let len = frame::read_len(&mut &*stream, warden_credproxy::MAX_KEY_LEN)
                .map_err(channel("reading the key's length"))?
                .ok_or_else(|| SessionError::Protocol("the parent closed the channel before the key".into()))?;
            let key = warden_credproxy::read_key_exact(stream.as_fd(), len)
                .map_err(|error| SessionError::CredentialKey { source_desc: c.source.describe(), error })?;
            Some(key)
        }
        // A file: read here, as `warden run --credential-file` does.
        Some(c) => Some(crate::load_credential(&c.source)?),
    };
    // From here on a read that hangs is a broken parent: give up on it after a while.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let prepared = crate::prepare(spec)?;
    let session = Session::open(prepared, key, events.clone())?;
    let mut control = ChannelControl { stream };
    let report = session.run_controlled(Some(&mut control))?;
    Ok(report.exit_code())
}

/// Events as frames on the control socket. A write that fails (the parent is gone) is dropped:
/// the sandbox is about to be killed by the channel's end anyway.
struct ChannelEvents {
    out: Mutex<UnixStream>,
    exited: AtomicBool,
}

impl EventSink for ChannelEvents {
    fn event(&self, event: &SessionEvent) {
        if matches!(event, SessionEvent::Exited(_)) {
            self.exited.store(true, Ordering::SeqCst);
        }
        if let Ok(bytes) = frame::encode(event) {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(&bytes);
        }
    }
}

/// The parent's requests while the sandbox runs.
struct ChannelControl<'a> {
    stream: &'a UnixStream,
}

impl Controller for ChannelControl<'_> {
    fn fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }

    fn ready(&mut self) -> Control {
        match frame::read_blocking(&mut &*self.stream, MAX_FRAME) {
            Ok(None) => Control::Cancel("the session's owner closed the control channel".into()),
            Err(e) => Control::Cancel(format!("the session's control channel failed: {e}")),
            Ok(Some(body)) => match serde_json::from_slice::<Request>(&body) {
                Ok(Request::Terminate) => Control::Signal(libc::SIGTERM),
                Ok(Request::Kill) => Control::Cancel("killed by the session's owner".into()),
                Ok(Request::Start { .. }) => Control::Cancel("protocol error: a second start request".into()),
                Err(e) => Control::Cancel(format!("protocol error on the control channel: {e}")),
            },
        }
    }
}
