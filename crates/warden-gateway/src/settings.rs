//! `warden serve`'s settings: each from the first of its command-line flag, its environment
//! variable (the names codex-completions-api uses), `[serve]` in `warden.toml`, or its default.
//!
//! Every value is checked here; an error names where the value came from (`--workers`,
//! `WORKER_MAX_CONCURRENCY`, `[serve] workers at warden.toml:3`) and what is accepted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use warden_policy::{ServeEntry, ServeValue};

/// The default listen address: loopback only (codex-completions-api binds 0.0.0.0).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 11435);

/// Reasoning efforts Codex 0.169.0 accepts (`turn/start.effort`).
pub const EFFORTS: &[&str] = &["none", "minimal", "low", "medium", "high", "xhigh"];

/// Environment variables read, and the setting each gives (codex-completions-api's names).
pub const ENV_NAMES: &[(&str, &str)] = &[
    ("PORT", "port"),
    ("PROXY_HOST", "host"),
    ("PROXY_SANDBOX_MODE", "sandbox"),
    ("PROXY_APPROVAL_POLICY", "approval_policy"),
    ("CODEX_BIN", "codex_bin"),
    ("CODEX_HOME", "codex_home"),
    ("CODEX_MODEL", "codex_model"),
    ("WORKER_MAX_CONCURRENCY", "worker_concurrency"),
    ("WORKER_REQUEST_TIMEOUT_MS", "request_timeout_ms"),
    ("WORKER_HANDSHAKE_TIMEOUT_MS", "handshake_timeout_ms"),
    ("WORKER_STARTUP_TIMEOUT_MS", "startup_timeout_ms"),
    ("WORKER_BACKOFF_INITIAL_MS", "backoff_initial_ms"),
    ("WORKER_BACKOFF_MAX_MS", "backoff_max_ms"),
    ("WORKER_RESTART_MAX", "restart_max"),
    ("WORKER_SHUTDOWN_GRACE_MS", "shutdown_grace_ms"),
    ("PROXY_TIMEOUT_MS", "timeout_ms"),
    ("PROXY_IDLE_TIMEOUT_MS", "idle_timeout_ms"),
    ("PROXY_SSE_KEEPALIVE_MS", "sse_keepalive_ms"),
];

/// One value as given, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raw {
    /// A single value.
    One(String),
    /// A list (repeated flag, TOML array).
    Many(Vec<String>),
    /// A switch.
    Bool(bool),
}

/// The values of one source (flags, environment, `[serve]`), each with where it came from.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<(String, Raw, String)>,
}

impl Layer {
    /// Sets `key` from `source` (e.g. `--workers`).
    pub fn set(&mut self, key: &str, value: Raw, source: impl Into<String>) {
        self.entries.push((key.to_owned(), value, source.into()));
    }

    /// Sets `key` when `value` is given.
    pub fn opt(&mut self, key: &str, value: Option<impl ToString>, source: &str) {
        if let Some(v) = value {
            self.set(key, Raw::One(v.to_string()), source);
        }
    }

    /// Sets the list `key` when it is not empty.
    pub fn list(&mut self, key: &str, values: &[String], source: &str) {
        if !values.is_empty() {
            self.set(key, Raw::Many(values.to_vec()), source);
        }
    }

    /// Sets the switch `key` when it is on.
    pub fn flag(&mut self, key: &str, on: bool, source: &str) {
        if on {
            self.set(key, Raw::Bool(true), source);
        }
    }

    /// The variables of [`ENV_NAMES`] found in `env` (empty values count as unset).
    pub fn from_env(env: &[(String, String)]) -> Layer {
        let mut l = Layer::default();
        for (name, key) in ENV_NAMES {
            if let Some((_, v)) = env.iter().find(|(k, v)| k == name && !v.is_empty()) {
                l.set(key, Raw::One(v.clone()), *name);
            }
        }
        l
    }

    /// `[serve]` of a `warden.toml`.
    pub fn from_config(entries: &[ServeEntry]) -> Layer {
        let mut l = Layer::default();
        for e in entries {
            let raw = match &e.value {
                ServeValue::String(s) => Raw::One(s.clone()),
                ServeValue::Integer(n) => Raw::One(n.to_string()),
                ServeValue::Boolean(b) => Raw::Bool(*b),
                ServeValue::Strings(v) => Raw::Many(v.clone()),
            };
            l.set(&e.key, raw, format!("[serve] {} at {}", e.key, e.location));
        }
        l
    }

    fn get(&self, key: &str) -> Option<(&Raw, &str)> {
        self.entries.iter().rev().find(|(k, _, _)| k == key).map(|(_, v, s)| (v, s.as_str()))
    }
}

/// A model id served in `/v1/models` and what it means for Codex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The id clients send.
    pub id: String,
    /// The Codex model (`None`: the worker's default).
    pub codex_model: Option<String>,
    /// The default reasoning effort.
    pub effort: Option<String>,
}

impl std::str::FromStr for ModelEntry {
    type Err = String;

    /// `ID[=CODEX_MODEL[:EFFORT]]`.
    fn from_str(s: &str) -> Result<ModelEntry, String> {
        let (id, rest) = match s.split_once('=') {
            Some((id, rest)) => (id, Some(rest)),
            None => (s, None),
        };
        let ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 128
                && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
        };
        if !ok(id) {
            return Err(format!("model id {id:?}: use 1-128 of [A-Za-z0-9._/:-] (form ID[=CODEX_MODEL[:EFFORT]])"));
        }
        let (codex_model, effort) = match rest {
            None => (Some(id.to_owned()), None),
            Some(r) => {
                let (m, e) = match r.rsplit_once(':') {
                    Some((m, e)) if EFFORTS.contains(&e) => (m, Some(e.to_owned())),
                    _ => (r, None),
                };
                if !m.is_empty() && !ok(m) {
                    return Err(format!("Codex model {m:?}: use 1-128 of [A-Za-z0-9._/:-]"));
                }
                ((!m.is_empty()).then(|| m.to_owned()), e)
            }
        };
        Ok(ModelEntry { id: id.to_owned(), codex_model, effort })
    }
}

/// Where the model key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChoice {
    /// An environment variable of warden's (removed from warden's environment once read).
    Env(String),
    /// A file.
    File(PathBuf),
}

/// Every setting of `warden serve`, checked.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The models served (at least one).
    pub models: Vec<ModelEntry>,
    /// Workers serving at once (one more runs as the warm spare).
    pub workers: usize,
    /// Turns one worker serves at once.
    pub worker_concurrency: usize,
    /// The Codex binary (absolute).
    pub codex_bin: PathBuf,
    /// A directory the workers get read-only at its own place because the sandbox would hide it
    /// (the Codex install lies under /tmp, /var/tmp, /run or TMPDIR).
    pub codex_mount: Option<PathBuf>,
    /// A Codex home to take config keys, prompts and `AGENTS.md` from.
    pub codex_home: Option<PathBuf>,
    /// The workers' default model (`CODEX_MODEL`).
    pub codex_model: Option<String>,
    /// Where the credential proxy sends model requests.
    pub credential_upstream: String,
    /// The model key (`None` with `codex_auth`).
    pub credential: Option<CredentialChoice>,
    /// A ChatGPT login's `auth.json`.
    pub codex_auth: Option<PathBuf>,
    /// The client keys file.
    pub api_key_file: Option<PathBuf>,
    /// Serve without client keys (loopback only).
    pub no_auth: bool,
    /// The sandbox mode in Codex's names (`read-only` = warden's offline profile).
    pub sandbox: String,
    /// Where it came from, for the warning about a weakened sandbox.
    pub sandbox_source: String,
    /// Codex's approval policy.
    pub approval_policy: String,
    /// The project a `workspace-write` worker may write, and the threads' cwd.
    pub workdir: Option<PathBuf>,
    /// Where the workers' homes are made (`None`: the default, see `warden serve --help`).
    pub worker_home: Option<PathBuf>,
    /// Domains the workers may reach.
    pub allow_domains: Vec<String>,
    /// Whether `danger-full-access` may select warden's `trusted` profile.
    pub allow_trusted: bool,
    /// Allowed CORS origins (empty: CORS off).
    pub cors_origins: Vec<String>,
    /// The longest one turn may run.
    pub request_timeout: Duration,
    /// The longest a worker may take to answer `initialize`.
    pub handshake_timeout: Duration,
    /// The longest a worker may take to come up.
    pub startup_timeout: Duration,
    /// First restart backoff.
    pub backoff_initial: Duration,
    /// Longest restart backoff.
    pub backoff_max: Duration,
    /// Restarts allowed within 10 minutes before liveness turns false.
    pub restart_max: u32,
    /// Drain time at shutdown.
    pub shutdown_grace: Duration,
    /// The longest a whole request may take (queue and turn).
    pub timeout: Duration,
    /// The longest a turn may go without an event from its worker.
    pub idle_timeout: Duration,
    /// SSE keepalive comment interval.
    pub sse_keepalive: Duration,
    /// Request body cap.
    pub max_body_bytes: u64,
    /// Concurrent requests in flight, at most.
    pub max_streams: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// How long one may wait.
    pub queue_timeout: Duration,
    /// How long a kept conversation lives idle.
    pub thread_ttl: Duration,
    /// Kept conversations, at most.
    pub max_threads: usize,
    /// Requests one client key may have in flight.
    pub key_concurrency: usize,
    /// Requests one client key may start per minute (0: no limit).
    pub key_rate_per_minute: u32,
}

/// Looks each key up through the layers, first match wins.
struct Lookup<'a> {
    layers: &'a [&'a Layer],
}

impl Lookup<'_> {
    fn raw(&self, key: &str) -> Option<(&Raw, &str)> {
        self.layers.iter().find_map(|l| l.get(key))
    }

    fn string(&self, key: &str) -> Result<Option<(String, String)>, String> {
        match self.raw(key) {
            None => Ok(None),
            Some((Raw::One(s), src)) => Ok(Some((s.clone(), src.to_owned()))),
            Some((Raw::Many(v), src)) if v.len() == 1 => Ok(Some((v[0].clone(), src.to_owned()))),
            Some((_, src)) => Err(format!("{src}: expected one value")),
        }
    }

    fn list(&self, key: &str) -> Result<Vec<String>, String> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some((Raw::Many(v), _)) => Ok(v.clone()),
            Some((Raw::One(s), _)) => {
                Ok(s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            }
            Some((Raw::Bool(_), src)) => Err(format!("{src}: expected a list of strings")),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, String> {
        match self.raw(key) {
            None => Ok(false),
            Some((Raw::Bool(b), _)) => Ok(*b),
            Some((Raw::One(s), src)) => match s.as_str() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                other => Err(format!("{src}: {other:?} is not a boolean (accepted: true, false, 1, 0)")),
            },
            Some((Raw::Many(_), src)) => Err(format!("{src}: expected a boolean")),
        }
    }

    fn number(&self, key: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
        let Some((s, src)) = self.string(key)? else { return Ok(default) };
        let v: u64 = s.trim().parse().map_err(|_| {
            format!("{src}: {s:?} is not a non-negative integer (accepted: {}..={})", range.start(), range.end())
        })?;
        if !range.contains(&v) {
            return Err(format!("{src}: {v} is out of range (accepted: {}..={})", range.start(), range.end()));
        }
        Ok(v)
    }

    fn millis(&self, key: &str, default_ms: u64, range: std::ops::RangeInclusive<u64>) -> Result<Duration, String> {
        self.number(key, default_ms, range).map(Duration::from_millis)
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, String> {
        Ok(self.string(key)?.map(|(s, _)| PathBuf::from(s)))
    }
}

/// Finds `name` on `PATH` (an absolute or relative path with a slash is taken as is).
fn find_program(name: &str, path_var: Option<&str>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return std::path::absolute(&p).ok().filter(|p| p.is_file());
    }
    path_var?.split(':').filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
}

impl ServeSettings {
    /// Resolves the settings from `layers` (first wins: flags, environment, `[serve]`), with
    /// `env` for `PATH` and `OPENAI_API_KEY` detection.
    pub fn resolve(layers: &[&Layer], env: &[(String, String)]) -> Result<ServeSettings, String> {
        let l = Lookup { layers };
        let listen = match l.string("listen")? {
            Some((s, src)) if l.layers.first().is_some_and(|f| f.get("listen").is_some()) => parse_listen(&s, &src)?,
            other => {
                // PORT and PROXY_HOST (environment) override the parts of [serve] listen.
                let base = match other {
                    Some((s, src)) => parse_listen(&s, &src)?,
                    None => DEFAULT_LISTEN,
                };
                let ip = match l.string("host")? {
                    Some((h, src)) => parse_host(&h, &src)?,
                    None => base.ip(),
                };
                let port = match l.string("port")? {
                    Some((p, src)) => p.parse::<u16>().map_err(|_| format!("{src}: {p:?} is not a port (0-65535)"))?,
                    None => base.port(),
                };
                SocketAddr::new(ip, port)
            }
        };
        let codex_model = l.string("codex_model")?.map(|(m, _)| m);
        let mut models = Vec::new();
        for m in l.list("models")? {
            let entry: ModelEntry = m.parse().map_err(|e| format!("--model {m:?}: {e}"))?;
            if models.iter().any(|x: &ModelEntry| x.id == entry.id) {
                return Err(format!("--model {m:?}: the id {:?} is given twice", entry.id));
            }
            models.push(entry);
        }
        if models.is_empty() {
            models.push(match &codex_model {
                Some(m) => m.parse().map_err(|e| format!("CODEX_MODEL {m:?}: {e}"))?,
                None => ModelEntry { id: "codex".into(), codex_model: None, effort: None },
            });
        }
        let path_var = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
        let (codex_name, codex_src) = l.string("codex_bin")?.unwrap_or_else(|| ("codex".into(), "the default".into()));
        let codex_bin = find_program(&codex_name, path_var).ok_or_else(|| {
            format!(
                "the Codex binary {codex_name:?} ({codex_src}) is not found{}: install it (npm install -g @openai/codex@0.169.0) or pass --codex-bin PATH (env CODEX_BIN)",
                if codex_name.contains('/') { "" } else { " on PATH" }
            )
        })?;
        // The sandbox gives workers private /tmp, /var/tmp, /run and TMPDIR: a Codex installed
        // there is shown to them read-only, at its own place (its package, for an npm install).
        let tmpdir = env.iter().find(|(k, _)| k == "TMPDIR").map(|(_, v)| PathBuf::from(v));
        let codex_mount = codex_mount(&codex_bin, tmpdir.as_deref());
        let cred_env = l.string("credential_env")?;
        let cred_file = l.path("credential_file")?;
        let codex_auth = l.path("codex_auth")?;
        let credential = match (cred_env, cred_file) {
            (Some(_), Some(_)) => return Err("--credential-env and --credential-file: give one".into()),
            (Some((v, _)), None) => Some(CredentialChoice::Env(v)),
            (None, Some(f)) => Some(CredentialChoice::File(f)),
            (None, None) if codex_auth.is_some() => None,
            (None, None) if env.iter().any(|(k, v)| k == "OPENAI_API_KEY" && !v.is_empty()) => {
                Some(CredentialChoice::Env("OPENAI_API_KEY".into()))
            }
            (None, None) => {
                return Err("no model credential: pass --credential-env VAR or --credential-file FILE (the key warden injects; workers never hold it), set OPENAI_API_KEY, or --codex-auth FILE for a ChatGPT login".into())
            }
        };
        if credential.is_some() && codex_auth.is_some() {
            return Err("--codex-auth and a model key (--credential-env/--credential-file): give one".into());
        }
        let layer_of = |key: &str| l.layers.iter().position(|x| x.get(key).is_some());
        let (sandbox, sandbox_source) = match (layer_of("profile"), layer_of("sandbox")) {
            (Some(p), Some(s)) if p == s => return Err("--profile and --sandbox: give one".into()),
            (Some(p), s) if s.is_none_or(|s| p < s) => {
                let (p, src) = l.string("profile")?.unwrap_or_default();
                let mode = match p.as_str() {
                    "offline" => "read-only",
                    "workspace-write" => "workspace-write",
                    "trusted" => "danger-full-access",
                    other => {
                        return Err(format!(
                            "{src}: profile {other:?} cannot run workers (accepted: offline, workspace-write, trusted)"
                        ))
                    }
                };
                (mode.to_owned(), src)
            }
            (_, Some(_)) => l.string("sandbox")?.unwrap_or_default(),
            (_, None) => ("read-only".to_owned(), "the default".to_owned()),
        };
        let approval_policy = l.string("approval_policy")?.map(|(a, _)| a).unwrap_or_else(|| "never".into());
        let workers = l.number("workers", 2, 1..=256)? as usize;
        let worker_concurrency = l.number("worker_concurrency", 4, 1..=4096)? as usize;
        let request_timeout = l.millis("request_timeout_ms", 120_000, 100..=86_400_000)?;
        let timeout = l.millis("timeout_ms", 300_000, 100..=86_400_000)?;
        let s = ServeSettings {
            listen,
            models,
            workers,
            worker_concurrency,
            codex_bin,
            codex_mount,
            codex_home: l.path("codex_home")?,
            codex_model,
            credential_upstream: l
                .string("credential_upstream")?
                .map(|(u, _)| u)
                .unwrap_or_else(|| warden_credproxy::DEFAULT_UPSTREAM.to_owned()),
            credential,
            codex_auth,
            api_key_file: l.path("api_key_file")?,
            no_auth: l.boolean("no_auth")?,
            sandbox,
            sandbox_source,
            approval_policy,
            workdir: l.path("workdir")?,
            worker_home: l.path("worker_home")?,
            allow_domains: l.list("allow_domains")?,
            allow_trusted: l.boolean("allow_trusted")?,
            cors_origins: l.list("cors_origins")?,
            request_timeout,
            handshake_timeout: l.millis("handshake_timeout_ms", 15_000, 100..=600_000)?,
            startup_timeout: l.millis("startup_timeout_ms", 8_000, 100..=600_000)?,
            backoff_initial: l.millis("backoff_initial_ms", 500, 1..=600_000)?,
            backoff_max: l.millis("backoff_max_ms", 5_000, 1..=3_600_000)?,
            restart_max: l.number("restart_max", 25, 0..=100_000)? as u32,
            shutdown_grace: l.millis("shutdown_grace_ms", 5_000, 0..=600_000)?,
            timeout,
            idle_timeout: l.millis("idle_timeout_ms", 15_000, 100..=86_400_000)?,
            sse_keepalive: l.millis("sse_keepalive_ms", 15_000, 100..=3_600_000)?,
            max_body_bytes: match l.string("max_body_bytes")? {
                None => 16 << 20,
                Some((v, src)) => warden_policy::parse_size(&v).map_err(|e| format!("{src}: {e}"))?,
            },
            max_streams: l.number("max_streams", 4096, 1..=1_000_000)? as usize,
            queue: l.number("queue", 256, 0..=1_000_000)? as usize,
            queue_timeout: l.millis("queue_timeout_ms", 30_000, 0..=3_600_000)?,
            thread_ttl: Duration::from_secs(l.number("thread_ttl_secs", 3600, 1..=30 * 86_400)?),
            max_threads: l.number("max_threads", 10_000, 1..=10_000_000)? as usize,
            key_concurrency: l.number("key_concurrency", 64, 1..=1_000_000)? as usize,
            key_rate_per_minute: l.number("key_rate_per_minute", 0, 0..=10_000_000)? as u32,
        };
        if s.backoff_initial > s.backoff_max {
            return Err(format!(
                "the first restart backoff ({} ms) is longer than the longest ({} ms): WORKER_BACKOFF_INITIAL_MS <= WORKER_BACKOFF_MAX_MS",
                s.backoff_initial.as_millis(),
                s.backoff_max.as_millis()
            ));
        }
        for o in &s.cors_origins {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.chars().all(|c| c.is_ascii_graphic()));
            if !ok {
                return Err(format!("CORS origin {o:?}: use scheme://host[:port] (no path, no trailing slash) or *"));
            }
        }
        Ok(s)
    }
}

/// The directory to show the workers when `bin` lies where the sandbox has private directories:
/// the outermost `node_modules` above the binary (an npm install: its launcher and the native
/// binary of the platform package), else the binary's own directory. Symlinks are followed.
fn codex_mount(bin: &std::path::Path, tmpdir: Option<&std::path::Path>) -> Option<PathBuf> {
    let hidden = |p: &std::path::Path| {
        ["/tmp", "/var/tmp", "/run", "/var/run"].iter().any(|d| p.starts_with(d))
            || tmpdir.is_some_and(|t| t.is_absolute() && p.starts_with(t))
    };
    let real = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    if !hidden(bin) && !hidden(&real) {
        return None;
    }
    let outermost_node_modules = |p: &std::path::Path| {
        p.ancestors().filter(|a| a.file_name().is_some_and(|n| n == "node_modules")).last().map(PathBuf::from)
    };
    outermost_node_modules(&real).or_else(|| outermost_node_modules(bin)).or_else(|| real.parent().map(PathBuf::from))
}

fn parse_host(h: &str, src: &str) -> Result<IpAddr, String> {
    match h {
        "localhost" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        _ => h
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("{src}: {h:?} is not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)")),
    }
}

/// `ADDR:PORT` (`[::1]:PORT` for IPv6, `localhost:PORT`).
pub fn parse_listen(s: &str, src: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{src}: {s:?} is not ADDR:PORT (e.g. 127.0.0.1:11435, [::1]:11435, 0.0.0.0:8080)"));
    };
    let port = port.parse::<u16>().map_err(|_| format!("{src}: {port:?} in {s:?} is not a port (0-65535)"))?;
    Ok(SocketAddr::new(parse_host(host, src)?, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("PATH".into(), "/usr/bin:/bin".into()), ("OPENAI_API_KEY".into(), "sk-x".into())]
    }

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        let mut l = Layer::default();
        for (k, v) in pairs {
            l.set(k, Raw::One(v.to_string()), format!("--{k}"));
        }
        l
    }

    #[test]
    fn flags_beat_environment_beats_config_beats_defaults() {
        let flags = layer(&[("codex_bin", "/bin/sh"), ("workers", "3")]);
        let env_layer = Layer::from_env(&[
            ("WORKER_MAX_CONCURRENCY".into(), "7".into()),
            ("PORT".into(), "9999".into()),
            ("PROXY_IDLE_TIMEOUT_MS".into(), "2000".into()),
        ]);
        let mut cfg = Layer::default();
        cfg.set("workers", Raw::One("5".into()), "[serve] workers at w.toml:2");
        cfg.set("worker_concurrency", Raw::One("9".into()), "[serve] worker_concurrency at w.toml:3");
        cfg.set("queue", Raw::One("11".into()), "[serve] queue at w.toml:4");
        let s = ServeSettings::resolve(&[&flags, &env_layer, &cfg], &env()).expect("resolve");
        assert_eq!(s.workers, 3);
        assert_eq!(s.worker_concurrency, 7);
        assert_eq!(s.queue, 11);
        assert_eq!(s.listen, "127.0.0.1:9999".parse().expect("addr"));
        assert_eq!(s.idle_timeout, Duration::from_millis(2000));
        assert_eq!(s.max_body_bytes, 16 << 20);
        assert_eq!(s.sandbox, "read-only");
        assert_eq!(s.approval_policy, "never");
        assert_eq!(s.credential, Some(CredentialChoice::Env("OPENAI_API_KEY".into())));
        assert_eq!(s.models, vec![ModelEntry { id: "codex".into(), codex_model: None, effort: None }]);
    }

    #[test]
    fn errors_name_the_source_and_the_accepted_values() {
        let flags = layer(&[("codex_bin", "/bin/sh")]);
        let env_layer = Layer::from_env(&[("WORKER_MAX_CONCURRENCY".into(), "lots".into())]);
        let e = ServeSettings::resolve(&[&flags, &env_layer], &env()).expect_err("bad");
        assert!(e.contains("WORKER_MAX_CONCURRENCY") && e.contains("1..=4096"), "{e}");
        let bad = layer(&[("codex_bin", "/bin/sh"), ("listen", "nowhere")]);
        let e = ServeSettings::resolve(&[&bad], &env()).expect_err("bad");
        assert!(e.contains("--listen") && e.contains("ADDR:PORT"), "{e}");
        let e = ServeSettings::resolve(&[&layer(&[("codex_bin", "/nonexistent/codex")])], &env()).expect_err("bad");
        assert!(e.contains("--codex-bin"), "{e}");
        let no_key = ServeSettings::resolve(&[&flags], &[("PATH".into(), "/bin".into())]).expect_err("no key");
        assert!(no_key.contains("--credential-env"), "{no_key}");
    }

    #[test]
    fn model_entries_parse_id_model_and_effort() {
        let m: ModelEntry = "fast=gpt-5.1-codex-mini:low".parse().expect("parse");
        assert_eq!(
            m,
            ModelEntry {
                id: "fast".into(),
                codex_model: Some("gpt-5.1-codex-mini".into()),
                effort: Some("low".into())
            }
        );
        let m: ModelEntry = "gpt-5".parse().expect("parse");
        assert_eq!(m.codex_model.as_deref(), Some("gpt-5"));
        let m: ModelEntry = "x=:high".parse().expect("parse");
        assert_eq!((m.codex_model, m.effort.as_deref()), (None, Some("high")));
        assert!("bad id".parse::<ModelEntry>().is_err());
        assert!("".parse::<ModelEntry>().is_err());
    }

    #[test]
    fn a_codex_install_the_sandbox_would_hide_is_mounted() {
        let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        let pkg = dir.path().join("node_modules/@openai/codex/bin");
        std::fs::create_dir_all(&pkg).expect("mkdir");
        std::fs::write(pkg.join("codex.js"), "").expect("write");
        let bin_dir = dir.path().join("node_modules/.bin");
        std::fs::create_dir_all(&bin_dir).expect("mkdir");
        std::os::unix::fs::symlink("../@openai/codex/bin/codex.js", bin_dir.join("codex")).expect("symlink");
        let real_nm = std::fs::canonicalize(dir.path()).expect("canonical").join("node_modules");
        assert_eq!(codex_mount(&bin_dir.join("codex"), None), Some(real_nm));
        let plain = dir.path().join("codex");
        std::fs::write(&plain, "").expect("write");
        assert_eq!(codex_mount(&plain, None), std::fs::canonicalize(dir.path()).ok());
        assert_eq!(codex_mount(std::path::Path::new("/usr/bin/env"), None), None);
        assert_eq!(
            codex_mount(std::path::Path::new("/usr/bin/env"), Some(std::path::Path::new("/usr"))),
            Some("/usr/bin".into())
        );
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(parse_listen("[::1]:80", "x").expect("v6").port(), 80);
        assert_eq!(parse_listen("localhost:81", "x").expect("localhost").ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(parse_listen("1.2.3.4:99999", "x").is_err());
    }
}
