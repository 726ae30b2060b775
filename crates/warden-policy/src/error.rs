//! Errors of policy resolution.
//!
//! Guarantees: every [`PolicyError`] message is one lowercase line that names the field, flag,
//! file (with line number when it comes from a config file) and value that failed, and, where a
//! choice was refused on purpose, how to get it deliberately.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::profile::Profile;

/// A place in a config file: the file and, when known, the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The config file.
    pub file: PathBuf,
    /// The 1-based line, if the parser could tell.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// Why a policy could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The audit log's directory contains the workdir, so the sandbox would see the log.
    #[error(
        "the audit log directory {} contains the workdir {}: the sandbox must not see the log. \
         Choose another place with --audit-log PATH",
        dir.display(),
        workdir.display()
    )]
    AuditDirContainsWorkdir {
        /// The audit log's directory.
        dir: PathBuf,
        /// The workdir.
        workdir: PathBuf,
    },
    /// A writable root contains warden's config or state directory (or would, once created).
    #[error(
        "the writable root {} contains warden's {what} directory {}: a command could change what later runs \
         obey or record there; {hint}",
        root.display(),
        dir.display()
    )]
    WritableContainsWardenState {
        /// The writable root.
        root: PathBuf,
        /// `config` or `state`.
        what: &'static str,
        /// The directory (existing or not).
        dir: PathBuf,
        /// The way out.
        hint: &'static str,
    },
    /// `--profile` and `--sandbox` were both given and disagree.
    #[error("--profile {profile} conflicts with --sandbox (which selects profile {sandbox}); give only one of them")]
    ConflictingProfiles {
        /// The `--profile` value.
        profile: Profile,
        /// The profile that `--sandbox` maps to.
        sandbox: Profile,
    },
    /// A config file could not be opened or read.
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A config file is larger than [`crate::config::MAX_CONFIG_SIZE`].
    #[error("config file {} is larger than {limit} bytes; refusing to read it", path.display())]
    ConfigTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// A config file is not valid TOML.
    #[error("{location}: invalid toml: {message}")]
    ConfigSyntax {
        /// Where.
        location: Location,
        /// The parser's message.
        message: String,
    },
    /// `warden.toml` has a key warden does not know.
    #[error("{location}: unknown key \"{key}\" in {table} (accepted: {accepted})")]
    UnknownKey {
        /// Where.
        location: Location,
        /// The unknown key.
        key: String,
        /// The table it is in, e.g. `[filesystem]`.
        table: String,
        /// The keys accepted in that table, comma-separated.
        accepted: String,
    },
    /// A config value has the wrong TOML type.
    #[error("{location}: key \"{key}\" in {table}: expected {expected}, found {found}")]
    ConfigType {
        /// Where.
        location: Location,
        /// The key.
        key: String,
        /// The table it is in.
        table: String,
        /// The expected type, e.g. `an array of strings`.
        expected: &'static str,
        /// What was found, e.g. `a string`.
        found: &'static str,
    },
    /// A config value has the right type but an invalid value.
    #[error("{location}: key \"{key}\" in {table}: {message}")]
    ConfigValue {
        /// Where.
        location: Location,
        /// The key.
        key: String,
        /// The table it is in.
        table: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A path from a config file does not exist or cannot be resolved.
    #[error("{location}: key \"{key}\" in {table}: cannot use path {}: {source}", path.display())]
    ConfigPath {
        /// Where.
        location: Location,
        /// The key.
        key: String,
        /// The table it is in.
        table: String,
        /// The path, after `~/` expansion and made absolute.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path given on the command line does not exist or cannot be resolved.
    #[error("{flag} {}: {source}", path.display())]
    PathFlag {
        /// The flag, e.g. `--writable`.
        flag: String,
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The workdir does not exist or cannot be resolved.
    #[error("workdir {}: {source}", path.display())]
    Workdir {
        /// The workdir as given (absolute).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The workdir is not a directory.
    #[error("workdir {} is not a directory", path.display())]
    WorkdirNotDirectory {
        /// The canonical workdir.
        path: PathBuf,
    },
    /// A writable-workdir profile was asked to make `/` writable.
    #[error(
        "refusing to use / as the writable workdir of profile {profile}; run warden in a project subdirectory or pass -C/--workdir DIR"
    )]
    WorkdirIsRoot {
        /// The profile.
        profile: Profile,
    },
    /// A writable-workdir profile was asked to make the home directory writable.
    #[error(
        "refusing to use the home directory {} as the writable workdir of profile {profile}; use a project subdirectory (-C/--workdir DIR), or --writable {} if you really mean it",
        path.display(), path.display()
    )]
    WorkdirIsHome {
        /// The canonical home directory.
        path: PathBuf,
        /// The profile.
        profile: Profile,
    },
    /// `WORKSPACE_ROOT_DIR` is set and the workdir is not inside it.
    #[error(
        "workdir {} is outside WORKSPACE_ROOT_DIR {}; choose a workdir inside it or unset WORKSPACE_ROOT_DIR",
        workdir.display(), root.display()
    )]
    WorkdirOutsideWorkspaceRoot {
        /// The canonical workdir.
        workdir: PathBuf,
        /// The canonical `WORKSPACE_ROOT_DIR`.
        root: PathBuf,
    },
    /// `WORKSPACE_ROOT_DIR` is set but cannot be resolved.
    #[error("WORKSPACE_ROOT_DIR {}: {source}", path.display())]
    WorkspaceRoot {
        /// The value of `WORKSPACE_ROOT_DIR`.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A resource limit is outside its accepted range.
    #[error("limit {field} = {value} from {origin} is out of range (accepted: {accepted})")]
    LimitOutOfRange {
        /// The limit, e.g. `timeout`.
        field: String,
        /// The rejected value.
        value: u64,
        /// Where it came from: a flag such as `--timeout`, or `file:line`.
        origin: String,
        /// The accepted range.
        accepted: String,
    },
    /// An `--env-set` entry has an invalid name or a NUL in its value.
    #[error("--env-set {name:?}: invalid variable (names must be non-empty without '=' or NUL; values without NUL)")]
    InvalidEnvSet {
        /// The variable name.
        name: String,
    },
    /// The resolved policy cannot be represented as JSON (e.g. a path that is not UTF-8).
    #[error("policy cannot be serialized (paths must be valid UTF-8): {message}")]
    Unserializable {
        /// serde_json's message.
        message: String,
    },
    /// Auditing is on but there is no place for the log.
    #[error(
        "cannot place the audit log: neither XDG_STATE_HOME nor HOME is set; pass --audit-log PATH, \
         set [audit] path, or disable auditing on purpose with --no-audit"
    )]
    AuditPath,
    /// Egress rules were given but the network is not `allowlist`.
    #[error(
        "network rules (--allow-domain, [network] allow, ...) need --net allowlist, but the network is \"{net}\"; \
         add --net allowlist or use the net-read-only / workspace-net profile"
    )]
    RulesWithoutAllowlist {
        /// The network mode in force.
        net: String,
    },
    /// A path to show at another location cannot be used.
    #[error("{what} {}: {problem}", path.display())]
    BindAt {
        /// What asked for it (e.g. "the ChatGPT login file").
        what: String,
        /// The source or target.
        path: PathBuf,
        /// What is wrong, and what to do.
        problem: String,
    },
}
