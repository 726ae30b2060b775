//! The resolved policy: everything `warden run` enforces, as plain data.
//!
//! Guarantees: a [`Policy`] produced by [`crate::resolve()`] has a canonical, existing workdir;
//! canonical writable and read-only roots; masks that exist; limits inside the ranges of
//! [`check_limit`]; and a serde_json form, whose hash is [`Policy::digest`]. A `Policy` built by
//! hand carries none of these guarantees.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::env::EnvPolicy;
use crate::error::PolicyError;
use crate::profile::{GitMode, NetMode, Profile};

/// Names kept read-only inside every writable root (every profile but `trusted`).
pub const DEFAULT_PROTECTED_NAMES: &[&str] = &[".git", ".codex", ".agents"];

/// Resource limits; `None` means not limited by warden.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock timeout in seconds.
    pub timeout_secs: Option<u64>,
    /// Address-space / memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time in seconds (`RLIMIT_CPU`).
    pub cpu_seconds: Option<u64>,
    /// Maximum number of processes (`RLIMIT_NPROC` or a pids limit).
    pub max_procs: Option<u64>,
    /// Maximum size of a written file in bytes (`RLIMIT_FSIZE`).
    pub max_file_size: Option<u64>,
    /// Bytes the private tmpfs directories (/tmp, /var/tmp, /run, `$TMPDIR`, /dev/shm) share.
    #[serde(default)]
    pub tmp_size: Option<u64>,
}

/// Checks one limit against its accepted range. `field` is one of `timeout`, `memory`,
/// `cpu_seconds`, `max_procs`, `max_file_size`; `origin` (a flag or `file:line`) goes into the
/// error.
pub fn check_limit(field: &str, value: u64, origin: &str) -> Result<(), PolicyError> {
    let (min, max, accepted) = match field {
        "timeout" => (1, 604_800, "1..=604800 seconds (7 days)"),
        "memory" => (1 << 20, u64::MAX, "at least 1048576 bytes (1 MiB)"),
        "cpu_seconds" => (1, u64::MAX, "at least 1 second"),
        "max_procs" => (1, 4_194_304, "1..=4194304"),
        "max_file_size" => (1, u64::MAX, "at least 1 byte"),
        "tmp_size" => (1 << 20, u64::MAX, "at least 1048576 bytes (1 MiB)"),
        _ => (0, u64::MAX, "any value"),
    };
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError::LimitOutOfRange {
            field: field.to_owned(),
            value,
            origin: origin.to_owned(),
            accepted: accepted.to_owned(),
        })
    }
}

/// Everything `warden run` needs to know about what the command may do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    /// The selected profile.
    pub profile: Profile,
    /// Absolute, canonical, existing directory the command starts in.
    pub workdir: PathBuf,
    /// Canonical writable roots (`["/"]` in `trusted`).
    pub writable_roots: Vec<PathBuf>,
    /// The writable roots that are neither the workdir nor beneath it (the CLI confirms these).
    pub writable_outside_workdir: Vec<PathBuf>,
    /// Writable paths (the workdir included) given through a symlink that leads out of their
    /// directory: `(as given, where it leads)`. The CLI confirms these like the above.
    #[serde(default)]
    pub redirected: Vec<(PathBuf, PathBuf)>,
    /// Canonical paths bound read-only even inside a writable root.
    pub read_only: Vec<PathBuf>,
    /// Existing paths hidden from the command (both spellings of symlinked paths); sorted.
    pub deny_read: Vec<PathBuf>,
    /// Host files or directories shown at another path inside the sandbox (after the masks, so
    /// that a deliberate exposure, such as a login file the masks hide, is seen there).
    #[serde(default)]
    pub bind_at: Vec<BindAt>,
    /// Names kept read-only inside every writable root.
    pub protected_names: Vec<String>,
    /// How the git repositories found in writable roots are protected.
    pub git: GitMode,
    /// Bounds of the search for git repositories in writable roots.
    pub repo_scan: RepoScan,
    /// Directories inside writable roots bound onto themselves, so that they cannot be renamed or
    /// replaced (those between a writable root and a config file warden read for this run).
    pub pinned: Vec<PathBuf>,
    /// Whether the private tmpfs at `/tmp` is writable.
    pub tmp_writable: bool,
    /// `$TMPDIR` when it gets its own private tmpfs.
    pub tmpdir: Option<PathBuf>,
    /// Network mode.
    pub net: NetMode,
    /// Environment policy.
    pub env: EnvPolicy,
    /// Resource limits.
    pub limits: Limits,
    /// Whether layers that cannot be enforced may be skipped (audited).
    pub allow_degraded: bool,
    /// Where and how `warden` records what it does.
    pub audit: AuditSettings,
    /// Egress rules for `--net allowlist` (command line and config merged).
    pub network: crate::config::NetworkRules,
    /// Where each setting came from, for `warden explain`: `(setting, source)`.
    pub sources: Vec<(String, String)>,
}

/// A host path shown at another path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindAt {
    /// The host file or directory (canonical in a resolved policy).
    pub source: PathBuf,
    /// Where it appears inside the sandbox: absolute, normalised, inside a writable root (a
    /// missing target gets a placeholder for the run there).
    pub target: PathBuf,
    /// Writable, or read-only.
    pub writable: bool,
}

/// `[filesystem] repo_scan`: how far warden looks for git repositories inside writable roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoScan {
    /// Directory levels below a writable root that are searched.
    pub max_depth: u32,
    /// Directory entries read in all, at most.
    pub max_entries: u64,
    /// Directory names not searched (anywhere below a root).
    pub skip: Vec<String>,
}

/// Directory names the repository scan skips unless `[filesystem] repo_scan.skip` says otherwise:
/// dependency and build caches that are large and hold no repository of the user's.
pub const DEFAULT_REPO_SCAN_SKIP: &[&str] =
    &["node_modules", "target", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", ".pytest_cache", ".gradle"];

impl Default for RepoScan {
    fn default() -> Self {
        RepoScan {
            max_depth: 8,
            max_entries: 200_000,
            skip: DEFAULT_REPO_SCAN_SKIP.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Durability of audit records (`[audit] fsync`).
pub const AUDIT_FSYNC_MODES: &[&str] = &["always", "batch", "never"];
/// Rotate the audit log past this size unless `[audit] max_bytes` says otherwise.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 64 << 20;
/// Rotated audit files kept unless `[audit] keep` says otherwise.
pub const DEFAULT_AUDIT_KEEP: u32 = 8;

/// The audit log settings: `--audit-log`, `--no-audit`, `--audit-key-file` over `[audit]` over
/// defaults. Disabling needs an explicit `--no-audit` or `enabled = false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSettings {
    /// Whether records are written at all.
    pub enabled: bool,
    /// The log file (absolute): `$XDG_STATE_HOME/warden/audit.jsonl`, else
    /// `~/.local/state/warden/audit.jsonl`. `None` only when disabled.
    pub path: Option<PathBuf>,
    /// One of [`AUDIT_FSYNC_MODES`].
    pub fsync: String,
    /// Rotate when the file reaches this many bytes (`None`: never).
    pub max_bytes: Option<u64>,
    /// Rotated files kept.
    pub keep: u32,
    /// HMAC key file (keyed chain), absolute.
    pub key_file: Option<PathBuf>,
    /// Records go to the session's owner over warden-session's control channel, which appends
    /// them to its own log (one writer for a log on standard output); set by the owner only.
    #[serde(default)]
    pub forward: bool,
    /// The records the sandbox's own activity may cause (egress decisions, credential-proxy
    /// requests) per run and hour, at most: a count and a size in bytes.
    #[serde(default = "default_budget")]
    pub run_budget: (u64, u64),
}

/// `--audit-log -`: the log is standard output (hash-chained JSON lines for log shippers).
pub const AUDIT_STDOUT: &str = "-";

impl AuditSettings {
    /// Whether the log is standard output (`--audit-log -`).
    pub fn is_stdout(&self) -> bool {
        self.path.as_ref().is_some_and(|p| p.as_os_str() == AUDIT_STDOUT)
    }
}

/// Records and bytes a run's sandbox may cause per hour unless `[audit] run_budget_*` say otherwise.
pub const DEFAULT_RUN_BUDGET: (u64, u64) = (10_000, 16 << 20);

fn default_budget() -> (u64, u64) {
    DEFAULT_RUN_BUDGET
}

impl Policy {
    /// A stable identifier of this policy: FNV-1a 64 of its serde_json form, as 16 hex digits.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_else(|_| format!("{self:?}").into_bytes());
        format!("{:016x}", fnv1a64(&bytes))
    }

    /// The source recorded for `setting`, if any.
    pub fn source_of(&self, setting: &str) -> Option<&str> {
        self.sources.iter().find(|(k, _)| k == setting).map(|(_, v)| v.as_str())
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Policy {
        Policy {
            profile: Profile::WorkspaceWrite,
            workdir: "/w".into(),
            writable_roots: vec!["/w".into()],
            writable_outside_workdir: vec![],
            redirected: vec![],
            read_only: vec![],
            deny_read: vec!["/home/u/.ssh".into()],
            bind_at: vec![],
            protected_names: vec![".git".into()],
            git: GitMode::ReadOnly,
            repo_scan: RepoScan::default(),
            pinned: vec![],
            tmp_writable: true,
            tmpdir: None,
            net: NetMode::None,
            env: EnvPolicy::default(),
            limits: Limits::default(),
            allow_degraded: false,
            network: Default::default(),
            audit: AuditSettings {
                enabled: true,
                path: Some("/home/u/.local/state/warden/audit.jsonl".into()),
                fsync: "batch".into(),
                max_bytes: None,
                keep: 1,
                key_file: None,
                forward: false,
                run_budget: DEFAULT_RUN_BUDGET,
            },
            sources: vec![("profile".into(), "--profile".into())],
        }
    }

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn digest_is_stable_and_sensitive() {
        let p = sample();
        let d = p.digest();
        assert_eq!(d.len(), 16);
        assert_eq!(d, sample().digest());
        let mut q = sample();
        q.net = NetMode::Host;
        assert_ne!(q.digest(), d);
        let json = serde_json::to_string(&p).expect("serialize");
        let back: Policy = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, p);
        assert_eq!(back.digest(), d);
        assert_eq!(p.source_of("profile"), Some("--profile"));
        assert_eq!(p.source_of("net"), None);
    }

    #[test]
    fn limit_ranges() {
        assert!(check_limit("timeout", 1, "--timeout").is_ok());
        assert!(check_limit("timeout", 604_800, "--timeout").is_ok());
        let err = check_limit("timeout", 0, "--timeout").expect_err("0");
        assert_eq!(
            err.to_string(),
            "limit timeout = 0 from --timeout is out of range (accepted: 1..=604800 seconds (7 days))"
        );
        assert!(check_limit("timeout", 604_801, "x").is_err());
        assert!(check_limit("memory", (1 << 20) - 1, "x").is_err());
        assert!(check_limit("memory", 1 << 20, "x").is_ok());
        assert!(check_limit("max_procs", 0, "x").is_err());
        assert!(check_limit("cpu_seconds", 0, "x").is_err());
        assert!(check_limit("max_file_size", 0, "x").is_err());
    }
}
