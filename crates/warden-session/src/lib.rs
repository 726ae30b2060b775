//! One sandboxed warden session: a resolved [`Policy`] and a command become a running, audited
//! sandbox with its proxies and credential, the one place where that wiring exists.
//!
//! The CLI (`warden run`), the agent pool and the gateway all start sessions here:
//!
//! - [`prepare`]: the policy, argv and environment of a [`SessionSpec`] compiled into a launch
//!   plan, with the layers this kernel cannot enforce ([`DegradedLayer`]) and the credential
//!   proxy's place in the plan. Pure apart from reading the kernel's Landlock ABI.
//! - [`Session::open`]: the audit log opened, config warnings recorded, the egress proxy and the
//!   credential proxy built, degraded layers refused (unless the policy allows them; then they
//!   are audited). Every refusal is a `run.refused` record and a typed [`SessionError`].
//! - [`Session::run`]: `run.start` recorded (a run that cannot be recorded does not start), the
//!   sandbox launched, the proxies served on the listeners its PID 1 opens inside its network
//!   namespace (the command starts only once they are served), the `--allow-degraded` fallback
//!   when no namespace can be made, `run.exit` recorded. It clones the sandbox's PID 1 from the
//!   calling thread and therefore needs a **single-threaded** caller (it checks and refuses
//!   otherwise).
//! - [`spawn`]: the same for multi-threaded (tokio) callers. The `warden` binary is re-executed as
//!   `warden __session`; the spec and the key travel over an inherited socketpair as
//!   length-prefixed frames (never argv or the environment), the child reads them with raw
//!   `read(2)` before it has a second thread, and runs [`Session::run`]. The socket stays open as
//!   the control channel: events come back over it, and its end (the parent died or dropped the
//!   handle) kills the whole sandbox. [`child::serve`] is the child's side.
//!
//! Events ([`SessionEvent`]) report what happens to an [`EventSink`]: warnings, degraded layers,
//! the start, every egress decision, audit failures and the end with its status.
//!
//! Secrets: the key is a [`LockedSecret`] from the moment it is read; a key taken from an
//! environment variable is wiped from the process's initial environment block in place
//! ([`load_credential`]) before any fork or thread, so neither `/proc/<warden>/environ` nor that
//! of the sandbox's PID 1 holds it, and it is removed from the environment the policy filters.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
pub mod child;
mod credential;
mod error;
mod event;
mod frame;
mod gitrefs;
mod prepare;
mod proxies;
mod session;
pub mod spawn;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use audit::{fields, CredproxyAudit, EgressAudit, Recorder};
pub use credential::load_credential;
pub use error::SessionError;
pub use event::{EventSink, NullEvents, SessionEvent, SessionExit};
pub use prepare::{prepare, DegradedLayer, Prepared, CREDENTIAL_PORT, DUMMY_KEY};
pub use proxies::{build_egress, egress_config, flush_every_second};
pub use session::{Report, Session};
pub use spawn::{spawn, spawn_recorded, SessionEnd, SessionHandle};
pub use warden_credproxy::LockedSecret;
pub use warden_sandbox::launch::Outcome;

use warden_policy::{ConfigWarning, Policy};

/// Everything a session needs: what to enforce, what to run, where the key comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// The resolved policy (`warden_policy::resolve`).
    pub policy: Policy,
    /// Problems resolution worked around; recorded as `config.warning` when the session opens.
    #[serde(default)]
    pub warnings: Vec<ConfigWarning>,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The environment the policy's `[env]` rules start from (for the CLI, warden's own). A
    /// credential variable is removed from it by [`prepare`].
    pub host_env: Vec<(String, String)>,
    /// Serve a model key to the command through the credential proxy.
    #[serde(default)]
    pub credential: Option<CredentialSpec>,
    /// What the command's standard streams are (for [`spawn`]; [`Session::run`] uses the
    /// caller's own).
    #[serde(default)]
    pub stdio: StdioMode,
    /// Let the command create nested user namespaces (`--allow-nested-userns`).
    #[serde(default)]
    pub allow_nested_userns: bool,
    /// A command run first in the same sandbox (`warden codex`'s init hook); the command starts
    /// only if it exits 0 (see `warden_sandbox::plan::LaunchPlan::init_hook`).
    #[serde(default)]
    pub init_hook: Option<Vec<String>>,
}

/// Where the model key comes from and where the credential proxy sends requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSpec {
    /// The key's source.
    pub source: CredentialSource,
    /// The upstream URL (`--credential-upstream`).
    pub upstream: String,
}

/// The source of the model key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CredentialSource {
    /// An environment variable of this process (`--credential-env VAR`).
    Env {
        /// The variable.
        var: String,
    },
    /// A file holding the key (`--credential-file FILE`), masked inside the sandbox.
    File {
        /// The file.
        path: PathBuf,
    },
    /// The caller holds the key and passes it ([`Session::open`]'s `key`, [`spawn`]'s `key`).
    Given,
}

impl CredentialSource {
    /// How the key's source is named in messages and audit records.
    pub fn describe(&self) -> String {
        match self {
            CredentialSource::Env { var } => format!("environment variable {var}"),
            CredentialSource::File { path } => format!("file {}", path.display()),
            CredentialSource::Given => "caller".to_owned(),
        }
    }
}

/// The command's standard streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum StdioMode {
    /// The caller's own (the CLI; a spawned session inherits the parent's).
    #[default]
    Inherit,
    /// Three pipes: [`SessionHandle`]'s `stdin`, `stdout` and `stderr`.
    Pipes,
    /// A pseudo-terminal of this size: [`SessionHandle::take_pty`]; the command sees a terminal.
    Pty {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}
