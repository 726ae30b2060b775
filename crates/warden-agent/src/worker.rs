//! How one Codex app-server worker is set up to run inside warden's sandbox: a `CODEX_HOME` of its
//! own with a config warden writes, the environment from an allowlist, argv only, and the
//! [`SessionSpec`] that `warden_session::spawn` starts.
//!
//! Guarantees:
//! - the model key never reaches the worker: the config points Codex's model provider at the
//!   credential proxy inside the worker's network namespace and Codex holds a dummy key; the key
//!   travels to the session as a [`CredentialSource::Given`] frame;
//! - the worker's environment is built from [`ENV_ALLOWLIST`] only (the session's default excludes
//!   then drop anything named like a secret), so a gateway's own API key (`PROXY_API_KEY`) or a
//!   model key in the parent's environment never reaches it;
//! - Codex's own sandbox is off (`danger-full-access` in its config): warden is the sandbox; a
//!   requested sandbox mode picks warden's profile instead, unknown names are clamped to the
//!   safest with a warning naming the value, and `danger-full-access` needs `allow_trusted`;
//! - a user's source Codex home contributes only the config keys of [`SOURCE_KEYS`] (none that
//!   touch providers or credentials), `prompts/` and `AGENTS.md`; its `auth.json` is never used
//!   unless `codex_auth` names a file, which is then visible to the worker read-only (and said so);
//! - `-c key=value` arguments are built by [`config_arg`] (TOML-quoted; NUL refused);
//! - the worker's home is outside `TMPDIR` (Codex refuses to create its helpers there) and is
//!   removed when its [`WorkerHome`] is dropped.

use std::path::{Path, PathBuf};

use warden_policy::{toml_quote, AllowRule, HostContext, NetMode, PolicyOptions, Profile};
use warden_session::{CredentialSource, CredentialSpec, SessionSpec, StdioMode};

/// Variables of the parent's environment a worker may see (the session's default excludes still
/// apply on top). Everything else is left out.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Top-level keys of a source Codex `config.toml` that a worker's config may take over: model
/// behaviour and instructions, nothing about providers, credentials, sandboxing, tools or
/// network. Others are dropped with one warning that names them.
pub const SOURCE_KEYS: &[&str] = &[
    "model",
    "model_reasoning_effort",
    "model_reasoning_summary",
    "model_verbosity",
    "model_context_window",
    "model_auto_compact_token_limit",
    "personality",
    "developer_instructions",
    "project_doc_max_bytes",
    "project_doc_fallback_filenames",
    "hide_agent_reasoning",
    "show_raw_agent_reasoning",
];

/// Hosts a worker that uses a ChatGPT login (`codex_auth`) must reach directly.
pub const CHATGPT_HOSTS: &[&str] = &["chatgpt.com", "*.chatgpt.com", "auth.openai.com", "api.openai.com"];

/// Approval modes the app-server accepts.
pub const APPROVAL_MODES: &[&str] = &["untrusted", "on-failure", "on-request", "never"];

/// Where the credential proxy listens inside a worker's network namespace.
const PROXY_BASE_URL: &str = "http://127.0.0.1:8787/v1";

/// Why a worker cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A `-c` key or value is not acceptable.
    #[error("codex config override {key:?}: {why}")]
    ConfigArg {
        /// The key.
        key: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A file or directory of the worker's home could not be written.
    #[error("worker home {}: {source}", path.display())]
    Home {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source Codex config cannot be read or parsed.
    #[error("source Codex config {}: {why}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The worker's policy cannot be resolved.
    #[error("worker policy: {0}")]
    Policy(String),
    /// The directory for the workers' homes is not acceptable.
    #[error("worker home directory {}: {why}", path.display())]
    HomeBase {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// A worker name is not acceptable.
    #[error("worker name {name:?}: use 1-64 of [A-Za-z0-9_-]")]
    Name {
        /// The name.
        name: String,
    },
    /// `workspace-write` was asked for without a workdir.
    #[error("sandbox mode workspace-write needs a workdir for the workers (the project they may write)")]
    NoWorkdir,
}

/// What a pool's workers share.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The Codex binary (inside the sandbox it is read-only like the rest of the host).
    pub codex_bin: PathBuf,
    /// The model (Codex's default when `None`).
    pub model: Option<String>,
    /// Requested sandbox mode, in Codex's names: `read-only` (warden's offline profile),
    /// `workspace-write` (warden's workspace-write on `workdir`), `danger-full-access`.
    pub sandbox_mode: String,
    /// Whether `danger-full-access` may select warden's `trusted` profile.
    pub allow_trusted: bool,
    /// The project a `workspace-write` worker may write.
    pub workdir: Option<PathBuf>,
    /// Codex's approval policy (one of [`APPROVAL_MODES`]).
    pub approval_policy: String,
    /// A Codex home to take config keys, prompts and `AGENTS.md` from.
    pub source_home: Option<PathBuf>,
    /// A ChatGPT login's `auth.json` to show each worker read-only (instead of the credential
    /// proxy); the ChatGPT hosts are then allowlisted.
    pub codex_auth: Option<PathBuf>,
    /// Domains the worker may reach through the egress proxy (besides the credential proxy).
    pub allow_domains: Vec<String>,
    /// Where the credential proxy sends the model requests.
    pub credential_upstream: String,
    /// Extra `-c key=value` overrides (values as strings, quoted by [`config_arg`]).
    pub config_overrides: Vec<(String, String)>,
    /// Directory the workers' homes are created in (outside `TMPDIR` and outside warden's own
    /// config and state directories).
    pub home_base: PathBuf,
    /// Audit and config options of the caller (`--audit-log`, `--config`, ...) for the worker's
    /// policy.
    pub base_options: PolicyOptions,
}

impl WorkerSettings {
    /// The strict defaults: `read-only`, approval `untrusted`, Codex's default model, no source
    /// home, no ChatGPT login, no domains but the credential proxy's upstream, no overrides, the
    /// caller's default policy options.
    pub fn new(
        codex_bin: impl Into<PathBuf>,
        home_base: impl Into<PathBuf>,
        credential_upstream: impl Into<String>,
    ) -> WorkerSettings {
        WorkerSettings {
            codex_bin: codex_bin.into(),
            model: None,
            sandbox_mode: "read-only".into(),
            allow_trusted: false,
            workdir: None,
            approval_policy: "untrusted".into(),
            source_home: None,
            codex_auth: None,
            allow_domains: vec![],
            credential_upstream: credential_upstream.into(),
            config_overrides: vec![],
            home_base: home_base.into(),
            base_options: PolicyOptions::default(),
        }
    }
}

/// A worker's `CODEX_HOME`, removed with everything in it on drop.
#[derive(Debug)]
pub struct WorkerHome {
    path: PathBuf,
}

impl WorkerHome {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkerHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A worker ready to be spawned.
#[derive(Debug)]
pub struct PreparedWorker {
    /// What `warden_session::spawn` starts (stdio piped).
    pub spec: SessionSpec,
    /// Its home; keep it while the worker runs.
    pub home: WorkerHome,
    /// Startup warnings, one line each (a clamped mode, dropped source keys, a readable token).
    pub warnings: Vec<String>,
}

/// `key=value` for Codex's `-c`, the value a TOML string: backslash, quote and control characters
/// escaped; NUL refused (it cannot be passed in argv); the key a dotted path of bare keys.
pub fn config_arg(key: &str, value: &str) -> Result<String, WorkerError> {
    let bad = |why| WorkerError::ConfigArg { key: key.to_owned(), why };
    if key.is_empty()
        || key
            .split('.')
            .any(|part| part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        return Err(bad("the key must be a dotted path of [A-Za-z0-9_-] parts"));
    }
    if value.contains('\0') {
        return Err(bad("the value contains NUL"));
    }
    Ok(format!("{key}={}", toml_quote(value)))
}

/// The parent's variables of [`ENV_ALLOWLIST`].
pub fn worker_env(parent: &[(String, String)]) -> Vec<(String, String)> {
    parent.iter().filter(|(k, _)| ENV_ALLOWLIST.contains(&k.as_str())).cloned().collect()
}

/// warden's profile for a requested Codex sandbox mode, and a warning when it was clamped.
pub fn clamp_sandbox_mode(requested: &str, allow_trusted: bool) -> (Profile, Option<String>) {
    match requested {
        "read-only" => (Profile::Offline, None),
        "workspace-write" => (Profile::WorkspaceWrite, None),
        "danger-full-access" if allow_trusted => (
            Profile::Trusted,
            Some("workers run with sandbox mode danger-full-access (warden's trusted profile): no confinement".into()),
        ),
        "danger-full-access" => (
            Profile::Offline,
            Some(
                "sandbox mode \"danger-full-access\" needs --allow-trusted; workers run read-only (warden's offline \
                 profile)"
                    .into(),
            ),
        ),
        other => (
            Profile::Offline,
            Some(format!(
                "unknown sandbox mode {} (accepted: read-only, workspace-write, danger-full-access); workers run \
                 read-only",
                toml_quote(other)
            )),
        ),
    }
}

/// A valid approval policy, and a warning when the requested one was not.
pub fn clamp_approval(requested: &str) -> (String, Option<String>) {
    if APPROVAL_MODES.contains(&requested) {
        (requested.to_owned(), None)
    } else {
        (
            "untrusted".to_owned(),
            Some(format!(
                "unknown approval policy {} (accepted: {}); using \"untrusted\"",
                toml_quote(requested),
                APPROVAL_MODES.join(", ")
            )),
        )
    }
}

/// A TOML value of a source config, written back: scalars and arrays of scalars only.
fn toml_value(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => toml_quote(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let parts: Option<Vec<String>> =
                items.iter().map(|i| if i.is_array() || i.is_table() { None } else { toml_value(i) }).collect();
            format!("[{}]", parts?.join(", "))
        }
        _ => return None,
    })
}

/// The lines a source config contributes, and the keys it had that were left out.
fn source_lines(path: &Path) -> Result<(Vec<String>, Vec<String>), WorkerError> {
    let bad = |why: String| WorkerError::Source { path: path.to_owned(), why };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > warden_policy::config::MAX_CONFIG_SIZE {
        return Err(bad(format!("larger than {} bytes", warden_policy::config::MAX_CONFIG_SIZE)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(e.message().to_owned()))?;
    let (mut lines, mut dropped) = (Vec::new(), Vec::new());
    for (k, v) in &table {
        match (SOURCE_KEYS.contains(&k.as_str()), toml_value(v)) {
            (true, Some(value)) => lines.push(format!("{k} = {value}")),
            _ => dropped.push(k.clone()),
        }
    }
    Ok((lines, dropped))
}

/// The worker's `config.toml`.
fn config_text(settings: &WorkerSettings, approval: &str, source: &[String], chatgpt: bool) -> String {
    let mut out = String::from(
        "# Written by warden for one sandboxed app-server worker; regenerated at each start of the worker.\n",
    );
    let mut top: Vec<String> =
        source.iter().filter(|l| !(settings.model.is_some() && l.starts_with("model "))).cloned().collect();
    if let Some(m) = &settings.model {
        top.push(format!("model = {}", toml_quote(m)));
    }
    if !chatgpt {
        top.push("model_provider = \"warden\"".into());
    }
    // Codex 0.169.0 refuses `approval_policy = "untrusted"` in config.toml ("no longer
    // supported") but takes it in `thread/start`, which warden sends with every thread; the
    // config's value is only the default of a thread started without one, so "untrusted" is
    // written as the strictest value the config accepts.
    let config_approval = if approval == "untrusted" { "on-request" } else { approval };
    top.push(format!("approval_policy = {}", toml_quote(config_approval)));
    // warden is the sandbox: Codex's own would need user namespaces, which warden refuses.
    top.push("sandbox_mode = \"danger-full-access\"".into());
    top.push("check_for_update_on_startup = false".into());
    top.push("web_search = \"disabled\"".into());
    for l in top {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(
        "\n[analytics]\nenabled = false\n\n[feedback]\nenabled = false\n\n[otel]\nexporter = \"none\"\nlog_user_prompt = false\n\n\
         [features]\nplugins = false\napps = false\nremote_plugin = false\nplugin_sharing = false\ntool_suggest = false\n\
         image_generation = false\nunbounded_connection_retries = false\n",
    );
    if !chatgpt {
        out.push_str(&format!(
            "\n[model_providers.warden]\nname = \"warden credential proxy\"\nbase_url = {}\nwire_api = \"responses\"\n\
             env_key = \"OPENAI_API_KEY\"\nrequest_max_retries = 2\nstream_max_retries = 2\nstream_idle_timeout_ms = 300000\n",
            toml_quote(PROXY_BASE_URL)
        ));
    }
    out
}

fn write(path: &Path, content: &[u8]) -> Result<(), WorkerError> {
    std::fs::write(path, content).map_err(|source| WorkerError::Home { path: path.to_owned(), source })
}

/// Copies `prompts/` (regular files, at most 256 of at most 1 MiB each) and `AGENTS.md` from the
/// source home.
fn copy_source_files(source: &Path, home: &Path) -> Result<(), WorkerError> {
    let agents = source.join("AGENTS.md");
    if std::fs::metadata(&agents).is_ok_and(|m| m.is_file() && m.len() <= 1 << 20) {
        let data = std::fs::read(&agents).map_err(|source| WorkerError::Home { path: agents.clone(), source })?;
        write(&home.join("AGENTS.md"), &data)?;
    }
    let Ok(entries) = std::fs::read_dir(source.join("prompts")) else { return Ok(()) };
    let prompts = home.join("prompts");
    std::fs::create_dir_all(&prompts).map_err(|source| WorkerError::Home { path: prompts.clone(), source })?;
    for e in entries.flatten().take(256) {
        let is_small_file = e.file_type().is_ok_and(|t| t.is_file()) && e.metadata().is_ok_and(|m| m.len() <= 1 << 20);
        if is_small_file {
            let data = std::fs::read(e.path()).map_err(|source| WorkerError::Home { path: e.path(), source })?;
            write(&prompts.join(e.file_name()), &data)?;
        }
    }
    Ok(())
}

/// The workers' homes may not be relative, nor under `TMPDIR` (Codex refuses to create its
/// helpers there, so a worker would not start).
fn check_home_base(base: &Path, host: &HostContext) -> Result<(), WorkerError> {
    let bad = |why| Err(WorkerError::HomeBase { path: base.to_path_buf(), why });
    if !base.is_absolute() {
        return bad("must be an absolute path");
    }
    let tmp = host.env.iter().rev().find(|(k, _)| k == "TMPDIR").map_or("/tmp", |(_, v)| v.as_str());
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let tmp = canon(Path::new(tmp));
    if canon(base).starts_with(&tmp) || base.starts_with(&tmp) {
        return bad("is under TMPDIR, where Codex refuses to create its helpers: choose a directory such as /var/tmp/warden-workers");
    }
    Ok(())
}

/// Sets up worker `name` (its home is `settings.home_base/name`): home, config, policy, spec.
pub fn prepare(settings: &WorkerSettings, host: &HostContext, name: &str) -> Result<PreparedWorker, WorkerError> {
    let mut warnings = Vec::new();
    let (profile, w) = clamp_sandbox_mode(&settings.sandbox_mode, settings.allow_trusted);
    warnings.extend(w);
    let (approval, w) = clamp_approval(&settings.approval_policy);
    warnings.extend(w);
    if profile == Profile::WorkspaceWrite && settings.workdir.is_none() {
        return Err(WorkerError::NoWorkdir);
    }
    // The name becomes a directory that is emptied: never `..`, a slash or an empty string.
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(WorkerError::Name { name: name.to_owned() });
    }
    check_home_base(&settings.home_base, host)?;
    let home_path = settings.home_base.join(name);
    let _ = std::fs::remove_dir_all(&home_path);
    std::fs::create_dir_all(&home_path).map_err(|source| WorkerError::Home { path: home_path.clone(), source })?;
    let home = WorkerHome { path: std::fs::canonicalize(&home_path).unwrap_or(home_path) };
    let (mut source, mut dropped) = (Vec::new(), Vec::new());
    if let Some(src) = &settings.source_home {
        let cfg = src.join("config.toml");
        if cfg.exists() {
            (source, dropped) = source_lines(&cfg)?;
        }
        copy_source_files(src, home.path())?;
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "source Codex config: left out {} (only model and instruction settings are taken over)",
            dropped.join(", ")
        ));
    }
    let chatgpt = settings.codex_auth.is_some();
    write(&home.path().join("config.toml"), config_text(settings, &approval, &source, chatgpt).as_bytes())?;

    let env = worker_env(&host.env);
    let mut opts = settings.base_options.clone();
    opts.profile = Some(profile);
    opts.codex_sandbox = None;
    opts.workdir = match profile {
        Profile::WorkspaceWrite => settings.workdir.clone(),
        _ => Some(home.path().to_path_buf()),
    };
    opts.writable.push(home.path().to_path_buf());
    opts.env_set.push(("CODEX_HOME".into(), home.path().display().to_string()));
    let mut domains = settings.allow_domains.clone();
    if let Some(auth) = &settings.codex_auth {
        let target = home.path().join("auth.json");
        std::os::unix::fs::symlink(auth, &target).map_err(|source| WorkerError::Home { path: target, source })?;
        opts.read_only.push(auth.clone());
        domains.extend(CHATGPT_HOSTS.iter().map(|h| (*h).to_owned()));
        warnings.push(format!(
            "workers use the ChatGPT login in {} (read-only): a worker can read that token",
            auth.display()
        ));
    }
    if !domains.is_empty() {
        opts.net = Some(NetMode::Allowlist);
        opts.network.allow.extend(domains.into_iter().map(|d| AllowRule { pattern: d, ..Default::default() }));
    } else if profile != Profile::Trusted {
        opts.net = Some(NetMode::None);
    }
    let view = HostContext { cwd: host.cwd.clone(), home: host.home.clone(), env: env.clone() };
    let mut resolved = warden_policy::resolve(&opts, &view).map_err(|e| WorkerError::Policy(e.to_string()))?;
    if let Some(auth) = &settings.codex_auth {
        // The login file is masked by default (~/.codex/auth.json): this worker may read it.
        let real = std::fs::canonicalize(auth).unwrap_or_else(|_| auth.clone());
        resolved.policy.deny_read.retain(|p| p != auth && *p != real);
    }
    let mut argv = vec![settings.codex_bin.display().to_string(), "app-server".to_owned()];
    for (k, v) in &settings.config_overrides {
        argv.push("-c".into());
        argv.push(config_arg(k, v)?);
    }
    let credential = (!chatgpt)
        .then(|| CredentialSpec { source: CredentialSource::Given, upstream: settings.credential_upstream.clone() });
    let spec = SessionSpec {
        policy: resolved.policy,
        warnings: resolved.warnings,
        argv,
        host_env: env,
        credential,
        stdio: StdioMode::Pipes,
        allow_nested_userns: false,
        init_hook: None,
    };
    Ok(PreparedWorker { spec, home, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base: &Path) -> WorkerSettings {
        WorkerSettings {
            model: Some("m".into()),
            approval_policy: "never".into(),
            base_options: PolicyOptions { no_audit: true, ..Default::default() },
            ..WorkerSettings::new("/usr/bin/codex", base, "http://127.0.0.1:1/v1/responses")
        }
    }

    /// A directory outside TMPDIR (worker homes may not be under it).
    fn scratch() -> tempfile::TempDir {
        let base =
            std::env::var_os("WARDEN_TEST_HOST_DIR").filter(|v| !v.is_empty()).unwrap_or_else(|| "/var/tmp".into());
        tempfile::tempdir_in(base).expect("tempdir")
    }

    fn host(cwd: &Path) -> HostContext {
        let env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("PROXY_API_KEY".into(), "sk-gateway-SECRET".into()),
            ("OPENAI_API_KEY".into(), "sk-model-SECRET".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        HostContext { cwd: cwd.to_path_buf(), home: None, env }
    }

    #[test]
    fn config_args_are_quoted_and_nul_is_refused() {
        assert_eq!(config_arg("model", "a\"b\\c").expect("arg"), "model=\"a\\\"b\\\\c\"");
        assert_eq!(config_arg("a.b-c", "x\ny").expect("arg"), "a.b-c=\"x\\ny\"");
        assert!(matches!(config_arg("model", "a\0b"), Err(WorkerError::ConfigArg { .. })));
        for bad in ["", "a..b", "a b", "a=b", "a.\"b\""] {
            assert!(config_arg(bad, "v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes_are_clamped_with_a_warning_naming_the_value() {
        assert_eq!(clamp_sandbox_mode("read-only", false), (Profile::Offline, None));
        let (p, w) = clamp_sandbox_mode("danger-full-access", false);
        assert!(p == Profile::Offline && w.is_some_and(|w| w.contains("--allow-trusted")));
        let (p, w) = clamp_sandbox_mode("yolo", true);
        assert!(p == Profile::Offline && w.is_some_and(|w| w.contains("\"yolo\"")));
        assert_eq!(clamp_sandbox_mode("danger-full-access", true).0, Profile::Trusted);
        let (a, w) = clamp_approval("always");
        assert!(a == "untrusted" && w.is_some_and(|w| w.contains("\"always\"")));
    }

    #[test]
    fn bad_worker_names_and_home_directories_are_refused() {
        let d = scratch();
        let base = std::fs::canonicalize(d.path()).expect("canon");
        for name in ["", "..", "a/b", "w 0", &"x".repeat(65)] {
            let e = prepare(&settings(&base), &host(&base), name).err();
            assert!(matches!(e, Some(WorkerError::Name { .. })), "{name:?}: {e:?}");
        }
        let mut under_tmp = host(&base);
        under_tmp.env.push(("TMPDIR".into(), base.display().to_string()));
        let e = prepare(&settings(&base.join("homes")), &under_tmp, "w0").err();
        assert!(matches!(&e, Some(WorkerError::HomeBase { why, .. }) if why.contains("TMPDIR")), "{e:?}");
        let e = prepare(&settings(Path::new("relative/homes")), &host(&base), "w0").err();
        assert!(matches!(e, Some(WorkerError::HomeBase { .. })), "{e:?}");
    }

    #[test]
    fn the_config_never_holds_the_approval_policy_codex_refuses_there() {
        let d = scratch();
        let base = std::fs::canonicalize(d.path()).expect("canon");
        for (requested, written) in [("untrusted", "on-request"), ("on-request", "on-request"), ("never", "never")] {
            let mut s = settings(&base);
            s.approval_policy = requested.into();
            let w = prepare(&s, &host(&base), &format!("w-{requested}")).expect("prepare");
            let config: toml::Table =
                std::fs::read_to_string(w.home.path().join("config.toml")).expect("config").parse().expect("TOML");
            assert_eq!(config["approval_policy"].as_str(), Some(written), "{requested}");
        }
    }

    #[test]
    fn the_worker_holds_no_key_and_only_allowlisted_variables() {
        let d = scratch();
        let base = std::fs::canonicalize(d.path()).expect("canon");
        let w = prepare(&settings(&base), &host(&base), "w0").expect("prepare");
        let names: Vec<&str> = w.spec.host_env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG"]);
        assert_eq!(w.spec.credential.as_ref().map(|c| &c.source), Some(&CredentialSource::Given));
        assert_eq!(w.spec.policy.net, NetMode::None);
        assert_eq!(w.spec.argv[1..], ["app-server"]);
        let config = std::fs::read_to_string(w.home.path().join("config.toml")).expect("config");
        assert!(
            config.contains("base_url = \"http://127.0.0.1:8787/v1\"")
                && config.contains("sandbox_mode = \"danger-full-access\"")
        );
        let parsed: toml::Table = config.parse().expect("the generated config is TOML");
        assert_eq!(parsed["model_provider"].as_str(), Some("warden"));
        assert!(w.spec.policy.writable_roots.contains(&w.home.path().to_path_buf()));
        let home = w.home.path().to_path_buf();
        drop(w);
        assert!(!home.exists(), "the home is removed with its worker");
    }

    #[test]
    fn a_source_home_gives_safe_keys_prompts_and_agents_md_only() {
        let d = scratch();
        let base = std::fs::canonicalize(d.path()).expect("canon");
        let src = base.join("src-home");
        std::fs::create_dir_all(src.join("prompts")).expect("mkdir");
        std::fs::write(
            src.join("config.toml"),
            "model_reasoning_effort = \"high\"\nmodel_provider = \"evil\"\nopenai_base_url = \"http://evil\"\n\
             [model_providers.evil]\nbase_url = \"http://evil\"\n",
        )
        .expect("write");
        std::fs::write(src.join("prompts/review.md"), "review this").expect("write");
        std::fs::write(src.join("AGENTS.md"), "be careful").expect("write");
        std::fs::write(src.join("auth.json"), "{\"token\":\"SECRET\"}").expect("write");
        let mut s = settings(&base);
        s.source_home = Some(src);
        let w = prepare(&s, &host(&base), "w1").expect("prepare");
        let config = std::fs::read_to_string(w.home.path().join("config.toml")).expect("config");
        assert!(config.contains("model_reasoning_effort = \"high\""));
        assert!(!config.contains("evil"), "{config}");
        assert!(
            w.warnings.iter().any(|x| x.contains("model_provider") && x.contains("openai_base_url")),
            "{:?}",
            w.warnings
        );
        assert_eq!(std::fs::read_to_string(w.home.path().join("prompts/review.md")).expect("prompt"), "review this");
        assert!(w.home.path().join("AGENTS.md").exists() && !w.home.path().join("auth.json").exists());
    }
}
