//! Verifying a chain of audit log files.
//!
//! Checks, record by record in chain order: that the line is a record ([`Problem::Malformed`]),
//! that it ends with a newline ([`Problem::Truncated`]), that it is keyed exactly when a key is
//! given ([`Problem::BadKey`]), that its hash matches its own bytes ([`Problem::Modified`]; the first
//! mismatch of a keyed log is [`Problem::BadKey`], since a wrong key and an edited first record look
//! alike), and that it follows the previous record: `prev` equals the previous hash and `seq` is one
//! more (else [`Problem::Missing`], [`Problem::Reordered`], [`Problem::Duplicated`] or
//! [`Problem::BrokenLink`]).
//!
//! What it cannot see: records removed from the end of the newest file, or from the start of the
//! oldest file given (its first `prev` is taken as the anchor, since rotation drops old files).
//! Keep the last hash somewhere else to detect those.

use std::fmt;
use std::path::PathBuf;

use crate::read::parse_line;
use crate::record::{self, Chain, ZERO_HASH};
use crate::AuditKey;

/// Why verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A record's bytes do not match its hash.
    Modified,
    /// Records are missing before this one (or a file could not be read).
    Missing,
    /// Records are out of order.
    Reordered,
    /// The last line is cut off (no newline).
    Truncated,
    /// A record appears twice (or a `seq` was used twice).
    Duplicated,
    /// The log is keyed and no key or the wrong key was given, or a key was given for an unkeyed log.
    BadKey,
    /// A line is not a valid record.
    Malformed,
    /// A record does not follow the previous one (its `prev` is wrong, or a file does not continue
    /// the file before it).
    BrokenLink,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Modified => "modified",
            Problem::Missing => "missing",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::Duplicated => "duplicated",
            Problem::BadKey => "bad key",
            Problem::Malformed => "malformed",
            Problem::BrokenLink => "broken link",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file it is in.
    pub file: PathBuf,
    /// 1-based line in `file` (0 when the file itself could not be read).
    pub line: usize,
    /// The `seq` of the record on that line, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
    /// Details for people, e.g. which records are missing.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, "seq {seq}: ")?;
        }
        write!(f, "{}: {}", self.problem, self.detail)
    }
}

impl std::error::Error for Failure {}

/// What an intact chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record.
    pub first_seq: Option<u64>,
    /// `seq` of the last record.
    pub last_seq: Option<u64>,
    /// `hash` of the last record: an anchor to keep elsewhere (see the module docs).
    pub last_hash: Option<String>,
    /// Whether the chain was verified with a key (HMAC).
    pub keyed: bool,
}

/// `seq` of a line, read loosely (for diagnostics only).
fn loose_seq(line: &[u8]) -> Option<u64> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    map.get("seq")?.as_u64()
}

/// Verifies `paths` as one chain, oldest file first (see [`crate::read::log_files`]).
pub fn verify_files(paths: &[PathBuf], key: Option<&AuditKey>) -> Result<Verified, Failure> {
    let chain = Chain::new(key);
    let mut out =
        Verified { files: 0, records: 0, first_seq: None, last_seq: None, last_hash: None, keyed: key.is_some() };
    // The previous record's hash and seq, where it was.
    let mut last: Option<([u8; 64], u64, usize, usize)> = None;
    for (fi, path) in paths.iter().enumerate() {
        let data = std::fs::read(path).map_err(|e| Failure {
            file: path.clone(),
            line: 0,
            seq: None,
            problem: Problem::Missing,
            detail: format!("cannot read the file: {e}"),
        })?;
        out.files += 1;
        for (li, segment) in data.split_inclusive(|&b| b == b'\n').enumerate() {
            let fail = |seq: Option<u64>, problem: Problem, detail: String| Failure {
                file: path.clone(),
                line: li + 1,
                seq,
                problem,
                detail,
            };
            let Some(line) = segment.strip_suffix(b"\n") else {
                return Err(fail(
                    loose_seq(segment),
                    Problem::Truncated,
                    format!("the last line is cut off after {} bytes (no newline)", segment.len()),
                ));
            };
            let rec = parse_line(line).map_err(|d| fail(loose_seq(line), Problem::Malformed, d))?;
            let seq = Some(rec.seq);
            if rec.keyed != chain.keyed() {
                let detail = if rec.keyed {
                    "the log is keyed; pass the key (--audit-key-file)"
                } else {
                    "a key was given but this record is not keyed"
                };
                return Err(fail(seq, Problem::BadKey, detail.to_owned()));
            }
            let computed = record::recompute(&chain, line);
            if computed.as_ref().map(|h| &h[..]) != Some(rec.hash.as_bytes()) {
                return Err(if chain.keyed() && out.records == 0 {
                    fail(
                        seq,
                        Problem::BadKey,
                        "the hash does not match under this key (wrong key, or the record was modified)".to_owned(),
                    )
                } else {
                    fail(seq, Problem::Modified, "the record's bytes do not match its hash".to_owned())
                });
            }
            match last {
                None => {
                    let genesis = rec.prev.as_bytes() == ZERO_HASH;
                    if genesis != (rec.seq == 1) {
                        return Err(fail(
                            seq,
                            Problem::BrokenLink,
                            "only the first record (seq 1) may have an all-zero prev".to_owned(),
                        ));
                    }
                    out.first_seq = seq;
                }
                Some((hash, prev_seq, pfi, pli)) => {
                    if rec.prev.as_bytes() != hash || rec.seq != prev_seq + 1 {
                        let (problem, detail) = classify(paths, (fi, li, &data), &rec, prev_seq, (pfi, pli));
                        return Err(fail(seq, problem, detail));
                    }
                }
            }
            let mut h = [0u8; 64];
            h.copy_from_slice(rec.hash.as_bytes());
            last = Some((h, rec.seq, fi, li));
            out.records += 1;
            out.last_seq = seq;
        }
        if let Some((h, ..)) = last {
            out.last_hash = Some(String::from_utf8_lossy(&h).into_owned());
        }
    }
    Ok(out)
}

/// Names a link failure at `rec` (line `li` of file `fi`), which should have been `prev_seq + 1`.
fn classify(
    paths: &[PathBuf],
    (fi, li, data): (usize, usize, &[u8]),
    rec: &crate::read::Record,
    prev_seq: u64,
    (pfi, _pli): (usize, usize),
) -> (Problem, String) {
    let expected = prev_seq + 1;
    if fi != pfi {
        return (
            Problem::BrokenLink,
            format!(
                "{} does not continue {}: expected seq {expected} chained to seq {prev_seq}, found seq {}",
                paths[fi].display(),
                paths[pfi].display(),
                rec.seq
            ),
        );
    }
    if rec.seq == expected {
        return (Problem::BrokenLink, format!("prev is not the hash of seq {prev_seq}"));
    }
    if rec.seq > expected {
        if appears_later(paths, fi, li, data, expected) {
            return (Problem::Reordered, format!("seq {} comes before seq {expected}", rec.seq));
        }
        let range =
            if rec.seq - 1 == expected { format!("{expected}") } else { format!("{expected} to {}", rec.seq - 1) };
        return (Problem::Missing, format!("seq {range} missing before this record"));
    }
    match find_earlier(paths, fi, li, data, rec.seq) {
        Some((file, line, same)) if same => {
            (Problem::Duplicated, format!("the same record is at {}:{line}", file.display()))
        }
        Some((file, line, _)) => (
            Problem::Duplicated,
            format!("seq {} was already used by a different record at {}:{line}", rec.seq, file.display()),
        ),
        None => (Problem::Reordered, format!("seq {} comes after seq {prev_seq}", rec.seq)),
    }
}

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n').map(|s| s.strip_suffix(b"\n").unwrap_or(s))
}

/// Whether a record with `seq` follows line `li` of file `fi`.
fn appears_later(paths: &[PathBuf], fi: usize, li: usize, data: &[u8], seq: u64) -> bool {
    if lines(data).skip(li + 1).any(|l| loose_seq(l) == Some(seq)) {
        return true;
    }
    paths[fi + 1..].iter().any(|p| std::fs::read(p).is_ok_and(|d| lines(&d).any(|l| loose_seq(l) == Some(seq))))
}

/// Where a record with `seq` appears before line `li` of file `fi`, and whether it is the same line.
fn find_earlier(paths: &[PathBuf], fi: usize, li: usize, data: &[u8], seq: u64) -> Option<(PathBuf, usize, bool)> {
    let current: Vec<&[u8]> = lines(data).collect();
    let this = current.get(li).copied().unwrap_or_default();
    for (i, p) in paths[..fi].iter().enumerate() {
        let Ok(d) = std::fs::read(p) else { continue };
        let pos = lines(&d).position(|l| loose_seq(l) == Some(seq));
        if let Some(n) = pos {
            let same = lines(&d).nth(n) == Some(this);
            return Some((paths[i].clone(), n + 1, same));
        }
    }
    let n = current[..li].iter().position(|l| loose_seq(l) == Some(seq))?;
    Some((paths[fi].clone(), n + 1, current[n] == this))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn problems_display_as_short_phrases() {
        assert_eq!(Problem::BadKey.to_string(), "bad key");
        assert_eq!(Problem::BrokenLink.to_string(), "broken link");
        let f = Failure {
            file: Path::new("/l").to_owned(),
            line: 3,
            seq: Some(7),
            problem: Problem::Missing,
            detail: "seq 5 to 6 missing before this record".to_owned(),
        };
        assert_eq!(f.to_string(), "/l:3: seq 7: missing: seq 5 to 6 missing before this record");
    }

    #[test]
    fn empty_input_verifies() {
        let v = verify_files(&[], None).expect("nothing to check");
        assert_eq!(
            v,
            Verified { files: 0, records: 0, first_seq: None, last_seq: None, last_hash: None, keyed: false }
        );
    }
}
