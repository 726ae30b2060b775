//! `warden doctor`: what this kernel can enforce, proven by starting a real `offline` sandbox.

use std::time::Duration;

use warden_sandbox::doctor::{kernel_facts, LANDLOCK_ABI_FULL};
use warden_sandbox::launch::{self, Outcome};

use crate::args::{DoctorArgs, PolicyArgs};

struct Check {
    layer: String,
    ok: bool,
    detail: String,
}

/// The container runtime warden runs under, if it can tell (`podman`, `docker`, `kubernetes`,
/// or the `container` variable's value), and how it knows.
fn container() -> Option<(String, &'static str)> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Some(("kubernetes".into(), "KUBERNETES_SERVICE_HOST is set"));
    }
    if std::path::Path::new("/run/.containerenv").exists() {
        return Some(("podman".into(), "/run/.containerenv exists"));
    }
    if std::path::Path::new("/.dockerenv").exists() {
        return Some(("docker".into(), "/.dockerenv exists"));
    }
    std::env::var("container").ok().filter(|v| !v.is_empty()).map(|v| (v, "the container variable is set"))
}

/// What restores a layer in a container, per runtime.
fn container_fix(layer: &str) -> Option<&'static str> {
    Some(match layer {
        "user namespaces" | "offline sandbox" => {
            "podman/docker: --security-opt seccomp=unconfined (or a seccomp profile that allows clone/unshare with \
             CLONE_NEWUSER) and, on AppArmor hosts, --security-opt apparmor=unconfined; Kubernetes: \
             securityContext.seccompProfile.type: Unconfined (or Localhost), appArmorProfile.type: Unconfined, \
             and hostUsers: false for a user namespace of the pod's own"
        }
        "proc" => {
            "podman: --security-opt unmask=ALL (or systempaths=unconfined); docker: --security-opt \
             systempaths=unconfined; Kubernetes: securityContext.procMount: Unmasked (needs hostUsers: false)"
        }
        "hostname" => {
            "podman/docker: --security-opt seccomp=unconfined, or --cap-add SYS_ADMIN (the default seccomp profile \
             allows sethostname with it); Kubernetes: securityContext.seccompProfile.type: Unconfined"
        }
        _ => return None,
    })
}

pub fn doctor(args: DoctorArgs) -> i32 {
    let facts = kernel_facts();
    let mut checks = Vec::new();
    checks.push(Check {
        layer: "landlock".into(),
        ok: facts.landlock_abi.is_some_and(|a| a >= LANDLOCK_ABI_FULL),
        detail: match facts.landlock_abi {
            Some(a) => format!("ABI {a} (warden needs {LANDLOCK_ABI_FULL} for fs rules plus signal/socket scoping)"),
            None => "not available".into(),
        },
    });
    checks.push(Check {
        layer: "seccomp".into(),
        ok: facts.seccomp,
        detail: if facts.seccomp { "filter mode available".into() } else { "not available".into() },
    });
    let userns_ok = facts.max_user_namespaces.unwrap_or(1) > 0 && facts.unprivileged_userns_clone.unwrap_or(1) == 1;
    checks.push(Check {
        layer: "user namespaces".into(),
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
    let degraded = probe.as_ref().map(|(_, d)| d.clone()).unwrap_or_default();
    checks.push(Check {
        layer: "offline sandbox".into(),
        ok: probe.is_ok() && degraded.is_empty(),
        detail: match &probe {
            Ok((ms, d)) if d.is_empty() => {
                format!("started and finished a command in {ms:.1} ms (all namespaces, mounts, landlock, seccomp)")
            }
            Ok((ms, d)) => format!(
                "started and finished a command in {ms:.1} ms, without: {}",
                d.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Err(e) => e.clone(),
        },
    });
    // Each layer the probe had to do without, with why (and what restores it).
    for (layer, why) in &degraded {
        checks.push(Check { layer: layer.clone(), ok: false, detail: why.clone() });
    }
    let offline_ok = checks.iter().all(|c| c.ok);
    let container = container();
    let fixes: Vec<(String, &'static str)> = if container.is_some() {
        checks.iter().filter(|c| !c.ok).filter_map(|c| container_fix(&c.layer).map(|f| (c.layer.clone(), f))).collect()
    } else {
        Vec::new()
    };
    if args.json {
        let out = serde_json::json!({
            "kernel": facts,
            "container": container.as_ref().map(|(name, how)| serde_json::json!({ "runtime": name, "detected_by": how })),
            "checks": checks.iter().map(|c| serde_json::json!({"layer": c.layer, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
            "container_settings": fixes.iter().map(|(l, f)| serde_json::json!({ "layer": l, "restore": f })).collect::<Vec<_>>(),
            "offline_enforceable": offline_ok,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("kernel {} (uid {})", facts.release, facts.uid);
        if let Some((name, how)) = &container {
            println!("container: {name} ({how})");
        }
        for c in &checks {
            println!("  {:<4} {:<16} {}", if c.ok { "ok" } else { "FAIL" }, c.layer, c.detail);
        }
        for (layer, fix) in &fixes {
            println!("  to restore {layer} in this container: {fix}");
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

/// Milliseconds the probe took, and the layers it had to do without.
type Probe = (f64, Vec<(String, String)>);

fn probe_offline() -> Result<Probe, String> {
    let args = PolicyArgs {
        bind_at: Vec::new(),
        extra_protected_names: Vec::new(),
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
        tmp_size: None,
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
    // `true`, or else warden itself (a container image may have no `true`; warden's own binary may
    // sit under /tmp, which is private inside the sandbox, hence `true` first).
    let argv = match ["/usr/bin/true", "/bin/true"].into_iter().find(|p| std::path::Path::new(p).exists()) {
        Some(t) => vec![t.to_owned()],
        None => {
            let me = std::env::current_exe().map_err(|e| format!("cannot find warden's own binary: {e}"))?;
            vec![me.display().to_string(), "__true".to_owned()]
        }
    };
    let spec = crate::config::session_spec(&args, &argv, host, None)?;
    let prepared = warden_session::prepare(spec).map_err(|e| e.to_string())?;
    // A probe of the kernel, not a session: no audit record, no proxy, nothing degraded on purpose.
    let report = launch::run(&prepared.plan, Some(Duration::from_secs(20)), &mut ()).map_err(|e| e.to_string())?;
    match report.outcome {
        Outcome::Finished(warden_sandbox::CommandStatus::Exited(0)) => {
            Ok((report.duration.as_secs_f64() * 1e3, report.degraded))
        }
        Outcome::SetupFailed { layer, detail } => Err(format!("{layer}: {detail}")),
        other => Err(format!("unexpected result {other:?}")),
    }
}
