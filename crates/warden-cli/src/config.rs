//! From flags to policy: the resolution every subcommand shares (warden-policy does the work).

use warden_policy::{AuditSettings, HostContext, NetMode, NetworkRules, PolicyOptions};
use warden_session::{CredentialSpec, SessionSpec, StdioMode};

use crate::args::{AuditArgs, EgressArgs, PolicyArgs};

/// This process's view of the host.
pub fn host() -> Result<HostContext, String> {
    HostContext::from_process().map_err(|e| format!("cannot read the current directory: {e}"))
}

/// The session spec of `warden run` / `warden explain` for `command`, as seen from `host`.
pub fn session_spec(
    args: &PolicyArgs,
    command: &[String],
    host: HostContext,
    credential: Option<CredentialSpec>,
) -> Result<SessionSpec, String> {
    let mut opts = args.to_options();
    if let Some(warden_session::CredentialSource::File { path }) = credential.as_ref().map(|c| &c.source) {
        opts.credential_file = Some(path.clone());
    }
    let resolved = warden_policy::resolve(&opts, &host).map_err(|e| e.to_string())?;
    Ok(SessionSpec {
        policy: resolved.policy,
        warnings: resolved.warnings,
        argv: command.to_vec(),
        host_env: host.env,
        credential,
        stdio: StdioMode::Inherit,
        allow_nested_userns: args.allow_nested_userns,
        init_hook: None,
    })
}

/// The audit settings of a standalone proxy (the audit flags over the config's `[audit]`).
pub fn audit_settings(args: &AuditArgs) -> Result<AuditSettings, String> {
    Ok(warden_policy::resolve(&args.options(), &host()?).map_err(|e| e.to_string())?.policy.audit)
}

/// `[network]` and `[audit]` for `warden egress` (same precedence as `warden run`).
pub fn egress_settings(args: &EgressArgs) -> Result<(NetworkRules, AuditSettings), String> {
    let opts = PolicyOptions {
        net: Some(NetMode::Allowlist),
        config: args.config.clone(),
        network: args.rules.to_rules(),
        ..args.audit.options()
    };
    let policy = warden_policy::resolve(&opts, &host()?).map_err(|e| e.to_string())?.policy;
    if policy.network.allow.is_empty() {
        return Err("no allow rule: nothing would pass. Add --allow-domain DOMAIN or [network] allow = [...]".into());
    }
    Ok((policy.network, policy.audit))
}
