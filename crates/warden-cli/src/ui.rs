//! What the CLI prints: errors, and a session's events on stderr.

use warden_session::{EventSink, SessionEvent};

/// warden's own failure.
pub const EXIT_WARDEN: i32 = 125;

/// Prints `warden: error: ...` and returns 125.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("warden: error: {msg}");
    EXIT_WARDEN
}

/// Writes `line` and a newline to stderr in one `write(2)`: the sandboxed command shares the
/// terminal or pipe and writes to it at the same time, and a line printed in pieces
/// (`eprintln!` writes each formatted piece) can get the command's output in the middle.
fn say(line: String) {
    say_raw(line + "\n");
}

/// [`say`] without the newline.
fn say_raw(text: String) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Prints a session's warnings, degraded layers and audit failures on stderr, and with `verbose`
/// every egress decision.
pub struct StderrEvents {
    /// Print every egress decision.
    pub verbose: bool,
}

impl EventSink for StderrEvents {
    fn event(&self, event: &SessionEvent) {
        match event {
            SessionEvent::Warning { message } => say(format!("warden: warning: {message}")),
            SessionEvent::Degraded { layer, why } => {
                say(format!("warden: warning: running without the {layer} layer (--allow-degraded): {why}"))
            }
            SessionEvent::Fallback { layer, detail } => say(format!(
                "warden: warning: cannot enforce the {layer} layer ({detail}); --allow-degraded: running with Landlock and \
                 seccomp only: no private /tmp, /dev or /proc, no pid/ipc/uts/network namespace, inet and named unix \
                 sockets refused, TMPDIR is a private directory"
            )),
            SessionEvent::AuditFailed { record, error } if record == "sync" => {
                say(format!("warden: error: cannot sync the audit log: {error}"))
            }
            SessionEvent::AuditFailed { record, error } => {
                say(format!("warden: error: cannot append {record} to the audit log: {error}"))
            }
            // \r: the terminal may be in raw mode while a pty is relayed.
            SessionEvent::ConnectionAllowed { protocol, host, port } if self.verbose => {
                say_raw(format!("warden: egress allow {protocol} {host}:{port}\r\n"))
            }
            SessionEvent::ConnectionDenied { protocol, host, port, reason } if self.verbose => {
                let why = reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default();
                say_raw(format!("warden: egress deny {protocol} {host}:{port}{why}\r\n"))
            }
            _ => {}
        }
    }
}

/// `warden: denied 3 connections: evil.test (2), 169.254.169.254 (1)`, or nothing.
pub fn denied_line(denied: &[(String, u64)]) -> Option<String> {
    if denied.is_empty() {
        return None;
    }
    let total: u64 = denied.iter().map(|(_, n)| n).sum();
    let hosts: Vec<String> = denied.iter().map(|(h, n)| format!("{h} ({n})")).collect();
    Some(format!("warden: denied {total} connection{}: {}", if total == 1 { "" } else { "s" }, hosts.join(", ")))
}
