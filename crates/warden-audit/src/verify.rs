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
//! Both ends of the chain:
//! - **Head.** The first record must be seq 1 (with the all-zero `prev`), or the chain must hold a
//!   `log.pruned` record, written by rotation before it deleted the oldest file, that names exactly
//!   the record before it: `pruned_through_seq` = first seq - 1 and `pruned_hash` = its `prev`.
//!   Otherwise the oldest records were deleted by someone else: [`Problem::HeadMissing`]. In a keyed
//!   log a `log.pruned` record cannot be forged without the key, and one naming the oldest retained
//!   file exists only once rotation has deleted the file before it, so deleting the oldest retained
//!   file is detected too.
//! - **Tail.** Records cut off the end leave a shorter chain that is intact; only a checkpoint taken
//!   earlier shows it ([`verify_with_checkpoint`]: [`Problem::ShorterThanCheckpoint`],
//!   [`Problem::DivergesFromCheckpoint`], [`Problem::BadCheckpoint`],
//!   [`Problem::CheckpointPruned`]).
//!
//! What it trusts: in an unkeyed log, whoever can rewrite every file can forge any chain, prune
//! records included; only a key, or a checkpoint kept elsewhere, resists that.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::read::{parse_line, Record};
use crate::record::{self, Chain, PRUNED_EVENT, PRUNED_HASH, PRUNED_THROUGH_SEQ, ZERO_HASH};
use crate::AuditKey;

/// Why verification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    /// The chain starts after seq 1 and no `log.pruned` record accounts for the records before it.
    HeadMissing,
    /// The log ends before the checkpoint's `seq`: records were removed from its end.
    ShorterThanCheckpoint,
    /// The record at the checkpoint's `seq` has another hash: the log was rewritten from there on
    /// (or earlier).
    DivergesFromCheckpoint,
    /// The checkpoint's mac does not fit the key: it was forged or altered.
    BadCheckpoint,
    /// The checkpoint's record was pruned by rotation and no `log.pruned` record names it, so it
    /// cannot be checked.
    CheckpointPruned,
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
            Problem::HeadMissing => "head missing",
            Problem::ShorterThanCheckpoint => "shorter than checkpoint",
            Problem::DivergesFromCheckpoint => "diverges from checkpoint",
            Problem::BadCheckpoint => "bad checkpoint",
            Problem::CheckpointPruned => "checkpoint pruned",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The file it is in (the checkpoint file for [`Problem::BadCheckpoint`]).
    pub file: PathBuf,
    /// 1-based line in `file` (0 when the file itself could not be read, or the log is empty).
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
#[non_exhaustive]
pub struct Verified {
    /// Files checked.
    pub files: usize,
    /// Records checked.
    pub records: u64,
    /// `seq` of the first record.
    pub first_seq: Option<u64>,
    /// `seq` of the last record.
    pub last_seq: Option<u64>,
    /// `hash` of the last record: what a checkpoint keeps (see [`crate::checkpoint`]).
    pub last_hash: Option<String>,
    /// Whether the chain was verified with a key (HMAC).
    pub keyed: bool,
    /// When the chain starts after seq 1: the `log.pruned` record's `pruned_through_seq` that
    /// accounts for the records before it (rotation deleted seq 1 to this one).
    pub pruned_through: Option<u64>,
    /// The checkpoint's `seq`, when one was given and matched.
    pub checkpoint: Option<u64>,
}

/// `seq` of a line, read loosely (for diagnostics only).
fn loose_seq(line: &[u8]) -> Option<u64> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    map.get("seq")?.as_u64()
}

/// Where a record is: index into the paths, 0-based line.
#[derive(Debug, Clone, Copy)]
struct At {
    file: usize,
    line: usize,
}

/// A `log.pruned` record: the records up to `through` were deleted, the last of them had `hash`.
struct Pruned {
    through: u64,
    hash: [u8; 64],
    at: At,
}

/// Verifies `paths` as one chain, oldest file first (see [`crate::read::log_files`]), including
/// its head (see the module docs). The end of the chain needs a checkpoint:
/// [`verify_with_checkpoint`].
pub fn verify_files(paths: &[PathBuf], key: Option<&AuditKey>) -> Result<Verified, Failure> {
    check(paths, key, None)
}

/// [`verify_files`], and then: the checkpoint read from `origin` must be authentic under `key`
/// (a mac exactly for keyed logs), and the log must reach its `seq` with the same `hash`. A
/// checkpoint whose record rotation has since pruned verifies only when a retained `log.pruned`
/// record names that very record (`pruned_through_seq` = its seq, with the same hash); otherwise it
/// cannot be checked and fails as [`Problem::CheckpointPruned`]: take checkpoints more often than
/// rotation deletes files.
pub fn verify_with_checkpoint(
    paths: &[PathBuf],
    key: Option<&AuditKey>,
    checkpoint: &Checkpoint,
    origin: &Path,
) -> Result<Verified, Failure> {
    check(paths, key, Some((checkpoint, origin)))
}

fn check(
    paths: &[PathBuf],
    key: Option<&AuditKey>,
    checkpoint: Option<(&Checkpoint, &Path)>,
) -> Result<Verified, Failure> {
    if let Some((cp, origin)) = checkpoint {
        cp.authentic(key).map_err(|detail| Failure {
            file: origin.to_owned(),
            line: 1,
            seq: Some(cp.seq),
            problem: Problem::BadCheckpoint,
            detail,
        })?;
    }
    let chain = Chain::new(key);
    let mut out = Verified {
        files: 0,
        records: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        keyed: key.is_some(),
        pruned_through: None,
        checkpoint: None,
    };
    // The first record; the previous record's hash, seq and place.
    let mut head: Option<Head> = None;
    let mut last: Option<([u8; 64], u64, At)> = None;
    let mut pruned: Vec<Pruned> = Vec::new();
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
            let at = At { file: fi, line: li };
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
            let hash = hex64(&rec.hash);
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
                    head = Some(Head { seq: rec.seq, prev: hex64(&rec.prev), at });
                    out.first_seq = seq;
                }
                Some((prev_hash, prev_seq, prev_at)) => {
                    if rec.prev.as_bytes() != prev_hash || rec.seq != prev_seq + 1 {
                        let (problem, detail) = classify(paths, (fi, li, &data), &rec, prev_seq, prev_at.file);
                        return Err(fail(seq, problem, detail));
                    }
                }
            }
            if rec.event == PRUNED_EVENT {
                let (through, hash) = prune_claim(&rec).map_err(|d| fail(seq, Problem::Malformed, d))?;
                pruned.push(Pruned { through, hash, at });
            }
            if let Some((cp, origin)) = checkpoint.filter(|(cp, _)| cp.seq == rec.seq) {
                if cp.hash != rec.hash {
                    return Err(fail(seq, Problem::DivergesFromCheckpoint, diverges(cp, origin, &rec.hash)));
                }
                out.checkpoint = Some(cp.seq);
            }
            last = Some((hash, rec.seq, at));
            out.records += 1;
            out.last_seq = seq;
        }
        if let Some((h, ..)) = last {
            out.last_hash = Some(String::from_utf8_lossy(&h).into_owned());
        }
    }
    if let Some(h) = head.as_ref().filter(|h| h.seq > 1) {
        out.pruned_through = Some(check_head(paths, h, &pruned)?);
    }
    if let Some((cp, origin)) = checkpoint.filter(|_| out.checkpoint.is_none()) {
        // The chain holds every seq from its first to its last record, and the scan did not meet
        // the checkpoint's: it lies past the end, or before the first retained record.
        match (last, head) {
            (Some((_, last_seq, _)), Some(h)) if last_seq >= cp.seq => {
                out.checkpoint = Some(check_pruned_checkpoint(paths, cp, origin, &h, &pruned)?);
            }
            (last, _) => return Err(shorter(paths, cp, origin, last.map(|(_, seq, at)| (seq, at)))),
        }
    }
    Ok(out)
}

/// The first record of a chain.
#[derive(Debug, Clone, Copy)]
struct Head {
    seq: u64,
    prev: [u8; 64],
    at: At,
}

/// A failure at a record.
fn at_record(paths: &[PathBuf], at: At, seq: u64, problem: Problem, detail: String) -> Failure {
    Failure { file: paths[at.file].clone(), line: at.line + 1, seq: Some(seq), problem, detail }
}

/// A chain that starts at `head.seq` > 1 needs a `log.pruned` record naming the record before it
/// (seq and hash); returns that seq.
fn check_head(paths: &[PathBuf], head: &Head, pruned: &[Pruned]) -> Result<u64, Failure> {
    let before = head.seq - 1;
    let claims: Vec<&Pruned> = pruned.iter().filter(|p| p.through == before).collect();
    match claims.last() {
        None => {
            let range = if before == 1 { "record 1 was".to_owned() } else { format!("records 1..{before} were") };
            Err(at_record(
                paths,
                head.at,
                head.seq,
                Problem::HeadMissing,
                format!(
                    "the log starts at seq {} without a log.pruned record ({range} deleted, or the files holding \
                     them were not given)",
                    head.seq
                ),
            ))
        }
        Some(p) if !claims.iter().any(|c| c.hash == head.prev) => Err(at_record(
            paths,
            head.at,
            head.seq,
            Problem::BrokenLink,
            format!(
                "does not continue the pruned log: the log.pruned record at {}:{} says seq {before} had another \
                 hash than this record's prev",
                paths[p.at.file].display(),
                p.at.line + 1
            ),
        )),
        Some(_) => Ok(before),
    }
}

/// A checkpoint older than the first retained record: verifiable only through a `log.pruned` record
/// that names it. Returns its seq.
fn check_pruned_checkpoint(
    paths: &[PathBuf],
    cp: &Checkpoint,
    origin: &Path,
    head: &Head,
    pruned: &[Pruned],
) -> Result<u64, Failure> {
    match pruned.iter().find(|p| p.through == cp.seq) {
        Some(p) if p.hash[..] == *cp.hash.as_bytes() => Ok(cp.seq),
        Some(p) => Err(at_record(
            paths,
            p.at,
            p.through + 1,
            Problem::DivergesFromCheckpoint,
            diverges(cp, origin, &String::from_utf8_lossy(&p.hash)),
        )),
        None => Err(at_record(
            paths,
            head.at,
            head.seq,
            Problem::CheckpointPruned,
            format!(
                "checkpoint {} is at seq {}, but the log now starts at seq {}: rotation pruned that record and no \
                 log.pruned record names it, so it cannot be checked (take a newer checkpoint: warden audit head)",
                origin.display(),
                cp.seq,
                head.seq
            ),
        )),
    }
}

/// The log ends (at `last`: seq and place; `None`: no records) before the checkpoint.
fn shorter(paths: &[PathBuf], cp: &Checkpoint, origin: &Path, last: Option<(u64, At)>) -> Failure {
    let from = last.map_or(1, |(seq, _)| seq + 1);
    let removed = if from == cp.seq { format!("seq {from} was") } else { format!("seq {from}..{} were", cp.seq) };
    let detail = |ends: String| {
        format!(
            "the log {ends}, before checkpoint {} at seq {}: {removed} removed from its end (or the newest file was \
             deleted)",
            origin.display(),
            cp.seq
        )
    };
    match last {
        Some((seq, at)) => {
            at_record(paths, at, seq, Problem::ShorterThanCheckpoint, detail(format!("ends at seq {seq}")))
        }
        None => Failure {
            file: paths.last().cloned().unwrap_or_else(|| origin.to_owned()),
            line: 0,
            seq: None,
            problem: Problem::ShorterThanCheckpoint,
            detail: detail("holds no records".to_owned()),
        },
    }
}

/// The detail of a [`Problem::DivergesFromCheckpoint`].
fn diverges(cp: &Checkpoint, origin: &Path, found: &str) -> String {
    format!(
        "checkpoint {} says seq {} has hash {}, the log's record has {}: the log was rewritten at or before \
         this record",
        origin.display(),
        cp.seq,
        &cp.hash[..16],
        &found[..found.len().min(16)]
    )
}

/// A parsed hash field (already checked to be 64 hex digits by [`parse_line`]).
fn hex64(s: &str) -> [u8; 64] {
    let mut h = [0u8; 64];
    if s.len() == 64 {
        h.copy_from_slice(s.as_bytes());
    }
    h
}

/// `pruned_through_seq` and `pruned_hash` of a `log.pruned` record, which must name an earlier
/// record.
fn prune_claim(rec: &Record) -> Result<(u64, [u8; 64]), String> {
    let through = rec
        .fields
        .get(PRUNED_THROUGH_SEQ)
        .and_then(serde_json::Value::as_u64)
        .filter(|&t| t >= 1 && t < rec.seq)
        .ok_or_else(|| format!("{PRUNED_EVENT} needs an integer {PRUNED_THROUGH_SEQ} from 1 to its own seq - 1"))?;
    let hash = rec
        .fields
        .get(PRUNED_HASH)
        .and_then(serde_json::Value::as_str)
        .filter(|h| record::is_hash_hex(h.as_bytes()))
        .ok_or_else(|| format!("{PRUNED_EVENT} needs {PRUNED_HASH} as 64 lowercase hex digits"))?;
    Ok((through, hex64(hash)))
}

/// Names a link failure at `rec` (line `li` of file `fi`), which should have been `prev_seq + 1`.
fn classify(
    paths: &[PathBuf],
    (fi, li, data): (usize, usize, &[u8]),
    rec: &Record,
    prev_seq: u64,
    pfi: usize,
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
            Verified {
                files: 0,
                records: 0,
                first_seq: None,
                last_seq: None,
                last_hash: None,
                keyed: false,
                pruned_through: None,
                checkpoint: None
            }
        );
    }
}
