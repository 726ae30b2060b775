//! warden's tamper-evident audit log.
//!
//! One JSON object per line, each line carrying the SHA-256 (or, keyed, HMAC-SHA256) of the previous
//! line's hash and its own canonical bytes, so that editing, deleting, duplicating or reordering
//! records breaks the chain. `docs/audit-format.md` is the normative description of the format.
//!
//! What this crate guarantees:
//! - every string (field names and values, nested) is redacted ([`redact`]) before it is serialized;
//! - a record is written with one `write(2)` on an `O_APPEND` descriptor while an exclusive `flock`
//!   is held, so concurrent writers (threads or processes, each with its own [`AuditLog`]) never
//!   interleave bytes and never fork the chain;
//! - a torn last line (a writer died mid-write) is cut off by the next writer and a `log.recovered`
//!   record says how many bytes were dropped; complete records are never rewritten;
//! - size-based rotation keeps the chain going across files; before it deletes the oldest file it
//!   writes a `log.pruned` record naming the last record deleted, so that [`verify`] can tell a
//!   pruned head from a deleted one ("head missing");
//! - the `log.*` events are the log's own: [`AuditLog::append`] refuses them, so every `log.pruned`
//!   record in a keyed log was written by rotation;
//! - with `fsync = always`, a record whose [`AuditLog::append`] returned `Ok` is on disk; with
//!   `batch`, records are synced at most 100 ms apart while a writer appends, and the writeback of
//!   its last ones starts (without waiting) when it ends.
//!
//! What it trusts: that every writer of the file is an [`AuditLog`] (honours the lock), and the
//! file system to implement `flock`, `O_APPEND` and `rename` as POSIX says. What it cannot detect
//! from the files alone: records removed from the end of the newest file (or the newest files
//! deleted); a [`checkpoint`] taken earlier and kept elsewhere covers that.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod record;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod time;
mod writer;

pub mod checkpoint;
pub mod read;
pub mod redact;
pub mod verify;

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

pub use stream::{AuditStream, STDOUT_NAME};
pub use time::format_ts;
pub use writer::AuditLog;

/// The largest record, in bytes including its newline, that [`AuditLog::append`] accepts.
pub const MAX_RECORD_BYTES: usize = record::MAX_RECORD_BYTES;

/// When [`AuditLog`] calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// After every record, before the lock is released: a record that was reported written is on disk.
    Always,
    /// At most every 100 ms per writer while it appends, and on [`AuditLog::flush`]. When the
    /// writer ends ([`AuditLog::start_writeback`], drop), the writeback of what is pending is
    /// started and not waited for, so that ending a run does not wait for the disk; a crash in
    /// the moments after can lose those last records.
    #[default]
    Batch,
    /// Never; the kernel writes back when it likes.
    Never,
}

impl Fsync {
    /// The configuration spelling: `always`, `batch` or `never`.
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::Never => "never",
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Fsync {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Fsync::Always),
            "batch" => Ok(Fsync::Batch),
            "never" => Ok(Fsync::Never),
            other => Err(AuditError::InvalidFsync { value: other.to_owned() }),
        }
    }
}

/// The smallest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// The largest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// The secret of a keyed (HMAC-SHA256) audit log.
///
/// Zeroized on drop; its `Debug` prints `AuditKey([REDACTED])`; it has no `Display` or `Serialize`
/// and never appears in an error message.
#[derive(Clone)]
pub struct AuditKey(Zeroizing<Vec<u8>>);

impl AuditKey {
    /// Reads a key file: its bytes, less one trailing `\n` or `\r\n`, must be 16 to 4096 bytes long.
    pub fn from_file(path: &Path) -> Result<AuditKey, AuditError> {
        let read_err = |source| AuditError::KeyRead { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // Sized up front so that reading never reallocates and leaves copies of the key behind.
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_BYTES + 8));
        file.take(MAX_KEY_BYTES as u64 + 3).read_to_end(&mut bytes).map_err(read_err)?;
        let n = bytes.len();
        if bytes.ends_with(b"\r\n") {
            bytes.truncate(n - 2);
        } else if bytes.ends_with(b"\n") {
            bytes.truncate(n - 1);
        }
        Self::from_bytes(&bytes).map_err(|_| AuditError::KeyFileLength { path: path.to_owned(), len: bytes.len() })
    }

    /// Takes a key as it is: 16 to 4096 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<AuditKey, AuditError> {
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&b.len()) {
            return Err(AuditError::KeyLength { len: b.len() });
        }
        Ok(AuditKey(Zeroizing::new(b.to_vec())))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey([REDACTED])")
    }
}

/// How to open an [`AuditLog`].
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The live log file; rotated files are `path.1` (newest) to `path.keep` (oldest).
    pub path: PathBuf,
    /// Durability of appended records.
    pub fsync: Fsync,
    /// Rotate before an append when the live file has at least this many bytes; `None`: never.
    pub max_bytes: Option<u64>,
    /// How many rotated files to keep; older ones are deleted at rotation. 0 keeps none.
    pub keep: u32,
    /// Keyed mode: chain with HMAC-SHA256 under this key instead of plain SHA-256.
    pub key: Option<AuditKey>,
}

impl AuditConfig {
    /// A configuration for `path` with the defaults: `fsync = batch`, no rotation, `keep = 5`, unkeyed.
    pub fn new(path: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig { path: path.into(), fsync: Fsync::default(), max_bytes: None, keep: 5, key: None }
    }
}

/// The default log location: `$XDG_STATE_HOME/warden/audit.jsonl`, else
/// `~/.local/state/warden/audit.jsonl`. Empty or relative values are ignored, as the XDG base
/// directory specification asks; `None` when neither gives an absolute directory.
pub fn default_path(xdg_state_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let usable = |p: &&Path| p.is_absolute();
    if let Some(state) = xdg_state_home.filter(usable) {
        return Some(state.join("warden").join("audit.jsonl"));
    }
    home.filter(usable).map(|h| h.join(".local").join("state").join("warden").join("audit.jsonl"))
}

/// Errors of writing, reading and configuring the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// `fsync` was not one of the three modes.
    #[error("invalid audit fsync mode {value:?}: expected always, batch or never")]
    InvalidFsync {
        /// What was given.
        value: String,
    },
    /// The key file could not be read.
    #[error("cannot read audit key file {}: {source}", path.display())]
    KeyRead {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file holds too few or too many bytes.
    #[error(
        "audit key file {} holds {len} bytes after its trailing newline is removed; it must hold 16 to 4096",
        path.display()
    )]
    KeyFileLength {
        /// The key file.
        path: PathBuf,
        /// Its length (or more than 4096).
        len: usize,
    },
    /// A key given as bytes has the wrong length.
    #[error("audit key is {len} bytes long; it must be 16 to 4096 bytes")]
    KeyLength {
        /// The length given.
        len: usize,
    },
    /// The log's directory could not be created.
    #[error("cannot create audit log directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The log file could not be opened or created.
    #[error("cannot open audit log {}: {source}", path.display())]
    Open {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The exclusive lock could not be taken.
    #[error("cannot lock audit log {}: {source}", path.display())]
    Lock {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading (the tail of) a log file failed.
    #[error("cannot read audit log {}: {source}", path.display())]
    Read {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Appending a record failed; the partial write, if any, was cut off again.
    #[error("cannot append to audit log {}: {source}", path.display())]
    Write {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `fdatasync` failed: the record may not be durable.
    #[error("cannot sync audit log {} to disk: {source}", path.display())]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Cutting off a torn last line failed.
    #[error("cannot cut the torn last line off audit log {}: {source}", path.display())]
    Truncate {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A step of rotation failed.
    #[error("cannot rotate audit log: {op} {}: {source}", path.display())]
    Rotate {
        /// What was being done (`rename`, `remove`, `create`, ...).
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The last complete line of the log is not a valid record: the log was edited or damaged, and
    /// appending would hide that. Run `warden audit verify` and move the file aside.
    #[error("audit log {} ends with an invalid record ({detail}); refusing to append to it", path.display())]
    CorruptTail {
        /// The log file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A line of a log file is not a valid record.
    #[error("malformed audit record at {}:{line}: {detail}", path.display())]
    Malformed {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A record exceeded [`MAX_RECORD_BYTES`] after redaction.
    #[error("audit record {event:?} is {size} bytes after redaction; the limit is {limit}")]
    RecordTooLarge {
        /// The (redacted) event name.
        event: String,
        /// Its size in bytes.
        size: usize,
        /// [`MAX_RECORD_BYTES`].
        limit: usize,
    },
    /// The event name is one of the log's own (`log.*`: recovery, rotation, pruning).
    #[error("audit event {event:?} is reserved: log.* records are written by the audit log itself")]
    ReservedEvent {
        /// The (redacted) event name.
        event: String,
    },
    /// A field holds a non-integer number; the format stores integers only.
    #[error("audit field {field:?} holds a non-integer number; audit records store integers only")]
    NonInteger {
        /// The (redacted) top-level field name.
        field: String,
    },
    /// The session id could not be drawn from `/dev/urandom`.
    #[error("cannot read /dev/urandom for the audit session id: {source}")]
    Random {
        /// The cause.
        source: std::io::Error,
    },
    /// The log file was replaced over and over while we tried to lock it.
    #[error("audit log {} keeps being replaced; cannot lock the current file", path.display())]
    Unstable {
        /// The log file.
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_round_trips() {
        for m in [Fsync::Always, Fsync::Batch, Fsync::Never] {
            assert_eq!(m.to_string().parse::<Fsync>().ok(), Some(m));
        }
        assert_eq!(Fsync::default(), Fsync::Batch);
        let err = "sometimes".parse::<Fsync>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("invalid audit fsync mode \"sometimes\": expected always, batch or never"));
    }

    #[test]
    fn key_debug_is_redacted_and_lengths_are_checked() {
        let key = AuditKey::from_bytes(b"0123456789abcdef-secret").expect("valid key");
        assert_eq!(format!("{key:?}"), "AuditKey([REDACTED])");
        assert!(!format!("{:?}", AuditConfig { key: Some(key), ..AuditConfig::new("/x") }).contains("secret"));
        assert!(matches!(AuditKey::from_bytes(&[7; 15]), Err(AuditError::KeyLength { len: 15 })));
        assert!(AuditKey::from_bytes(&[7; 16]).is_ok());
        assert!(AuditKey::from_bytes(&[7; 4096]).is_ok());
        assert!(matches!(AuditKey::from_bytes(&[7; 4097]), Err(AuditError::KeyLength { len: 4097 })));
    }

    #[test]
    fn key_file_trims_one_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("key");
        std::fs::write(&p, b"0123456789abcdef\n").expect("write");
        assert_eq!(AuditKey::from_file(&p).expect("key").bytes(), b"0123456789abcdef");
        std::fs::write(&p, b"0123456789abcdef\r\n").expect("write");
        assert_eq!(AuditKey::from_file(&p).expect("key").bytes(), b"0123456789abcdef");
        std::fs::write(&p, b"0123456789abcde\n").expect("write");
        let err = AuditKey::from_file(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("holds 15 bytes"), "{err}");
        assert!(!err.contains("0123"), "the key leaked into the error: {err}");
        std::fs::write(&p, vec![b'a'; 5000]).expect("write");
        assert!(matches!(AuditKey::from_file(&p), Err(AuditError::KeyFileLength { .. })));
        let missing = AuditKey::from_file(&dir.path().join("nope")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.starts_with("cannot read audit key file "), "{missing}");
    }

    #[test]
    fn default_path_prefers_xdg_state_home() {
        let p = default_path(Some(Path::new("/s")), Some(Path::new("/h")));
        assert_eq!(p, Some(PathBuf::from("/s/warden/audit.jsonl")));
        let p = default_path(Some(Path::new("rel")), Some(Path::new("/h")));
        assert_eq!(p, Some(PathBuf::from("/h/.local/state/warden/audit.jsonl")));
        assert_eq!(
            default_path(None, Some(Path::new("/h"))),
            Some(PathBuf::from("/h/.local/state/warden/audit.jsonl"))
        );
        assert_eq!(default_path(Some(Path::new("")), None), None);
        assert_eq!(default_path(None, None), None);
    }
}
