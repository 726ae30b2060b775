//! Both ends of the chain: a deleted head is "head missing" unless rotation's `log.pruned` record
//! accounts for it; a cut or replaced tail is caught by a checkpoint taken earlier.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use warden_audit::checkpoint::Checkpoint;
use warden_audit::read::read_file;
use warden_audit::verify::{verify_files, verify_with_checkpoint, Failure, Problem, Verified};
use warden_audit::{AuditConfig, AuditKey, AuditLog};

use crate::{both_modes, cfg, lines, map, mode_name, pruned_log, pruned_log_in, test_key, write_lines, write_log};

const N: u64 = 10;

fn one(path: &Path) -> Vec<PathBuf> {
    vec![path.to_owned()]
}

fn fail(paths: &[PathBuf], key: Option<&AuditKey>) -> Failure {
    match verify_files(paths, key) {
        Ok(v) => panic!("tampering went undetected: {v:?}"),
        Err(f) => f,
    }
}

/// A fresh log of [`N`] records in `dir`, named after the mode.
fn fresh_log(dir: &Path, key: &Option<AuditKey>) -> PathBuf {
    write_log(dir, &format!("{}.jsonl", mode_name(key)), N, key.clone())
}

/// The checkpoint of an intact log's last record, written to `dir/name`.
fn checkpoint(dir: &Path, name: &str, paths: &[PathBuf], key: Option<&AuditKey>) -> (Checkpoint, PathBuf) {
    let v = verify_files(paths, key).unwrap_or_else(|f| panic!("{f}"));
    let cp = Checkpoint::new(v.last_seq.expect("records"), v.last_hash.as_deref().expect("records"), key);
    let file = dir.join(name);
    std::fs::write(&file, format!("{}\n", cp.to_json())).expect("write checkpoint");
    assert_eq!(Checkpoint::read(&file).ok().as_ref(), Some(&cp));
    (cp, file)
}

/// A [`fresh_log`] and the checkpoint of its last record.
fn checkpointed_log(dir: &Path, key: &Option<AuditKey>) -> (PathBuf, Checkpoint, PathBuf) {
    let path = fresh_log(dir, key);
    let (cp, origin) = checkpoint(dir, &format!("{}.cp.json", mode_name(key)), &one(&path), key.as_ref());
    (path, cp, origin)
}

fn with_cp(paths: &[PathBuf], key: Option<&AuditKey>, cp: &Checkpoint, origin: &Path) -> Result<Verified, Failure> {
    verify_with_checkpoint(paths, key, cp, origin)
}

fn cp_fail(paths: &[PathBuf], key: Option<&AuditKey>, cp: &Checkpoint, origin: &Path) -> Failure {
    match with_cp(paths, key, cp, origin) {
        Ok(v) => panic!("checkpoint seq {} did not catch it: {v:?}", cp.seq),
        Err(f) => f,
    }
}

/// A record line as someone who writes the file would forge it: chained after `prev`, hashed with
/// plain SHA-256, or with HMAC under `key` (the attacker's guess) and marked keyed.
fn forged(seq: u64, prev: &str, event: &str, fields: &str, key: Option<&[u8]>) -> Vec<u8> {
    let k = if key.is_some() { "\"k\":1," } else { "" };
    let canonical = format!(
        "{{\"v\":1,{k}\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00.000Z\",\"session\":\"0000000000000000\",\
         \"event\":\"{event}\",{fields},\"prev\":\"{prev}\"}}"
    );
    let digest: Vec<u8> = match key {
        None => Sha256::digest(format!("{prev}{canonical}")).to_vec(),
        Some(k) => {
            let mut m = Hmac::<Sha256>::new_from_slice(k).expect("any key length");
            m.update(prev.as_bytes());
            m.update(canonical.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    let hash: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{},\"hash\":\"{hash}\"}}\n", &canonical[..canonical.len() - 1]).into_bytes()
}

#[test]
fn deleting_the_first_records_is_head_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        let path = fresh_log(dir.path(), &key);
        let original = lines(&path);
        write_lines(&path, &original[1..]);
        let f = fail(&one(&path), key.as_ref());
        assert_eq!((f.problem, f.line, f.seq), (Problem::HeadMissing, 1, Some(2)), "{f}");
        assert_eq!(
            f.to_string(),
            format!(
                "{}:1: seq 2: head missing: the log starts at seq 2 without a log.pruned record (record 1 was \
                 deleted, or the files holding them were not given)",
                path.display()
            )
        );
        write_lines(&path, &original[3..]);
        let f = fail(&one(&path), key.as_ref());
        assert_eq!((f.problem, f.seq), (Problem::HeadMissing, Some(4)), "{f}");
        assert!(f.detail.contains("records 1..3 were deleted"), "{f}");
        // The next writer continues the shortened chain; the head stays missing.
        let mut log = AuditLog::open(AuditConfig { key: key.clone(), ..cfg(&path) }).expect("open");
        assert_eq!(log.append("after", serde_json::Map::new()).expect("append"), N + 1);
        drop(log);
        assert_eq!(fail(&one(&path), key.as_ref()).problem, Problem::HeadMissing);
        // Intact again, for comparison.
        write_lines(&path, &original);
        verify_files(&one(&path), key.as_ref()).expect("intact");
    }
}

#[test]
fn a_log_pruned_by_rotation_verifies_from_its_prune_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pruned_log(dir.path(), None);
    let v = verify_files(&files, None).expect("verifies");
    let first = &read_file(&files[0]).expect("read")[0];
    assert_eq!(v.first_seq, Some(first.seq));
    assert_eq!(v.pruned_through, Some(first.seq - 1));
    // The record that accounts for the head: in the newest rotated file, naming the file deleted.
    let pruned = read_file(&files[1]).expect("read").pop().expect("records");
    assert_eq!(pruned.event, "log.pruned");
    assert_eq!(pruned.fields.get("pruned_through_seq"), Some(&serde_json::Value::from(first.seq - 1)));
    assert_eq!(pruned.fields.get("pruned_hash"), Some(&serde_json::Value::from(first.prev.as_str())));
    assert_eq!(pruned.fields.get("pruned_file"), Some(&serde_json::Value::from("audit.jsonl.2")));
    // Without the file that holds it (e.g. only the live file given), the head is unaccounted for.
    let f = fail(&files[2..], None);
    assert_eq!((f.problem, &f.file, f.line), (Problem::HeadMissing, &files[2], 1), "{f}");
}

/// A [`pruned_log_in`] whose oldest retained file was deleted: all its files, and those left.
fn without_oldest_file(dir: &Path, key: &Option<AuditKey>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let files = pruned_log_in(dir, key);
    std::fs::remove_file(&files[0]).expect("delete the oldest file");
    let kept = files[1..].to_vec();
    (files, kept)
}

#[test]
fn deleting_the_oldest_retained_file_is_head_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        let (files, kept) = without_oldest_file(dir.path(), &key);
        let f = fail(&kept, key.as_ref());
        let head = read_file(&files[1]).expect("read")[0].seq;
        assert_eq!((f.problem, &f.file, f.line, f.seq), (Problem::HeadMissing, &files[1], 1, Some(head)), "{f}");
        assert!(f.detail.contains(&format!("records 1..{} were deleted", head - 1)), "{f}");
        // Also when only the first record of the oldest file goes.
        let l = lines(&files[1]);
        write_lines(&files[1], &l[1..]);
        assert_eq!(fail(&kept, key.as_ref()).problem, Problem::HeadMissing);
    }
}

/// The `hash` of a line made by [`forged`].
fn hash_of(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[line.len() - 67..line.len() - 3]).into_owned()
}

#[test]
fn a_prune_record_must_name_the_heads_prev() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.jsonl");
    let prev = "c".repeat(64);
    let head = forged(5, &prev, "tick", "\"i\":0", None);
    for (named, ok) in [(prev.clone(), true), ("d".repeat(64), false)] {
        let fields = format!("\"pruned_file\":\"a.jsonl.1\",\"pruned_hash\":\"{named}\",\"pruned_through_seq\":4");
        let pruned = forged(6, &hash_of(&head), "log.pruned", &fields, None);
        let tail = forged(7, &hash_of(&pruned), "tick", "\"i\":1", None);
        write_lines(&path, &[head.clone(), pruned, tail]);
        if ok {
            let v = verify_files(&one(&path), None).expect("accounted for");
            assert_eq!((v.first_seq, v.pruned_through), (Some(5), Some(4)));
            continue;
        }
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line, f.seq), (Problem::BrokenLink, 1, Some(5)), "{f}");
        assert!(f.detail.contains(&format!("the log.pruned record at {}:2 says seq 4", path.display())), "{f}");
    }
    // A prune record naming an older seq does not account for this head.
    let fields = format!("\"pruned_file\":\"a.jsonl.1\",\"pruned_hash\":\"{prev}\",\"pruned_through_seq\":3");
    let pruned = forged(6, &hash_of(&head), "log.pruned", &fields, None);
    write_lines(&path, &[head.clone(), pruned]);
    assert_eq!(fail(&one(&path), None).problem, Problem::HeadMissing);
}

#[test]
fn a_forged_prune_record_fails_in_a_keyed_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        // Delete the oldest file, then append a log.pruned record that accounts for it.
        let (files, kept) = without_oldest_file(dir.path(), &key);
        let head = read_file(&files[1]).expect("read").remove(0);
        let last = read_file(&files[2]).expect("read").pop().expect("records");
        let fields = format!(
            "\"pruned_file\":\"audit.jsonl.2\",\"pruned_hash\":\"{}\",\"pruned_through_seq\":{}",
            head.prev,
            head.seq - 1
        );
        let attacker_key: Option<&[u8]> = key.as_ref().map(|_| &b"the attacker's guess at the key"[..]);
        let mut l = lines(&files[2]);
        l.push(forged(last.seq + 1, &last.hash, "log.pruned", &fields, attacker_key));
        write_lines(&files[2], &l);
        match key {
            // Unkeyed, whoever rewrites the files can forge any chain (documented): the forgery
            // is a well-formed prune record, so the keyed case below fails for the key alone.
            None => {
                let v = verify_files(&kept, None).expect("an unkeyed forgery verifies");
                assert_eq!(v.pruned_through, Some(head.seq - 1));
            }
            Some(ref k) => {
                let f = fail(&kept, Some(k));
                assert_eq!((f.problem, &f.file, f.seq), (Problem::Modified, &files[2], Some(last.seq + 1)), "{f}");
                // Moving a genuine prune record does not help either: it is chained where it was.
                let genuine = lines(&files[1]).pop().expect("line");
                let n = l.len();
                l[n - 1] = genuine;
                write_lines(&files[2], &l);
                let f = fail(&kept, Some(k));
                assert!(matches!(f.problem, Problem::Duplicated | Problem::Reordered | Problem::BrokenLink), "{f}");
            }
        }
    }
}

#[test]
fn a_malformed_prune_record_is_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", 3, None);
    let last = read_file(&path).expect("read").pop().expect("records");
    for fields in [
        "\"pruned_hash\":\"00\",\"pruned_through_seq\":1".to_owned(),
        format!("\"pruned_hash\":\"{}\"", "a".repeat(64)),
        format!("\"pruned_hash\":\"{}\",\"pruned_through_seq\":4", "a".repeat(64)),
        format!("\"pruned_hash\":\"{}\",\"pruned_through_seq\":0", "a".repeat(64)),
    ] {
        let mut l = lines(&path)[..3].to_vec();
        l.push(forged(4, &last.hash, "log.pruned", &fields, None));
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line, f.seq), (Problem::Malformed, 4, Some(4)), "{fields}: {f}");
    }
}

#[test]
fn a_checkpoint_of_an_intact_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        let (path, cp, origin) = checkpointed_log(dir.path(), &key);
        assert_eq!((cp.seq, cp.mac.is_some()), (N, key.is_some()));
        let v = with_cp(&one(&path), key.as_ref(), &cp, &origin).expect("the checkpoint matches");
        assert_eq!(v.checkpoint, Some(N));
        // The log grows; the old checkpoint still holds.
        let mut log = AuditLog::open(AuditConfig { key: key.clone(), ..cfg(&path) }).expect("open");
        log.append("later", serde_json::Map::new()).expect("append");
        drop(log);
        assert_eq!(with_cp(&one(&path), key.as_ref(), &cp, &origin).expect("still matches").checkpoint, Some(N));
    }
}

#[test]
fn truncating_the_newest_records_is_shorter_than_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        let (path, cp, origin) = checkpointed_log(dir.path(), &key);
        let original = lines(&path);
        write_lines(&path, &original[..N as usize - 3]);
        verify_files(&one(&path), key.as_ref()).expect("without the checkpoint, a shorter chain verifies");
        let f = cp_fail(&one(&path), key.as_ref(), &cp, &origin);
        assert_eq!((f.problem, f.line, f.seq), (Problem::ShorterThanCheckpoint, N as usize - 3, Some(N - 3)), "{f}");
        assert_eq!(
            f.detail,
            format!(
                "the log ends at seq {}, before checkpoint {} at seq {N}: seq {}..{N} were removed from its end (or \
                 the newest file was deleted)",
                N - 3,
                origin.display(),
                N - 2
            )
        );
        write_lines(&path, &original[..N as usize - 1]);
        assert!(cp_fail(&one(&path), key.as_ref(), &cp, &origin).detail.contains(&format!("seq {N} was removed")));
        write_lines(&path, &[]);
        let f = cp_fail(&one(&path), key.as_ref(), &cp, &origin);
        assert_eq!((f.problem, f.line, f.seq), (Problem::ShorterThanCheckpoint, 0, None), "{f}");
        assert!(f.detail.contains("the log holds no records"), "{f}");
    }
}

#[test]
fn deleting_the_newest_file_is_shorter_than_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pruned_log(dir.path(), Some(test_key()));
    let (cp, origin) = checkpoint(dir.path(), "cp.json", &files, Some(&test_key()));
    let f = cp_fail(&files[..2], Some(&test_key()), &cp, &origin);
    assert_eq!((f.problem, &f.file), (Problem::ShorterThanCheckpoint, &files[1]), "{f}");
    assert!(f.detail.contains(&format!("checkpoint {} at seq {}", origin.display(), cp.seq)), "{f}");
}

#[test]
fn replacing_the_tail_diverges_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    for key in both_modes() {
        let (path, cp, origin) = checkpointed_log(dir.path(), &key);
        // Cut the last three records, then let a writer (holding the key, if any) write new ones
        // with the same seqs: an intact chain, but not the one the checkpoint saw.
        write_lines(&path, &lines(&path)[..N as usize - 3]);
        let mut log = AuditLog::open(AuditConfig { key: key.clone(), ..cfg(&path) }).expect("open");
        for i in 0..4 {
            log.append("replacement", map(serde_json::json!({ "i": i }))).expect("append");
        }
        drop(log);
        verify_files(&one(&path), key.as_ref()).expect("the replaced chain is intact on its own");
        let f = cp_fail(&one(&path), key.as_ref(), &cp, &origin);
        assert_eq!((f.problem, f.line, f.seq), (Problem::DivergesFromCheckpoint, N as usize, Some(N)), "{f}");
        assert!(f.detail.contains(&format!("says seq {N} has hash {}", &cp.hash[..16])), "{f}");
    }
}

/// `hex` with its first digit changed.
fn flip_first(hex: &str) -> String {
    let first = if hex.starts_with('0') { "1" } else { "0" };
    format!("{first}{}", &hex[1..])
}

#[test]
fn a_forged_checkpoint_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key();
    let path = write_log(dir.path(), "k.jsonl", N, Some(key.clone()));
    let (cp, _) = checkpoint(dir.path(), "cp.json", &one(&path), Some(&key));
    // The log is cut to 7 records; the attacker offers a checkpoint that fits the short log.
    let short = write_log(dir.path(), "short.jsonl", 7, Some(key.clone()));
    let v = verify_files(&one(&short), Some(&key)).expect("intact");
    let fits = Checkpoint { seq: 7, hash: v.last_hash.clone().expect("records"), mac: None };
    let cases = [
        (Checkpoint { mac: cp.mac.as_deref().map(flip_first), ..cp.clone() }, "does not verify"),
        (Checkpoint { seq: 7, hash: fits.hash.clone(), ..cp.clone() }, "does not verify"),
        (Checkpoint { mac: Some("0".repeat(64)), ..fits.clone() }, "does not verify"),
        (fits.clone(), "has no mac"),
    ];
    for (forged, why) in cases {
        let origin = dir.path().join("forged.json");
        std::fs::write(&origin, forged.to_json()).expect("write");
        let read = Checkpoint::read(&origin).expect("well-formed");
        let f = cp_fail(&one(&short), Some(&key), &read, &origin);
        assert_eq!((f.problem, &f.file, f.seq), (Problem::BadCheckpoint, &origin, Some(forged.seq)), "{f}");
        assert!(f.detail.contains(why), "{why}: {f}");
    }
    // The genuine checkpoint still catches the short log; and an unkeyed check refuses a mac.
    assert_eq!(cp_fail(&one(&short), Some(&key), &cp, &path).problem, Problem::ShorterThanCheckpoint);
    let plain = write_log(dir.path(), "p.jsonl", 3, None);
    let f = cp_fail(&one(&plain), None, &cp, &path);
    assert!(f.problem == Problem::BadCheckpoint && f.detail.contains("pass its key"), "{f}");
}

#[test]
fn a_checkpoint_older_than_the_retained_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = test_key();
    let files = pruned_log(dir.path(), Some(key.clone()));
    let v = verify_files(&files, Some(&key)).expect("verifies");
    let first = v.first_seq.expect("records");
    // Exactly the last pruned record: the log.pruned record vouches for it.
    let pruned = read_file(&files[0]).expect("read")[0].prev.clone();
    let at_boundary = Checkpoint::new(first - 1, &pruned, Some(&key));
    let origin = dir.path().join("cp.json");
    let v = with_cp(&files, Some(&key), &at_boundary, &origin).expect("named by log.pruned");
    assert_eq!(v.checkpoint, Some(first - 1));
    let wrong = Checkpoint::new(first - 1, &"e".repeat(64), Some(&key));
    let f = cp_fail(&files, Some(&key), &wrong, &origin);
    assert_eq!((f.problem, &f.file), (Problem::DivergesFromCheckpoint, &files[1]), "{f}");
    // Older still: no retained record names it, so it cannot be checked.
    let older = Checkpoint::new(2, &"e".repeat(64), Some(&key));
    let f = cp_fail(&files, Some(&key), &older, &origin);
    assert_eq!((f.problem, &f.file, f.line, f.seq), (Problem::CheckpointPruned, &files[0], 1, Some(first)), "{f}");
    assert!(f.detail.contains("is at seq 2"), "{f}");
}
