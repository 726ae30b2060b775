//! A session spec compiled into a launch plan, and the layers this kernel cannot enforce.
//!
//! Guarantees: every layer the profile promises that the running kernel lacks is listed in
//! [`Prepared::degraded`] (nothing is dropped silently); with a credential, the plan opens the
//! credential proxy's listener inside the sandbox's own network namespace and the command's
//! environment holds only the proxy's URL and a dummy key, never the credential's variable.

use serde::{Deserialize, Serialize};
use warden_policy::NetMode;
use warden_sandbox::doctor::LANDLOCK_ABI_FULL;
use warden_sandbox::plan::{self, CompileOptions, LaunchPlan};

use crate::{CredentialSource, SessionError, SessionSpec};

/// Where the credential proxy listens inside the sandbox's network namespace.
pub const CREDENTIAL_PORT: u16 = 8787;

/// The `OPENAI_API_KEY` the command sees when the credential proxy holds the real one.
pub const DUMMY_KEY: &str = "warden-proxied";

/// A layer the profile promises but this kernel does not provide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegradedLayer {
    /// The layer.
    pub layer: String,
    /// Why it cannot be enforced.
    pub why: String,
}

/// A spec with its launch plan, ready for [`crate::Session::open`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The spec (its `host_env` without the credential's variable).
    pub spec: SessionSpec,
    /// What the sandbox's PID 1 will build and run.
    pub plan: LaunchPlan,
    /// Layers the profile promises that cannot be enforced here.
    pub degraded: Vec<DegradedLayer>,
    /// The Landlock ABI of the running kernel.
    pub landlock_abi: Option<u32>,
}

/// Compiles `spec` into a plan for this kernel and this process's uid and gid.
pub fn prepare(mut spec: SessionSpec) -> Result<Prepared, SessionError> {
    if let Some(CredentialSource::Env { var }) = spec.credential.as_ref().map(|c| &c.source) {
        spec.host_env.retain(|(k, _)| k != var);
    }
    let policy = &spec.policy;
    let landlock_abi = warden_sandbox::landlock_abi();
    let mut degraded = Vec::new();
    if !policy.profile.everything_writable() {
        match landlock_abi {
            None => degraded.push(DegradedLayer {
                layer: "landlock".into(),
                why: "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, or `lsm=` lacks landlock)".into(),
            }),
            Some(abi) if abi < LANDLOCK_ABI_FULL => degraded.push(DegradedLayer {
                layer: "landlock scoping".into(),
                why: format!(
                    "Landlock ABI {abi} < {LANDLOCK_ABI_FULL}: signals and abstract unix sockets cannot be scoped to the sandbox"
                ),
            }),
            Some(_) => {}
        }
    }
    let env = policy.env.apply(&spec.host_env);
    let (uid, gid) = warden_sandbox::current_ids();
    let opts = CompileOptions { allow_nested_userns: spec.allow_nested_userns, landlock_abi };
    let mut plan = plan::compile(policy, &spec.argv, env, uid, gid, &opts).map_err(SessionError::Plan)?;
    if let Some(hook) = &spec.init_hook {
        if hook.is_empty() || hook.iter().any(|a| a.contains('\0')) {
            return Err(SessionError::Plan(plan::PlanError::Nul { what: "the init hook", value: hook.join(" ") }));
        }
        plan.init_hook = Some(hook.clone());
    }
    if let Some(c) = &spec.credential {
        if !(plan.namespaces && plan.new_network) {
            return Err(SessionError::CredentialNeedsNetns);
        }
        let var = match &c.source {
            CredentialSource::Env { var } => Some(var.as_str()),
            _ => None,
        };
        plan.credential_port = Some(CREDENTIAL_PORT);
        plan.env.retain(|(k, _)| k != "OPENAI_BASE_URL" && k != "OPENAI_API_KEY" && Some(k.as_str()) != var);
        plan.env.push(("OPENAI_BASE_URL".into(), credential_base_url()));
        plan.env.push(("OPENAI_API_KEY".into(), DUMMY_KEY.into()));
    }
    Ok(Prepared { spec, plan, degraded, landlock_abi })
}

/// The base URL of the credential proxy as the command sees it.
fn credential_base_url() -> String {
    format!("http://127.0.0.1:{CREDENTIAL_PORT}/v1")
}

impl Prepared {
    /// `OPENAI_BASE_URL` as the command sees it, when a credential is served.
    pub fn credential_base_url(&self) -> Option<String> {
        self.spec.credential.as_ref().map(|_| credential_base_url())
    }

    /// What weakens this sandbox on purpose, one line each (for startup warnings): `trusted`,
    /// `--net host`, running as root.
    pub fn risks(&self) -> Vec<String> {
        let policy = &self.spec.policy;
        let mut out = Vec::new();
        if policy.profile.everything_writable() {
            out.push("profile `trusted`: no filesystem, network or syscall confinement".to_owned());
        } else if policy.net == NetMode::Host {
            out.push(
                "--net host: the command can reach any network address, including this machine's services".to_owned(),
            );
        }
        if self.plan.uid == 0 {
            out.push("running as root: the sandbox's uid 0 owns root's files; prefer an unprivileged user".to_owned());
        }
        out
    }
}
