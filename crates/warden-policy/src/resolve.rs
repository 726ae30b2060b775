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
use crate::config::{CodexConfig, ConfigPath, WardenConfig};
use crate::env::EnvPolicy;
use crate::error::{Location, PolicyError};
use crate::paths::{absolutize, default_masks, is_within, mask_variants, normalize, system_homes};
use crate::policy::{check_limit, Limits, Policy, DEFAULT_PROTECTED_NAMES};
use crate::profile::{EnvInherit, NetMode, Profile, PROFILE_NAMES};

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
    /// `--config FILE` (warden.toml). If `None`, `$XDG_CONFIG_HOME/warden/config.toml` or
    /// `~/.config/warden/config.toml` is used if it exists.
    pub config: Option<PathBuf>,
    /// `--codex-config FILE` (Codex's config.toml).
    pub codex_config: Option<PathBuf>,
    /// `--allow-degraded`.
    pub allow_degraded: bool,
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
    let env_profile = match host.var("WARDEN_PROFILE").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<Profile>().unwrap_or_else(|_| {
            warnings.push(ConfigWarning {
                file: None,
                key: "WARDEN_PROFILE".to_owned(),
                message: format!("invalid value \"{v}\" (accepted: {}); using \"offline\"", PROFILE_NAMES.join(", ")),
            });
            Profile::Offline
        })),
    };
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

    // Writable and read-only roots.
    let mut explicit_writable = Vec::new();
    for p in &opts.writable {
        push_unique(&mut explicit_writable, canon_flag("--writable", &cwd, p)?);
    }
    let mut read_only = Vec::new();
    for p in &opts.read_only {
        push_unique(&mut read_only, canon_flag("--read-only", &cwd, p)?);
    }
    if let Some(w) = &warden {
        for cp in &w.writable {
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
    for p in &opts.deny_read {
        let abs = absolutize(&cwd, p);
        fs::metadata(&abs).map_err(|source| PolicyError::PathFlag {
            flag: "--deny-read".to_owned(),
            path: p.clone(),
            source,
        })?;
        explicit_masks.extend(mask_variants(&abs));
    }
    if let Some(w) = &warden {
        for cp in &w.deny_read {
            explicit_masks.extend(mask_variants(&cp.path));
        }
    }
    let deny_read = if profile.masks_secrets() {
        let mut homes: Vec<PathBuf> = home.map(Path::to_owned).into_iter().collect();
        homes.extend(system_homes());
        let mut extra: Vec<PathBuf> = ["XDG_CONFIG_HOME", "XDG_STATE_HOME"]
            .iter()
            .filter_map(|v| host.abs_var(v))
            .map(|d| d.join("warden"))
            .collect();
        extra.extend(config_path.iter().cloned());
        extra.extend(explicit_masks);
        default_masks(&homes, &extra)
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
    };

    let policy = Policy {
        profile,
        workdir,
        writable_roots,
        writable_outside_workdir,
        read_only,
        deny_read,
        protected_names: if profile == Profile::Trusted {
            Vec::new()
        } else {
            DEFAULT_PROTECTED_NAMES.iter().map(|s| (*s).to_owned()).collect()
        },
        tmp_writable,
        tmpdir,
        net,
        env: EnvPolicy { inherit, ignore_default_excludes, exclude, set, include_only },
        limits,
        allow_degraded: opts.allow_degraded,
        sources,
    };
    serde_json::to_vec(&policy).map_err(|e| PolicyError::Unserializable { message: e.to_string() })?;
    Ok(Resolved { policy, warnings })
}

fn config_path_str(w: &Option<WardenConfig>) -> String {
    w.as_ref().map(|w| w.path.display().to_string()).unwrap_or_default()
}

fn codex_path_str(c: &Option<CodexConfig>) -> String {
    c.as_ref().map(|c| c.path.display().to_string()).unwrap_or_default()
}
