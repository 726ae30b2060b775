//! `warden doctor`: what this kernel can enforce, proven by starting a real `offline` sandbox.

use std::time::Duration;

use warden_sandbox::doctor::{kernel_facts, LANDLOCK_ABI_FULL};
use warden_sandbox::launch::{self, Outcome};

use crate::args::{DoctorArgs, PolicyArgs};

struct Check {
    layer: &'static str,
    ok: bool,
    detail: String,
}

pub fn doctor(args: DoctorArgs) -> i32 {
    let facts = kernel_facts();
    let mut checks = Vec::new();
    checks.push(Check {
        layer: "landlock",
        ok: facts.landlock_abi.is_some_and(|a| a >= LANDLOCK_ABI_FULL),
        detail: match facts.landlock_abi {
            Some(a) => format!("ABI {a} (warden needs {LANDLOCK_ABI_FULL} for fs rules plus signal/socket scoping)"),
            None => "not available".into(),
        },
    });
    checks.push(Check {
        layer: "seccomp",
        ok: facts.seccomp,
        detail: if facts.seccomp { "filter mode available".into() } else { "not available".into() },
    });
    let userns_ok = facts.max_user_namespaces.unwrap_or(1) > 0 && facts.unprivileged_userns_clone.unwrap_or(1) == 1;
    checks.push(Check {
        layer: "user namespaces",
        ok: userns_ok,
        detail: format!(
            "user.max_user_namespaces={}{}",
            facts.max_user_namespaces.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            facts
                .unprivileged_userns_clone
                .map(|v| format!(", kernel.unprivileged_userns_clone={v}"))
                .unwrap_or_default()
        ),
    });
    // The proof: a real offline sandbox running `true`.
    let probe = probe_offline();
    checks.push(Check {
        layer: "offline sandbox",
        ok: probe.is_ok(),
        detail: match &probe {
            Ok(ms) => format!("started and finished `true` in {ms:.1} ms (all namespaces, mounts, landlock, seccomp)"),
            Err(e) => e.clone(),
        },
    });
    let offline_ok = checks.iter().all(|c| c.ok);
    if args.json {
        let out = serde_json::json!({
            "kernel": facts,
            "checks": checks.iter().map(|c| serde_json::json!({"layer": c.layer, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
            "offline_enforceable": offline_ok,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("kernel {} (uid {})", facts.release, facts.uid);
        for c in &checks {
            println!("  {:<4} {:<16} {}", if c.ok { "ok" } else { "FAIL" }, c.layer, c.detail);
        }
        if offline_ok {
            println!("every profile can be enforced here");
        } else {
            println!(
                "the `offline` profile cannot be fully enforced here; `warden run` will refuse unless --allow-degraded"
            );
        }
    }
    if offline_ok {
        0
    } else {
        1
    }
}

fn probe_offline() -> Result<f64, String> {
    let args = PolicyArgs {
        profile: Some(warden_policy::Profile::Offline),
        sandbox: None,
        workdir: Some("/".into()),
        writable: vec![],
        read_only: vec![],
        deny_read: vec![],
        git: None,
        net: None,
        rules: Default::default(),
        env_inherit: Some(warden_policy::EnvInherit::None),
        env_set: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into())],
        env_exclude: vec![],
        env_include_only: vec![],
        timeout: None,
        memory: None,
        cpu_seconds: None,
        max_procs: None,
        max_file_size: None,
        config: None,
        codex_config: None,
        allow_degraded: true,
        allow_nested_userns: false,
        audit: crate::args::AuditArgs { no_audit: true, ..Default::default() },
    };
    // A neutral host view: no home directory and no XDG variables, so no user config is read and
    // the probe tests the kernel, not the user's settings.
    let host = warden_policy::HostContext {
        cwd: "/".into(),
        home: None,
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into())],
    };
    let spec = crate::config::session_spec(&args, &["true".to_owned()], host, None)?;
    let prepared = warden_session::prepare(spec).map_err(|e| e.to_string())?;
    // A probe of the kernel, not a session: no audit record, no proxy, nothing degraded on purpose.
    let report = launch::run(&prepared.plan, Some(Duration::from_secs(20)), &mut ()).map_err(|e| e.to_string())?;
    match report.outcome {
        Outcome::Finished(warden_sandbox::CommandStatus::Exited(0)) => Ok(report.duration.as_secs_f64() * 1e3),
        Outcome::SetupFailed { layer, detail } => Err(format!("{layer}: {detail}")),
        other => Err(format!("unexpected result {other:?}")),
    }
}
