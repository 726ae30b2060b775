//! `warden explain`: the effective policy as a table (like Codex's `/status`), and the same
//! table for `warden run -v`.

use std::io::Write;

use warden_sandbox::plan::{MountStep, Placeholder};
use warden_sandbox::seccomp;

use warden_session::Prepared;

use crate::args::ExplainArgs;
use crate::ui::fail;

pub fn explain(args: ExplainArgs) -> i32 {
    let spec = match crate::config::host()
        .and_then(|host| crate::config::session_spec(&args.policy, &["<command>".to_owned()], host, None))
    {
        Ok(s) => s,
        Err(msg) => return fail(msg),
    };
    let prepared = match warden_session::prepare(spec) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    for w in &prepared.spec.warnings {
        eprintln!("{w}");
    }
    if args.json {
        let degraded: Vec<_> =
            prepared.degraded.iter().map(|d| serde_json::json!({ "layer": d.layer, "why": d.why })).collect();
        let options = prepared.plan.seccomp.map(|sc| sc.filter_options()).unwrap_or_default();
        let denied: Vec<_> = seccomp::denied_syscalls(&options)
            .into_iter()
            .map(|(name, action)| serde_json::json!({ "syscall": name, "action": action }))
            .collect();
        let out = serde_json::json!({
            "policy": prepared.spec.policy,
            "digest": prepared.spec.policy.digest(),
            "plan": prepared.plan,
            "landlock_abi": prepared.landlock_abi,
            "degraded": degraded,
            "seccomp_denied": denied,
            "warnings": prepared.spec.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return 0;
    }
    print_layers(&prepared, &mut std::io::stdout());
    0
}

fn source_of<'a>(p: &'a warden_policy::Policy, key: &str) -> &'a str {
    p.sources.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("default")
}

/// The human table: which layer enforces what.
pub fn print_layers(prepared: &Prepared, out: &mut dyn Write) {
    let p = &prepared.spec.policy;
    let plan = &prepared.plan;
    let mut w = |s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(format!("{:<14} {} ({}) — {}", "profile", p.profile, source_of(p, "profile"), p.profile.description()));
    w(format!("{:<14} {}", "workdir", p.workdir.display()));
    for (given, to) in &p.redirected {
        w(format!(
            "{:<14} {} is a symlink out of its directory, to {} (writable only when confirmed)",
            "",
            given.display(),
            to.display()
        ));
    }
    let net = match (plan.namespaces, plan.new_network, plan.proxy.is_some()) {
        (true, true, true) => "allowlist: own network namespace; the only way out is warden's egress proxy",
        (true, true, false) => "none: own network namespace with only lo (loopback servers work, nothing leaves)",
        _ => "host: every address this machine reaches",
    };
    w(format!("{:<14} {} ({})", "network", net, source_of(p, "net")));
    if let Some(proxy) = &plan.proxy {
        w(format!(
            "{:<14} egress proxy on 127.0.0.1:{} (HTTP, CONNECT) and :{} (SOCKS5) inside the sandbox; \
             HTTP(S)_PROXY, ALL_PROXY, NO_PROXY and npm/pip/cargo/JVM settings point at it",
            "", proxy.http_port, proxy.socks_port
        ));
        let n = &p.network;
        let rule_lines: Vec<String> = n
            .allow
            .iter()
            .map(|r| {
                let raw = if r.raw { " raw TCP: tunnels to it carry any protocol, not inspected" } else { "" };
                match &r.expires {
                    Some(d) => format!("allow {}{raw} (until {d})", r.pattern),
                    None => format!("allow {}{raw}", r.pattern),
                }
            })
            .chain(n.deny.iter().map(|d| format!("deny {d}")))
            .chain(n.allow_ports.iter().map(|p| format!("allow port {p}")))
            .chain(n.allow_cidr.iter().map(|c| format!("allow ip {c}")))
            .chain(n.allow_private.iter().map(|c| format!("allow private {c} (SSRF guard off there)")))
            .chain(n.resolve.iter().map(|r| format!("resolve {r}")))
            .collect();
        if rule_lines.is_empty() {
            w(format!("{:<14} no allow rule: every connection will be denied", "rules"));
        }
        for (i, line) in rule_lines.iter().enumerate() {
            w(format!("{:<14} {line}", if i == 0 { "rules" } else { "" }));
        }
        w(format!(
            "{:<14} ports 80 and 443 unless a rule names one; IP literals, and names resolving to private, \
             loopback, link-local or metadata addresses, are refused",
            ""
        ));
        w(format!(
            "{:<14} tunnels (CONNECT, SOCKS5) carry TLS whose SNI names their host, or plain HTTP whose Host \
             does; anything else is closed unless a raw rule names that host and port",
            ""
        ));
    }
    w(format!("{:<14} {}", "policy digest", p.digest()));
    w(String::new());
    w(format!("{:<44} {:<11} enforced by", "path", "access"));
    if !plan.namespaces {
        w(format!("{:<44} {:<11} nothing (profile trusted)", "/", "read-write"));
    }
    let ll = if plan.landlock.is_some() { " + landlock" } else { "" };
    for step in &plan.mounts {
        let (path, access, how) = match step {
            MountStep::ReadOnlyRoot => ("/".to_owned(), "read-only", format!("read-only mount{ll}")),
            // A symlink (like /var/run -> /run) is left alone at run time: nothing to show.
            MountStep::Tmpfs { path, .. } if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) => {
                continue
            }
            MountStep::Tmpfs { path, writable, .. } => (
                path.display().to_string(),
                if *writable { "read-write" } else { "read-only" },
                "private tmpfs, discarded at exit".to_owned(),
            ),
            MountStep::Proc => (
                "/proc".into(),
                "read-only*",
                "fresh procfs of the sandbox's pid namespace; /proc/sys read-only".into(),
            ),
            MountStep::Dev => {
                ("/dev".into(), "devices", "null zero full random urandom tty, private pts and shm".into())
            }
            MountStep::Bind { path, writable: true } => {
                (path.display().to_string(), "read-write", format!("bind mount{ll}"))
            }
            MountStep::Bind { path, writable: false } => (
                path.display().to_string(),
                "read-only",
                "read-only bind mount (Landlock cannot narrow a writable parent)".into(),
            ),
            MountStep::BindAt { source, target, writable } => (
                target.display().to_string(),
                if *writable { "read-write" } else { "read-only" },
                format!(
                    "{} of {} (shown here, after the masks)",
                    if *writable { "bind mount" } else { "read-only bind mount" },
                    source.display()
                ),
            ),
            MountStep::Protect { path, placeholder } => (
                path.display().to_string(),
                "read-only",
                match (path.symlink_metadata().is_ok(), placeholder) {
                    (true, _) => "protected: read-only bind mount; a symlink swap fails closed".into(),
                    (false, Placeholder::Dir) => {
                        "protected: missing, so an empty read-only placeholder for the run (cannot be created)".into()
                    }
                    (false, Placeholder::File { .. }) => {
                        "protected: missing, so a neutral read-only placeholder file for the run (cannot be created)"
                            .into()
                    }
                    (false, Placeholder::None) => continue,
                },
            ),
            MountStep::Mask { path } => (path.display().to_string(), "denied", "masked: empty unreadable mount".into()),
        };
        w(format!("{path:<44} {access:<11} {how}"));
    }
    w(String::new());
    if plan.namespaces {
        let scan = &plan.repo_scan;
        let how = match p.git {
            warden_policy::GitMode::ReadOnly => "gitdir read-only",
            warden_policy::GitMode::Commit => "commit: objects, refs, index writable; config, hooks, info read-only",
        };
        w(format!(
            "{:<14} {} found in the writable roots ({how}; {} directory entries searched)",
            "repositories",
            scan.repositories.len(),
            scan.entries
        ));
        for r in &scan.repositories {
            let gitdir = r.gitdirs.first().map(|g| g.display().to_string()).unwrap_or_default();
            let extra = r.gitdirs.len().saturating_sub(1);
            let pointer = if r.pointer { format!(" -> {gitdir}") } else { String::new() };
            let subs = if extra > 0 { format!(" (+{extra} submodule/worktree gitdirs)") } else { String::new() };
            w(format!("{:<14} {}{pointer}{subs}", "", r.dot_git.display()));
        }
        if let Some(t) = &scan.truncated {
            w(format!("{:<14} search cut short: {t}; repositories past it are not protected", "WARNING"));
        }
        w(String::new());
    }
    match &plan.landlock {
        Some(l) => w(format!(
            "{:<14} ABI {}{}",
            "landlock",
            l.abi,
            if l.scoped { ", signals and abstract unix sockets scoped to the sandbox" } else { "" }
        )),
        None if plan.namespaces => w(format!("{:<14} not available (degraded)", "landlock")),
        None => w(format!("{:<14} off", "landlock")),
    }
    if let Some(sc) = &plan.seccomp {
        let denied = seccomp::denied_syscalls(&sc.filter_options());
        let names: Vec<&str> = denied.iter().map(|(n, _)| *n).collect();
        w(format!("{:<14} {} syscalls denied or filtered: {}", "seccomp", names.len(), names.join(" ")));
    } else {
        w(format!("{:<14} off", "seccomp"));
    }
    w(format!(
        "{:<14} {}",
        "privileges",
        if plan.drop_privileges { "all capabilities dropped, no_new_privs, securebits locked" } else { "unchanged" }
    ));
    w(format!(
        "{:<14} inherit {}, default excludes {}, {} variables passed",
        "environment",
        p.env.inherit,
        if p.env.ignore_default_excludes { "off" } else { "on" },
        plan.env.len()
    ));
    let passed: Vec<&str> = plan.env.iter().map(|(k, _)| k.as_str()).collect();
    let mut removed: Vec<&str> =
        prepared.spec.host_env.iter().map(|(k, _)| k.as_str()).filter(|k| !passed.contains(k)).collect();
    removed.sort_unstable();
    if !removed.is_empty() {
        // Names only: values never leave warden.
        w(format!("{:<14} removed: {}", "", removed.join(" ")));
    }
    let l = &p.limits;
    let fmt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let bytes = |b: u64| {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        UNITS
            .iter()
            .find(|(size, _)| b >= *size && b.is_multiple_of(*size))
            .map_or_else(|| format!("{b} bytes"), |(size, unit)| format!("{} {unit}", b / size))
    };
    w(format!(
        "{:<14} timeout {}, memory {}, cpu {}, processes {}, file size {}",
        "limits",
        fmt(l.timeout_secs.map(|s| format!("{s}s"))),
        fmt(l.memory_bytes.map(bytes)),
        fmt(l.cpu_seconds.map(|s| format!("{s}s"))),
        fmt(l.max_procs.map(|p| p.to_string())),
        fmt(l.max_file_size.map(bytes))
    ));
    if plan.namespaces {
        // Rounded down to whole MiB for people; the plan has the exact bytes.
        let mib = plan.tmp_size >> 20;
        let origin = if l.tmp_size.is_some() { "--tmp-size" } else { "default: min(25% of memory, --memory / 2)" };
        w(format!("{:<14} /tmp, /var/tmp, /run, $TMPDIR and /dev/shm share {mib} MiB ({origin})", ""));
    }
    for d in &prepared.degraded {
        w(format!("{:<14} {} cannot be enforced here: {}", "DEGRADED", d.layer, d.why));
    }
}
