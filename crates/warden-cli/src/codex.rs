//! `warden codex`: Codex in warden's sandbox for one project, with a Codex home of the project's
//! own, as `warden run` with the recipe of the README's Codex section filled in.
//!
//! Guarantees: the project is the only writable root besides the home; the home lies outside the
//! project and outside warden's config and state directories; `config.toml` is copied into it
//! once and never overwritten; Codex talks to the model only through the credential proxy, with
//! a dummy key; analytics, feedback, update checks, plugins and OTel metrics are off (the hosts
//! they need are named in `docs/codex-network.md`); Codex's own sandbox is off (warden is it).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use warden_policy::{NetMode, Profile};

use crate::args::{CodexArgs, RunArgs};
use crate::ui::fail;

/// What a per-project home records about its project.
const PROJECT_FILE: &str = "warden-project";

/// Codex config overrides for every run (`-c key=value`, values as TOML).
const OVERRIDES: &[(&str, &str)] = &[
    ("model_provider", "\"warden\""),
    (
        "model_providers.warden",
        "{ name = \"OpenAI through warden's credential proxy\", base_url = \"http://127.0.0.1:8787/v1\", wire_api = \"responses\", env_key = \"OPENAI_API_KEY\" }",
    ),
    ("sandbox_mode", "\"danger-full-access\""),
    ("analytics.enabled", "false"),
    ("feedback.enabled", "false"),
    ("check_for_update_on_startup", "false"),
    ("features.plugins", "false"),
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

/// The directories `prompts/` are copied from, in the seed's order: `--codex-source` (a
/// directory, or a file's directory), `CODEX_CONFIG_DIR`, `~/.codex`, `~/.config/codex`,
/// `PROJECT/codex`, `PROJECT/.codex`.
fn prompt_sources(explicit: Option<&Path>, project: &Path) -> Vec<PathBuf> {
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
    .map(|d| d.join("prompts"))
    .filter(|d| d.is_dir())
    .collect()
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
    // The key: the flags, else OPENAI_API_KEY; Codex never holds it.
    if a.session.credential_env.is_none() && a.session.credential_file.is_none() {
        if env("OPENAI_API_KEY").is_some() {
            a.session.credential_env = Some("OPENAI_API_KEY".into());
        } else {
            return Err("no model key: pass --credential-env VAR or --credential-file FILE, or set OPENAI_API_KEY (warden's credential proxy injects it; Codex holds a dummy). A ChatGPT login is not supported by warden codex yet".into());
        }
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
    for (k, v) in OVERRIDES {
        argv.push("-c".into());
        argv.push(format!("{k}={v}"));
    }
    argv.extend(a.codex_args);
    let mut policy = a.policy;
    policy.workdir = Some(project);
    if policy.profile.is_none() && policy.sandbox.is_none() {
        policy.profile = Some(Profile::WorkspaceWrite);
    }
    let mut domains: Vec<String> = env("OPENAI_ALLOWED_DOMAINS")
        .map(|d| d.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    domains.append(&mut policy.rules.allow_domain);
    policy.rules.allow_domain = domains;
    if policy.net.is_none() && !policy.rules.allow_domain.is_empty() {
        policy.net = Some(NetMode::Allowlist);
    }
    // The home is warden's own choice: no confirmation for it (other --writable paths still ask).
    let mut session = a.session;
    session.yes |= policy.writable.is_empty();
    policy.writable.push(home.clone());
    policy.env_set.push(("CODEX_HOME".into(), home.display().to_string()));
    Ok(Some(RunArgs { policy, session, command: argv }))
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
