//! The pool `warden serve` runs: one [`SandboxLauncher`] per worker (the warm spare too), each
//! worker in warden's sandbox with its own fresh `CODEX_HOME`, the model key only in warden,
//! approvals answered by the policy and recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use warden_agent::approval::{ApprovalMode, ApprovalPolicy, RecorderSink};
use warden_agent::pool::{Pool, PoolSettings};
use warden_agent::supervisor::{Launcher, SandboxLauncher, SupervisorSettings};
use warden_agent::worker::{self, WorkerSettings};
use warden_policy::{AgentRule, HostContext, PolicyOptions};
use warden_session::{LockedSecret, Recorder};

use crate::settings::ServeSettings;

/// A started pool and what `/healthz` and the startup messages say about it.
pub struct Workers {
    /// The pool.
    pub pool: Pool,
    /// Startup warnings (clamped names, a weakened sandbox, a readable ChatGPT token).
    pub warnings: Vec<String>,
    /// warden's profile of the workers.
    pub profile: String,
    /// That profile in Codex's names.
    pub sandbox_mode: String,
    /// The approval mode of the threads.
    pub approval: ApprovalMode,
}

/// The Codex name of a warden profile (what `/healthz` reports as `sandbox_mode`).
pub fn codex_name(profile: warden_policy::Profile) -> &'static str {
    match profile {
        warden_policy::Profile::Offline | warden_policy::Profile::NetReadOnly => "read-only",
        warden_policy::Profile::WorkspaceWrite | warden_policy::Profile::WorkspaceNet => "workspace-write",
        warden_policy::Profile::Trusted => "danger-full-access",
    }
}

/// Whether the workers' audit log (their policy's) is standard output.
fn ws_audit_is_stdout(ws: &WorkerSettings, host: &HostContext) -> bool {
    warden_policy::resolve(&ws.base_options, host).is_ok_and(|r| r.policy.audit.enabled && r.policy.audit.is_stdout())
}

/// Prepares every worker (so a bad setting fails now) and starts the pool.
#[allow(clippy::too_many_arguments)]
pub fn start(
    s: &ServeSettings,
    warden: &Path,
    host: &HostContext,
    key: Option<Arc<LockedSecret>>,
    base_options: PolicyOptions,
    rules: Vec<AgentRule>,
    recorder: Recorder,
    home_base: PathBuf,
) -> Result<Workers, String> {
    let mut warnings = Vec::new();
    let (profile, clamp_warning) = worker::clamp_sandbox_mode(&s.sandbox, s.allow_trusted);
    warnings.extend(clamp_warning);
    let (approval_name, approval_warning) = worker::clamp_approval(&s.approval_policy);
    warnings.extend(approval_warning);
    let approval: ApprovalMode = approval_name.parse().map_err(|e| format!("approval policy: {e}"))?;
    let mut ws = WorkerSettings::new(&s.codex_bin, &home_base, &s.credential_upstream);
    ws.model = s.codex_model.clone().or_else(|| s.models.first().and_then(|m| m.codex_model.clone()));
    ws.sandbox_mode = s.sandbox.clone();
    ws.allow_trusted = s.allow_trusted;
    ws.workdir = s.workdir.clone();
    ws.approval_policy = approval_name;
    ws.source_home = s.codex_home.clone();
    ws.codex_auth = s.codex_auth.clone();
    ws.allow_domains = s.allow_domains.clone();
    ws.base_options = base_options;
    let roots: Vec<PathBuf> = match profile {
        warden_policy::Profile::WorkspaceWrite | warden_policy::Profile::WorkspaceNet => {
            s.workdir.iter().cloned().collect()
        }
        _ => Vec::new(),
    };
    let forward = ws_audit_is_stdout(&ws, host);
    let policy = Arc::new(ApprovalPolicy::new(approval, rules, roots, Arc::new(RecorderSink(recorder.clone()))));
    let mut launchers: Vec<Arc<dyn Launcher>> = Vec::new();
    for i in 0..=s.workers {
        let name = format!("w{i}");
        let (launcher, w) = SandboxLauncher::new(warden.to_path_buf(), ws.clone(), host.clone(), &name, key.clone())
            .map_err(|e| format!("worker {name}: {e}"))?;
        if i == 0 {
            warnings.extend(w);
        }
        // A log on standard output has one writer: this process appends the sessions' records.
        let launcher = if forward { launcher.with_recorder(recorder.clone()) } else { launcher };
        launchers.push(Arc::new(launcher));
    }
    let supervisor = SupervisorSettings {
        startup_timeout: s.startup_timeout,
        handshake_timeout: s.handshake_timeout,
        backoff_initial: s.backoff_initial,
        backoff_max: s.backoff_max,
        restart_limit: s.restart_max,
        shutdown_grace: s.shutdown_grace,
        ..SupervisorSettings::default()
    };
    let settings = PoolSettings {
        workers: s.workers,
        per_worker: s.worker_concurrency,
        queue: s.queue,
        queue_timeout: s.queue_timeout,
        supervisor,
    };
    let pool = Pool::start(settings, |i| launchers[i.min(launchers.len() - 1)].clone(), policy);
    Ok(Workers {
        pool,
        warnings,
        profile: profile.name().to_owned(),
        sandbox_mode: codex_name(profile).to_owned(),
        approval,
    })
}
