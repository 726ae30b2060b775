//! The launch plan: everything the sandbox's PID 1 needs, computed by the parent from a
//! [`Policy`] without touching the kernel.
//!
//! Guarantees: mount steps are ordered so that a later step can only narrow an earlier one
//! (fresh filesystems, then binds from shallow to deep, then protected subpaths, then masks),
//! except the explicit binds at another path ([`MountStep::BindAt`]), which come last because
//! they are deliberate exposures (e.g. a login file that a mask hides at its own path);
//! every path in the plan is absolute; the plan is plain data (serialisable, printable by
//! `warden explain`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warden_policy::{GitMode, NetMode, Policy};

use crate::landlock::{self, LandlockPlan};
pub use crate::repos::{Created, Repository, ScanReport};

/// One step of building the sandbox's mount tree. Paths are the same inside and outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum MountStep {
    /// The host's whole tree, bound recursively, read-only, nosuid, nodev.
    ReadOnlyRoot,
    /// A fresh tmpfs (private to this sandbox) at `path`, if `path` exists.
    Tmpfs {
        /// Where.
        path: PathBuf,
        /// Writable, or an empty read-only directory.
        writable: bool,
        /// Permission bits of its root.
        mode: u32,
    },
    /// A fresh procfs of the sandbox's pid namespace; `/proc/sys` and friends read-only.
    Proc,
    /// A minimal `/dev`: null zero full random urandom tty, a private devpts and `/dev/shm`.
    Dev,
    /// The host path bound onto itself (recursively); no symlink may appear in it.
    Bind {
        /// Where (host path == sandbox path).
        path: PathBuf,
        /// Read-write, or read-only.
        writable: bool,
    },
    /// If `path` exists on the host, bind it read-only onto itself; a symlink fails closed. A
    /// missing one gets a placeholder for the run first (when its kind says so), so that the
    /// command cannot create it.
    Protect {
        /// Where.
        path: PathBuf,
        /// What stands in for it while it does not exist.
        #[serde(default)]
        placeholder: Placeholder,
    },
    /// Hide whatever is at `path` (symlinks resolved inside the sandbox) behind an empty,
    /// unreadable, read-only file or directory.
    Mask {
        /// Where.
        path: PathBuf,
    },
    /// The host's `source` (a file or directory, no symlink in its path) shown at `target`
    /// inside the sandbox; a missing target gets a placeholder for the run first.
    BindAt {
        /// The host path.
        source: PathBuf,
        /// Where it appears (inside a writable root).
        target: PathBuf,
        /// Read-write, or read-only.
        writable: bool,
    },
}

/// What `launch::run` creates, for the run, at a protected path that does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Placeholder {
    /// Nothing: the path is protected only if it exists.
    #[default]
    None,
    /// An empty directory (git ignores an empty `.git`, `hooks/`, `info/`).
    Dir,
    /// A file with this content (an empty config, or `.` for `commondir`: the gitdir itself).
    File {
        /// The file's content.
        content: String,
    },
}

/// A resource limit to set before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rlimit {
    /// `RLIMIT_AS`, bytes of address space.
    AddressSpace(u64),
    /// `RLIMIT_CPU`, seconds.
    CpuSeconds(u64),
    /// `RLIMIT_NPROC`, processes of the sandbox's user.
    Processes(u64),
    /// `RLIMIT_FSIZE`, bytes.
    FileSize(u64),
    /// `RLIMIT_CORE`, always 0 inside the sandbox.
    CoreSize(u64),
}

/// Everything the init process needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The command and its arguments (`argv[0]` is looked up in the child's `PATH`).
    pub argv: Vec<String>,
    /// A command PID 1 runs first, to completion, in the same sandbox and environment (`warden
    /// codex`'s init hook): the command starts only once it exits 0, else the run ends with its
    /// status. Every process it left is killed before the command starts.
    #[serde(default)]
    pub init_hook: Option<Vec<String>>,
    /// The child's complete environment.
    pub env: Vec<(String, String)>,
    /// Working directory of the command (same path inside).
    pub workdir: PathBuf,
    /// New user, mount, pid, ipc and uts namespaces (false only for `trusted`).
    pub namespaces: bool,
    /// A new, empty network namespace with only `lo` (false when the network is `host`).
    pub new_network: bool,
    /// Mount steps, in order (empty without namespaces).
    pub mounts: Vec<MountStep>,
    /// Landlock rules, if the profile uses Landlock.
    pub landlock: Option<LandlockPlan>,
    /// Install the seccomp filter (with or without nested user namespaces).
    pub seccomp: Option<SeccompPlan>,
    /// Drop every capability and set `no_new_privs`.
    pub drop_privileges: bool,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// Hostname inside the uts namespace.
    pub hostname: String,
    /// Egress proxy listeners to open on 127.0.0.1 inside the sandbox's network namespace
    /// (`--net allowlist`); the parent serves them.
    pub proxy: Option<ProxyPlan>,
    /// A credential proxy listener to open on 127.0.0.1:PORT inside the sandbox's network
    /// namespace (`warden run --credential-*`), whatever the network mode; the parent serves it.
    pub credential_port: Option<u16>,
    /// Give the command a pseudo-terminal of the sandbox's own (set by `launch::run` when
    /// warden's stdin, stdout or stderr is a terminal).
    pub tty: Option<TtyPlan>,
    /// Cap the sandbox's processes with a pids cgroup (needed for root, whom `RLIMIT_NPROC`
    /// does not bind).
    pub pids_cgroup_max: Option<u64>,
    /// The git repositories found in the writable roots (all protected per `policy.git`).
    pub repo_scan: ScanReport,
    /// Bytes all private writable tmpfs directories (/tmp, /var/tmp, /run, `$TMPDIR`, /dev/shm)
    /// share: `--tmp-size`, else the smaller of 25 % of memory and half of `--memory`.
    #[serde(default)]
    pub tmp_size: u64,
    /// Layers that cannot be had here (a container's masked /proc, a denied sethostname) may be
    /// skipped, each reported, instead of failing the setup (`--allow-degraded`).
    #[serde(default)]
    pub allow_degraded: bool,
    /// uid and gid outside (mapped to the same ids inside).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
}

/// The egress proxy's ports inside the sandbox (its own network namespace, so fixed ports never
/// collide with anything on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPlan {
    /// HTTP and CONNECT proxy port.
    pub http_port: u16,
    /// SOCKS5 port.
    pub socks_port: u16,
}

impl Default for ProxyPlan {
    fn default() -> Self {
        ProxyPlan { http_port: 3128, socks_port: 1080 }
    }
}

impl ProxyPlan {
    /// The variables that point clients at the proxy: the usual `*_PROXY` pair in both cases,
    /// `NO_PROXY` for the sandbox's own loopback, and what npm, pip, cargo, git and the JVM read.
    pub fn env(&self) -> Vec<(String, String)> {
        let http = format!("http://127.0.0.1:{}", self.http_port);
        let socks = format!("socks5h://127.0.0.1:{}", self.socks_port);
        let no_proxy = "localhost,127.0.0.1,::1".to_owned();
        let java = format!(
            "-Dhttp.proxyHost=127.0.0.1 -Dhttp.proxyPort={p} -Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort={p} \
             -Dhttp.nonProxyHosts=localhost|127.0.0.1",
            p = self.http_port
        );
        let mut v = Vec::new();
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            v.push((name.to_owned(), http.clone()));
        }
        for name in ["ALL_PROXY", "all_proxy"] {
            v.push((name.to_owned(), socks.clone()));
        }
        for name in ["NO_PROXY", "no_proxy"] {
            v.push((name.to_owned(), no_proxy.clone()));
        }
        for name in ["npm_config_proxy", "npm_config_https_proxy", "PIP_PROXY", "CARGO_HTTP_PROXY"] {
            v.push((name.to_owned(), http.clone()));
        }
        v.push(("JAVA_TOOL_OPTIONS".to_owned(), java));
        v
    }
}

/// Which of the command's standard descriptors go to the sandbox's own terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtyPlan {
    /// stdin is the terminal.
    pub stdin: bool,
    /// stdout is the terminal.
    pub stdout: bool,
    /// stderr is the terminal.
    pub stderr: bool,
    /// Initial window size.
    pub size: WinSize,
}

/// A terminal window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Seccomp settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompPlan {
    /// Let the command create nested user namespaces (for an inner sandbox such as bubblewrap).
    pub allow_nested_userns: bool,
    /// Degraded mode without a network namespace: no inet sockets at all.
    pub deny_inet_sockets: bool,
    /// Degraded mode without a mount namespace: no `socket(AF_UNIX)` (host daemon sockets).
    pub deny_unix_sockets: bool,
}

impl SeccompPlan {
    /// The filter options this plan asks for.
    pub fn filter_options(&self) -> crate::seccomp::FilterOptions {
        crate::seccomp::FilterOptions {
            allow_nested_userns: self.allow_nested_userns,
            deny_inet_sockets: self.deny_inet_sockets,
            deny_unix_sockets: self.deny_unix_sockets,
        }
    }
}

/// Errors while compiling a policy into a plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No command was given.
    #[error("no command given: put it after `--`, e.g. `warden run -- bash`")]
    NoCommand,
    /// A plan field is not valid UTF-8 or contains NUL.
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul {
        /// Which field.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The policy shows host paths at other paths, which needs a mount namespace.
    #[error(
        "{} cannot be shown at {} without a mount namespace (none can be made here); run where user namespaces work",
        host.display(),
        target.display()
    )]
    BindAtWithoutMounts {
        /// The host path.
        host: PathBuf,
        /// Where it was to appear.
        target: PathBuf,
    },
}

/// Extra inputs for [`compile`].
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Allow nested user namespaces (see [`SeccompPlan`]).
    pub allow_nested_userns: bool,
    /// The Landlock ABI of the running kernel (`None`: unavailable).
    pub landlock_abi: Option<u32>,
}

/// Compiles a resolved policy and the command's environment into a launch plan.
pub fn compile(
    policy: &Policy,
    argv: &[String],
    env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
    opts: &CompileOptions,
) -> Result<LaunchPlan, PlanError> {
    if argv.is_empty() {
        return Err(PlanError::NoCommand);
    }
    for a in argv {
        if a.contains('\0') {
            return Err(PlanError::Nul { what: "an argument", value: a.clone() });
        }
    }
    for (k, v) in &env {
        if k.contains('\0') || v.contains('\0') || k.contains('=') || k.is_empty() {
            return Err(PlanError::Nul { what: "an environment variable", value: k.clone() });
        }
    }
    let trusted = policy.profile.everything_writable();
    let mut rlimits = vec![Rlimit::CoreSize(0)];
    if let Some(m) = policy.limits.memory_bytes {
        rlimits.push(Rlimit::AddressSpace(m));
    }
    if let Some(c) = policy.limits.cpu_seconds {
        rlimits.push(Rlimit::CpuSeconds(c));
    }
    if let Some(p) = policy.limits.max_procs {
        rlimits.push(Rlimit::Processes(p));
    }
    if let Some(f) = policy.limits.max_file_size {
        rlimits.push(Rlimit::FileSize(f));
    }
    if trusted {
        return Ok(LaunchPlan {
            argv: argv.to_vec(),
            init_hook: None,
            env,
            workdir: policy.workdir.clone(),
            namespaces: false,
            new_network: false,
            mounts: Vec::new(),
            landlock: None,
            seccomp: None,
            drop_privileges: false,
            rlimits,
            hostname: String::new(),
            proxy: None,
            credential_port: None,
            tty: None,
            pids_cgroup_max: None,
            repo_scan: ScanReport::default(),
            tmp_size: 0,
            allow_degraded: policy.allow_degraded,
            uid,
            gid,
        });
    }
    let repo_scan = scan_repositories(policy, &env);
    let mounts = mount_steps(policy, &repo_scan);
    let proxy = (policy.net == NetMode::Allowlist).then(ProxyPlan::default);
    let mut env = env;
    if let Some(p) = &proxy {
        let vars = p.env();
        env.retain(|(k, _)| !vars.iter().any(|(n, _)| n == k));
        env.extend(vars);
    }
    let landlock = opts.landlock_abi.map(|abi| landlock::plan_for(policy, abi));
    Ok(LaunchPlan {
        argv: argv.to_vec(),
        init_hook: None,
        env,
        workdir: policy.workdir.clone(),
        namespaces: true,
        new_network: policy.net != NetMode::Host,
        mounts,
        landlock,
        seccomp: Some(SeccompPlan {
            allow_nested_userns: opts.allow_nested_userns,
            deny_inet_sockets: false,
            deny_unix_sockets: false,
        }),
        drop_privileges: true,
        rlimits,
        hostname: "warden".to_owned(),
        proxy,
        credential_port: None,
        tty: None,
        pids_cgroup_max: if uid == 0 { policy.limits.max_procs } else { None },
        repo_scan,
        tmp_size: tmp_size(&policy.limits, crate::sys::total_memory()),
        allow_degraded: policy.allow_degraded,
        uid,
        gid,
    })
}

/// The degraded plan, for kernels (or containers) where no user namespace can be made and the
/// user accepted that with `--allow-degraded`: no namespaces and no mounts; Landlock alone keeps
/// the host read-only and masked paths unreadable; the network is cut by seccomp (no inet
/// sockets) and Landlock's TCP rules; named unix sockets are refused; `TMPDIR` is `private_tmp`.
/// What is lost (and reported): pid, ipc and uts isolation, the private `/tmp`, `/dev` and
/// `/proc`, loopback servers inside, and the kill-everything guarantee of a pid namespace.
pub fn compile_degraded(
    policy: &Policy,
    argv: &[String],
    mut env: Vec<(String, String)>,
    uid: u32,
    gid: u32,
    opts: &CompileOptions,
    private_tmp: &Path,
) -> Result<LaunchPlan, PlanError> {
    let mut plan = compile(policy, argv, Vec::new(), uid, gid, opts)?;
    if policy.profile.everything_writable() {
        plan.env = env;
        return Ok(plan);
    }
    if let Some(b) = policy.bind_at.first() {
        return Err(PlanError::BindAtWithoutMounts { host: b.source.clone(), target: b.target.clone() });
    }
    env.retain(|(k, _)| k != "TMPDIR");
    env.push(("TMPDIR".into(), private_tmp.display().to_string()));
    plan.env = env;
    plan.namespaces = false;
    plan.new_network = false;
    plan.mounts = Vec::new();
    plan.proxy = None;
    plan.credential_port = None;
    plan.landlock = opts.landlock_abi.map(|abi| landlock::degraded_plan(policy, abi, private_tmp));
    plan.seccomp = Some(SeccompPlan {
        allow_nested_userns: false,
        deny_inet_sockets: policy.net != NetMode::Host,
        deny_unix_sockets: true,
    });
    plan.pids_cgroup_max = if uid == 0 { policy.limits.max_procs } else { None };
    Ok(plan)
}

/// Searches the policy's writable roots for git repositories (`HOME` of `env` expands `~/` in
/// config includes).
///
/// With the audit log on, the listings of directories that did not change since the last search
/// come from a cache beside the log (`repo-scan/<roots>.json`): that directory is never inside
/// a writable root (warden refuses such a root), so the sandbox cannot poison the cache to hide
/// a repository from a later run.
pub fn scan_repositories(policy: &Policy, env: &[(String, String)]) -> ScanReport {
    let home = env.iter().rev().find(|(k, _)| k == "HOME").map(|(_, v)| PathBuf::from(v)).filter(|p| p.is_absolute());
    let cache_file = policy.audit.path.as_deref().filter(|_| policy.audit.enabled).and_then(Path::parent).map(|dir| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in policy.writable_roots.iter().flat_map(|r| r.as_os_str().as_encoded_bytes().iter().chain(b"\0")) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        dir.join("repo-scan").join(format!("{h:016x}.json"))
    });
    let mut cache = cache_file.as_deref().map(crate::repos::ScanCache::load).unwrap_or_default();
    let report = crate::repos::scan_cached(&policy.writable_roots, &policy.repo_scan, home.as_deref(), &mut cache);
    if let Some(f) = &cache_file {
        cache.store(f);
    }
    report
}

/// What is in `after` (a search after the run) that `before` (the plan's) did not have.
pub fn created_repositories(before: &ScanReport, after: &ScanReport) -> Vec<Created> {
    crate::repos::created(before, after)
}

/// The shared cap of the private tmpfs: `--tmp-size`, else the smaller of 25 % of `memory`
/// (the machine's) and half of `--memory`; at least 1 MiB.
pub fn tmp_size(limits: &warden_policy::Limits, memory: u64) -> u64 {
    let by_machine = (memory / 4).max(1 << 20);
    let default = match limits.memory_bytes {
        Some(m) => by_machine.min(m / 2),
        None => by_machine,
    };
    limits.tmp_size.unwrap_or(default).max(1 << 20)
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

/// The protected paths of a plan that get a placeholder when missing.
pub fn placeholders(plan: &LaunchPlan) -> Vec<(PathBuf, Placeholder)> {
    plan.mounts
        .iter()
        .filter_map(|s| match s {
            MountStep::Protect { path, placeholder } if *placeholder != Placeholder::None => {
                Some((path.clone(), placeholder.clone()))
            }
            MountStep::BindAt { source, target, .. } if source != target => Some((
                target.clone(),
                if source.is_dir() { Placeholder::Dir } else { Placeholder::File { content: String::new() } },
            )),
            _ => None,
        })
        .collect()
}

/// What git reads configuration or hooks from in a gitdir, with the placeholder for each.
fn git_config_paths(gitdir: &Path) -> [(PathBuf, Placeholder); 5] {
    let file = |content: &str| Placeholder::File { content: content.to_owned() };
    [
        (gitdir.join("config"), file("")),
        (gitdir.join("config.worktree"), file("")),
        // `.` names the gitdir itself: as if there were no commondir.
        (gitdir.join("commondir"), file(".\n")),
        (gitdir.join("hooks"), Placeholder::Dir),
        (gitdir.join("info"), Placeholder::Dir),
    ]
}

/// The ordered mount steps for a non-trusted policy and the repositories in its writable roots.
pub fn mount_steps(policy: &Policy, repos: &ScanReport) -> Vec<MountStep> {
    let mut steps =
        vec![MountStep::ReadOnlyRoot, MountStep::Tmpfs { path: "/run".into(), writable: true, mode: 0o755 }];
    // /var/run is a symlink to /run on most systems; a real directory gets its own tmpfs.
    steps.push(MountStep::Tmpfs { path: "/var/run".into(), writable: true, mode: 0o755 });
    steps.push(MountStep::Tmpfs { path: "/tmp".into(), writable: policy.tmp_writable, mode: 0o1777 });
    // /var/tmp too: host sockets and files parked there are not the sandbox's business.
    steps.push(MountStep::Tmpfs { path: "/var/tmp".into(), writable: policy.tmp_writable, mode: 0o1777 });
    if let Some(t) = &policy.tmpdir {
        steps.push(MountStep::Tmpfs { path: t.clone(), writable: true, mode: 0o700 });
    }
    steps.push(MountStep::Dev);
    steps.push(MountStep::Proc);

    // Set lookups over a path's ancestors, not a scan of every root per path: with 100 writable
    // roots (400 protected names) the scans were a third of warden's start-up CPU (perf).
    let roots: std::collections::HashSet<&Path> = policy.writable_roots.iter().map(PathBuf::as_path).collect();
    let in_writable_root = |p: &Path| p.ancestors().any(|a| roots.contains(a));
    let commit = policy.git == GitMode::Commit;
    // Binds, shallow first, so a deeper bind refines a shallower one. At equal depth a
    // read-only bind comes after a writable one (read-only wins). Pinned directories (and, in
    // commit mode, every writable gitdir) are bound writable onto themselves: a mount point
    // cannot be renamed or removed.
    let mut binds: Vec<(PathBuf, bool)> = policy
        .writable_roots
        .iter()
        .chain(&policy.pinned)
        .map(|p| (p.clone(), true))
        .chain(policy.read_only.iter().map(|p| (p.clone(), false)))
        .collect();
    if commit {
        for repo in &repos.repositories {
            binds.extend(repo.gitdirs.iter().filter(|g| in_writable_root(g)).map(|g| (g.clone(), true)));
        }
    }
    // The workdir is always visible, read-only when it is not a writable root (it may live
    // under a path that the sandbox replaces with a private tmpfs, such as /tmp).
    if !policy.writable_roots.iter().any(|r| policy.workdir.starts_with(r)) {
        binds.push((policy.workdir.clone(), false));
    }
    binds.sort_by_cached_key(|(p, writable)| (depth(p), !writable));
    binds.dedup();
    for (path, writable) in binds {
        steps.push(MountStep::Bind { path, writable });
    }

    // Protected paths: the names kept read-only at the top of every writable root, then what git
    // reads configuration and hooks from in every repository found below them.
    let mut protect: Vec<(PathBuf, Placeholder)> = Vec::new();
    for root in &policy.writable_roots {
        for name in &policy.protected_names {
            let path = root.join(name);
            // An existing `.git` is one of the repositories below (protected per the git mode);
            // should the search not have reached it, all of it stays read-only. A missing one
            // gets a placeholder, so that no repository can be created there.
            if name == ".git" && path.symlink_metadata().is_ok() {
                if !repos.repositories.iter().any(|r| r.dot_git == path) {
                    protect.push((path, Placeholder::None));
                }
                continue;
            }
            if name == ".git" && !repos.repositories.iter().any(|r| r.dot_git == *root) {
                // Nor can the top of the root become a bare repository, which git would find on
                // its own (HEAD, objects/, refs/ and a config with core.worktree): an empty HEAD
                // is not a valid one.
                protect.push((root.join("HEAD"), Placeholder::File { content: String::new() }));
            }
            protect.push((path, Placeholder::Dir));
        }
    }
    for repo in &repos.repositories {
        if repo.pointer {
            // The `gitdir:` line decides where git reads everything else from.
            protect.push((repo.dot_git.clone(), Placeholder::None));
        }
        if commit {
            for g in &repo.gitdirs {
                protect.extend(git_config_paths(g));
            }
        } else if let Some(g) = repo.gitdirs.first() {
            protect.push((g.clone(), Placeholder::None));
        }
        let file = || Placeholder::File { content: String::new() };
        protect.extend(repo.includes.iter().map(|p| (p.clone(), file())));
        protect.extend(repo.hooks_paths.iter().map(|p| (p.clone(), Placeholder::Dir)));
    }
    // Outside the writable roots everything is read-only already; inside one protected path, a
    // deeper one adds nothing.
    protect.retain(|(p, _)| in_writable_root(p));
    protect.sort_by_cached_key(|(p, _)| (depth(p), p.clone()));
    protect.dedup_by(|a, b| a.0 == b.0);
    let mut kept: Vec<(PathBuf, Placeholder)> = Vec::new();
    let mut kept_paths: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for (path, placeholder) in protect {
        // Shallower paths come first: one kept above this one covers it.
        if !path.ancestors().skip(1).any(|a| kept_paths.contains(a)) {
            kept_paths.insert(path.clone());
            kept.push((path, placeholder));
        }
    }
    for (path, placeholder) in kept {
        steps.push(MountStep::Protect { path, placeholder });
    }
    let mut masks = policy.deny_read.clone();
    masks.sort_by_key(|p| depth(p));
    masks.dedup();
    for path in masks {
        steps.push(MountStep::Mask { path });
    }
    for b in &policy.bind_at {
        steps.push(MountStep::BindAt { source: b.source.clone(), target: b.target.clone(), writable: b.writable });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_shown_elsewhere_come_after_the_masks_and_get_a_placeholder() {
        let mut p = test_policy();
        p.workdir = "/home/u/w".into();
        p.writable_roots = vec!["/home/u/w".into()];
        p.deny_read = vec!["/home/u/.codex/auth.json".into()];
        p.bind_at = vec![warden_policy::BindAt {
            source: "/home/u/.codex/auth.json".into(),
            target: "/home/u/w/auth.json".into(),
            writable: false,
        }];
        let steps = mount_steps(&p, &ScanReport::default());
        let last_mask = steps.iter().rposition(|s| matches!(s, MountStep::Mask { .. })).expect("mask");
        let at = steps.iter().position(|s| matches!(s, MountStep::BindAt { .. })).expect("bind-at");
        assert!(at > last_mask, "{steps:?}");
        let plan = LaunchPlan {
            mounts: steps,
            ..compile(&p, &["true".into()], vec![], 0, 0, &CompileOptions::default()).expect("plan")
        };
        assert!(
            placeholders(&plan).contains(&("/home/u/w/auth.json".into(), Placeholder::File { content: String::new() }))
        );
    }

    #[test]
    fn deeper_binds_follow_shallower_ones_and_masks_come_last() {
        let mut p = test_policy();
        p.workdir = "/home/u/w".into();
        p.writable_roots = vec!["/home/u/w/sub".into(), "/home/u/w".into()];
        p.read_only = vec!["/home/u".into(), "/home/u/w".into()];
        p.deny_read = vec!["/home/u/w/.ssh".into(), "/home/u/.ssh".into()];
        let steps = mount_steps(&p, &ScanReport::default());
        let binds: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                MountStep::Bind { path, writable } => Some((path.to_str().expect("utf8"), *writable)),
                _ => None,
            })
            .collect();
        assert_eq!(binds, vec![("/home/u", false), ("/home/u/w", true), ("/home/u/w", false), ("/home/u/w/sub", true)]);
        let last_bind = steps.iter().rposition(|s| matches!(s, MountStep::Bind { .. })).expect("bind");
        let first_mask = steps.iter().position(|s| matches!(s, MountStep::Mask { .. })).expect("mask");
        let first_protect = steps.iter().position(|s| matches!(s, MountStep::Protect { .. })).expect("protect");
        assert!(last_bind < first_protect && first_protect < first_mask);
        assert_eq!(steps[0], MountStep::ReadOnlyRoot);
    }

    #[test]
    fn a_read_only_workdir_is_still_bound() {
        let mut p = test_policy();
        p.workdir = "/tmp/project".into();
        p.writable_roots = vec![];
        let steps = mount_steps(&p, &ScanReport::default());
        let tmp = steps.iter().position(|s| matches!(s, MountStep::Tmpfs { path, .. } if path == Path::new("/tmp")));
        let bind = steps
            .iter()
            .position(|s| matches!(s, MountStep::Bind { path, writable: false } if path == Path::new("/tmp/project")));
        assert!(tmp.expect("private /tmp") < bind.expect("workdir bound read-only after /tmp"));
    }

    #[test]
    fn trusted_has_no_namespaces_and_no_filters() {
        let mut p = test_policy();
        p.profile = warden_policy::Profile::Trusted;
        let plan = compile(&p, &["true".into()], vec![], 1, 1, &CompileOptions::default()).expect("plan");
        assert!(!plan.namespaces && plan.seccomp.is_none() && plan.landlock.is_none() && plan.mounts.is_empty());
    }

    #[test]
    fn empty_command_is_an_error() {
        let p = test_policy();
        assert!(matches!(compile(&p, &[], vec![], 1, 1, &CompileOptions::default()), Err(PlanError::NoCommand)));
    }

    #[test]
    fn nul_in_argument_is_refused() {
        let p = test_policy();
        let r = compile(&p, &["a\0b".into()], vec![], 1, 1, &CompileOptions::default());
        assert!(matches!(r, Err(PlanError::Nul { .. })));
    }

    pub(crate) fn test_policy() -> Policy {
        let host = warden_policy::HostContext { cwd: std::env::temp_dir(), home: None, env: vec![] };
        let opts = warden_policy::PolicyOptions { no_audit: true, ..Default::default() };
        warden_policy::resolve(&opts, &host).expect("default policy").policy
    }
}
