//! Messages from the sandbox's PID 1 (and the command child before exec) to the `warden run` parent.
//!
//! Transport: an `AF_UNIX` `SOCK_SEQPACKET` socket at descriptor [`CONTROL_FD`] of the init; one
//! JSON message per packet, so writes from the init's processes never interleave. The
//! descriptor is close-on-exec in the init, so the sandboxed command never holds it.

use serde::{Deserialize, Serialize};

/// Descriptor of the control socket in the init process.
pub const CONTROL_FD: i32 = 3;
/// Largest message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// The proxies whose listeners PID 1 opens inside the sandbox's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListenerKind {
    /// The egress proxy's HTTP and CONNECT port.
    #[serde(rename = "http")]
    EgressHttp,
    /// The egress proxy's SOCKS5 port.
    #[serde(rename = "socks5")]
    EgressSocks5,
    /// The credential proxy (`warden run --credential-*`).
    #[serde(rename = "credproxy")]
    Credential,
}

impl ListenerKind {
    /// The layer named when this listener cannot be opened or served.
    pub fn layer(self) -> &'static str {
        match self {
            ListenerKind::EgressHttp | ListenerKind::EgressSocks5 => "egress proxy",
            ListenerKind::Credential => "credential proxy",
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Message {
    /// The master side of the sandbox's own pseudo-terminal travels with this message
    /// (`SCM_RIGHTS`); the parent relays it to warden's terminal.
    PtyMaster,
    /// A listening socket bound on 127.0.0.1 inside the sandbox's network namespace travels with
    /// this message; the parent serves a proxy on it.
    ProxyListener {
        /// Which proxy.
        kind: ListenerKind,
    },
    /// Every listener has been sent. PID 1 now waits for the parent's go-ahead (one packet) before
    /// it starts the command, so a proxy that cannot be served refuses the run before the command's
    /// first instruction.
    ListenersSent,
    /// A layer cannot be had here and the plan allows degrading: it is skipped, the run goes on.
    Degraded {
        /// The layer (e.g. "proc", "hostname").
        layer: String,
        /// Why, and what restores it.
        why: String,
    },
    /// A layer could not be set up; the command did not run.
    SetupFailed {
        /// The layer (e.g. "user namespace", "mount", "landlock", "seccomp").
        layer: String,
        /// What failed, with the path or value.
        detail: String,
    },
    /// The command could not be executed.
    ExecFailed {
        /// The program as given.
        program: String,
        /// errno of execve.
        errno: i32,
    },
    /// The command stopped (Ctrl-Z on the sandbox's terminal, or a stop signal). The parent
    /// suspends itself like a job would: it sends `SIGTSTP` to PID 1 (which stops every other
    /// process of the sandbox), stops, and sends `SIGCONT` to PID 1 when it is continued.
    Stopped {
        /// The stop signal.
        signal: i32,
    },
    /// The deadline (`--timeout`) passed and PID 1 killed every process of the sandbox itself
    /// (the parent enforces the deadline too, but cannot while its job is stopped); the outcome
    /// is a timeout, whenever the parent reads this. Sent after every process has been reaped.
    TimedOut {
        /// Peak RSS of the largest process of the sandbox, KiB.
        peak_rss_kib: u64,
    },
    /// The command ended (or the init hook failed, and the command never started).
    /// Sent after every process of the sandbox has been killed and reaped.
    Finished {
        /// How.
        status: CommandStatus,
        /// Set when this is the init hook's status (a failure: the command did not start): the
        /// hook's program.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hook: Option<String>,
        /// Peak RSS of the largest process of the sandbox, KiB.
        peak_rss_kib: u64,
    },
}

impl Message {
    /// Serialises to one packet.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses one packet.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}
