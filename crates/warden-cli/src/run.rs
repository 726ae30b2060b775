//! `warden run`: resolve the policy, check that every promised layer can be enforced, launch.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use warden_audit::AuditLog;
use warden_policy::{NetMode, Policy, Resolved};
use warden_sandbox::doctor::LANDLOCK_ABI_FULL;
use warden_sandbox::launch::{self, Outcome};
use warden_sandbox::plan::{self, CompileOptions, LaunchPlan};
use warden_sandbox::protocol::CommandStatus;
use warden_sandbox::sys;

use crate::audit::fields;

use crate::args::{PolicyArgs, RunArgs};

/// warden's own failure.
pub const EXIT_WARDEN: i32 = 125;

/// Prints `warden: error: ...` and returns 125.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("warden: error: {msg}");
    EXIT_WARDEN
}

/// A layer the profile promises but the kernel does not provide.
pub struct Degraded {
    pub layer: &'static str,
    pub why: String,
}

/// The resolved policy and everything derived from it.
pub struct Prepared {
    pub resolved: Resolved,
    pub plan: LaunchPlan,
    pub degraded: Vec<Degraded>,
    pub landlock_abi: Option<u32>,
    /// warden's own environment (for `explain`: which names the policy removed).
    pub host_env: Vec<(String, String)>,
}

/// Resolves the policy and compiles the plan; the error is already a message for people.
pub fn prepare(args: &PolicyArgs, command: &[String]) -> Result<Prepared, String> {
    let host =
        warden_policy::HostContext::from_process().map_err(|e| format!("cannot read the current directory: {e}"))?;
    prepare_for(args, command, host)
}

/// [`prepare`] for a given view of the host (the doctor's probe uses a neutral one).
pub fn prepare_for(
    args: &PolicyArgs,
    command: &[String],
    host: warden_policy::HostContext,
) -> Result<Prepared, String> {
    let mut resolved = warden_policy::resolve(&args.to_options(), &host).map_err(|e| e.to_string())?;
    hide_audit_state(&mut resolved.policy)?;
    let policy = &resolved.policy;
    let landlock_abi = sys::landlock_abi();
    let mut degraded = Vec::new();
    if !policy.profile.everything_writable() {
        match landlock_abi {
            None => degraded.push(Degraded {
                layer: "landlock",
                why: "this kernel has no Landlock (CONFIG_SECURITY_LANDLOCK, or `lsm=` lacks landlock)".into(),
            }),
            Some(abi) if abi < LANDLOCK_ABI_FULL => degraded.push(Degraded {
                layer: "landlock scoping",
                why: format!(
                    "Landlock ABI {abi} < {LANDLOCK_ABI_FULL}: signals and abstract unix sockets cannot be scoped to the sandbox"
                ),
            }),
            Some(_) => {}
        }
    }
    let env = policy.env.apply(&host.env);
    let plan = plan::compile(
        policy,
        command,
        env,
        sys::getuid(),
        sys::getgid(),
        &CompileOptions { allow_nested_userns: args.allow_nested_userns, landlock_abi },
    )
    .map_err(|e| e.to_string())?;
    Ok(Prepared { resolved, plan, degraded, landlock_abi, host_env: host.env })
}

/// Where the credential proxy listens inside the sandbox's network namespace.
const CREDENTIAL_PORT: u16 = 8787;

/// The key for `--credential-env` / `--credential-file`, read before anything else happens.
struct Credential {
    key: warden_credproxy::LockedSecret,
    source: String,
    env_var: Option<String>,
}

fn load_credential(args: &RunArgs) -> Result<Option<Credential>, String> {
    let (value, source, env_var) = match (&args.credential_env, &args.credential_file) {
        (Some(var), _) => {
            let v = std::env::var(var)
                .map_err(|_| format!("--credential-env {var}: the variable is not set (or not UTF-8)"))?;
            (zeroize::Zeroizing::new(v), format!("environment variable {var}"), Some(var.clone()))
        }
        (None, Some(path)) => {
            let v = std::fs::read_to_string(path).map_err(|e| format!("--credential-file {}: {e}", path.display()))?;
            (zeroize::Zeroizing::new(v), format!("file {}", path.display()), None)
        }
        (None, None) => return Ok(None),
    };
    // No core dumps, not ptrace-able, no LD_* influence: before any thread exists.
    warden_credproxy::harden_process().map_err(|e| e.to_string())?;
    let key = warden_credproxy::key_from_str(value.trim_end_matches(['\r', '\n']))
        .map_err(|e| format!("the key from the {source}: {e}"))?;
    Ok(Some(Credential { key, source, env_var }))
}

pub fn run(mut args: RunArgs) -> i32 {
    let credential = match load_credential(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(file) = &args.credential_file {
        // The key file is masked inside the sandbox, like warden's own state.
        args.policy.deny_read.push(file.clone());
    }
    let mut prepared = match prepare(&args.policy, &args.command) {
        Ok(p) => p,
        Err(msg) => return fail(msg),
    };
    if let Some(c) = &credential {
        if !(prepared.plan.namespaces && prepared.plan.new_network) {
            return fail(
                "--credential-env / --credential-file serve the key through a proxy inside the sandbox's own \
                 network namespace; that needs --net none or --net allowlist (not --net host or the trusted profile)",
            );
        }
        prepared.plan.credential_port = Some(CREDENTIAL_PORT);
        let base = format!("http://127.0.0.1:{CREDENTIAL_PORT}/v1");
        prepared
            .plan
            .env
            .retain(|(k, _)| k != "OPENAI_BASE_URL" && k != "OPENAI_API_KEY" && Some(k) != c.env_var.as_ref());
        prepared.plan.env.push(("OPENAI_BASE_URL".into(), base.clone()));
        prepared.plan.env.push(("OPENAI_API_KEY".into(), "warden-proxied".into()));
        if args.verbose {
            eprintln!(
                "warden: OPENAI_BASE_URL={base} -> credential proxy -> {} (key from the {}; the command sees OPENAI_API_KEY=warden-proxied)",
                args.credential_upstream, c.source
            );
        }
    }
    for w in &prepared.resolved.warnings {
        eprintln!("{w}");
    }
    let audit = match crate::audit::open_log(&prepared.resolved.policy.audit) {
        Ok(log) => Recorder::new(log),
        Err(e) => return fail(e),
    };
    for w in &prepared.resolved.warnings {
        let file = w.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "environment".into());
        audit.record(
            "config.warning",
            fields([("file", json!(file)), ("key", json!(w.key)), ("message", json!(w.message))]),
        );
    }
    run_recorded(&args, &prepared, &audit, credential)
}

/// Appends audit records (when auditing is on), from any thread; a failure is reported on
/// stderr and returned as `false`, and the caller decides what it means (before the run: refuse
/// to run).
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Option<AuditLog>>>);

impl Recorder {
    pub fn new(log: Option<AuditLog>) -> Self {
        Recorder(Arc::new(Mutex::new(log)))
    }

    pub fn record(&self, event: &str, fields: Map<String, Value>) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_mut().map(|log| log.append(event, fields)) {
            None | Some(Ok(_)) => true,
            Some(Err(e)) => {
                eprintln!("warden: error: cannot append {event} to the audit log: {e}");
                false
            }
        }
    }

    /// Syncs pending records (batch mode) now.
    pub fn flush(&self) {
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(Err(e)) = guard.as_mut().map(|log| log.flush()) {
            eprintln!("warden: error: cannot sync the audit log: {e}");
        }
    }
}

/// The audit settings of a standalone proxy (the audit flags over the config's `[audit]`).
pub fn audit_settings(args: &crate::args::AuditArgs) -> Result<warden_policy::AuditSettings, String> {
    let host =
        warden_policy::HostContext::from_process().map_err(|e| format!("cannot read the current directory: {e}"))?;
    Ok(warden_policy::resolve(&args.options(), &host).map_err(|e| e.to_string())?.policy.audit)
}

/// What `warden egress` needs from the config and flags.
pub struct EgressPrepared {
    pub network: warden_policy::NetworkRules,
    pub audit: warden_policy::AuditSettings,
}

/// Resolves `[network]` and `[audit]` for the standalone proxy (same precedence as `warden run`).
pub fn prepare_for_egress(args: &crate::args::EgressArgs) -> Result<EgressPrepared, String> {
    let host =
        warden_policy::HostContext::from_process().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let opts = warden_policy::PolicyOptions {
        net: Some(NetMode::Allowlist),
        config: args.config.clone(),
        network: args.rules.to_rules(),
        ..args.audit.options()
    };
    let policy = warden_policy::resolve(&opts, &host).map_err(|e| e.to_string())?.policy;
    if policy.network.allow.is_empty() {
        return Err("no allow rule: nothing would pass. Add --allow-domain DOMAIN or [network] allow = [...]".into());
    }
    Ok(EgressPrepared { network: policy.network, audit: policy.audit })
}

fn run_recorded(args: &RunArgs, prepared: &Prepared, audit: &Recorder, credential: Option<Credential>) -> i32 {
    let policy = &prepared.resolved.policy;
    let refuse = |audit: &Recorder, reason: String| {
        audit.record("run.refused", fields([("reason", json!(reason)), ("argv", json!(args.command))]));
        EXIT_WARDEN
    };
    let mut proxy = None;
    if policy.net == NetMode::Allowlist {
        match crate::egress::build(&policy.network, audit, args.verbose) {
            Ok(egress) => proxy = Some(crate::egress::Server::new(egress)),
            Err(e) => {
                fail(&e);
                return refuse(audit, e);
            }
        }
    }
    if !prepared.degraded.is_empty() {
        let layers: Vec<&str> = prepared.degraded.iter().map(|d| d.layer).collect();
        if !policy.allow_degraded {
            for d in &prepared.degraded {
                eprintln!("warden: error: cannot enforce the {} layer: {}", d.layer, d.why);
            }
            eprintln!("warden: refusing to run with a weaker sandbox than the profile promises; pass --allow-degraded to accept this on purpose");
            return refuse(audit, format!("cannot enforce: {}", layers.join(", ")));
        }
        for d in &prepared.degraded {
            eprintln!("warden: warning: running without the {} layer (--allow-degraded): {}", d.layer, d.why);
        }
        let why: Vec<&str> = prepared.degraded.iter().map(|d| d.why.as_str()).collect();
        audit.record("policy.degraded", fields([("layers", json!(layers)), ("why", json!(why))]));
    }
    let mut cred_server = None;
    let credential_source = credential.as_ref().map(|c| c.source.clone());
    if let Some(c) = credential {
        match crate::credproxy::for_sandbox(&args.credential_upstream, c.key, audit) {
            Ok(server) => cred_server = Some(server),
            Err(e) => {
                fail(&e);
                return refuse(audit, e);
            }
        }
    }
    print_risk_warnings(policy);
    if let Err(code) = confirm_outside_writes(policy, args.yes) {
        return refuse(audit, "writable paths outside the workdir were not confirmed".into()).max(code);
    }
    if args.verbose {
        crate::explain::print_layers(prepared, &mut std::io::stderr());
    }
    let start_fields = fields([
        ("profile", json!(policy.profile.name())),
        ("policy_digest", json!(policy.digest())),
        ("argv", json!(args.command)),
        ("workdir", json!(policy.workdir)),
        ("uid", json!(sys::getuid())),
        ("net", json!(policy.net.name())),
        ("degraded", json!(prepared.degraded.iter().map(|d| d.layer).collect::<Vec<_>>())),
        ("credential", json!(credential_source.map(|s| json!({ "source": s, "upstream": args.credential_upstream })))),
    ]);
    if !audit.record("run.start", start_fields) {
        eprintln!(
            "warden: the command did not run: it could not be recorded (pass --no-audit to run without a record)"
        );
        return EXIT_WARDEN;
    }
    let timeout = policy.limits.timeout_secs.map(Duration::from_secs);
    let mut on_listener = |kind: &str, fd: std::os::fd::OwnedFd| {
        if kind == "credproxy" {
            if let Some(c) = cred_server.take() {
                c.start(fd);
            }
        } else if let Some(p) = proxy.as_mut() {
            p.listener(kind, fd);
        }
    };
    let mut report = match launch::run(&prepared.plan, timeout, &mut on_listener) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Outcome::SetupFailed { layer, detail } = &report.outcome {
        if layer.ends_with("namespace") {
            if !policy.allow_degraded {
                eprintln!("warden: error: cannot enforce the {layer} layer: {detail}");
                eprintln!(
                    "warden: the command did not run. --allow-degraded runs it with Landlock and seccomp only \
                     (no private /tmp, /dev, /proc; no pid, ipc, uts or network namespace)"
                );
                record_exit(audit, &report, 0);
                return EXIT_WARDEN;
            }
            audit.record(
                "policy.degraded",
                fields([
                    ("layers", json!([layer, "mount namespace", "pid namespace", "network namespace"])),
                    ("why", json!([detail])),
                    ("mode", json!("landlock and seccomp only")),
                ]),
            );
            report = match run_degraded(prepared, layer, detail, timeout) {
                Ok(r) => r,
                Err(code) => return code,
            };
        }
    }
    match &report.outcome {
        Outcome::SetupFailed { layer, detail } => {
            eprintln!("warden: error: cannot enforce the {layer} layer: {detail}");
            eprintln!("warden: the command did not run. `warden doctor` shows what this kernel can enforce");
        }
        Outcome::ExecFailed { program, errno } => {
            let what = if errno.0 == libc::ENOENT { "command not found" } else { "cannot execute" };
            eprintln!("warden: {program}: {what} inside the sandbox ({errno})");
        }
        Outcome::TimedOut => {
            eprintln!(
                "warden: timed out after {}s: killed the command and every process it started",
                policy.limits.timeout_secs.unwrap_or_default()
            );
        }
        Outcome::Finished(_) => {}
    }
    let denied = proxy.as_ref().map_or(0, |p| p.denied_total());
    if let Some(line) = proxy.as_ref().and_then(|p| p.summary()) {
        eprintln!("{line}");
    }
    record_exit(audit, &report, denied);
    audit.flush();
    if args.verbose {
        eprintln!(
            "warden: exit {} after {:.3}s, peak RSS {} KiB",
            report.outcome.exit_code(),
            report.duration.as_secs_f64(),
            report.peak_rss_kib
        );
    }
    report.outcome.exit_code()
}

fn record_exit(audit: &Recorder, report: &launch::Report, denied_connections: u64) {
    let mut f = fields([
        ("exit_code", json!(report.outcome.exit_code())),
        ("denied_connections", json!(denied_connections)),
        ("duration_ms", json!(u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX))),
        ("peak_rss_kib", json!(report.peak_rss_kib)),
    ]);
    let outcome = match &report.outcome {
        Outcome::Finished(CommandStatus::Exited(_)) => "exited",
        Outcome::Finished(CommandStatus::Signaled(sig)) => {
            f.insert("signal".into(), json!(sig));
            "signaled"
        }
        Outcome::TimedOut => "timed-out",
        Outcome::SetupFailed { layer, detail } => {
            f.insert("layer".into(), json!(layer));
            f.insert("detail".into(), json!(detail));
            "setup-failed"
        }
        Outcome::ExecFailed { program, errno } => {
            f.insert("program".into(), json!(program));
            f.insert("errno".into(), json!(errno.0));
            "exec-failed"
        }
    };
    f.insert("outcome".into(), json!(outcome));
    audit.record("run.exit", f);
}

/// warden's audit log directory and key file are masked in every profile but `trusted`, so the
/// command can neither read nor alter the record of what it did (even under a writable parent).
fn hide_audit_state(policy: &mut warden_policy::Policy) -> Result<(), String> {
    if policy.profile.everything_writable() {
        return Ok(());
    }
    let audit = &policy.audit;
    if let Some(dir) = audit.path.as_ref().and_then(|p| p.parent()) {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if policy.workdir.starts_with(&dir) {
            return Err(format!(
                "the audit log directory {} contains the workdir {}: the sandbox must not see the log. \
                 Choose another place with --audit-log PATH",
                dir.display(),
                policy.workdir.display()
            ));
        }
        policy.deny_read.push(dir);
    }
    if let Some(key) = &audit.key_file {
        policy.deny_read.push(key.clone());
    }
    policy.deny_read.sort();
    policy.deny_read.dedup();
    Ok(())
}

/// The `--allow-degraded` fallback when no namespace can be made (see `plan::compile_degraded`).
fn run_degraded(
    prepared: &Prepared,
    layer: &str,
    detail: &str,
    timeout: Option<Duration>,
) -> Result<launch::Report, i32> {
    let policy = &prepared.resolved.policy;
    if prepared.landlock_abi.is_none() && !policy.profile.everything_writable() {
        return Err(fail(format!(
            "cannot enforce the {layer} layer ({detail}), and this kernel has no Landlock either: \
             nothing would keep the host read-only, so warden will not run the command even with --allow-degraded"
        )));
    }
    if policy.net == NetMode::Allowlist || prepared.plan.credential_port.is_some() {
        return Err(fail(format!(
            "cannot enforce the {layer} layer ({detail}), and --net allowlist and --credential-* need a network namespace of its own \
             for the egress proxy; use --net none, or --net host to accept full network access"
        )));
    }
    eprintln!(
        "warden: warning: cannot enforce the {layer} layer ({detail}); --allow-degraded: running with Landlock and \
         seccomp only: no private /tmp, /dev or /proc, no pid/ipc/uts/network namespace, inet and named unix \
         sockets refused, TMPDIR is a private directory"
    );
    let tmp = PrivateTmp::create().map_err(|e| fail(format!("cannot create a private temporary directory: {e}")))?;
    let plan = plan::compile_degraded(
        policy,
        &prepared.plan.argv,
        prepared.plan.env.clone(),
        sys::getuid(),
        sys::getgid(),
        &CompileOptions { allow_nested_userns: false, landlock_abi: prepared.landlock_abi },
        &tmp.0,
    )
    .map_err(fail)?;
    launch::run(&plan, timeout, &mut |_, _| {}).map_err(fail)
}

/// A 0700 directory under the system temp dir, removed with everything in it on drop.
struct PrivateTmp(std::path::PathBuf);

impl PrivateTmp {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("warden-{}-{nanos:09}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PrivateTmp(dir))
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_risk_warnings(policy: &Policy) {
    if policy.profile.everything_writable() {
        eprintln!("warden: warning: profile `trusted`: no filesystem, network or syscall confinement");
    } else if policy.net == NetMode::Host {
        eprintln!(
            "warden: warning: --net host: the command can reach any network address, including this machine's services"
        );
    }
    if sys::getuid() == 0 {
        eprintln!(
            "warden: warning: running as root: the sandbox's uid 0 owns root's files; prefer an unprivileged user"
        );
    }
}

/// Writable roots outside the workdir need a yes: on a terminal we ask, otherwise `--yes`.
fn confirm_outside_writes(policy: &Policy, yes: bool) -> Result<(), i32> {
    // `trusted` makes everything writable by definition; choosing it is the confirmation.
    if policy.writable_outside_workdir.is_empty() || yes || policy.profile.everything_writable() {
        return Ok(());
    }
    let list: Vec<String> = policy.writable_outside_workdir.iter().map(|p| p.display().to_string()).collect();
    let stdin = std::io::stdin();
    if stdin.is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "warden: make these paths outside the workdir {} writable? {} [y/N] ",
            policy.workdir.display(),
            list.join(", ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
        return Err(fail("not confirmed; nothing ran"));
    }
    Err(fail(format!(
        "writable path(s) outside the workdir {}: {}; confirm with --yes when not on a terminal",
        policy.workdir.display(),
        list.join(", ")
    )))
}
