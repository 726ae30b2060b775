//! Why a session could not be prepared, opened or run.
//!
//! Guarantees: every message is one lowercase line that names the failed step and the value or
//! path involved, and says how to proceed on purpose where warden refused on purpose. No message
//! contains key bytes.

use std::path::PathBuf;

use crate::prepare::DegradedLayer;

/// A session failed before or while running; the command did not run (or was not waited for).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The policy and command could not be compiled into a launch plan.
    #[error("{0}")]
    Plan(#[source] warden_sandbox::plan::PlanError),
    /// `--credential-env VAR` names a variable that is not set.
    #[error("--credential-env {var}: the variable is not set (or not UTF-8)")]
    CredentialVarUnset {
        /// The variable.
        var: String,
    },
    /// `--credential-file FILE` cannot be read.
    #[error("--credential-file {}: {source}", path.display())]
    CredentialFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key is not acceptable (empty, too long, a bad character); never shows the key.
    #[error("the key from the {source_desc}: {error}")]
    CredentialKey {
        /// Where the key came from ([`crate::CredentialSource::describe`]).
        source_desc: String,
        /// What is wrong with it.
        #[source]
        error: warden_credproxy::CredError,
    },
    /// The process could not be hardened before it holds the key.
    #[error("{0}")]
    Harden(#[source] warden_credproxy::CredError),
    /// The credential source is [`crate::CredentialSource::Given`] but no key was passed (or a key
    /// was passed without a credential in the spec).
    #[error("internal error: {0}")]
    CredentialMismatch(&'static str),
    /// The credential proxy needs a network namespace of the sandbox's own.
    #[error(
        "--credential-env / --credential-file serve the key through a proxy inside the sandbox's own network \
         namespace; that needs --net none or --net allowlist (not --net host or the trusted profile)"
    )]
    CredentialNeedsNetns,
    /// The credential proxy's upstream URL or settings are invalid.
    #[error("--credential-upstream {upstream:?}: {error}")]
    CredentialUpstream {
        /// The URL as given.
        upstream: String,
        /// What is wrong.
        error: String,
    },
    /// The credential proxy cannot be built (its upstream is unusable).
    #[error("{0}")]
    CredentialProxy(#[source] warden_credproxy::CredError),
    /// The audit log cannot be opened (or its settings are invalid).
    #[error("{0}")]
    Audit(String),
    /// The egress rules are invalid.
    #[error("[network] rules: {0}")]
    EgressRules(#[source] warden_egress::EgressError),
    /// Layers the profile promises cannot be enforced and the policy does not allow degrading.
    #[error(
        "cannot enforce: {}; refusing to run with a weaker sandbox than the profile promises; pass \
         --allow-degraded to accept this on purpose",
        layers.iter().map(|d| d.layer.as_str()).collect::<Vec<_>>().join(", ")
    )]
    Degraded {
        /// The layers.
        layers: Vec<DegradedLayer>,
    },
    /// `run.start` could not be recorded, so the command did not run.
    #[error("the command did not run: it could not be recorded (pass --no-audit to run without a record)")]
    NotRecorded,
    /// The sandbox could not be launched (a system call of warden itself failed).
    #[error("{0}")]
    Launch(#[source] warden_sandbox::launch::LaunchError),
    /// No namespace could be made, and the Landlock-only fallback has no Landlock either.
    #[error(
        "cannot enforce the {layer} layer ({detail}), and this kernel has no Landlock either: nothing would keep \
         the host read-only, so warden will not run the command even with --allow-degraded"
    )]
    NoFallback {
        /// The namespace layer that failed.
        layer: String,
        /// Why.
        detail: String,
    },
    /// No namespace could be made, and the proxies need a network namespace.
    #[error(
        "cannot enforce the {layer} layer ({detail}), and --net allowlist and --credential-* need a network \
         namespace of its own for the egress proxy; use --net none, or --net host to accept full network access"
    )]
    FallbackNeedsNetns {
        /// The namespace layer that failed.
        layer: String,
        /// Why.
        detail: String,
    },
    /// The degraded mode's private temporary directory could not be created.
    #[error("cannot create a private temporary directory: {0}")]
    PrivateTmp(#[source] std::io::Error),
    /// `warden __session` could not be started.
    #[error("cannot start {} __session: {source}", binary.display())]
    Spawn {
        /// The warden binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control channel to or from a spawned session failed.
    #[error("session control channel: {step}: {source}")]
    Channel {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The other side of the control channel broke the protocol.
    #[error("session control channel: {0}")]
    Protocol(String),
    /// A spawned session refused to start; the message is the child's [`SessionError`].
    #[error("{0}")]
    Refused(String),
}
