//! Resolution: command line + environment + config files -> [`Policy`].
//!
//! Guarantees: precedence is command line > environment (`WARDEN_PROFILE`) > `warden.toml` >
//! Codex's `config.toml` > built-in default, per setting. A file or environment value that
//! selects the profile or network mode but is invalid resolves to the safest value (`offline`,
//! `none`) rather than falling through to a lower-precedence source, and yields exactly one
//! [`ConfigWarning`]. Every path in the result is absolute; roots are canonical and exist; the
//! writable-workdir guards (not `/`, not `$HOME`, inside `WORKSPACE_ROOT_DIR`) hold. Trusts the
//! caller's [`HostContext`] (cwd, home, environment) as a description of warden's own process.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::config::ConfigWarning;
use crate::config::{CodexConfig, ConfigPath, NetworkRules, WardenConfig};
use crate::env::EnvPolicy;
use crate::error::{Location, PolicyError};
use crate::paths::{absolutize, is_within, normalize, system_homes, Canonicalizer};
use crate::policy::{
    check_limit, AuditSettings, BindAt, Limits, Policy, RepoScan, DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES,
    DEFAULT_PROTECTED_NAMES,
};
use crate::profile::{EnvInherit, GitMode, NetMode, Profile, PROFILE_NAMES};

/// What the command line gave; everything optional, empty = not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOptions {
    /// `--profile`.
    pub profile: Option<Profile>,
    /// `--sandbox` (Codex names, already mapped); must agree with `profile` if both are given.
    pub codex_sandbox: Option<Profile>,
    /// `-C/--workdir`, relative to the cwd.
    pub workdir: Option<PathBuf>,
    /// `--writable`.
    pub writable: Vec<PathBuf>,
    /// `--read-only`.
    pub read_only: Vec<PathBuf>,
    /// `--deny-read`.
    pub deny_read: Vec<PathBuf>,
    /// `--net`.
    pub net: Option<NetMode>,
    /// `--git read-only|commit`.
    pub git: Option<GitMode>,
    /// `--env-inherit`.
    pub env_inherit: Option<EnvInherit>,
    /// `--env-set NAME=VALUE`.
    pub env_set: Vec<(String, String)>,
    /// `--env-exclude`.
    pub env_exclude: Vec<String>,
    /// `--env-include-only`.
    pub env_include_only: Vec<String>,
    /// `--timeout` (seconds).
    pub timeout_secs: Option<u64>,
    /// `--memory` (bytes).
    pub memory_bytes: Option<u64>,
    /// `--cpu-seconds`.
    pub cpu_seconds: Option<u64>,
    /// `--max-procs`.
    pub max_procs: Option<u64>,
    /// `--max-file-size` (bytes).
    pub max_file_size: Option<u64>,
    /// `--tmp-size` (bytes).
    pub tmp_size: Option<u64>,
    /// `--config FILE` (warden.toml). If `None`, `$XDG_CONFIG_HOME/warden/config.toml` or
    /// `~/.config/warden/config.toml` is used if it exists.
    pub config: Option<PathBuf>,
    /// `--codex-config FILE` (Codex's config.toml).
    pub codex_config: Option<PathBuf>,
    /// `--allow-degraded`.
    pub allow_degraded: bool,
    /// `--audit-log PATH`.
    pub audit_log: Option<PathBuf>,
    /// `--no-audit`.
    pub no_audit: bool,
    /// `--audit-key-file FILE`.
    pub audit_key_file: Option<PathBuf>,
    /// `--credential-file FILE`: the model key warden serves through its credential proxy; masked
    /// inside the sandbox like `--deny-read`.
    pub credential_file: Option<PathBuf>,
    /// `--allow-domain`, `--deny-domain`, `--allow-port`, `--allow-cidr`, `--allow-private`,
    /// `--resolve` (added to the config's `[network]` rules).
    pub network: NetworkRules,
    /// Host paths to show at another path (set by callers such as `warden codex`, not a flag):
    /// the source must exist, the target must be absolute and lie inside a writable root.
    #[serde(default)]
    pub bind_at: Vec<BindAt>,
    /// Names kept read-only inside every writable root besides [`DEFAULT_PROTECTED_NAMES`].
    #[serde(default)]
    pub extra_protected_names: Vec<String>,
}

/// warden's own process context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostContext {
    /// The current directory.
    pub cwd: PathBuf,
    /// The home directory (`$HOME`), if known.
    pub home: Option<PathBuf>,
    /// warden's own environment.
    pub env: Vec<(String, String)>,
}

impl HostContext {
    /// The current process's context. Environment entries that are not valid UTF-8 are left out
    /// (and so never reach the sandboxed command).
    pub fn from_process() -> io::Result<Self> {
        let env: Vec<(String, String)> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        let home =
            env.iter().rev().find(|(k, _)| k == "HOME").map(|(_, v)| PathBuf::from(v)).filter(|p| p.is_absolute());
        Ok(HostContext { cwd: std::env::current_dir()?, home, env })
    }

    /// The value of `name` in [`HostContext::env`] (the last one if repeated).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name` as a non-empty absolute path.
    fn abs_var(&self, name: &str) -> Option<PathBuf> {
        self.var(name).map(PathBuf::from).filter(|p| p.is_absolute()).map(|p| normalize(&p))
    }
}

/// The result of [`resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The policy to enforce.
    pub policy: Policy,
    /// Problems worked around, to print before running.
    pub warnings: Vec<ConfigWarning>,
}

/// The default warden config location (whether or not it exists).
pub fn default_config_path(host: &HostContext) -> Option<PathBuf> {
    host.abs_var("XDG_CONFIG_HOME")
        .map(|x| x.join("warden/config.toml"))
        .or_else(|| host.home.as_ref().map(|h| h.join(".config/warden/config.toml")))
}

fn canon_flag(flag: &str, cwd: &Path, p: &Path) -> Result<PathBuf, PolicyError> {
    fs::canonicalize(absolutize(cwd, p)).map_err(|source| PolicyError::PathFlag {
        flag: flag.to_owned(),
        path: p.to_owned(),
        source,
    })
}

fn canon_config(cfg: &WardenConfig, key: &str, cp: &ConfigPath) -> Result<PathBuf, PolicyError> {
    fs::canonicalize(&cp.path).map_err(|source| PolicyError::ConfigPath {
        location: Location { file: cfg.path.clone(), line: cp.line },
        key: key.to_owned(),
        table: "[filesystem]".to_owned(),
        path: cp.path.clone(),
        source,
    })
}

fn push_unique(v: &mut Vec<PathBuf>, p: PathBuf) {
    if !v.contains(&p) {
        v.push(p);
    }
}

/// Merges the command line, the environment and config files into a [`Policy`].
pub fn resolve(opts: &PolicyOptions, host: &HostContext) -> Result<Resolved, PolicyError> {
    let mut warnings = Vec::new();
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut src = |k: &str, v: &str| sources.push((k.to_owned(), v.to_owned()));
    let cwd = absolutize(Path::new("/"), &host.cwd);
    let home = host.home.as_deref();

    // Config files.
    let config_path = match &opts.config {
        Some(p) => Some(absolutize(&cwd, p)),
        None => default_config_path(host).filter(|p| p.exists()),
    };
    let warden = match &config_path {
        Some(p) => {
            let (cfg, w) = WardenConfig::load(p, home)?;
            warnings.extend(w);
            src("config", &p.display().to_string());
            Some(cfg)
        }
        None => None,
    };
    let codex = match &opts.codex_config {
        Some(p) => {
            let p = absolutize(&cwd, p);
            let (cfg, w) = CodexConfig::load(&p, home)?;
            warnings.extend(w);
            src("codex-config", &p.display().to_string());
            Some(cfg)
        }
        None => None,
    };

    // Profile.
    if let (Some(p), Some(s)) = (opts.profile, opts.codex_sandbox) {
        if p != s {
            return Err(PolicyError::ConflictingProfiles { profile: p, sandbox: s });
        }
    }
    let env_profile = host.var("WARDEN_PROFILE").filter(|v| !v.is_empty()).map(|v| {
        v.parse::<Profile>().unwrap_or_else(|_| {
            warnings.push(ConfigWarning {
                file: None,
                key: "WARDEN_PROFILE".to_owned(),
                message: format!(
                    "invalid value {} (accepted: {}); using \"offline\"",
                    crate::quote::toml_quote(v),
                    PROFILE_NAMES.join(", ")
                ),
            });
            Profile::Offline
        })
    });
    let codex_src = codex.as_ref().map(|c| {
        let suffix = if c.profile() != c.sandbox_mode {
            "sandbox_mode, sandbox_workspace_write.network_access"
        } else {
            "sandbox_mode"
        };
        format!("{} ({suffix})", c.path.display())
    });
    let (profile, profile_src) = if let Some(p) = opts.profile {
        (p, "--profile".to_owned())
    } else if let Some(p) = opts.codex_sandbox {
        (p, "--sandbox".to_owned())
    } else if let Some(p) = env_profile {
        (p, "WARDEN_PROFILE".to_owned())
    } else if let Some(p) = warden.as_ref().and_then(|w| w.profile) {
        (p, config_path_str(&warden))
    } else if let Some(p) = codex.as_ref().and_then(CodexConfig::profile) {
        (p, codex_src.clone().unwrap_or_default())
    } else {
        (Profile::Offline, "default".to_owned())
    };
    src("profile", &profile_src);

    // Network.
    let (net, net_src) = if let Some(n) = opts.net {
        (n, "--net".to_owned())
    } else if let Some(n) = warden.as_ref().and_then(|w| w.net) {
        (n, config_path_str(&warden))
    } else {
        (profile.default_net(), format!("profile {profile}"))
    };
    src("net", &net_src);

    // Workdir.
    let (wd_given, wd_src) = match &opts.workdir {
        Some(p) => (absolutize(&cwd, p), "--workdir"),
        None => (cwd.clone(), "cwd"),
    };
    let workdir =
        fs::canonicalize(&wd_given).map_err(|source| PolicyError::Workdir { path: wd_given.clone(), source })?;
    if !workdir.is_dir() {
        return Err(PolicyError::WorkdirNotDirectory { path: workdir });
    }
    src("workdir", wd_src);
    if matches!(profile, Profile::WorkspaceWrite | Profile::WorkspaceNet) {
        if workdir == Path::new("/") {
            return Err(PolicyError::WorkdirIsRoot { profile });
        }
        if let Some(h) = home.and_then(|h| fs::canonicalize(h).ok()) {
            if workdir == h {
                return Err(PolicyError::WorkdirIsHome { path: h, profile });
            }
        }
        if let Some(root) = host.var("WORKSPACE_ROOT_DIR").filter(|v| !v.is_empty()) {
            let root_abs = absolutize(&cwd, Path::new(root));
            let root =
                fs::canonicalize(&root_abs).map_err(|source| PolicyError::WorkspaceRoot { path: root_abs, source })?;
            if !is_within(&workdir, &root) {
                return Err(PolicyError::WorkdirOutsideWorkspaceRoot { workdir, root });
            }
        }
    }

    // Writable and read-only roots. A writable path whose last component is a symlink leading
    // out of its directory (`pkg -> ~/.config`, perhaps planted by an earlier run) is shown
    // resolved and needs the same confirmation as a path outside the workdir.
    let mut redirected = Vec::new();
    if matches!(profile, Profile::WorkspaceWrite | Profile::WorkspaceNet) {
        if let Some(to) = escapes_its_directory(&wd_given) {
            redirected.push((wd_given.clone(), to));
        }
    }
    let mut explicit_writable = Vec::new();
    for p in &opts.writable {
        let abs = absolutize(&cwd, p);
        if let Some(to) = escapes_its_directory(&abs) {
            redirected.push((abs, to));
        }
        push_unique(&mut explicit_writable, canon_flag("--writable", &cwd, p)?);
    }
    let mut read_only = Vec::new();
    for p in &opts.read_only {
        push_unique(&mut read_only, canon_flag("--read-only", &cwd, p)?);
    }
    if let Some(w) = &warden {
        for cp in &w.writable {
            if let Some(to) = escapes_its_directory(&cp.path) {
                redirected.push((cp.path.clone(), to));
            }
            push_unique(&mut explicit_writable, canon_config(w, "writable", cp)?);
        }
        for cp in &w.read_only {
            push_unique(&mut read_only, canon_config(w, "read_only", cp)?);
        }
    }
    let writable_roots = match profile {
        Profile::Trusted => vec![PathBuf::from("/")],
        Profile::WorkspaceWrite | Profile::WorkspaceNet => {
            let mut roots = vec![workdir.clone()];
            roots.extend(explicit_writable);
            if let Some(c) = &codex {
                for p in &c.writable_roots {
                    match fs::canonicalize(p) {
                        Ok(p) => roots.push(p),
                        Err(e) => warnings.push(ConfigWarning {
                            file: Some(c.path.clone()),
                            key: "sandbox_workspace_write.writable_roots".to_owned(),
                            message: format!("cannot use {}: {e}; ignoring it", p.display()),
                        }),
                    }
                }
            }
            let mut unique = Vec::new();
            for r in roots {
                push_unique(&mut unique, r);
            }
            unique
        }
        Profile::Offline | Profile::NetReadOnly => explicit_writable,
    };
    let writable_outside_workdir = writable_roots.iter().filter(|r| !is_within(r, &workdir)).cloned().collect();

    // Masks.
    let mut explicit_masks = Vec::new();
    let mut canon = Canonicalizer::default();
    // A credential file warden reads the model key from is hidden like a --deny-read path.
    let flagged = opts.deny_read.iter().map(|p| ("--deny-read", p));
    for (flag, p) in flagged.chain(opts.credential_file.iter().map(|p| ("--credential-file", p))) {
        let abs = absolutize(&cwd, p);
        fs::metadata(&abs).map_err(|source| PolicyError::PathFlag {
            flag: flag.to_owned(),
            path: p.clone(),
            source,
        })?;
        explicit_masks.extend(canon.mask_variants(&abs));
    }
    if let Some(w) = &warden {
        for cp in &w.deny_read {
            explicit_masks.extend(canon.mask_variants(&cp.path));
        }
    }
    let mut deny_read = if profile.masks_secrets() {
        let mut homes: Vec<PathBuf> = home.map(Path::to_owned).into_iter().collect();
        homes.extend(system_homes());
        let mut extra: Vec<PathBuf> = ["XDG_CONFIG_HOME", "XDG_STATE_HOME"]
            .iter()
            .filter_map(|v| host.abs_var(v))
            .map(|d| d.join("warden"))
            .collect();
        extra.extend(config_path.iter().cloned());
        // The explicit masks are expanded already (expanding twice gives the same paths).
        let mut m = canon.default_masks(&homes, &extra);
        m.extend(explicit_masks);
        m.sort();
        m.dedup();
        m
    } else {
        let mut m = explicit_masks;
        m.sort();
        m.dedup();
        m
    };

    // Temporary directories.
    let tmp_writable = !codex.as_ref().is_some_and(|c| c.exclude_slash_tmp);
    let tmpdir = if codex.as_ref().is_some_and(|c| c.exclude_tmpdir_env_var) {
        None
    } else {
        host.abs_var("TMPDIR").and_then(|t| fs::canonicalize(&t).ok()).filter(|t| {
            !is_within(t, Path::new("/tmp"))
                && t.is_dir()
                && !is_within(&workdir, t)
                && !home.is_some_and(|h| is_within(h, t))
        })
    };

    // Environment.
    let wenv = warden.as_ref().map(|w| &w.env);
    let cenv = codex.as_ref().map(|c| &c.env);
    let (inherit, inherit_src) = if let Some(i) = opts.env_inherit {
        (i, "--env-inherit".to_owned())
    } else if let Some(i) = wenv.and_then(|e| e.inherit) {
        (i, config_path_str(&warden))
    } else if let Some(i) = cenv.and_then(|e| e.inherit) {
        (i, codex_path_str(&codex))
    } else {
        (EnvInherit::All, "default".to_owned())
    };
    src("env.inherit", &inherit_src);
    let ignore_default_excludes = wenv
        .and_then(|e| e.ignore_default_excludes)
        .or_else(|| cenv.and_then(|e| e.ignore_default_excludes))
        .unwrap_or(false);
    let mut exclude: Vec<String> = opts.env_exclude.clone();
    for e in [wenv, cenv].into_iter().flatten() {
        for x in &e.exclude {
            if !exclude.contains(x) {
                exclude.push(x.clone());
            }
        }
    }
    let mut set: Vec<(String, String)> = Vec::new();
    let cli_set = opts.env_set.clone();
    for layer in
        [cenv.map(|e| e.set.clone()).unwrap_or_default(), wenv.map(|e| e.set.clone()).unwrap_or_default(), cli_set]
    {
        for (k, v) in layer {
            match set.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => set.push((k, v)),
            }
        }
    }
    for (k, v) in &opts.env_set {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(PolicyError::InvalidEnvSet { name: k.clone() });
        }
    }
    let include_only = [Some(&opts.env_include_only), wenv.map(|e| &e.include_only), cenv.map(|e| &e.include_only)]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty())
        .cloned()
        .unwrap_or_default();

    // Limits.
    let wl = warden.as_ref().map(|w| w.limits).unwrap_or_default();
    let mut limit = |field: &str, flag: &str, cli: Option<u64>, file: Option<u64>| {
        if let Some(v) = cli {
            check_limit(field, v, flag)?;
            src(&format!("limits.{field}"), flag);
            Ok(Some(v))
        } else {
            if file.is_some() {
                src(&format!("limits.{field}"), &config_path_str(&warden));
            }
            Ok::<_, PolicyError>(file)
        }
    };
    let limits = Limits {
        timeout_secs: limit("timeout", "--timeout", opts.timeout_secs, wl.timeout_secs)?,
        memory_bytes: limit("memory", "--memory", opts.memory_bytes, wl.memory_bytes)?,
        cpu_seconds: limit("cpu_seconds", "--cpu-seconds", opts.cpu_seconds, wl.cpu_seconds)?,
        max_procs: limit("max_procs", "--max-procs", opts.max_procs, wl.max_procs)?,
        max_file_size: limit("max_file_size", "--max-file-size", opts.max_file_size, wl.max_file_size)?,
        tmp_size: limit("tmp_size", "--tmp-size", opts.tmp_size, wl.tmp_size)?,
    };

    let audit = resolve_audit(opts, host, &cwd, warden.as_ref())?;
    let mut pinned = Vec::new();
    if !profile.everything_writable() {
        hide_audit_state(&audit, &workdir, &mut deny_read)?;
        // What configures later runs stays out of reach, whether it exists yet or not.
        let config_dir = default_config_path(host).and_then(|p| p.parent().map(Path::to_owned));
        let state_dir = audit.path.as_ref().filter(|_| !audit.is_stdout()).and_then(|p| p.parent().map(Path::to_owned));
        for (what, dir) in [("config", config_dir), ("state", state_dir)] {
            let Some(dir) = dir.map(|d| canonical_as_far_as_exists(&d)) else { continue };
            if let Some(root) = writable_roots.iter().find(|r| is_within(&dir, r)) {
                return Err(PolicyError::WritableContainsWardenState {
                    root: root.clone(),
                    what,
                    dir,
                    hint: if what == "state" {
                        "move the audit log out of it with --audit-log PATH, or make a narrower path writable"
                    } else {
                        "make a narrower path writable"
                    },
                });
            }
        }
        // A config file read for this run that lies in a writable root: read-only, and neither it
        // nor a directory on the way to it can be renamed or replaced (each is a mount point).
        let read_for_run = config_path.iter().chain(codex.as_ref().map(|c| &c.path));
        for file in read_for_run.filter_map(|f| fs::canonicalize(f).ok()) {
            let Some(root) = writable_roots.iter().find(|r| is_within(&file, r)) else { continue };
            push_unique(&mut read_only, file.clone());
            let mut dir = file.parent();
            while let Some(d) = dir.filter(|d| d != root && is_within(d, root)) {
                push_unique(&mut pinned, d.to_path_buf());
                dir = d.parent();
            }
        }
        pinned.sort();
    }
    let git = match (opts.git, warden.as_ref().and_then(|w| w.git)) {
        (Some(g), _) => {
            src("git", "--git");
            g
        }
        (None, Some(g)) => {
            src("git", &config_path_str(&warden));
            g
        }
        (None, None) => GitMode::ReadOnly,
    };
    let repo_scan = {
        let defaults = RepoScan::default();
        let c = warden.as_ref().map(|w| w.repo_scan.clone()).unwrap_or_default();
        RepoScan {
            max_depth: c.max_depth.unwrap_or(defaults.max_depth),
            max_entries: c.max_entries.unwrap_or(defaults.max_entries),
            skip: c.skip.unwrap_or(defaults.skip),
        }
    };
    let mut network = warden.as_ref().map(|w| w.network.clone()).unwrap_or_default();
    network.allow.extend(opts.network.allow.iter().cloned());
    network.deny.extend(opts.network.deny.iter().cloned());
    network.allow_ports.extend(opts.network.allow_ports.iter().copied());
    network.allow_cidr.extend(opts.network.allow_cidr.iter().cloned());
    network.allow_private.extend(opts.network.allow_private.iter().cloned());
    network.resolve.extend(opts.network.resolve.iter().cloned());
    if !network.is_empty() && net != NetMode::Allowlist {
        return Err(PolicyError::RulesWithoutAllowlist { net: net.name().to_owned() });
    }
    if audit.enabled {
        src("audit", &audit.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
    }

    let bind_at = resolve_bind_at(&opts.bind_at, &cwd, profile, &writable_roots)?;
    let policy = Policy {
        profile,
        workdir,
        writable_roots,
        writable_outside_workdir,
        redirected,
        read_only,
        deny_read,
        protected_names: if profile == Profile::Trusted {
            Vec::new()
        } else {
            let mut names: Vec<String> = DEFAULT_PROTECTED_NAMES.iter().map(|s| (*s).to_owned()).collect();
            for n in &opts.extra_protected_names {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            names
        },
        bind_at,
        git,
        repo_scan,
        pinned,
        tmp_writable,
        tmpdir,
        net,
        env: EnvPolicy { inherit, ignore_default_excludes, exclude, set, include_only },
        limits,
        allow_degraded: opts.allow_degraded,
        audit,
        network,
        sources,
    };
    serde_json::to_vec(&policy).map_err(|e| PolicyError::Unserializable { message: e.to_string() })?;
    Ok(Resolved { policy, warnings })
}

/// Checks and canonicalises the sources of [`PolicyOptions::bind_at`]; each target must be
/// absolute and lie in a writable root (where the run may put a placeholder for it).
fn resolve_bind_at(
    given: &[BindAt],
    cwd: &Path,
    profile: Profile,
    writable_roots: &[PathBuf],
) -> Result<Vec<BindAt>, PolicyError> {
    let mut out = Vec::new();
    for b in given {
        let err = |path: &Path, problem: String| PolicyError::BindAt {
            what: format!("showing {} at {}", b.source.display(), b.target.display()),
            path: path.to_owned(),
            problem,
        };
        if profile.everything_writable() {
            return Err(err(
                &b.source,
                "the trusted profile has no mount namespace to show it in; use another profile".into(),
            ));
        }
        let source = fs::canonicalize(absolutize(cwd, &b.source)).map_err(|e| err(&b.source, e.to_string()))?;
        if !b.target.is_absolute() {
            return Err(err(&b.target, "the target must be an absolute path".into()));
        }
        let target = normalize(&b.target);
        let parent = target.parent().map(canonical_as_far_as_exists).unwrap_or_default();
        let target = parent.join(target.file_name().unwrap_or_default());
        if !writable_roots.iter().any(|r| is_within(&target, r) && target != *r) {
            return Err(err(&target, "the target must lie inside a writable root".into()));
        }
        out.push(BindAt { source, target, writable: b.writable });
    }
    Ok(out)
}

/// warden's audit log directory and key file are masked in every profile but `trusted`, so the
/// command can neither read nor alter the record of what it did (even under a writable parent); a
/// workdir inside the log's directory is refused.
fn hide_audit_state(audit: &AuditSettings, workdir: &Path, deny_read: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    if let Some(dir) = audit.path.as_ref().filter(|_| !audit.is_stdout()).and_then(|p| p.parent()) {
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if workdir.starts_with(&dir) {
            return Err(PolicyError::AuditDirContainsWorkdir { dir, workdir: workdir.to_path_buf() });
        }
        deny_read.push(dir);
    }
    if let Some(key) = &audit.key_file {
        deny_read.push(key.clone());
    }
    deny_read.sort();
    deny_read.dedup();
    Ok(())
}

/// Where `p` really is, when that is not inside the real directory `p` appears to be in (its last
/// component is a symlink that leads elsewhere). `/home -> /var/home` style links in the middle of
/// a path are fine: they resolve the same way for `p` and its directory.
fn escapes_its_directory(p: &Path) -> Option<PathBuf> {
    let real = fs::canonicalize(p).ok()?;
    let dir = fs::canonicalize(p.parent()?).ok()?;
    (!real.starts_with(&dir)).then_some(real)
}

/// `p` with its longest existing ancestor canonicalized (symlinks resolved) and the rest appended:
/// where `p` is, or would be once created.
fn canonical_as_far_as_exists(p: &Path) -> PathBuf {
    let p = normalize(p);
    let mut missing = Vec::new();
    let mut cur = p.as_path();
    loop {
        if let Ok(c) = fs::canonicalize(cur) {
            let mut out = c;
            for part in missing.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                cur = parent;
            }
            _ => return p.clone(),
        }
    }
}

/// The default audit log location (whether or not it exists).
pub fn default_audit_path(host: &HostContext) -> Option<PathBuf> {
    host.abs_var("XDG_STATE_HOME")
        .map(|x| x.join("warden/audit.jsonl"))
        .or_else(|| host.home.as_ref().map(|h| h.join(".local/state/warden/audit.jsonl")))
}

fn resolve_audit(
    opts: &PolicyOptions,
    host: &HostContext,
    cwd: &Path,
    warden: Option<&WardenConfig>,
) -> Result<AuditSettings, PolicyError> {
    let cfg = warden.map(|w| w.audit.clone()).unwrap_or_default();
    let enabled = !opts.no_audit && cfg.enabled.unwrap_or(true);
    let path = match (&opts.audit_log, &cfg.path) {
        (Some(p), _) if p.as_os_str() == crate::policy::AUDIT_STDOUT => Some(p.clone()),
        (Some(p), _) => Some(absolutize(cwd, p)),
        (None, Some(p)) => Some(p.path.clone()),
        (None, None) => default_audit_path(host),
    };
    if enabled && path.is_none() {
        return Err(PolicyError::AuditPath);
    }
    let key_file = opts.audit_key_file.as_ref().map(|p| absolutize(cwd, p)).or(cfg.key_file.map(|p| p.path));
    Ok(AuditSettings {
        enabled,
        path: if enabled { path } else { None },
        fsync: cfg.fsync.unwrap_or_else(|| "batch".to_owned()),
        max_bytes: match cfg.max_bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(DEFAULT_AUDIT_MAX_BYTES),
        },
        keep: cfg.keep.unwrap_or(DEFAULT_AUDIT_KEEP),
        key_file,
        forward: false,
        run_budget: (
            cfg.run_budget_records.unwrap_or(crate::policy::DEFAULT_RUN_BUDGET.0),
            cfg.run_budget_bytes.unwrap_or(crate::policy::DEFAULT_RUN_BUDGET.1),
        ),
    })
}

fn config_path_str(w: &Option<WardenConfig>) -> String {
    w.as_ref().map(|w| w.path.display().to_string()).unwrap_or_default()
}

fn codex_path_str(c: &Option<CodexConfig>) -> String {
    c.as_ref().map(|c| c.path.display().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        home: PathBuf,
        proj: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = fs::canonicalize(dir.path()).expect("canon");
            let home = root.join("home");
            let proj = home.join("proj");
            for d in [&proj, &root.join("keys"), &root.join("other"), &root.join("xdg")] {
                fs::create_dir_all(d).expect("mkdir");
            }
            fs::create_dir_all(proj.join("sub")).expect("mkdir");
            symlink(root.join("keys"), home.join(".ssh")).expect("symlink");
            fs::write(home.join(".netrc"), "machine m").expect("write");
            Fixture { _dir: dir, root, home, proj }
        }

        fn host(&self, env: &[(&str, &str)]) -> HostContext {
            let mut vars = vec![("XDG_CONFIG_HOME".to_owned(), self.root.join("xdg").display().to_string())];
            vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            HostContext { cwd: self.proj.clone(), home: Some(self.home.clone()), env: vars }
        }

        fn write(&self, name: &str, content: &str) -> PathBuf {
            let p = self.root.join(name);
            fs::write(&p, content).expect("write");
            p
        }
    }

    fn run(opts: &PolicyOptions, host: &HostContext) -> Resolved {
        resolve(opts, host).unwrap_or_else(|e| panic!("resolve failed: {e}"))
    }

    #[test]
    fn defaults_are_offline_and_masked() {
        let f = Fixture::new();
        let r = run(&PolicyOptions::default(), &f.host(&[]));
        let p = &r.policy;
        assert!(r.warnings.is_empty());
        assert_eq!(p.profile, Profile::Offline);
        assert_eq!(p.source_of("profile"), Some("default"));
        assert_eq!(p.net, NetMode::None);
        assert_eq!(p.workdir, f.proj);
        assert!(p.writable_roots.is_empty());
        assert!(p.writable_outside_workdir.is_empty());
        assert_eq!(p.protected_names, [".git", ".codex", ".agents"]);
        assert!(p.tmp_writable);
        assert_eq!(p.env, EnvPolicy::default());
        assert_eq!(p.limits, Limits::default());
        // The symlinked ~/.ssh is masked under both names; missing defaults are not listed.
        assert!(p.deny_read.contains(&f.home.join(".ssh")));
        assert!(p.deny_read.contains(&f.root.join("keys")));
        assert!(p.deny_read.contains(&f.home.join(".netrc")));
        assert!(!p.deny_read.contains(&f.home.join(".aws")));
        let mut sorted = p.deny_read.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, p.deny_read);
    }

    #[test]
    fn warden_state_and_the_credential_file_are_masked() {
        let f = Fixture::new();
        let state = f.root.join("state");
        fs::create_dir_all(&state).expect("mkdir");
        let key_file = f.write("audit.key", "0123456789abcdef0123");
        let cred = f.write("llm.key", "sk-test");
        let opts = PolicyOptions {
            audit_log: Some(state.join("audit.jsonl")),
            audit_key_file: Some(key_file.clone()),
            credential_file: Some(cred.clone()),
            ..PolicyOptions::default()
        };
        let p = run(&opts, &f.host(&[])).policy;
        for hidden in [&state, &key_file, &cred] {
            assert!(p.deny_read.contains(hidden), "{} not masked: {:?}", hidden.display(), p.deny_read);
        }
        let trusted = PolicyOptions { profile: Some(Profile::Trusted), ..opts.clone() };
        let p = run(&trusted, &f.host(&[])).policy;
        assert!(!p.deny_read.contains(&state), "trusted hides nothing of warden's own");
        let missing = PolicyOptions { credential_file: Some(f.root.join("nope")), ..PolicyOptions::default() };
        let err = resolve(&missing, &f.host(&[])).expect_err("a missing credential file");
        assert!(err.to_string().contains("--credential-file"), "{err}");
    }

    #[test]
    fn a_workdir_inside_the_audit_directory_is_refused() {
        let f = Fixture::new();
        let opts = PolicyOptions { audit_log: Some(f.home.join("audit.jsonl")), ..PolicyOptions::default() };
        let err = resolve(&opts, &f.host(&[])).expect_err("the workdir is under the log's directory");
        assert!(matches!(err, PolicyError::AuditDirContainsWorkdir { .. }), "{err}");
        assert!(err.to_string().contains("--audit-log PATH"), "{err}");
    }

    #[test]
    fn profile_precedence() {
        let f = Fixture::new();
        let warden = f.write("warden.toml", "profile = \"net-read-only\"\n");
        let codex = f.write("codex.toml", "sandbox_mode = \"danger-full-access\"\n");
        let mut opts = PolicyOptions {
            config: Some(warden.clone()),
            codex_config: Some(codex.clone()),
            profile: Some(Profile::WorkspaceWrite),
            ..PolicyOptions::default()
        };
        let env = [("WARDEN_PROFILE", "workspace-net")];
        let p = run(&opts, &f.host(&env)).policy;
        assert_eq!((p.profile, p.source_of("profile")), (Profile::WorkspaceWrite, Some("--profile")));
        opts.profile = None;
        opts.codex_sandbox = Some(Profile::WorkspaceWrite);
        let p = run(&opts, &f.host(&env)).policy;
        assert_eq!((p.profile, p.source_of("profile")), (Profile::WorkspaceWrite, Some("--sandbox")));
        opts.codex_sandbox = None;
        let p = run(&opts, &f.host(&env)).policy;
        assert_eq!((p.profile, p.source_of("profile")), (Profile::WorkspaceNet, Some("WARDEN_PROFILE")));
        let p = run(&opts, &f.host(&[("WARDEN_PROFILE", "")])).policy;
        let warden_src = warden.display().to_string();
        assert_eq!((p.profile, p.source_of("profile")), (Profile::NetReadOnly, Some(warden_src.as_str())));
        assert_eq!(p.net, NetMode::Allowlist);
        opts.config = None;
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.profile, Profile::Trusted);
        assert_eq!(p.source_of("profile"), Some(format!("{} (sandbox_mode)", codex.display()).as_str()));
        // workspace-write + network_access = workspace-net.
        let codex_net = f.write(
            "codex-net.toml",
            "sandbox_mode = \"workspace-write\"\n[sandbox_workspace_write]\nnetwork_access = true\n",
        );
        opts.codex_config = Some(codex_net);
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.profile, Profile::WorkspaceNet);
        assert!(p.source_of("profile").is_some_and(|s| s.ends_with("network_access)")));
    }

    #[test]
    fn conflicting_cli_profiles_are_an_error() {
        let f = Fixture::new();
        let opts = PolicyOptions {
            profile: Some(Profile::Offline),
            codex_sandbox: Some(Profile::Trusted),
            ..PolicyOptions::default()
        };
        let e = resolve(&opts, &f.host(&[])).expect_err("conflict");
        assert!(matches!(e, PolicyError::ConflictingProfiles { .. }), "{e}");
        let same = PolicyOptions {
            profile: Some(Profile::Trusted),
            codex_sandbox: Some(Profile::Trusted),
            ..PolicyOptions::default()
        };
        assert_eq!(run(&same, &f.host(&[])).policy.profile, Profile::Trusted);
    }

    #[test]
    fn invalid_selectors_resolve_to_offline_without_falling_through() {
        let f = Fixture::new();
        let codex = f.write("codex.toml", "sandbox_mode = \"danger-full-access\"\n");
        let bad_warden = f.write("warden.toml", "profile = \"bogus\"\n");
        // WARDEN_PROFILE invalid: offline, even though the config says trusted.
        let opts = PolicyOptions { codex_config: Some(codex.clone()), ..PolicyOptions::default() };
        let r = run(&opts, &f.host(&[("WARDEN_PROFILE", "bogus")]));
        assert_eq!(r.policy.profile, Profile::Offline);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(
            r.warnings[0].to_string(),
            "warden: warning: environment variable WARDEN_PROFILE: invalid value \"bogus\" (accepted: offline, net-read-only, workspace-write, workspace-net, trusted); using \"offline\""
        );
        // warden.toml invalid: offline, not the Codex value.
        let opts =
            PolicyOptions { config: Some(bad_warden.clone()), codex_config: Some(codex), ..PolicyOptions::default() };
        let r = run(&opts, &f.host(&[]));
        assert_eq!(r.policy.profile, Profile::Offline);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        assert_eq!(r.warnings[0].file.as_deref(), Some(bad_warden.as_path()));
        assert_eq!(r.warnings[0].key, "profile");
        assert!(r.warnings[0].message.contains("accepted: offline, net-read-only"));
        // Codex invalid: offline.
        let yolo = f.write("yolo.toml", "sandbox_mode = \"yolo\"\n");
        let opts = PolicyOptions { codex_config: Some(yolo), ..PolicyOptions::default() };
        let r = run(&opts, &f.host(&[]));
        assert_eq!(r.policy.profile, Profile::Offline);
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].key, "sandbox_mode");
    }

    #[test]
    fn net_precedence() {
        let f = Fixture::new();
        let cfg = f.write("warden.toml", "[network]\nmode = \"allowlist\"\n");
        let mut opts = PolicyOptions {
            profile: Some(Profile::Trusted),
            config: Some(cfg),
            net: Some(NetMode::None),
            ..PolicyOptions::default()
        };
        assert_eq!(run(&opts, &f.host(&[])).policy.net, NetMode::None);
        opts.net = None;
        assert_eq!(run(&opts, &f.host(&[])).policy.net, NetMode::Allowlist);
        opts.config = None;
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.net, NetMode::Host);
        assert_eq!(p.source_of("net"), Some("profile trusted"));
    }

    #[test]
    fn paths_shown_elsewhere_need_an_existing_source_and_a_target_in_a_writable_root() {
        let f = Fixture::new();
        let src = f.write("login.json", "{}");
        let with = |source: &Path, target: &Path, profile: Profile| PolicyOptions {
            profile: Some(profile),
            workdir: Some(f.proj.clone()),
            bind_at: vec![BindAt { source: source.to_owned(), target: target.to_owned(), writable: false }],
            extra_protected_names: vec!["codex".into()],
            ..PolicyOptions::default()
        };
        let p = run(&with(&src, &f.proj.join("sub/../shown"), Profile::WorkspaceWrite), &f.host(&[])).policy;
        assert_eq!(p.bind_at, [BindAt { source: src.clone(), target: f.proj.join("shown"), writable: false }]);
        assert!(p.protected_names.contains(&"codex".to_owned()) && p.protected_names.contains(&".git".to_owned()));
        let e = resolve(&with(&src, &f.root.join("other/shown"), Profile::WorkspaceWrite), &f.host(&[]))
            .expect_err("outside the writable roots");
        assert!(e.to_string().contains("inside a writable root"), "{e}");
        let e = resolve(&with(&src, &f.proj, Profile::WorkspaceWrite), &f.host(&[])).expect_err("onto the root");
        assert!(e.to_string().contains("inside a writable root"), "{e}");
        let e = resolve(&with(&f.root.join("missing"), &f.proj.join("shown"), Profile::WorkspaceWrite), &f.host(&[]))
            .expect_err("missing source");
        assert!(e.to_string().contains("missing") && e.to_string().contains("No such file"), "{e}");
        let e = resolve(&with(&src, Path::new("rel"), Profile::WorkspaceWrite), &f.host(&[])).expect_err("relative");
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = resolve(&with(&src, &f.proj.join("shown"), Profile::Trusted), &f.host(&[])).expect_err("trusted");
        assert!(e.to_string().contains("trusted"), "{e}");
    }

    #[test]
    fn default_config_location_is_used_if_present() {
        let f = Fixture::new();
        let dir = f.root.join("xdg/warden");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("config.toml"), "profile = \"workspace-write\"\n").expect("write");
        let p = run(&PolicyOptions::default(), &f.host(&[])).policy;
        assert_eq!(p.profile, Profile::WorkspaceWrite);
        // Warden's own config directory is masked.
        assert!(p.deny_read.contains(&dir));
        assert!(p.deny_read.contains(&dir.join("config.toml")));
    }

    #[test]
    fn workdir_guards() {
        let f = Fixture::new();
        let ww = |workdir: &Path, env: &[(&str, &str)]| {
            let opts = PolicyOptions {
                profile: Some(Profile::WorkspaceWrite),
                workdir: Some(workdir.to_owned()),
                ..PolicyOptions::default()
            };
            resolve(&opts, &f.host(env))
        };
        let e = ww(&f.home, &[]).expect_err("home");
        assert!(matches!(e, PolicyError::WorkdirIsHome { .. }), "{e}");
        assert!(e.to_string().contains("subdirectory"));
        let e = ww(Path::new("/"), &[]).expect_err("root");
        assert!(matches!(e, PolicyError::WorkdirIsRoot { .. }), "{e}");
        // Through a symlink and a relative path, still the home directory.
        symlink(&f.home, f.root.join("home-link")).expect("symlink");
        assert!(ww(Path::new("../../home-link/./"), &[]).is_err());
        let e = ww(&f.root.join("missing"), &[]).expect_err("missing");
        assert!(e.to_string().contains("missing"), "{e}");
        let e = ww(&f.home.join(".netrc"), &[]).expect_err("file");
        assert!(matches!(e, PolicyError::WorkdirNotDirectory { .. }), "{e}");
        let other = f.root.join("other").display().to_string();
        let e = ww(&f.proj, &[("WORKSPACE_ROOT_DIR", &other)]).expect_err("outside");
        assert!(e.to_string().contains(&other) && e.to_string().contains(&f.proj.display().to_string()));
        let home = f.home.display().to_string();
        let p = ww(Path::new("sub"), &[("WORKSPACE_ROOT_DIR", &home)]).expect("inside").policy;
        assert_eq!(p.workdir, f.proj.join("sub"));
        // Read-only profiles may start in the home directory.
        let opts = PolicyOptions { workdir: Some(f.home.clone()), ..PolicyOptions::default() };
        assert_eq!(run(&opts, &f.host(&[])).policy.workdir, f.home);
    }

    #[test]
    fn writable_roots_per_profile() {
        let f = Fixture::new();
        let extra = f.root.join("extra");
        fs::create_dir_all(&extra).expect("mkdir");
        let cfg = f.write("warden.toml", "[filesystem]\nwritable = [\"extra\"]\nread_only = [\"~/proj/sub\"]\n");
        let codex = f.write(
            "codex.toml",
            "[sandbox_workspace_write]\nwritable_roots = [\"/nonexistent-warden-test\", \"home/proj/sub\"]\n",
        );
        let mut opts = PolicyOptions {
            profile: Some(Profile::WorkspaceWrite),
            writable: vec![PathBuf::from("../../other")],
            config: Some(cfg),
            codex_config: Some(codex),
            ..PolicyOptions::default()
        };
        let r = run(&opts, &f.host(&[]));
        let other = f.root.join("other");
        assert_eq!(r.policy.writable_roots, [f.proj.clone(), other.clone(), extra.clone(), f.proj.join("sub")]);
        assert_eq!(r.policy.writable_outside_workdir, [other.clone(), extra.clone()]);
        assert_eq!(r.policy.read_only, [f.proj.join("sub")]);
        assert_eq!(r.warnings.len(), 1, "missing codex root warns: {:?}", r.warnings);
        assert_eq!(r.warnings[0].key, "sandbox_workspace_write.writable_roots");

        opts.profile = Some(Profile::Offline);
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.writable_roots, [other.clone(), extra]);

        opts.profile = Some(Profile::Trusted);
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.writable_roots, [PathBuf::from("/")]);
        assert_eq!(p.writable_outside_workdir, [PathBuf::from("/")]);
        assert!(p.protected_names.is_empty());
        assert!(p.deny_read.is_empty(), "trusted has no default masks: {:?}", p.deny_read);

        opts.writable = vec![PathBuf::from("nope")];
        let e = resolve(&opts, &f.host(&[])).expect_err("missing");
        assert!(e.to_string().starts_with("--writable nope: "), "{e}");
        let bad_cfg = f.write("bad.toml", "[filesystem]\n\nwritable = [\"missing-dir\"]\n");
        let opts = PolicyOptions { config: Some(bad_cfg.clone()), ..PolicyOptions::default() };
        let e = resolve(&opts, &f.host(&[])).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3: key \"writable\" in [filesystem]: cannot use path", bad_cfg.display())),
            "{e}"
        );
    }

    #[test]
    fn explicit_deny_read() {
        let f = Fixture::new();
        let secret = f.proj.join("secret.env");
        fs::write(&secret, "k").expect("write");
        symlink(&secret, f.proj.join("link.env")).expect("symlink");
        let cfg = f.write("warden.toml", "[filesystem]\ndeny_read = [\"~/proj/link.env\", \"~/absent\"]\n");
        let mut opts = PolicyOptions {
            profile: Some(Profile::Trusted),
            deny_read: vec![PathBuf::from("./secret.env")],
            config: Some(cfg.clone()),
            ..PolicyOptions::default()
        };
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.deny_read, [f.proj.join("link.env"), secret.clone()]);
        opts.profile = None;
        let p = run(&opts, &f.host(&[])).policy;
        for want in [f.proj.join("link.env"), secret, cfg, f.home.join(".ssh")] {
            assert!(p.deny_read.contains(&want), "{want:?} not in {:?}", p.deny_read);
        }
        opts.deny_read = vec![PathBuf::from("absent")];
        let e = resolve(&opts, &f.host(&[])).expect_err("missing");
        assert!(e.to_string().starts_with("--deny-read absent: "), "{e}");
    }

    #[test]
    fn xdg_state_and_config_dirs_are_masked() {
        let f = Fixture::new();
        let state = f.root.join("state");
        fs::create_dir_all(state.join("warden")).expect("mkdir");
        fs::create_dir_all(f.root.join("xdg/warden")).expect("mkdir");
        let s = state.display().to_string();
        let p = run(&PolicyOptions::default(), &f.host(&[("XDG_STATE_HOME", &s)])).policy;
        assert!(p.deny_read.contains(&state.join("warden")));
        assert!(p.deny_read.contains(&f.root.join("xdg/warden")));
    }

    #[test]
    fn env_policy_merges_cli_over_warden_over_codex() {
        let f = Fixture::new();
        let cfg = f.write(
            "warden.toml",
            "[env]\nexclude = [\"W_*\"]\nset = { A = \"warden\", B = \"warden\" }\ninclude_only = [\"from-warden\"]\n",
        );
        let codex = f.write(
            "codex.toml",
            "[shell_environment_policy]\ninherit = \"core\"\nexclude = [\"C_*\"]\nset = { B = \"codex\", C = \"codex\" }\nignore_default_excludes = true\n",
        );
        let mut opts = PolicyOptions {
            config: Some(cfg),
            codex_config: Some(codex),
            env_set: vec![("A".into(), "cli".into()), ("GH_TOKEN".into(), "explicit".into())],
            env_exclude: vec!["X_*".into()],
            ..PolicyOptions::default()
        };
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.env.inherit, EnvInherit::Core);
        assert!(p.env.ignore_default_excludes);
        assert_eq!(p.env.exclude, ["X_*", "W_*", "C_*"]);
        let set: Vec<(&str, &str)> = p.env.set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(set, [("B", "warden"), ("C", "codex"), ("A", "cli"), ("GH_TOKEN", "explicit")]);
        assert_eq!(p.env.include_only, ["from-warden"]);
        opts.env_include_only = vec!["PATH".into()];
        opts.env_inherit = Some(EnvInherit::None);
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.env.include_only, ["PATH"]);
        assert_eq!(p.env.inherit, EnvInherit::None);
        assert_eq!(p.source_of("env.inherit"), Some("--env-inherit"));

        // An explicit --env-set survives the default excludes.
        let opts = PolicyOptions { env_set: vec![("GH_TOKEN".into(), "explicit".into())], ..PolicyOptions::default() };
        let p = run(&opts, &f.host(&[])).policy;
        let host_env = vec![("GH_TOKEN".to_owned(), "host".to_owned()), ("PATH".to_owned(), "/bin".to_owned())];
        assert_eq!(
            p.env.apply(&host_env),
            [("PATH".to_owned(), "/bin".to_owned()), ("GH_TOKEN".to_owned(), "explicit".to_owned())]
        );
        let bad = PolicyOptions { env_set: vec![("A=B".into(), "x".into())], ..PolicyOptions::default() };
        assert!(matches!(resolve(&bad, &f.host(&[])), Err(PolicyError::InvalidEnvSet { .. })));
    }

    #[test]
    fn limits_cli_over_config_and_validated() {
        let f = Fixture::new();
        let cfg = f.write("warden.toml", "[limits]\ntimeout = 30\nmemory = \"1G\"\n");
        let mut opts = PolicyOptions {
            config: Some(cfg.clone()),
            timeout_secs: Some(5),
            max_procs: Some(64),
            ..PolicyOptions::default()
        };
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(
            p.limits,
            Limits {
                timeout_secs: Some(5),
                memory_bytes: Some(1 << 30),
                cpu_seconds: None,
                max_procs: Some(64),
                max_file_size: None,
                tmp_size: None,
            }
        );
        assert_eq!(p.source_of("limits.timeout"), Some("--timeout"));
        assert_eq!(p.source_of("limits.memory"), Some(cfg.display().to_string().as_str()));
        opts.timeout_secs = Some(0);
        let e = resolve(&opts, &f.host(&[])).expect_err("0");
        assert_eq!(
            e.to_string(),
            "limit timeout = 0 from --timeout is out of range (accepted: 1..=604800 seconds (7 days))"
        );
        opts.timeout_secs = None;
        opts.memory_bytes = Some(1000);
        assert!(resolve(&opts, &f.host(&[])).expect_err("small").to_string().contains("memory"));
    }

    #[test]
    fn tmp_settings() {
        let f = Fixture::new();
        // The fixture itself usually lives under /tmp, so TMPDIR must be elsewhere.
        // scripts/test.sh provides a writable dir outside /tmp for the unprivileged run.
        let base = std::env::var_os("WARDEN_TEST_HOST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let outside = tempfile::tempdir_in(base).expect("tempdir");
        let tmpdir = fs::canonicalize(outside.path()).expect("canon");
        let t = tmpdir.display().to_string();
        let p = run(&PolicyOptions::default(), &f.host(&[("TMPDIR", &t)])).policy;
        assert_eq!(p.tmpdir, Some(tmpdir.clone()));
        let p = run(&PolicyOptions::default(), &f.host(&[("TMPDIR", "/tmp")])).policy;
        assert_eq!(p.tmpdir, None);
        let p = run(&PolicyOptions::default(), &f.host(&[("TMPDIR", "relative")])).policy;
        assert_eq!(p.tmpdir, None);
        // A TMPDIR containing the workdir or home would hide it: not given a tmpfs.
        let h = f.home.display().to_string();
        assert_eq!(run(&PolicyOptions::default(), &f.host(&[("TMPDIR", &h)])).policy.tmpdir, None);
        let codex = f.write(
            "codex.toml",
            "[sandbox_workspace_write]\nexclude_tmpdir_env_var = true\nexclude_slash_tmp = true\n",
        );
        let opts = PolicyOptions { codex_config: Some(codex), ..PolicyOptions::default() };
        let p = run(&opts, &f.host(&[("TMPDIR", &t)])).policy;
        assert_eq!(p.tmpdir, None);
        assert!(!p.tmp_writable);
    }

    #[test]
    fn digest_changes_with_policy() {
        let f = Fixture::new();
        let a = run(&PolicyOptions::default(), &f.host(&[])).policy;
        let b = run(&PolicyOptions::default(), &f.host(&[])).policy;
        assert_eq!(a.digest(), b.digest());
        let c = run(&PolicyOptions { net: Some(NetMode::Host), ..PolicyOptions::default() }, &f.host(&[])).policy;
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn audit_defaults_and_overrides() {
        let f = Fixture::new();
        let p = run(&PolicyOptions::default(), &f.host(&[])).policy;
        assert!(p.audit.enabled);
        assert_eq!(p.audit.path, Some(f.home.join(".local/state/warden/audit.jsonl")));
        assert_eq!((p.audit.fsync.as_str(), p.audit.keep), ("batch", DEFAULT_AUDIT_KEEP));
        assert_eq!(p.audit.max_bytes, Some(DEFAULT_AUDIT_MAX_BYTES));
        let state = f.root.join("state").display().to_string();
        let p = run(&PolicyOptions::default(), &f.host(&[("XDG_STATE_HOME", &state)])).policy;
        assert_eq!(p.audit.path, Some(f.root.join("state/warden/audit.jsonl")));
        let opts = PolicyOptions { audit_log: Some("logs/a.jsonl".into()), ..PolicyOptions::default() };
        assert_eq!(run(&opts, &f.host(&[])).policy.audit.path, Some(f.proj.join("logs/a.jsonl")));
        let opts = PolicyOptions { no_audit: true, ..PolicyOptions::default() };
        let p = run(&opts, &f.host(&[])).policy;
        assert!(!p.audit.enabled && p.audit.path.is_none());
    }

    #[test]
    fn audit_config_table() {
        let f = Fixture::new();
        let cfg = f.write(
            "w.toml",
            "[audit]\npath = \"logs/audit.jsonl\"\nfsync = \"always\"\nmax_bytes = \"1M\"\nkeep = 3\nkey_file = \"~/k\"\n",
        );
        let opts = PolicyOptions { config: Some(cfg.clone()), ..PolicyOptions::default() };
        let a = run(&opts, &f.host(&[])).policy.audit;
        assert_eq!(a.path, Some(f.root.join("logs/audit.jsonl")));
        assert_eq!((a.fsync.as_str(), a.max_bytes, a.keep), ("always", Some(1 << 20), 3));
        assert_eq!(a.key_file, Some(f.home.join("k")));
        let off = f.write("off.toml", "[audit]\nenabled = false\n");
        let opts = PolicyOptions { config: Some(off), ..PolicyOptions::default() };
        assert!(!run(&opts, &f.host(&[])).policy.audit.enabled);
        let never = f.write("never.toml", "[audit]\nmax_bytes = 0\n");
        let opts = PolicyOptions { config: Some(never), ..PolicyOptions::default() };
        assert_eq!(run(&opts, &f.host(&[])).policy.audit.max_bytes, None);
        for (name, body, needle) in [
            ("bad1.toml", "[audit]\nfsync = \"sometimes\"\n", ":2: key \"fsync\" in [audit]"),
            ("bad2.toml", "[audit]\nkeep = 0\n", "out of range"),
            ("bad3.toml", "[audit]\nrotate = true\n", "unknown key \"rotate\""),
        ] {
            let bad = f.write(name, body);
            let opts = PolicyOptions { config: Some(bad), ..PolicyOptions::default() };
            let e = resolve(&opts, &f.host(&[])).expect_err(name).to_string();
            assert!(e.contains(needle), "{name}: {e}");
        }
    }

    #[test]
    fn audit_without_a_home_needs_a_path() {
        let f = Fixture::new();
        let host = HostContext { cwd: f.proj.clone(), home: None, env: vec![] };
        assert!(matches!(resolve(&PolicyOptions::default(), &host), Err(PolicyError::AuditPath)));
        let opts = PolicyOptions { no_audit: true, ..PolicyOptions::default() };
        assert!(resolve(&opts, &host).is_ok());
    }

    #[test]
    fn network_rules_need_the_allowlist() {
        let f = Fixture::new();
        let mut opts = PolicyOptions::default();
        opts.network.allow.push(crate::config::AllowRule { pattern: "pypi.org".into(), expires: None, raw: false });
        let e = resolve(&opts, &f.host(&[])).expect_err("offline has no allowlist").to_string();
        assert!(e.contains("--net allowlist"), "{e}");
        opts.net = Some(NetMode::Allowlist);
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!(p.network.allow[0].pattern, "pypi.org");
        let cfg = f.write("n.toml", "[network]\ndeny = [\"evil.test\"]\n");
        let opts = PolicyOptions { config: Some(cfg), profile: Some(Profile::NetReadOnly), ..opts };
        let p = run(&opts, &f.host(&[])).policy;
        assert_eq!((p.network.allow.len(), p.network.deny.as_slice()), (1, &["evil.test".to_owned()][..]));
    }
}
