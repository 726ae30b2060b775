//! Config files: warden's own `warden.toml` (strict) and Codex's `config.toml` (lenient).
//!
//! Guarantees: files larger than [`MAX_CONFIG_SIZE`] are refused before parsing. In
//! `warden.toml`, every unknown key (at any level) and every wrong type is an error naming the
//! file, line and key; the two keys that select how much the sandbox allows (`profile`,
//! `[network] mode`) instead fall back to the safest value (`offline`, `none`) with exactly one
//! [`ConfigWarning`]. Codex's file is Codex's: unknown keys are ignored, and a known key with a
//! wrong type or value yields one warning and the safest value (`sandbox_mode`: `offline`;
//! `network_access`: false; anything else: the key is ignored). Paths are expanded (`~/`, relative
//! to the file's directory) but not checked here; [`crate::resolve()`] checks them.
//!
//! Adding a key: add it to the `accepted` list of its table in [`WardenConfig::parse`] and read
//! it with the matching `Section` getter; a new table (`[audit]`) is one more `Section::child`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Location, PolicyError};
use crate::paths::expand_config_path;
use crate::policy::{check_limit, Limits};
use crate::profile::{EnvInherit, GitMode, NetMode, Profile, CODEX_SANDBOX_MODES, PROFILE_NAMES};
use crate::size::parse_size;
use crate::toml_tree::{self, line_of, Kind, Node};

/// The largest config file warden reads, in bytes (1 MiB).
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// A problem in a config file or the environment that warden worked around (with the safest
/// value), to be shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWarning {
    /// The file, or `None` for an environment variable.
    pub file: Option<PathBuf>,
    /// The key (dotted for nested keys), or the environment variable's name.
    pub key: String,
    /// What was wrong and what warden used instead.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "warden: warning: {}: key \"{}\": {}", file.display(), self.key, self.message),
            None => write!(f, "warden: warning: environment variable {}: {}", self.key, self.message),
        }
    }
}

/// A path from a config file, expanded and absolute, with the line it was written on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPath {
    /// The expanded, absolute, lexically normalized path.
    pub path: PathBuf,
    /// The 1-based line in the config file, if known.
    pub line: Option<usize>,
}

/// Environment settings from a config file (all optional; merged by [`crate::resolve()`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvConfig {
    /// `inherit`.
    pub inherit: Option<EnvInherit>,
    /// `ignore_default_excludes`.
    pub ignore_default_excludes: Option<bool>,
    /// `exclude`.
    pub exclude: Vec<String>,
    /// `set`, in file order.
    pub set: Vec<(String, String)>,
    /// `include_only`.
    pub include_only: Vec<String>,
}

/// A parsed `warden.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WardenConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `profile` (an invalid value is already replaced by `offline`, with a warning).
    pub profile: Option<Profile>,
    /// `[filesystem] writable`.
    pub writable: Vec<ConfigPath>,
    /// `[filesystem] read_only`.
    pub read_only: Vec<ConfigPath>,
    /// `[filesystem] deny_read`.
    pub deny_read: Vec<ConfigPath>,
    /// `[filesystem] git` (an invalid value is already replaced by `read-only`, with a warning).
    pub git: Option<GitMode>,
    /// `[filesystem] repo_scan`, each bound optional.
    pub repo_scan: RepoScanConfig,
    /// `[network] mode` (an invalid value is already replaced by `none`, with a warning).
    pub net: Option<NetMode>,
    /// `[env]`.
    pub env: EnvConfig,
    /// `[limits]`, already range-checked.
    pub limits: Limits,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[network]` rules (allow, deny, allow_ports, allow_cidr, allow_private, resolve).
    pub network: NetworkRules,
    /// `[[agent.rule]]` entries, in file order: how a gateway answers an agent's command
    /// approval requests (see `warden_agent::approval`).
    pub agent_rules: Vec<AgentRule>,
    /// `[serve]`: settings of `warden serve`, type-checked here, interpreted (ranges, names) by
    /// the gateway. Keys in file order.
    pub serve: Vec<ServeEntry>,
}

/// The keys `[serve]` accepts and the type each takes.
pub const SERVE_KEYS: &[(&str, ServeType)] = &[
    ("listen", ServeType::String),
    ("models", ServeType::Strings),
    ("workers", ServeType::Integer),
    ("worker_concurrency", ServeType::Integer),
    ("codex_bin", ServeType::Path),
    ("codex_home", ServeType::Path),
    ("credential_upstream", ServeType::String),
    ("credential_env", ServeType::String),
    ("credential_file", ServeType::Path),
    ("codex_auth", ServeType::Path),
    ("api_key_file", ServeType::Path),
    ("sandbox", ServeType::String),
    ("approval_policy", ServeType::String),
    ("workdir", ServeType::Path),
    ("worker_home", ServeType::Path),
    ("allow_domains", ServeType::Strings),
    ("allow_trusted", ServeType::Boolean),
    ("cors_origins", ServeType::Strings),
    ("request_timeout_ms", ServeType::Integer),
    ("handshake_timeout_ms", ServeType::Integer),
    ("startup_timeout_ms", ServeType::Integer),
    ("backoff_initial_ms", ServeType::Integer),
    ("backoff_max_ms", ServeType::Integer),
    ("restart_max", ServeType::Integer),
    ("shutdown_grace_ms", ServeType::Integer),
    ("timeout_ms", ServeType::Integer),
    ("idle_timeout_ms", ServeType::Integer),
    ("sse_keepalive_ms", ServeType::Integer),
    ("max_body_bytes", ServeType::Size),
    ("max_streams", ServeType::Integer),
    ("queue", ServeType::Integer),
    ("queue_timeout_ms", ServeType::Integer),
    ("thread_ttl_secs", ServeType::Integer),
    ("max_threads", ServeType::Integer),
    ("key_concurrency", ServeType::Integer),
    ("key_rate_per_minute", ServeType::Integer),
];

/// The type of a `[serve]` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServeType {
    /// A string.
    String,
    /// A path (`~/` and relative paths expanded against the file's directory).
    Path,
    /// A non-negative integer.
    Integer,
    /// A non-negative integer or a size string such as `"16M"`.
    Size,
    /// A boolean.
    Boolean,
    /// An array of strings.
    Strings,
}

/// One `[serve]` value, already of its key's type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServeValue {
    /// A string or a path (expanded).
    String(String),
    /// An integer or a size, in bytes.
    Integer(u64),
    /// A boolean.
    Boolean(bool),
    /// An array of strings.
    Strings(Vec<String>),
}

/// One `[serve]` key with its value and where it was written (for messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeEntry {
    /// The key (one of [`SERVE_KEYS`]).
    pub key: String,
    /// The value.
    pub value: ServeValue,
    /// `file:line`.
    pub location: String,
}

/// One `[[agent.rule]]`: a command whose words start with `prefix` gets `decision`.
///
/// ```toml
/// [[agent.rule]]
/// prefix = ["git", "status"]
/// decision = "allow"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRule {
    /// The leading words a command must have (at least one, none empty).
    pub prefix: Vec<String>,
    /// What a matching command gets.
    pub decision: RuleDecision,
    /// The 1-based line of the entry in the config file, if known.
    #[serde(default)]
    pub line: Option<usize>,
}

/// What an `[[agent.rule]]` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleDecision {
    /// The command may run.
    Allow,
    /// The command is declined, whatever allow rules match too.
    Deny,
}

impl RuleDecision {
    /// The name in `warden.toml` and audit records.
    pub fn name(self) -> &'static str {
        match self {
            RuleDecision::Allow => "allow",
            RuleDecision::Deny => "deny",
        }
    }
}

/// The accepted `decision` values of an `[[agent.rule]]`.
pub const RULE_DECISION_NAMES: &[&str] = &["allow", "deny"];

/// `[filesystem] repo_scan = { max_depth = 8, max_entries = 200000, skip = [...] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoScanConfig {
    /// `max_depth`, 0..=64.
    pub max_depth: Option<u32>,
    /// `max_entries`, 1..=10000000.
    pub max_entries: Option<u64>,
    /// `skip`: directory names (no `/`); replaces the default list.
    pub skip: Option<Vec<String>>,
}

/// One `[network] allow` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    /// `example.com`, `*.example.com`, `*`, or any of them with `:PORT` (a table's `port` key is
    /// folded in here: `{ domain = "db.internal", port = 5432 }` is `db.internal:5432`).
    pub pattern: String,
    /// Last day the entry applies (`YYYY-MM-DD`); after it the entry is ignored with a warning.
    pub expires: Option<String>,
    /// `raw = true`: CONNECT and SOCKS5 tunnels to this host and port may carry any protocol,
    /// uninspected (`--allow-raw HOST:PORT`). Such an entry names a host (not `*`) and a port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// The egress rules of a policy (syntax is checked by the egress proxy when it starts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRules {
    /// Allowed destinations.
    pub allow: Vec<AllowRule>,
    /// Denied destinations (deny wins).
    pub deny: Vec<String>,
    /// Ports allowed besides 80 and 443.
    pub allow_ports: Vec<u16>,
    /// IP literals / CIDRs that may be used directly.
    pub allow_cidr: Vec<String>,
    /// CIDRs exempt from the private-address guard (audited override).
    pub allow_private: Vec<String>,
    /// `NAME:IP` pins.
    pub resolve: Vec<String>,
}

impl NetworkRules {
    /// Whether no rule at all was given.
    pub fn is_empty(&self) -> bool {
        self == &NetworkRules::default()
    }
}

/// The `[audit]` table of warden's config (validated types; defaults applied by `resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `path`.
    pub path: Option<ConfigPath>,
    /// `fsync`: one of `always`, `batch`, `never`.
    pub fsync: Option<String>,
    /// `max_bytes` (integer or size string; 0 means never rotate).
    pub max_bytes: Option<u64>,
    /// `keep`.
    pub keep: Option<u32>,
    /// `key_file`.
    pub key_file: Option<ConfigPath>,
    /// `run_budget_records`: records a run's sandbox may cause per hour.
    pub run_budget_records: Option<u64>,
    /// `run_budget_bytes`: bytes of records a run's sandbox may cause per hour.
    pub run_budget_bytes: Option<u64>,
}

/// The parts of Codex's `config.toml` that warden honours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CodexConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `sandbox_mode`, mapped to a profile (invalid: `offline`, with a warning).
    pub sandbox_mode: Option<Profile>,
    /// `[sandbox_workspace_write] network_access`.
    pub network_access: bool,
    /// `[sandbox_workspace_write] writable_roots`, expanded and absolute.
    pub writable_roots: Vec<PathBuf>,
    /// `[sandbox_workspace_write] exclude_tmpdir_env_var`.
    pub exclude_tmpdir_env_var: bool,
    /// `[sandbox_workspace_write] exclude_slash_tmp`.
    pub exclude_slash_tmp: bool,
    /// `[shell_environment_policy]`.
    pub env: EnvConfig,
}

impl CodexConfig {
    /// The profile Codex's settings select: `sandbox_mode`, with `workspace-write` plus
    /// `network_access = true` meaning `workspace-net`.
    pub fn profile(&self) -> Option<Profile> {
        match self.sandbox_mode {
            Some(Profile::WorkspaceWrite) if self.network_access => Some(Profile::WorkspaceNet),
            other => other,
        }
    }
}

/// Reads a config file, refusing files larger than [`MAX_CONFIG_SIZE`] and non-UTF-8 content.
pub fn read_config_file(path: &Path) -> Result<String, PolicyError> {
    let read_err = |source: io::Error| PolicyError::ConfigRead { path: path.to_owned(), source };
    let file = File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    file.take(MAX_CONFIG_SIZE + 1).read_to_end(&mut buf).map_err(read_err)?;
    if buf.len() as u64 > MAX_CONFIG_SIZE {
        return Err(PolicyError::ConfigTooLarge { path: path.to_owned(), limit: MAX_CONFIG_SIZE });
    }
    String::from_utf8(buf).map_err(|_| read_err(io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8")))
}

fn parse_tree(src: &str, path: &Path) -> Result<Node, PolicyError> {
    toml_tree::parse(src).map_err(|(line, message)| PolicyError::ConfigSyntax {
        location: Location { file: path.to_owned(), line },
        message,
    })
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."))
}

/// The first span inside `node` (its own, else its first descendant's).
fn first_span(node: &Node) -> Option<usize> {
    if let Some(span) = &node.span {
        return Some(span.start);
    }
    match &node.kind {
        Kind::Array(items) => items.iter().find_map(first_span),
        Kind::Table(entries) => entries.iter().find_map(|(_, v)| first_span(v)),
        _ => None,
    }
}

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
    base: PathBuf,
    home: Option<&'a Path>,
}

impl Ctx<'_> {
    fn line(&self, node: &Node) -> Option<usize> {
        first_span(node).map(|o| line_of(self.src, o))
    }

    fn loc(&self, node: &Node) -> Location {
        Location { file: self.file.to_owned(), line: self.line(node) }
    }
}

/// One table of the strict file, with its unknown keys already rejected.
struct Section<'a> {
    ctx: &'a Ctx<'a>,
    name: String,
    entries: &'a [(String, Node)],
}

impl<'a> Section<'a> {
    fn open(ctx: &'a Ctx<'a>, name: String, node: &'a Node, accepted: &[&str]) -> Result<Self, PolicyError> {
        let entries = node.as_table().unwrap_or(&[]);
        for (key, value) in entries {
            if !accepted.contains(&key.as_str()) {
                return Err(PolicyError::UnknownKey {
                    location: ctx.loc(value),
                    key: key.clone(),
                    table: name,
                    accepted: accepted.join(", "),
                });
            }
        }
        Ok(Section { ctx, name, entries })
    }

    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn type_err(&self, key: &str, node: &Node, expected: &'static str) -> PolicyError {
        PolicyError::ConfigType {
            location: self.ctx.loc(node),
            key: key.to_owned(),
            table: self.name.clone(),
            expected,
            found: node.type_name(),
        }
    }

    fn value_err(&self, key: &str, node: &Node, message: String) -> PolicyError {
        PolicyError::ConfigValue {
            location: self.ctx.loc(node),
            key: key.to_owned(),
            table: self.name.clone(),
            message,
        }
    }

    /// The sub-table `key`, with its accepted keys (`None`: any key).
    fn child(&self, key: &str, accepted: Option<&[&str]>) -> Result<Option<Section<'a>>, PolicyError> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        if node.as_table().is_none() {
            return Err(self.type_err(key, node, "a table"));
        }
        let name = if self.name.starts_with('[') {
            format!("[{}.{key}]", self.name.trim_matches(|c| c == '[' || c == ']'))
        } else {
            format!("[{key}]")
        };
        match accepted {
            Some(accepted) => Section::open(self.ctx, name, node, accepted).map(Some),
            None => Ok(Some(Section { ctx: self.ctx, name, entries: node.as_table().unwrap_or(&[]) })),
        }
    }

    fn string(&self, key: &str) -> Result<Option<(&'a str, &'a Node)>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(node) => match &node.kind {
                Kind::String(s) => Ok(Some((s, node))),
                _ => Err(self.type_err(key, node, "a string")),
            },
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(node) => match node.kind {
                Kind::Boolean(b) => Ok(Some(b)),
                _ => Err(self.type_err(key, node, "a boolean")),
            },
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<(&'a str, &'a Node)>, PolicyError> {
        let Some(node) = self.get(key) else {
            return Ok(Vec::new());
        };
        let Kind::Array(items) = &node.kind else {
            return Err(self.type_err(key, node, "an array of strings"));
        };
        items
            .iter()
            .map(|item| match &item.kind {
                Kind::String(s) => Ok((s.as_str(), item)),
                _ => Err(self.type_err(key, item, "an array of strings")),
            })
            .collect()
    }

    fn paths(&self, key: &str) -> Result<Vec<ConfigPath>, PolicyError> {
        self.strings(key)?
            .into_iter()
            .map(|(raw, node)| {
                expand_config_path(raw, &self.ctx.base, self.ctx.home)
                    .map(|path| ConfigPath { path, line: self.ctx.line(node) })
                    .map_err(|m| self.value_err(key, node, m))
            })
            .collect()
    }

    /// One path (`~/` and relative paths expanded like `paths`).
    fn single_path(&self, key: &str) -> Result<Option<ConfigPath>, PolicyError> {
        match self.string(key)? {
            None => Ok(None),
            Some((raw, node)) => expand_config_path(raw, &self.ctx.base, self.ctx.home)
                .map(|path| Some(ConfigPath { path, line: self.ctx.line(node) }))
                .map_err(|m| self.value_err(key, node, m)),
        }
    }

    /// A non-negative integer, or with `sizes`, also a size string such as `"64M"`.
    fn count(&self, key: &str, sizes: bool) -> Result<Option<(u64, &'a Node)>, PolicyError> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        let expected =
            if sizes { "a non-negative integer or a size string such as \"64M\"" } else { "a non-negative integer" };
        match &node.kind {
            Kind::Integer(i) => u64::try_from(*i)
                .map(|v| Some((v, node)))
                .map_err(|_| self.value_err(key, node, format!("expected {expected}, found {i}"))),
            Kind::String(s) if sizes => {
                parse_size(s).map(|v| Some((v, node))).map_err(|m| self.value_err(key, node, m))
            }
            _ => Err(self.type_err(key, node, expected)),
        }
    }

    fn limit(&self, key: &str, field: &str, sizes: bool) -> Result<Option<u64>, PolicyError> {
        match self.count(key, sizes)? {
            None => Ok(None),
            Some((v, node)) => {
                check_limit(field, v, &self.ctx.loc(node).to_string())?;
                Ok(Some(v))
            }
        }
    }
}

/// A warning that `key` in `file` had an invalid value and `fallback` was used.
/// A string value naming one of `accepted`; anything else is the safest value, with a warning.
fn or_safest<T: std::str::FromStr>(
    file: &Path,
    key: &str,
    node: &Node,
    accepted: &[&str],
    (safest, safest_name): (T, &str),
    warnings: &mut Vec<ConfigWarning>,
) -> T {
    match &node.kind {
        Kind::String(s) => s.parse::<T>().ok(),
        _ => None,
    }
    .unwrap_or_else(|| {
        warnings.push(fallback_warning(file, key, node, accepted, safest_name));
        safest
    })
}

fn fallback_warning(file: &Path, key: &str, node: &Node, accepted: &[&str], fallback: &str) -> ConfigWarning {
    ConfigWarning {
        file: Some(file.to_owned()),
        key: key.to_owned(),
        message: format!("invalid value {} (accepted: {}); using \"{fallback}\"", node.describe(), accepted.join(", ")),
    }
}

fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(format!(
            "invalid environment variable name {} (must be non-empty without '=' or NUL)",
            crate::quote::toml_quote(name)
        ))
    } else {
        Ok(())
    }
}

impl WardenConfig {
    /// Reads and parses `path`. `home` expands `~/` in paths.
    pub fn load(path: &Path, home: Option<&Path>) -> Result<(WardenConfig, Vec<ConfigWarning>), PolicyError> {
        let src = read_config_file(path)?;
        WardenConfig::parse(&src, path, home)
    }

    /// Parses `src` as the content of `path` (used in messages and as the base of relative paths).
    pub fn parse(
        src: &str,
        path: &Path,
        home: Option<&Path>,
    ) -> Result<(WardenConfig, Vec<ConfigWarning>), PolicyError> {
        let root = parse_tree(src, path)?;
        let ctx = Ctx { file: path, src, base: config_dir(path), home };
        let mut warnings = Vec::new();
        let mut cfg = WardenConfig { path: path.to_owned(), ..WardenConfig::default() };
        let top = Section::open(
            &ctx,
            "the top-level table".to_owned(),
            &root,
            &["profile", "filesystem", "network", "env", "limits", "audit", "agent", "serve"],
        )?;

        if let Some(node) = top.get("profile") {
            let safest = (Profile::Offline, Profile::Offline.name());
            cfg.profile = Some(or_safest(path, "profile", node, PROFILE_NAMES, safest, &mut warnings));
        }

        if let Some(fs) = top.child("filesystem", Some(&["writable", "read_only", "deny_read", "git", "repo_scan"]))? {
            cfg.writable = fs.paths("writable")?;
            cfg.read_only = fs.paths("read_only")?;
            cfg.deny_read = fs.paths("deny_read")?;
            if let Some(node) = fs.get("git") {
                let safest = (GitMode::ReadOnly, GitMode::ReadOnly.name());
                let names = crate::profile::GIT_MODE_NAMES;
                cfg.git = Some(or_safest(path, "filesystem.git", node, names, safest, &mut warnings));
            }
            if let Some(scan) = fs.child("repo_scan", Some(&["max_depth", "max_entries", "skip"]))? {
                if let Some((v, node)) = scan.count("max_depth", false)? {
                    if v > 64 {
                        return Err(scan.value_err(
                            "max_depth",
                            node,
                            format!("{v} is out of range (accepted: 0..=64)"),
                        ));
                    }
                    cfg.repo_scan.max_depth = Some(v as u32);
                }
                if let Some((v, node)) = scan.count("max_entries", false)? {
                    if !(1..=10_000_000).contains(&v) {
                        return Err(scan.value_err(
                            "max_entries",
                            node,
                            format!("{v} is out of range (accepted: 1..=10000000)"),
                        ));
                    }
                    cfg.repo_scan.max_entries = Some(v);
                }
                if scan.get("skip").is_some() {
                    let mut skip = Vec::new();
                    for (name, node) in scan.strings("skip")? {
                        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name == ".git" {
                            return Err(scan.value_err(
                                "skip",
                                node,
                                format!(
                                    "{} is not a directory name (one path component, not .git)",
                                    crate::quote::toml_quote(name)
                                ),
                            ));
                        }
                        skip.push(name.to_owned());
                    }
                    cfg.repo_scan.skip = Some(skip);
                }
            }
        }

        if let Some(net) = top.child(
            "network",
            Some(&["mode", "allow", "deny", "allow_ports", "allow_cidr", "allow_private", "resolve"]),
        )? {
            cfg.network = network_rules(&net)?;
            if let Some(node) = net.get("mode") {
                let safest = (NetMode::None, NetMode::None.name());
                let names = crate::profile::NET_MODE_NAMES;
                cfg.net = Some(or_safest(path, "network.mode", node, names, safest, &mut warnings));
            }
        }

        if let Some(env) =
            top.child("env", Some(&["inherit", "exclude", "set", "include_only", "ignore_default_excludes"]))?
        {
            if let Some((s, node)) = env.string("inherit")? {
                cfg.env.inherit =
                    Some(s.parse::<EnvInherit>().map_err(|e| env.value_err("inherit", node, e.to_string()))?);
            }
            cfg.env.ignore_default_excludes = env.boolean("ignore_default_excludes")?;
            cfg.env.exclude = own(env.strings("exclude")?);
            cfg.env.include_only = own(env.strings("include_only")?);
            if let Some(set) = env.child("set", None)? {
                for (name, node) in set.entries {
                    let Kind::String(value) = &node.kind else {
                        return Err(set.type_err(name, node, "a string"));
                    };
                    check_env_name(name).map_err(|m| set.value_err(name, node, m))?;
                    if value.contains('\0') {
                        return Err(set.value_err(name, node, "value contains NUL".to_owned()));
                    }
                    cfg.env.set.push((name.clone(), value.clone()));
                }
            }
        }

        if let Some(limits) =
            top.child("limits", Some(&["timeout", "memory", "cpu_seconds", "max_procs", "max_file_size", "tmp_size"]))?
        {
            cfg.limits = Limits {
                timeout_secs: limits.limit("timeout", "timeout", false)?,
                memory_bytes: limits.limit("memory", "memory", true)?,
                cpu_seconds: limits.limit("cpu_seconds", "cpu_seconds", false)?,
                max_procs: limits.limit("max_procs", "max_procs", false)?,
                max_file_size: limits.limit("max_file_size", "max_file_size", true)?,
                tmp_size: limits.limit("tmp_size", "tmp_size", true)?,
            };
        }
        let audit_keys =
            ["enabled", "path", "fsync", "max_bytes", "keep", "key_file", "run_budget_records", "run_budget_bytes"];
        if let Some(audit) = top.child("audit", Some(&audit_keys))? {
            cfg.audit.enabled = audit.boolean("enabled")?;
            cfg.audit.path = audit.single_path("path")?;
            cfg.audit.key_file = audit.single_path("key_file")?;
            if let Some((mode, node)) = audit.string("fsync")? {
                if !crate::policy::AUDIT_FSYNC_MODES.contains(&mode) {
                    return Err(audit.value_err(
                        "fsync",
                        node,
                        format!("invalid value {mode:?} (accepted: always, batch, never)"),
                    ));
                }
                cfg.audit.fsync = Some(mode.to_owned());
            }
            cfg.audit.max_bytes = audit.count("max_bytes", true)?.map(|(v, _)| v);
            if let Some((keep, node)) = audit.count("keep", false)? {
                let keep = u32::try_from(keep).ok().filter(|k| (1..=1000).contains(k)).ok_or_else(|| {
                    audit.value_err("keep", node, format!("{keep} is out of range (accepted: 1..=1000)"))
                })?;
                cfg.audit.keep = Some(keep);
            }
            for (key, sizes) in [("run_budget_records", false), ("run_budget_bytes", true)] {
                if let Some((v, node)) = audit.count(key, sizes)? {
                    if v == 0 {
                        return Err(audit.value_err(key, node, "0 is out of range (accepted: at least 1)".to_owned()));
                    }
                    match key {
                        "run_budget_records" => cfg.audit.run_budget_records = Some(v),
                        _ => cfg.audit.run_budget_bytes = Some(v),
                    }
                }
            }
        }
        if let Some(agent) = top.child("agent", Some(&["rule"]))? {
            cfg.agent_rules = agent_rules(&agent)?;
        }
        let serve_keys: Vec<&str> = SERVE_KEYS.iter().map(|(k, _)| *k).collect();
        if let Some(serve) = top.child("serve", Some(&serve_keys))? {
            cfg.serve = serve_entries(&serve)?;
        }
        Ok((cfg, warnings))
    }
}

/// `[serve]`: every key checked against its type in [`SERVE_KEYS`].
fn serve_entries(serve: &Section<'_>) -> Result<Vec<ServeEntry>, PolicyError> {
    let mut out = Vec::new();
    for (key, node) in serve.entries {
        let ty = SERVE_KEYS.iter().find(|(k, _)| k == key).map(|(_, t)| *t).unwrap_or(ServeType::String);
        let value = match ty {
            ServeType::String => ServeValue::String(serve.string(key)?.map(|(s, _)| s.to_owned()).unwrap_or_default()),
            ServeType::Path => ServeValue::String(
                serve.single_path(key)?.map(|p| p.path.to_string_lossy().into_owned()).unwrap_or_default(),
            ),
            ServeType::Integer => ServeValue::Integer(serve.count(key, false)?.map(|(v, _)| v).unwrap_or(0)),
            ServeType::Size => ServeValue::Integer(serve.count(key, true)?.map(|(v, _)| v).unwrap_or(0)),
            ServeType::Boolean => ServeValue::Boolean(serve.boolean(key)?.unwrap_or(false)),
            ServeType::Strings => {
                ServeValue::Strings(serve.strings(key)?.into_iter().map(|(s, _)| s.to_owned()).collect())
            }
        };
        out.push(ServeEntry { key: key.clone(), value, location: serve.ctx.loc(node).to_string() });
    }
    Ok(out)
}

/// `[[agent.rule]]`: an array of `{ prefix = [...], decision = "allow" | "deny" }` tables.
fn agent_rules(agent: &Section<'_>) -> Result<Vec<AgentRule>, PolicyError> {
    let Some(node) = agent.get("rule") else { return Ok(Vec::new()) };
    let Kind::Array(items) = &node.kind else {
        return Err(agent.type_err("rule", node, "an array of tables ([[agent.rule]] entries)"));
    };
    let mut rules = Vec::with_capacity(items.len());
    for item in items {
        let Some(entries) = item.as_table() else {
            return Err(agent.type_err("rule", item, "a table ([[agent.rule]] entry)"));
        };
        let (mut prefix, mut decision, mut prefix_node) = (None, None, item);
        for (k, v) in entries {
            match (k.as_str(), &v.kind) {
                ("prefix", Kind::Array(words)) => {
                    let mut out = Vec::with_capacity(words.len());
                    for (i, w) in words.iter().enumerate() {
                        match &w.kind {
                            Kind::String(s) if !s.is_empty() => out.push(s.clone()),
                            Kind::String(_) => {
                                let msg = format!("prefix word {} is empty (every word must name something)", i + 1);
                                return Err(agent.value_err("rule", w, msg));
                            }
                            _ => return Err(agent.type_err("prefix", w, "an array of strings")),
                        }
                    }
                    prefix = Some(out);
                    prefix_node = v;
                }
                ("prefix", _) => return Err(agent.type_err("prefix", v, "an array of strings")),
                ("decision", Kind::String(d)) => {
                    decision = Some(match d.as_str() {
                        "allow" => RuleDecision::Allow,
                        "deny" => RuleDecision::Deny,
                        _ => {
                            let msg = format!(
                                "invalid decision {} (accepted: {})",
                                crate::quote::toml_quote(d),
                                RULE_DECISION_NAMES.join(", ")
                            );
                            return Err(agent.value_err("rule", v, msg));
                        }
                    })
                }
                ("decision", _) => return Err(agent.type_err("decision", v, "a string (allow or deny)")),
                _ => {
                    let msg = format!("unknown key {k:?} in an [[agent.rule]] entry (accepted: prefix, decision)");
                    return Err(agent.value_err("rule", v, msg));
                }
            }
        }
        let prefix = prefix.filter(|p| !p.is_empty()).ok_or_else(|| {
            let msg =
                "an [[agent.rule]] entry needs a prefix of at least one word, e.g. prefix = [\"git\", \"status\"]";
            agent.value_err("rule", prefix_node, msg.to_owned())
        })?;
        let decision = decision.ok_or_else(|| {
            let msg = "an [[agent.rule]] entry needs a decision (accepted: allow, deny)";
            agent.value_err("rule", item, msg.to_owned())
        })?;
        rules.push(AgentRule { prefix, decision, line: agent.ctx.line(item) });
    }
    Ok(rules)
}

/// `[network]` allow entries are strings or `{ domain = "...", port = N, raw = true, expires = ... }`.
fn network_rules(net: &Section<'_>) -> Result<NetworkRules, PolicyError> {
    let mut rules = NetworkRules::default();
    if let Some(node) = net.get("allow") {
        let Kind::Array(items) = &node.kind else {
            return Err(net.type_err("allow", node, "an array of domains or { domain, port, raw, expires } tables"));
        };
        for item in items {
            match &item.kind {
                Kind::String(s) => rules.allow.push(AllowRule { pattern: s.clone(), expires: None, raw: false }),
                Kind::Table(entries) => rules.allow.push(allow_table(net, item, entries)?),
                _ => {
                    return Err(net.type_err(
                        "allow",
                        item,
                        "a domain string or a { domain, port, raw, expires } table",
                    ))
                }
            }
        }
    }
    rules.deny = own(net.strings("deny")?);
    rules.allow_cidr = own(net.strings("allow_cidr")?);
    rules.allow_private = own(net.strings("allow_private")?);
    rules.resolve = own(net.strings("resolve")?);
    if let Some(node) = net.get("allow_ports") {
        let Kind::Array(items) = &node.kind else {
            return Err(net.type_err("allow_ports", node, "an array of port numbers"));
        };
        for item in items {
            match item.kind {
                Kind::Integer(p) if (1..=65535).contains(&p) => rules.allow_ports.push(p as u16),
                Kind::Integer(p) => {
                    return Err(net.value_err("allow_ports", item, format!("{p} is not a port (accepted: 1..=65535)")))
                }
                _ => return Err(net.type_err("allow_ports", item, "an array of port numbers")),
            }
        }
    }
    Ok(rules)
}

/// One `{ domain, port, raw, expires }` allow entry; the port is folded into the pattern.
fn allow_table(net: &Section<'_>, item: &Node, entries: &[(String, Node)]) -> Result<AllowRule, PolicyError> {
    let mut rule = AllowRule::default();
    let mut port = None;
    for (k, v) in entries {
        match (k.as_str(), &v.kind) {
            ("domain", Kind::String(d)) => rule.pattern = d.clone(),
            ("expires", Kind::String(d) | Kind::Datetime(d)) => rule.expires = Some(d.clone()),
            ("port", Kind::Integer(p)) => match u16::try_from(*p).ok().filter(|p| *p != 0) {
                Some(p) => port = Some(p),
                None => return Err(net.value_err("allow", v, format!("port {p} is not a port (accepted: 1..=65535)"))),
            },
            ("raw", Kind::Boolean(b)) => rule.raw = *b,
            ("domain", _) => return Err(net.type_err(k, v, "a string such as \"pypi.org\" or \"*.example.com\"")),
            ("expires", _) => return Err(net.type_err(k, v, "a date such as 2026-12-31")),
            ("port", _) => return Err(net.type_err(k, v, "a port number such as 5432")),
            ("raw", _) => return Err(net.type_err(k, v, "true or false")),
            _ => {
                return Err(net.value_err(
                    "allow",
                    v,
                    format!("unknown key {k:?} in an allow entry (accepted: domain, port, raw, expires)"),
                ))
            }
        }
    }
    if rule.pattern.is_empty() {
        return Err(net.value_err("allow", item, "an allow entry needs a domain".to_owned()));
    }
    let named_port =
        rule.pattern.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if let Some(p) = port {
        if named_port {
            let msg = format!("the domain {:?} already names a port; give the port once", rule.pattern);
            return Err(net.value_err("allow", item, msg));
        }
        rule.pattern = format!("{}:{p}", rule.pattern);
    }
    if rule.raw && port.is_none() && !named_port {
        let msg = "a raw entry must name a port, e.g. { domain = \"db.internal\", port = 5432, raw = true }";
        return Err(net.value_err("allow", item, msg.to_owned()));
    }
    if rule.raw && rule.pattern.starts_with("*:") {
        let msg = "a raw entry must name a host, not \"*\" (raw TCP to any host skips every name check)";
        return Err(net.value_err("allow", item, msg.to_owned()));
    }
    Ok(rule)
}

fn own(v: Vec<(&str, &Node)>) -> Vec<String> {
    v.into_iter().map(|(s, _)| s.to_owned()).collect()
}

/// Lenient reader for Codex's file: wrong types become warnings.
struct Lenient<'a> {
    file: &'a Path,
    warnings: Vec<ConfigWarning>,
}

impl Lenient<'_> {
    fn warn(&mut self, key: &str, message: String) {
        self.warnings.push(ConfigWarning { file: Some(self.file.to_owned()), key: key.to_owned(), message });
    }

    fn wrong_type(&mut self, key: &str, node: &Node, expected: &str, using: &str) {
        self.warn(key, format!("expected {expected}, found {}; {using}", node.type_name()));
    }

    fn table<'n>(&mut self, parent: &'n Node, key: &str) -> Option<&'n Node> {
        let node = parent.get(key)?;
        if node.as_table().is_some() {
            Some(node)
        } else {
            self.wrong_type(key, node, "a table", "ignoring it");
            None
        }
    }

    fn boolean(&mut self, table: &Node, prefix: &str, key: &str) -> Option<bool> {
        let node = table.get(key)?;
        match node.kind {
            Kind::Boolean(b) => Some(b),
            _ => {
                self.wrong_type(&format!("{prefix}.{key}"), node, "a boolean", "ignoring it");
                None
            }
        }
    }

    fn strings(&mut self, table: &Node, prefix: &str, key: &str) -> Vec<String> {
        let Some(node) = table.get(key) else {
            return Vec::new();
        };
        let collected: Option<Vec<String>> = match &node.kind {
            Kind::Array(items) => items
                .iter()
                .map(|i| match &i.kind {
                    Kind::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        collected.unwrap_or_else(|| {
            self.wrong_type(&format!("{prefix}.{key}"), node, "an array of strings", "ignoring it");
            Vec::new()
        })
    }
}

impl CodexConfig {
    /// Reads and parses Codex's `config.toml` at `path`. `home` expands `~/` in paths.
    pub fn load(path: &Path, home: Option<&Path>) -> Result<(CodexConfig, Vec<ConfigWarning>), PolicyError> {
        let src = read_config_file(path)?;
        CodexConfig::parse(&src, path, home)
    }

    /// Parses `src` as the content of Codex's config at `path`.
    pub fn parse(
        src: &str,
        path: &Path,
        home: Option<&Path>,
    ) -> Result<(CodexConfig, Vec<ConfigWarning>), PolicyError> {
        let root = parse_tree(src, path)?;
        let base = config_dir(path);
        let mut l = Lenient { file: path, warnings: Vec::new() };
        let mut cfg = CodexConfig { path: path.to_owned(), ..CodexConfig::default() };

        if let Some(node) = root.get("sandbox_mode") {
            let parsed = match &node.kind {
                Kind::String(s) => Profile::from_codex_sandbox_mode(s),
                _ => None,
            };
            cfg.sandbox_mode = Some(parsed.unwrap_or_else(|| {
                l.warnings.push(fallback_warning(
                    path,
                    "sandbox_mode",
                    node,
                    CODEX_SANDBOX_MODES,
                    Profile::Offline.name(),
                ));
                Profile::Offline
            }));
        }

        const SWW: &str = "sandbox_workspace_write";
        if let Some(sww) = l.table(&root, SWW) {
            cfg.network_access = l.boolean(sww, SWW, "network_access").unwrap_or(false);
            cfg.exclude_tmpdir_env_var = l.boolean(sww, SWW, "exclude_tmpdir_env_var").unwrap_or(false);
            cfg.exclude_slash_tmp = l.boolean(sww, SWW, "exclude_slash_tmp").unwrap_or(false);
            for raw in l.strings(sww, SWW, "writable_roots") {
                match expand_config_path(&raw, &base, home) {
                    Ok(p) => cfg.writable_roots.push(p),
                    Err(m) => l.warn(&format!("{SWW}.writable_roots"), format!("{m}; ignoring this entry")),
                }
            }
        }

        const SEP: &str = "shell_environment_policy";
        if let Some(sep) = l.table(&root, SEP) {
            if let Some(node) = sep.get("inherit") {
                let parsed = match &node.kind {
                    Kind::String(s) => s.parse::<EnvInherit>().ok(),
                    _ => None,
                };
                cfg.env.inherit = Some(parsed.unwrap_or_else(|| {
                    l.warnings.push(fallback_warning(
                        path,
                        &format!("{SEP}.inherit"),
                        node,
                        crate::profile::ENV_INHERIT_NAMES,
                        EnvInherit::Core.name(),
                    ));
                    EnvInherit::Core
                }));
            }
            cfg.env.ignore_default_excludes = l.boolean(sep, SEP, "ignore_default_excludes");
            cfg.env.exclude = l.strings(sep, SEP, "exclude");
            cfg.env.include_only = l.strings(sep, SEP, "include_only");
            if let Some(set) = sep.get("set") {
                match set.as_table() {
                    Some(entries) => {
                        for (name, node) in entries {
                            let key = format!("{SEP}.set.{name}");
                            match &node.kind {
                                Kind::String(v) if check_env_name(name).is_ok() && !v.contains('\0') => {
                                    cfg.env.set.push((name.clone(), v.clone()));
                                }
                                Kind::String(_) => {
                                    l.warn(&key, "invalid variable name or NUL in value; ignoring it".to_owned())
                                }
                                _ => l.wrong_type(&key, node, "a string", "ignoring it"),
                            }
                        }
                    }
                    None => l.wrong_type(&format!("{SEP}.set"), set, "a table", "ignoring it"),
                }
            }
        }
        Ok((cfg, l.warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<(WardenConfig, Vec<ConfigWarning>), PolicyError> {
        WardenConfig::parse(src, Path::new("/x/warden.toml"), Some(Path::new("/home/u")))
    }

    fn err(src: &str) -> String {
        parse(src).expect_err("must fail").to_string()
    }

    #[test]
    fn full_file_parses() {
        let (cfg, warnings) = parse(
            r#"
profile = "workspace-net"
[filesystem]
writable = ["~/.cache/x", "data", "/abs/../abs2"]
read_only = ["./ro"]
deny_read = ["~/secret"]
[network]
mode = "host"
[env]
inherit = "core"
exclude = ["AWS_*"]
include_only = ["PATH", "X"]
ignore_default_excludes = true
set = { X = "1", Y = "two" }
[limits]
timeout = 60
memory = "64M"
cpu_seconds = 10
max_procs = 100
max_file_size = 1048576
"#,
        )
        .expect("parses");
        assert!(warnings.is_empty());
        assert_eq!(cfg.profile, Some(Profile::WorkspaceNet));
        let w: Vec<_> = cfg.writable.iter().map(|c| c.path.clone()).collect();
        assert_eq!(w, [PathBuf::from("/home/u/.cache/x"), PathBuf::from("/x/data"), PathBuf::from("/abs2")]);
        assert_eq!(cfg.writable[1].line, Some(4));
        assert_eq!(cfg.read_only[0].path, PathBuf::from("/x/ro"));
        assert_eq!(cfg.deny_read[0].path, PathBuf::from("/home/u/secret"));
        assert_eq!(cfg.net, Some(NetMode::Host));
        assert_eq!(cfg.env.inherit, Some(EnvInherit::Core));
        assert_eq!(cfg.env.exclude, ["AWS_*"]);
        assert_eq!(cfg.env.include_only, ["PATH", "X"]);
        assert_eq!(cfg.env.ignore_default_excludes, Some(true));
        assert_eq!(cfg.env.set, [("X".to_owned(), "1".to_owned()), ("Y".to_owned(), "two".to_owned())]);
        assert_eq!(
            cfg.limits,
            Limits {
                timeout_secs: Some(60),
                memory_bytes: Some(64 << 20),
                cpu_seconds: Some(10),
                max_procs: Some(100),
                max_file_size: Some(1 << 20),
                tmp_size: None,
            }
        );
    }

    #[test]
    fn serve_keys_are_type_checked_with_their_location() {
        let (cfg, _) = parse(
            "[serve]\nlisten = \"0.0.0.0:8080\"\nworkers = 3\nmodels = [\"a\", \"b=gpt:low\"]\nmax_body_bytes = \"1M\"\nallow_trusted = true\nworkdir = \"~/proj\"\n",
        )
        .expect("parse");
        let get = |k: &str| cfg.serve.iter().find(|e| e.key == k).map(|e| (e.value.clone(), e.location.clone()));
        assert_eq!(get("listen"), Some((ServeValue::String("0.0.0.0:8080".into()), "/x/warden.toml:2".into())));
        assert_eq!(get("workers").map(|v| v.0), Some(ServeValue::Integer(3)));
        assert_eq!(get("models").map(|v| v.0), Some(ServeValue::Strings(vec!["a".into(), "b=gpt:low".into()])));
        assert_eq!(get("max_body_bytes").map(|v| v.0), Some(ServeValue::Integer(1 << 20)));
        assert_eq!(get("allow_trusted").map(|v| v.0), Some(ServeValue::Boolean(true)));
        assert_eq!(get("workdir").map(|v| v.0), Some(ServeValue::String("/home/u/proj".into())));
        let e = err("[serve]\nworkers = \"two\"\n");
        assert!(e.contains("/x/warden.toml:2") && e.contains("workers") && e.contains("integer"), "{e}");
        let e = err("[serve]\nport = 80\n");
        assert!(e.contains("unknown key \"port\" in [serve]") && e.contains("listen"), "{e}");
    }

    #[test]
    fn agent_rules_parse_in_order_with_lines() {
        let (cfg, w) = parse(
            "[[agent.rule]]\nprefix = [\"git\", \"status\"]\ndecision = \"allow\"\n\n[[agent.rule]]\n\
             prefix = [\"git\", \"push\"]\ndecision = \"deny\"\n",
        )
        .expect("parse");
        assert!(w.is_empty());
        assert_eq!(
            cfg.agent_rules,
            [
                AgentRule { prefix: vec!["git".into(), "status".into()], decision: RuleDecision::Allow, line: Some(1) },
                AgentRule { prefix: vec!["git".into(), "push".into()], decision: RuleDecision::Deny, line: Some(5) },
            ]
        );
        assert!(parse("profile = \"offline\"\n").expect("parse").0.agent_rules.is_empty());
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../../docs/config.md");
        let start =
            doc.find("## warden's config\n\n```toml\n").expect("the example") + "## warden's config\n\n```toml\n".len();
        let len = doc[start..].find("```\n").expect("its end");
        let (cfg, warnings) = parse(&doc[start..start + len]).expect("the documented example parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.agent_rules.len(), 2);
        assert_eq!(
            (cfg.agent_rules[1].prefix.join(" "), cfg.agent_rules[1].decision),
            ("git push".into(), RuleDecision::Deny)
        );
    }

    #[test]
    fn agent_rule_errors_name_file_line_and_accepted_values() {
        for (toml, want) in [
            (
                "[[agent.rule]]\nprefix = [\"ls\"]\ndecision = \"yes\"\n",
                "/x/warden.toml:3: key \"rule\" in [agent]: invalid decision \"yes\" (accepted: allow, deny)",
            ),
            (
                "[[agent.rule]]\nprefix = [\"ls\"]\n",
                "/x/warden.toml:1: key \"rule\" in [agent]: an [[agent.rule]] entry needs a decision (accepted: allow, deny)",
            ),
            (
                "[[agent.rule]]\n\nprefix = []\ndecision = \"allow\"\n",
                "/x/warden.toml:3: key \"rule\" in [agent]: an [[agent.rule]] entry needs a prefix of at least one word",
            ),
            ("[[agent.rule]]\nprefix = [\"\"]\ndecision = \"deny\"\n", ":2: key \"rule\" in [agent]: prefix word 1 is empty"),
            (
                "[[agent.rule]]\nprefix = \"git status\"\ndecision = \"allow\"\n",
                ":2: key \"prefix\" in [agent]: expected an array of strings, found a string",
            ),
            ("[[agent.rule]]\nprefix = [\"a\", 1]\ndecision = \"allow\"\n", "expected an array of strings, found an integer"),
            ("[[agent.rule]]\nprefix = [\"a\"]\ndecision = true\n", "expected a string (allow or deny), found a boolean"),
            (
                "[[agent.rule]]\nprefix = [\"a\"]\ndecision = \"allow\"\nmatch = \"exact\"\n",
                ":4: key \"rule\" in [agent]: unknown key \"match\" in an [[agent.rule]] entry (accepted: prefix, decision)",
            ),
            ("[agent]\nrule = 3\n", ":2: key \"rule\" in [agent]: expected an array of tables ([[agent.rule]] entries)"),
            ("[agent]\nrules = []\n", ":2: unknown key \"rules\" in [agent] (accepted: rule)"),
        ] {
            let e = err(toml);
            assert!(e.contains(want), "{toml}\n{e}");
        }
    }

    #[test]
    fn run_budgets_parse_and_zero_is_refused() {
        let (cfg, _) = parse("[audit]\nrun_budget_records = 50\nrun_budget_bytes = \"1M\"\n").expect("parse");
        assert_eq!((cfg.audit.run_budget_records, cfg.audit.run_budget_bytes), (Some(50), Some(1 << 20)));
        assert!(err("[audit]\nrun_budget_records = 0\n").contains("at least 1"));
    }

    #[test]
    fn git_mode_and_repo_scan_parse_with_checked_values() {
        let (cfg, w) =
            parse("[filesystem]\ngit = \"commit\"\nrepo_scan = { max_depth = 3, max_entries = 50, skip = [\"x\"] }\n")
                .expect("parse");
        assert!(w.is_empty());
        assert_eq!(cfg.git, Some(GitMode::Commit));
        assert_eq!(
            cfg.repo_scan,
            RepoScanConfig { max_depth: Some(3), max_entries: Some(50), skip: Some(vec!["x".into()]) }
        );
        let (cfg, w) = parse("[filesystem]\ngit = \"rw\"\n").expect("parse");
        assert_eq!(cfg.git, Some(GitMode::ReadOnly), "an invalid mode falls back to the safest");
        assert!(w[0].message.contains("accepted: read-only, commit"), "{w:?}");
        assert!(err("[filesystem]\nrepo_scan = { skip = [\"a/b\"] }\n").contains("not a directory name"));
        assert!(err("[filesystem]\nrepo_scan = { max_entries = 0 }\n").contains("1..=10000000"));
        assert!(err("[filesystem]\nrepo_scan = { depth = 3 }\n").contains("accepted: max_depth, max_entries, skip"));
    }

    #[test]
    fn unknown_keys_name_file_line_table_and_accepted() {
        assert_eq!(
            err("profile = \"offline\"\n\n[filesystem]\nwriteable = [\"a\"]\n"),
            "/x/warden.toml:4: unknown key \"writeable\" in [filesystem] (accepted: writable, read_only, deny_read, git, repo_scan)"
        );
        assert_eq!(
            err("\n\nprofiles = \"offline\"\n"),
            "/x/warden.toml:3: unknown key \"profiles\" in the top-level table (accepted: profile, filesystem, network, env, limits, audit, agent, serve)"
        );
        assert_eq!(
            err("[network]\nmode = \"none\"\nallowed = []\n"),
            "/x/warden.toml:3: unknown key \"allowed\" in [network] (accepted: mode, allow, deny, allow_ports, allow_cidr, allow_private, resolve)"
        );
        // Dotted keys and sub-tables are checked too.
        assert!(err("profile = \"offline\"\nfilesystem.bogus = 1\n")
            .starts_with("/x/warden.toml:2: unknown key \"bogus\" in [filesystem]"));
        let e = err("[limits]\ntimeout = 5\n[limits.x]\ny = 1\n");
        assert!(e.starts_with("/x/warden.toml:3: unknown key \"x\" in [limits]"));
        assert!(err("[env]\n[env.set]\nA = \"1\"\n[env.set.B]\nc = \"2\"\n")
            .contains("key \"B\" in [env.set]: expected a string, found a table"));
    }

    #[test]
    fn type_errors_name_file_line_key_and_type() {
        assert_eq!(
            err("[filesystem]\nwritable = \"/tmp\"\n"),
            "/x/warden.toml:2: key \"writable\" in [filesystem]: expected an array of strings, found a string"
        );
        assert_eq!(
            err("[filesystem]\nwritable = [\n  \"/a\",\n  3,\n]\n"),
            "/x/warden.toml:4: key \"writable\" in [filesystem]: expected an array of strings, found an integer"
        );
        assert_eq!(
            err("filesystem = 3\n"),
            "/x/warden.toml:1: key \"filesystem\" in the top-level table: expected a table, found an integer"
        );
        assert!(err("[env]\nignore_default_excludes = \"yes\"\n")
            .contains(":2: key \"ignore_default_excludes\" in [env]: expected a boolean, found a string"));
        assert!(err("[env]\ninherit = \"some\"\n")
            .contains(":2: key \"inherit\" in [env]: invalid env inherit mode \"some\" (accepted: all, core, none)"));
        assert!(err("[env.set]\n\"A=B\" = \"x\"\n").contains("invalid environment variable name"));
        assert!(err("[limits]\nmemory = \"lots\"\n").contains(":2: key \"memory\" in [limits]: invalid size \"lots\""));
        assert!(err("[limits]\nmax_procs = -1\n").contains("expected a non-negative integer, found -1"));
        assert!(err("[limits]\ntimeout = \"1h\"\n").contains("expected a non-negative integer, found a string"));
    }

    #[test]
    fn limits_are_range_checked_with_location() {
        assert_eq!(
            err("[limits]\n\ntimeout = 0\n"),
            "limit timeout = 0 from /x/warden.toml:3 is out of range (accepted: 1..=604800 seconds (7 days))"
        );
        assert!(err("[limits]\nmemory = \"512K\"\n").contains("limit memory = 524288 from /x/warden.toml:2"));
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = err("profile = \"offline\"\n[filesystem\n");
        assert!(e.starts_with("/x/warden.toml:2: invalid toml: "), "{e}");
    }

    #[test]
    fn invalid_profile_falls_back_to_offline_with_one_warning() {
        for (value, shown) in [("\"bogus\"", "\"bogus\""), ("3", "3"), ("[\"trusted\"]", "an array")] {
            let (cfg, warnings) = parse(&format!("profile = {value}\n")).expect("parses");
            assert_eq!(cfg.profile, Some(Profile::Offline));
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert_eq!(
                warnings[0].to_string(),
                format!(
                    "warden: warning: /x/warden.toml: key \"profile\": invalid value {shown} (accepted: offline, net-read-only, workspace-write, workspace-net, trusted); using \"offline\""
                )
            );
        }
    }

    #[test]
    fn invalid_network_mode_falls_back_to_none() {
        let (cfg, warnings) = parse("[network]\nmode = \"wide-open\"\n").expect("parses");
        assert_eq!(cfg.net, Some(NetMode::None));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].key, "network.mode");
        assert!(warnings[0].message.contains("(accepted: none, allowlist, host); using \"none\""));
    }

    #[test]
    fn home_expansion_needs_a_home() {
        let e = WardenConfig::parse("[filesystem]\nwritable = [\"~/x\"]\n", Path::new("/x/w.toml"), None)
            .expect_err("no home");
        assert!(e.to_string().contains("/x/w.toml:2: key \"writable\" in [filesystem]: cannot expand"), "{e}");
    }

    #[test]
    fn oversized_and_missing_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("big.toml");
        let mut content = String::from("# padding\n");
        while content.len() as u64 <= MAX_CONFIG_SIZE {
            content.push_str("# ..............................................................\n");
        }
        std::fs::write(&big, &content).expect("write");
        let e = WardenConfig::load(&big, None).expect_err("too large");
        assert!(matches!(e, PolicyError::ConfigTooLarge { .. }), "{e}");
        assert!(e.to_string().contains("larger than 1048576 bytes"));
        let ok = dir.path().join("ok.toml");
        std::fs::write(&ok, "profile = \"trusted\"\n").expect("write");
        assert_eq!(WardenConfig::load(&ok, None).expect("ok").0.profile, Some(Profile::Trusted));
        let e = WardenConfig::load(&dir.path().join("missing.toml"), None).expect_err("missing");
        assert!(e.to_string().starts_with("cannot read config file "), "{e}");
    }

    fn codex(src: &str) -> (CodexConfig, Vec<ConfigWarning>) {
        CodexConfig::parse(src, Path::new("/c/config.toml"), Some(Path::new("/home/u"))).expect("parses")
    }

    #[test]
    fn codex_config_is_lenient_about_unknown_keys() {
        let (cfg, warnings) = codex(
            r#"
model = "o3"
approval_policy = "never"
sandbox_mode = "workspace-write"
[sandbox_workspace_write]
writable_roots = ["~/extra", "/opt/x"]
network_access = true
exclude_tmpdir_env_var = true
exclude_slash_tmp = true
future_key = 1
[shell_environment_policy]
inherit = "core"
exclude = ["FOO"]
set = { A = "1" }
include_only = ["PATH"]
ignore_default_excludes = false
experimental_use_profile = true
[mcp_servers.x]
command = "y"
"#,
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.sandbox_mode, Some(Profile::WorkspaceWrite));
        assert_eq!(cfg.profile(), Some(Profile::WorkspaceNet));
        assert_eq!(cfg.writable_roots, [PathBuf::from("/home/u/extra"), PathBuf::from("/opt/x")]);
        assert!(cfg.exclude_tmpdir_env_var && cfg.exclude_slash_tmp);
        assert_eq!(cfg.env.inherit, Some(EnvInherit::Core));
        assert_eq!(cfg.env.exclude, ["FOO"]);
        assert_eq!(cfg.env.set, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(cfg.env.include_only, ["PATH"]);
        assert_eq!(cfg.env.ignore_default_excludes, Some(false));
        // network_access only upgrades workspace-write.
        assert_eq!(
            codex("sandbox_mode = \"read-only\"\n[sandbox_workspace_write]\nnetwork_access = true\n").0.profile(),
            Some(Profile::Offline)
        );
    }

    #[test]
    fn codex_wrong_values_warn_once_and_use_safest() {
        let (cfg, warnings) = codex("sandbox_mode = \"yolo\"\n");
        assert_eq!(cfg.profile(), Some(Profile::Offline));
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            warnings[0].to_string(),
            "warden: warning: /c/config.toml: key \"sandbox_mode\": invalid value \"yolo\" (accepted: read-only, workspace-write, danger-full-access); using \"offline\""
        );
        let (cfg, warnings) = codex(
            "sandbox_mode = \"workspace-write\"\n[sandbox_workspace_write]\nnetwork_access = \"yes\"\nwritable_roots = \"/x\"\n",
        );
        assert_eq!(cfg.profile(), Some(Profile::WorkspaceWrite));
        assert!(cfg.writable_roots.is_empty());
        let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["sandbox_workspace_write.network_access", "sandbox_workspace_write.writable_roots"]);
        assert!(warnings[0].message.contains("expected a boolean, found a string"));
        let (cfg, warnings) = codex("sandbox_workspace_write = 1\nshell_environment_policy = \"x\"\n");
        assert_eq!(cfg.profile(), None);
        assert_eq!(warnings.len(), 2);
        let (cfg, warnings) = codex("[shell_environment_policy]\ninherit = \"most\"\nset = { A = 1, B = \"b\" }\n");
        assert_eq!(cfg.env.inherit, Some(EnvInherit::Core));
        assert_eq!(cfg.env.set, [("B".to_owned(), "b".to_owned())]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn codex_syntax_errors_are_errors() {
        let e = CodexConfig::parse("a = \n", Path::new("/c/config.toml"), None).expect_err("bad");
        assert!(e.to_string().starts_with("/c/config.toml:1: invalid toml"), "{e}");
    }

    #[test]
    fn network_rules_table() {
        let (cfg, _) = parse(
            "[network]\nmode = \"allowlist\"\nallow = [\"pypi.org\", { domain = \"*.example.com\", expires = 2026-12-31 }, \
             { domain = \"x.test:8443\", expires = \"2027-01-01\" }]\ndeny = [\"evil.example.com\"]\nallow_ports = [8080]\n\
             allow_cidr = [\"203.0.113.0/24\"]\nallow_private = [\"127.0.0.1/32\"]\nresolve = [\"a.test:127.0.0.1\"]\n",
        )
        .expect("parses");
        let n = &cfg.network;
        assert_eq!(n.allow[0], AllowRule { pattern: "pypi.org".into(), expires: None, raw: false });
        assert_eq!(
            n.allow[1],
            AllowRule { pattern: "*.example.com".into(), expires: Some("2026-12-31".into()), raw: false }
        );
        assert_eq!(n.allow[2].expires.as_deref(), Some("2027-01-01"));
        assert_eq!((n.deny.len(), n.allow_ports.as_slice()), (1, &[8080u16][..]));
        assert_eq!((n.allow_cidr.len(), n.allow_private.len(), n.resolve.len()), (1, 1, 1));
        assert!(err("[network]\nallow_ports = [70000]\n").contains(":2: key \"allow_ports\" in [network]"));
        assert!(err("[network]\nallow = [{ host = \"x\" }]\n").contains("accepted: domain, port, raw, expires"));
        assert!(err("[network]\nallow = [3]\n").contains("allow"));
    }

    #[test]
    fn raw_allow_entries() {
        let (cfg, _) = parse(
            "[network]\nallow = [{ domain = \"db.internal\", port = 5432, raw = true },\n  \
             { domain = \"pg.example:6432\", raw = true, expires = 2030-01-01 }, { domain = \"web.test\", port = 8443 }]\n",
        )
        .expect("parses");
        let n = &cfg.network;
        assert_eq!(n.allow[0], AllowRule { pattern: "db.internal:5432".into(), expires: None, raw: true });
        assert_eq!(
            n.allow[1],
            AllowRule { pattern: "pg.example:6432".into(), expires: Some("2030-01-01".into()), raw: true }
        );
        assert_eq!(n.allow[2], AllowRule { pattern: "web.test:8443".into(), expires: None, raw: false });
        for (toml, want) in [
            (
                "[network]\nallow = [\n { domain = \"db.internal\", raw = true }]\n",
                "/x/warden.toml:3: key \"allow\" in [network]: a raw entry must name a port, e.g. { domain = \"db.internal\", port = 5432, raw = true }",
            ),
            ("[network]\nallow = [{ domain = \"*\", port = 22, raw = true }]\n", ":2: key \"allow\" in [network]: a raw entry must name a host"),
            ("[network]\nallow = [{ domain = \"a.test:1\", port = 2 }]\n", "already names a port"),
            ("[network]\nallow = [{ domain = \"a.test\", port = 70000 }]\n", "port 70000 is not a port (accepted: 1..=65535)"),
            ("[network]\nallow = [{ domain = \"a.test\", port = 0 }]\n", "port 0 is not a port"),
            ("[network]\nallow = [{ domain = \"a.test\", port = \"22\" }]\n", "a port number such as 5432"),
            ("[network]\nallow = [{ domain = \"a.test\", port = 22, raw = \"yes\" }]\n", "true or false"),
        ] {
            let e = err(toml);
            assert!(e.contains(want), "{toml}: {e}");
        }
    }
}
