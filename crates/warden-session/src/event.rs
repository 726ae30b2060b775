//! What a session reports while it opens and runs.
//!
//! Guarantees: events carry no secret (no header value, no key, no environment value), and the
//! same JSON form travels over a spawned session's control channel.

use serde::{Deserialize, Serialize};

/// One thing that happened in a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionEvent {
    /// Something worked around or worth knowing (e.g. an expired allow rule was ignored).
    Warning {
        /// One line, without a `warden: warning:` prefix.
        message: String,
    },
    /// The session runs without a layer the profile promises (the policy allows degrading).
    Degraded {
        /// The layer.
        layer: String,
        /// Why it cannot be enforced.
        why: String,
    },
    /// No namespace could be made: the session falls back to Landlock and seccomp only.
    Fallback {
        /// The namespace layer that failed.
        layer: String,
        /// Why.
        detail: String,
    },
    /// A record could not be appended to (or synced in) the audit log.
    AuditFailed {
        /// The record's event name (or `sync`).
        record: String,
        /// Why.
        error: String,
    },
    /// The sandbox's PID 1 was released.
    Started {
        /// PID 1's pid, as the process that started the session sees it.
        pid: i32,
        /// The session id of the audit records, when auditing is on.
        audit_session: Option<String>,
    },
    /// The egress proxy let a connection through.
    ConnectionAllowed {
        /// `http`, `connect` or `socks5`.
        protocol: String,
        /// The destination host.
        host: String,
        /// The destination port.
        port: u16,
    },
    /// The egress proxy refused a connection.
    ConnectionDenied {
        /// `http`, `connect` or `socks5`.
        protocol: String,
        /// The destination host.
        host: String,
        /// The destination port.
        port: u16,
        /// The `X-Warden-Deny` reason.
        reason: Option<String>,
    },
    /// A spawned session did not start; the message is its [`crate::SessionError`].
    Refused {
        /// The error, one line.
        message: String,
    },
    /// An audit record of a spawned session whose log is its owner's
    /// ([`warden_policy::AuditSettings::forward`]): the owner appends it to its own log.
    Record {
        /// The record's event name.
        name: String,
        /// Its fields.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// The session ended.
    Exited(SessionExit),
}

/// How a session ended, in the form its `run.exit` record and its control channel carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionExit {
    /// The exit status `warden run` exits with (the command's own, 128+N, 124, 125, 126, 127).
    pub exit_code: i32,
    /// `exited`, `signaled`, `timed-out`, `setup-failed`, `exec-failed`, `cancelled` or `refused`.
    pub outcome: String,
    /// The signal that killed the command (`signaled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// What failed or why it was cancelled (`setup-failed`, `exec-failed`, `cancelled`, `refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// From the launch to the end.
    pub duration_ms: u64,
    /// Peak RSS of the largest process of the sandbox, KiB.
    pub peak_rss_kib: u64,
    /// Connections the egress proxy denied.
    pub denied_connections: u64,
}

/// Receives a session's events, from any thread (the proxies report from their runtime): keep it
/// short and non-blocking.
pub trait EventSink: Send + Sync {
    /// One event.
    fn event(&self, event: &SessionEvent);
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullEvents;

impl EventSink for NullEvents {
    fn event(&self, _: &SessionEvent) {}
}
