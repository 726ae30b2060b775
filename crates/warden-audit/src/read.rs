//! Reading audit log files: finding the rotated files of a log and parsing records.
//!
//! Parsing checks the shape of a record (header fields, integer `seq`, hex `prev`/`hash` at the
//! very end of the line) but not the chain: that is [`crate::verify`]'s job.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::record;
use crate::AuditError;

/// One parsed line of an audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Format version (1).
    pub v: u64,
    /// Sequence number, from 1, +1 per record across rotated files.
    pub seq: u64,
    /// RFC 3339 UTC timestamp with milliseconds.
    pub ts: String,
    /// The writing process's session id.
    pub session: String,
    /// Event name, e.g. `run.start`.
    pub event: String,
    /// The event's fields (everything but the header and trailer keys).
    pub fields: Map<String, Value>,
    /// Hash of the previous record (64 hex digits).
    pub prev: String,
    /// This record's hash (64 hex digits).
    pub hash: String,
    /// The line as written, without its newline.
    pub raw: String,
    /// Whether the record is chained with HMAC (it carries `"k":1`).
    pub keyed: bool,
}

/// The files of the log at `path`, in chain order: the rotated ones oldest first (`path.N` down
/// to `path.1`), then `path`. Only files that exist are listed.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = numbered(path).into_iter().rev().map(|(_, p)| p).collect();
    if path.is_file() {
        files.push(path.to_owned());
    }
    files
}

/// The rotated files `path.N` that exist, by ascending N.
pub(crate) fn numbered(path: &Path) -> Vec<(u32, PathBuf)> {
    let (Some(name), dir) = (path.file_name().and_then(|n| n.to_str()), path.parent()) else {
        return Vec::new();
    };
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file_name = e.file_name();
            let suffix = file_name.to_str()?.strip_prefix(name)?.strip_prefix('.')?;
            if suffix.is_empty() || suffix.starts_with('0') || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = suffix.parse::<u32>().ok()?;
            Some((n, path.with_file_name(file_name)))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    out
}

/// Parses every line of one log file. A line that is not a record, or a last line without its
/// newline, is an error naming the file and line.
pub fn read_file(path: &Path) -> Result<Vec<Record>, AuditError> {
    let data = std::fs::read(path).map_err(|source| AuditError::Read { path: path.to_owned(), source })?;
    let mut out = Vec::new();
    for (i, segment) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let malformed = |detail: String| AuditError::Malformed { path: path.to_owned(), line: i + 1, detail };
        let Some(line) = segment.strip_suffix(b"\n") else {
            return Err(malformed("the last line is cut off (no newline)".to_owned()));
        };
        out.push(parse_line(line).map_err(malformed)?);
    }
    Ok(out)
}

/// Parses one line (without its newline), e.g. one read by `tail -f`. The error says what is wrong.
/// Only the shape is checked, not the hash.
pub fn parse_line(line: &[u8]) -> Result<Record, String> {
    let raw = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let Some((prev_end, hash_end)) = record::trailer(line) else {
        return Err("does not end with \"prev\" and \"hash\" (64 hex digits each)".to_owned());
    };
    let mut map: Map<String, Value> = serde_json::from_str(raw).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut take_str = |k: &str| match map.remove(k) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("missing string field {k:?}")),
    };
    let ts = take_str("ts")?;
    let session = take_str("session")?;
    let event = take_str("event")?;
    let prev = take_str("prev")?;
    let hash = take_str("hash")?;
    if prev.as_bytes() != prev_end || hash.as_bytes() != hash_end {
        return Err("\"prev\" or \"hash\" appears twice".to_owned());
    }
    let v = map.remove("v").and_then(|v| v.as_u64()).ok_or("missing integer field \"v\"")?;
    if v != 1 {
        return Err(format!("unsupported format version {v}"));
    }
    let seq = map.remove("seq").and_then(|v| v.as_u64()).ok_or("missing integer field \"seq\"")?;
    let keyed = match map.remove("k") {
        None => false,
        Some(k) if k.as_u64() == Some(1) => true,
        Some(_) => return Err("field \"k\" is not 1".to_owned()),
    };
    Ok(Record { v, seq, ts, session, event, fields: map, prev, hash, raw: raw.to_owned(), keyed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_rotated_files_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("audit.jsonl");
        for name in
            ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.10", "audit.jsonl.x", "audit.jsonl.01"]
        {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        let names: Vec<String> =
            log_files(&p).iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["audit.jsonl.10", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]);
        assert!(log_files(&dir.path().join("none.jsonl")).is_empty());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.jsonl");
        std::fs::write(&p, b"{\"v\":1}\n").expect("write");
        let err = read_file(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with(&format!("malformed audit record at {}:1: ", p.display())), "{err}");
        std::fs::write(&p, b"").expect("write");
        assert_eq!(read_file(&p).ok(), Some(vec![]));
    }
}
