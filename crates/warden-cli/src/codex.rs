//! `warden codex`: Codex in warden's sandbox for one project, with a Codex home of the project's
//! own, as `warden run` with the recipe of the README's Codex section filled in.
//!
//! Guarantees: the project and the home are the writable roots (plus `--sessions-path` and the
//! user's own `--writable` paths, which are confirmed); the home lies outside the project and
//! outside warden's config and state directories; `config.toml` is copied into it once and never
//! overwritten, `prompts/` files never overwritten; `PROJECT/codex` and `PROJECT/.codex` are
//! read-only inside (placeholders when missing), as is the init hook; a key reaches Codex only
//! as the credential proxy's dummy; a ChatGPT login is shown read-only at the home's `auth.json`
//! (never copied) and only `chatgpt.com` and `auth.openai.com` are then always allowed;
//! analytics, feedback, update checks, plugins, apps and OTel metrics are off (the hosts they
//! need are named in `docs/codex-network.md`); Codex's own sandbox is off (warden is it).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use warden_policy::{BindAt, NetMode, Profile};

use crate::args::{CodexArgs, RunArgs};
use crate::ui::fail;

/// What a per-project home records about its project.
const PROJECT_FILE: &str = "warden-project";

/// Codex config overrides when a key goes through the credential proxy.
const PROXY_OVERRIDES: &[(&str, &str)] = &[
    ("model_provider", "\"warden\""),
    (
        "model_providers.warden",
        "{ name = \"OpenAI through warden's credential proxy\", base_url = \"http://127.0.0.1:8787/v1\", wire_api = \"responses\", env_key = \"OPENAI_API_KEY\" }",
    ),
];

/// Codex config overrides for a ChatGPT login: the login is read from the (read-only) file.
const CHATGPT_OVERRIDES: &[(&str, &str)] = &[("cli_auth_credentials_store", "\"file\"")];

/// The hosts a ChatGPT login needs (docs/codex-network.md): the model and models list, and the
/// token refresh.
const CHATGPT_HOSTS: &[&str] = &["chatgpt.com", "auth.openai.com"];

/// Codex config overrides for every run (`-c key=value`, values as TOML).
const OVERRIDES: &[(&str, &str)] = &[
    ("sandbox_mode", "\"danger-full-access\""),
    ("analytics.enabled", "false"),
    ("feedback.enabled", "false"),
    ("check_for_update_on_startup", "false"),
    ("features.plugins", "false"),
    ("features.remote_plugin", "false"),
    ("features.apps", "false"),
    ("otel.metrics_exporter", "\"none\""),
];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$XDG_DATA_HOME/warden/codex`, else `~/.local/share/warden/codex`.
fn homes_base() -> Result<PathBuf, String> {
    if let Some(d) = env("XDG_DATA_HOME").map(PathBuf::from).filter(|d| d.is_absolute()) {
        return Ok(d.join("warden/codex"));
    }
    env("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/warden/codex"))
        .ok_or_else(|| "no HOME and no XDG_DATA_HOME: choose the Codex home with --codex-home DIR".into())
}

/// `<project name>-<first 12 hex digits of SHA-256 of its path>`.
fn home_name(project: &Path) -> String {
    let name: String = project
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect()
        })
        .unwrap_or_else(|| "root".into());
    let hash = Sha256::digest(project.as_os_str().as_encoded_bytes());
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{name}-{hex}")
}

fn canonical_project(p: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("the project {}: {e}", p.display()))
}

/// The user's Codex config to copy: `--codex-source`, `CODEX_CONFIG_DIR`, `~/.codex`,
/// `~/.config/codex`, the first that holds one.
fn config_source(explicit: Option<&Path>) -> Option<PathBuf> {
    let as_file = |p: PathBuf| if p.is_dir() { p.join("config.toml") } else { p };
    if let Some(p) = explicit {
        return Some(as_file(p.to_path_buf()));
    }
    let home = env("HOME").map(PathBuf::from);
    [
        env("CODEX_CONFIG_DIR").map(PathBuf::from),
        home.as_ref().map(|h| h.join(".codex")),
        home.map(|h| h.join(".config/codex")),
    ]
    .into_iter()
    .flatten()
    .map(as_file)
    .find(|p| p.is_file())
}

/// The seed's lookup order for Codex files: the `--codex-source` directory (or a file's
/// directory), `CODEX_CONFIG_DIR`, `~/.codex`, `~/.config/codex`, `PROJECT/codex`,
/// `PROJECT/.codex`.
fn seed_dirs(explicit: Option<&Path>, project: &Path) -> Vec<PathBuf> {
    let home = env("HOME").map(PathBuf::from);
    let explicit = explicit.map(|p| if p.is_dir() { p.to_path_buf() } else { p.parent().unwrap_or(p).to_path_buf() });
    [
        explicit,
        env("CODEX_CONFIG_DIR").map(PathBuf::from),
        home.as_ref().map(|h| h.join(".codex")),
        home.map(|h| h.join(".config/codex")),
        Some(project.join("codex")),
        Some(project.join(".codex")),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The directories `prompts/` are copied from, in the seed's order ([`seed_dirs`]).
fn prompt_sources(explicit: Option<&Path>, project: &Path) -> Vec<PathBuf> {
    seed_dirs(explicit, project).into_iter().map(|d| d.join("prompts")).filter(|d| d.is_dir()).collect()
}

/// Copies each regular file of each source's `prompts/` into `home/prompts` unless one of that
/// name is there already (the first source wins; nothing is ever overwritten). Bounded: 1,000
/// files of 1 MiB at most per source.
fn copy_prompts(sources: &[PathBuf], home: &Path) -> Result<(), String> {
    let dest = home.join("prompts");
    for src in sources {
        let entries = std::fs::read_dir(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        for e in entries.flatten().take(1000) {
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            let small = e.metadata().is_ok_and(|m| m.len() <= 1 << 20);
            let target = dest.join(e.file_name());
            if !is_file || !small || target.exists() {
                continue;
            }
            std::fs::create_dir_all(&dest).map_err(|err| format!("cannot create {}: {err}", dest.display()))?;
            std::fs::copy(e.path(), &target)
                .map_err(|err| format!("cannot copy {} to {}: {err}", e.path().display(), target.display()))?;
        }
    }
    Ok(())
}

fn list(base: &Path) {
    let mut rows: Vec<(String, String)> = std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let project = std::fs::read_to_string(e.path().join(PROJECT_FILE)).unwrap_or_else(|_| "?".into());
            (project.trim().to_owned(), e.path().display().to_string())
        })
        .collect();
    rows.sort();
    if rows.is_empty() {
        println!("no per-project Codex homes under {}", base.display());
    }
    for (project, home) in rows {
        println!("{project}\t{home}");
    }
}

fn forget(base: &Path, project: &Path) -> i32 {
    let project = std::fs::canonicalize(project).unwrap_or_else(|_| project.to_path_buf());
    let home = base.join(home_name(&project));
    if !home.join(PROJECT_FILE).is_file() {
        return fail(format!("no Codex home of {} under {}", project.display(), base.display()));
    }
    match std::fs::remove_dir_all(&home) {
        Ok(()) => {
            println!("removed {}", home.display());
            0
        }
        Err(e) => fail(format!("cannot remove {}: {e}", home.display())),
    }
}

pub fn codex(args: CodexArgs) -> i32 {
    match prepare(args) {
        Ok(Some(run)) => crate::run::run(run),
        Ok(None) => 0,
        Err(e) => fail(e),
    }
}

/// The `warden run` of this `warden codex` (`None`: `--list` / `--forget` were done).
fn prepare(mut a: CodexArgs) -> Result<Option<RunArgs>, String> {
    let base = homes_base();
    if a.list {
        list(&base?);
        return Ok(None);
    }
    if let Some(p) = &a.forget {
        let code = forget(&base?, p);
        return if code == 0 { Ok(None) } else { Err(format!("--forget {} failed", p.display())) };
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let project = canonical_project(&a.project.take().or(a.policy.workdir.take()).unwrap_or(cwd))?;
    let home = match &a.codex_home {
        Some(h) => std::path::absolute(h).map_err(|e| format!("--codex-home {}: {e}", h.display()))?,
        None => base?.join(home_name(&project)),
    };
    if home.starts_with(&project) {
        return Err(format!(
            "the Codex home {} lies inside the project {}: a run could plant what the next run reads; choose another with --codex-home",
            home.display(),
            project.display()
        ));
    }
    // warden's own config and state directories are masked inside: a home there would vanish.
    let home_dir = env("HOME").map(PathBuf::from);
    let warden_dirs = [
        env("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("warden")),
        env("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("warden")),
        home_dir.as_ref().map(|h| h.join(".config/warden")),
        home_dir.as_ref().map(|h| h.join(".local/state/warden")),
    ];
    if let Some(d) = warden_dirs.iter().flatten().find(|d| home.starts_with(d)) {
        return Err(format!(
            "the Codex home {} lies in warden's own directory {}, which is masked inside the sandbox; choose another with --codex-home",
            home.display(),
            d.display()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(|e| format!("cannot create the Codex home {}: {e}", home.display()))?;
    std::fs::write(home.join(PROJECT_FILE), format!("{}\n", project.display()))
        .map_err(|e| format!("cannot write {}: {e}", home.join(PROJECT_FILE).display()))?;
    let config = home.join("config.toml");
    if !config.exists() {
        if let Some(src) = config_source(a.codex_source.as_deref()) {
            std::fs::copy(&src, &config)
                .map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), config.display()))?;
        }
    }
    copy_prompts(&prompt_sources(a.codex_source.as_deref(), &project), &home)?;
    let mut policy = a.policy;
    let mut session = a.session;

    // The credential: the flags, else OPENAI_API_KEY (both through the credential proxy; Codex
    // never holds the key), else a ChatGPT login's auth.json, mounted read-only.
    let mut overrides: Vec<(&str, &str)> = Vec::new();
    let mut always_allowed: &[&str] = &[];
    if session.credential_env.is_none() && session.credential_file.is_none() && env("OPENAI_API_KEY").is_some() {
        session.credential_env = Some("OPENAI_API_KEY".into());
    }
    let own_login = home.join("auth.json");
    if session.credential_env.is_some() || session.credential_file.is_some() {
        overrides.extend(PROXY_OVERRIDES);
        // Not needed with a key, and not for the agent to read.
        if own_login.symlink_metadata().is_ok() {
            policy.deny_read.push(own_login);
        }
    } else {
        let explicit_home = a.codex_home.is_some();
        let auth = auth_source(
            a.auth_file.as_deref(),
            explicit_home.then_some(&own_login),
            a.codex_source.as_deref(),
            &project,
        )?
        .ok_or_else(|| {
            "no model credential: pass --credential-env VAR or --credential-file FILE, or set OPENAI_API_KEY \
                 (warden's credential proxy injects the key; Codex holds a dummy), or use a ChatGPT login: run \
                 `codex login` outside the sandbox (it writes ~/.codex/auth.json, which warden mounts read-only), \
                 pass --auth-file FILE, or --codex-home DIR with an existing login"
                .to_owned()
        })?;
        overrides.extend(CHATGPT_OVERRIDES);
        always_allowed = CHATGPT_HOSTS;
        policy.bind_at.push(BindAt { source: auth, target: own_login, writable: false });
    }

    let codex = match a.codex_bin.clone().or_else(|| env("CODEX_BIN").map(PathBuf::from)) {
        Some(p) => p,
        None => PathBuf::from("codex"),
    };
    if a.codex_args.is_empty() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(
            "no terminal for Codex's TUI: run it on a terminal, or give Codex arguments (warden codex -- exec \"...\")"
                .into(),
        );
    }
    let mut argv = vec![codex.display().to_string()];
    for (k, v) in overrides.iter().chain(OVERRIDES) {
        argv.push("-c".into());
        argv.push(format!("{k}={v}"));
    }
    argv.extend(a.codex_args);

    policy.workdir = Some(project.clone());
    if policy.profile.is_none() && policy.sandbox.is_none() {
        policy.profile = Some(Profile::WorkspaceWrite);
    }
    // What the next run reads from the project stays as it was (.codex is protected already).
    policy.extra_protected_names.push("codex".into());
    let mut domains: Vec<String> = env("OPENAI_ALLOWED_DOMAINS")
        .map(|d| d.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    domains.append(&mut policy.rules.allow_domain);
    for h in always_allowed {
        if !domains.iter().any(|d| d == h) {
            domains.push((*h).to_owned());
        }
    }
    policy.rules.allow_domain = domains;
    if policy.net.is_none() && !policy.rules.allow_domain.is_empty() {
        policy.net = Some(NetMode::Allowlist);
    }

    // Sessions: in the home, or in --sessions-path DIR shown at the home's sessions/.
    if let Some(dir) = &a.sessions_path {
        let dir = std::path::absolute(dir).map_err(|e| format!("--sessions-path {}: {e}", dir.display()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("--sessions-path: cannot create {}: {e}", dir.display()))?;
        let dir = std::fs::canonicalize(&dir).map_err(|e| format!("--sessions-path {}: {e}", dir.display()))?;
        if dir.starts_with(&home) || home.starts_with(&dir) {
            return Err(format!(
                "--sessions-path {} overlaps the Codex home {}: give a directory outside it",
                dir.display(),
                home.display()
            ));
        }
        let in_home = home.join("sessions");
        if std::fs::read_dir(&in_home).is_ok_and(|mut d| d.next().is_some()) {
            eprintln!(
                "warden: {} holds sessions of earlier runs; they stay there, hidden from this run, which keeps its sessions in {}",
                in_home.display(),
                dir.display()
            );
        }
        // Outside the project: a writable root of its own, confirmed like any other.
        if !dir.starts_with(&project) {
            policy.writable.push(dir.clone());
        }
        policy.bind_at.push(BindAt { source: dir, target: in_home, writable: true });
    }

    // The init hook: --init-script copied into the home as init.sh, or an executable init.sh
    // there; read-only inside, so that a run cannot change what the next one runs first.
    let hook = home.join("init.sh");
    if let Some(src) = &a.init_script {
        let meta = std::fs::metadata(src).map_err(|e| format!("--init-script {}: {e}", src.display()))?;
        if !meta.is_file() || meta.len() > 1 << 20 {
            return Err(format!("--init-script {}: not a regular file of at most 1 MiB", src.display()));
        }
        let _ = std::fs::remove_file(&hook);
        std::fs::copy(src, &hook).map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), hook.display()))?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} executable: {e}", hook.display()))?;
    }
    let mut init_hook = None;
    if let Ok(meta) = std::fs::symlink_metadata(&hook) {
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            policy.read_only.push(hook.clone());
            init_hook = Some(vec![hook.display().to_string()]);
        } else {
            eprintln!(
                "warden: {} is not an executable file: not run (chmod +x it to run it before Codex)",
                hook.display()
            );
        }
    }

    // The home is warden's own choice: it needs no confirmation (other writable paths still do).
    policy.writable.push(home.clone());
    policy.env_set.push(("CODEX_HOME".into(), home.display().to_string()));
    policy.env_set.push(("SANDBOX_ENV_DIR".into(), home.display().to_string()));
    Ok(Some(RunArgs { policy, session, command: argv, init_hook, preconfirmed: vec![home] }))
}

/// The ChatGPT login to mount: `--auth-file`, `CODEX_AUTH_FILE`, the home's own login (with
/// `--codex-home`), then the first `auth.json` of the `--codex-source` directory,
/// `CODEX_CONFIG_DIR`, `~/.codex`, `~/.config/codex`, `PROJECT/codex`, `PROJECT/.codex`.
fn auth_source(
    explicit: Option<&Path>,
    own: Option<&PathBuf>,
    codex_source: Option<&Path>,
    project: &Path,
) -> Result<Option<PathBuf>, String> {
    let named = explicit
        .map(|p| ("--auth-file", p.to_path_buf()))
        .or_else(|| env("CODEX_AUTH_FILE").map(|p| ("CODEX_AUTH_FILE", PathBuf::from(p))));
    if let Some((what, p)) = named {
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(p)),
            Ok(_) => Err(format!("{what} {}: not a regular file", p.display())),
            Err(e) => Err(format!("{what} {}: {e}", p.display())),
        };
    }
    let found = own
        .cloned()
        .into_iter()
        .chain(seed_dirs(codex_source, project).into_iter().map(|d| d.join("auth.json")))
        .find(|p| p.is_file());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_are_named_by_project_and_path() {
        let a = home_name(Path::new("/work/my proj"));
        let b = home_name(Path::new("/other/my proj"));
        assert!(a.starts_with("my_proj-") && b.starts_with("my_proj-") && a != b, "{a} {b}");
        assert_eq!(a, home_name(Path::new("/work/my proj")), "stable");
        assert_eq!(a.len(), "my_proj-".len() + 12);
    }
}
