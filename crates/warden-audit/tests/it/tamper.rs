//! Every kind of tampering is detected, naming the first bad record and the right problem.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use warden_audit::read::{log_files, read_file};
use warden_audit::verify::{verify_files, Failure, Problem};
use warden_audit::{AuditConfig, AuditKey, AuditLog};

use crate::{cfg, lines, map, test_key, write_lines, write_log};

const N: u64 = 10;

fn fail(paths: &[PathBuf], key: Option<&AuditKey>) -> Failure {
    match verify_files(paths, key) {
        Ok(v) => panic!("tampering went undetected: {v:?}"),
        Err(f) => f,
    }
}

fn one(path: &Path) -> Vec<PathBuf> {
    vec![path.to_owned()]
}

#[test]
fn intact_log_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let v = verify_files(&one(&path), None).expect("intact");
    assert_eq!((v.files, v.records, v.first_seq, v.last_seq, v.keyed), (1, N, Some(1), Some(N), false));
    assert_eq!(v.last_hash.as_deref(), Some(read_file(&path).expect("read")[N as usize - 1].hash.as_str()));
}

#[test]
fn flipping_a_field_byte_is_modified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let original = lines(&path);
    for i in 0..N as usize {
        let at = original[i].windows(5).position(|w| w == b"value").expect("field") + 7;
        for offset in at..at + 10 {
            let mut l = original.clone();
            l[i][offset] ^= 0x01; // a letter or digit stays a letter or digit
            write_lines(&path, &l);
            let f = fail(&one(&path), None);
            assert_eq!((f.problem, f.line, f.seq), (Problem::Modified, i + 1, Some(i as u64 + 1)), "{f}");
        }
    }
}

#[test]
fn any_single_byte_change_is_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", 4, None);
    let original = std::fs::read(&path).expect("read");
    for pos in 0..original.len() {
        for delta in [0x01u8, 0x20, 0x80] {
            let mut d = original.clone();
            d[pos] ^= delta;
            std::fs::write(&path, &d).expect("write");
            if let Ok(v) = verify_files(&one(&path), None) {
                panic!("byte {pos} ^ {delta:#x} undetected: {v:?}");
            }
        }
    }
}

#[test]
fn deleting_a_line_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let original = lines(&path);
    for i in 1..N as usize - 1 {
        let mut l = original.clone();
        l.remove(i);
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        let seq = i as u64 + 1;
        assert_eq!((f.problem, f.line, f.seq), (Problem::Missing, i + 1, Some(seq + 1)), "{f}");
        assert_eq!(f.detail, format!("seq {seq} missing before this record"));
    }
    let mut l = original.clone();
    l.drain(3..6);
    write_lines(&path, &l);
    let f = fail(&one(&path), None);
    assert_eq!(
        (f.problem, f.seq, f.detail.as_str()),
        (Problem::Missing, Some(7), "seq 4 to 6 missing before this record")
    );
}

#[test]
fn duplicating_a_line_is_duplicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let original = lines(&path);
    for i in 0..N as usize {
        let mut l = original.clone();
        l.insert(i + 1, original[i].clone());
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line, f.seq), (Problem::Duplicated, i + 2, Some(i as u64 + 1)), "{f}");
        // The copy placed at the end instead.
        let mut l = original.clone();
        l.push(original[i].clone());
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line, f.seq), (Problem::Duplicated, N as usize + 1, Some(i as u64 + 1)), "{f}");
    }
}

#[test]
fn swapping_lines_is_reordered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let original = lines(&path);
    for i in 0..N as usize - 1 {
        let mut l = original.clone();
        l.swap(i, i + 1);
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        assert_eq!(f.problem, Problem::Reordered, "swap {i}: {f}");
        // Swapping the first two: the chain is anchored at seq 2, and seq 1 comes after it.
        let (line, seq) = if i == 0 { (2, 1) } else { (i + 1, i as u64 + 2) };
        assert_eq!((f.line, f.seq), (line, Some(seq)), "{f}");
    }
    // Moving one record far back.
    let mut l = original.clone();
    let moved = l.remove(2);
    l.insert(7, moved);
    write_lines(&path, &l);
    let f = fail(&one(&path), None);
    assert_eq!((f.problem, f.line, f.seq), (Problem::Reordered, 3, Some(4)), "{f}");
}

#[test]
fn cutting_the_file_mid_record_is_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", N, None);
    let original = std::fs::read(&path).expect("read");
    let ends: Vec<usize> =
        original.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).collect::<Vec<_>>();
    for cut in 1..original.len() {
        std::fs::write(&path, &original[..cut]).expect("write");
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        if ends.contains(&cut) {
            verify_files(&one(&path), None).expect("a cut at a line boundary cannot be seen");
            continue;
        }
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line), (Problem::Truncated, complete + 1), "cut {cut}: {f}");
    }
    // Only the newline missing.
    std::fs::write(&path, &original[..original.len() - 1]).expect("write");
    let f = fail(&one(&path), None);
    assert_eq!((f.problem, f.line, f.seq), (Problem::Truncated, N as usize, Some(N)), "{f}");
}

#[test]
fn garbage_and_blank_lines_are_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "a.jsonl", 3, None);
    let original = lines(&path);
    for junk in [&b"\n"[..], b"not json\n", b"{\"v\":1,\"seq\":2}\n"] {
        let mut l = original.clone();
        l.insert(1, junk.to_vec());
        write_lines(&path, &l);
        let f = fail(&one(&path), None);
        assert_eq!((f.problem, f.line), (Problem::Malformed, 2), "{f}");
    }
}

fn rotated_log(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(AuditConfig { max_bytes: Some(1500), keep: 10, ..cfg(&path) }).expect("open");
    for i in 0..30 {
        log.append("tick", map(serde_json::json!({ "i": i, "pad": "p".repeat(100) }))).expect("append");
    }
    drop(log);
    let files = log_files(&path);
    assert!(files.len() >= 3, "expected several files: {files:?}");
    verify_files(&files, None).expect("rotated chain verifies");
    files
}

#[test]
fn deleting_the_first_line_of_a_newer_file_breaks_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = rotated_log(dir.path());
    let newer = &files[1];
    let l = lines(newer);
    write_lines(newer, &l[1..]);
    let f = fail(&files, None);
    assert_eq!((f.problem, &f.file, f.line), (Problem::BrokenLink, newer, 1), "{f}");
    let first_of_newer = read_file(newer).expect("read")[0].seq;
    assert_eq!(f.seq, Some(first_of_newer));
    assert!(f.detail.contains("does not continue"), "{f}");
}

#[test]
fn swapping_or_dropping_files_breaks_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = rotated_log(dir.path());
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    let f = fail(&swapped, None);
    assert_eq!((f.problem, &f.file, f.line), (Problem::BrokenLink, &files[0], 1), "{f}");
    // Swap the contents on disk, then verify in the usual order.
    let (a, b) = (std::fs::read(&files[1]).expect("read"), std::fs::read(&files[2]).expect("read"));
    std::fs::write(&files[1], &b).expect("write");
    std::fs::write(&files[2], &a).expect("write");
    let f = fail(&files, None);
    assert_eq!((f.problem, &f.file, f.line), (Problem::BrokenLink, &files[1], 1), "{f}");
    std::fs::write(&files[1], &a).expect("write");
    std::fs::write(&files[2], &b).expect("write");
    // A middle file removed.
    let mut dropped = files.clone();
    dropped.remove(1);
    let f = fail(&dropped, None);
    assert_eq!((f.problem, &f.file), (Problem::BrokenLink, &files[2]), "{f}");
}

#[test]
fn keyed_log_needs_the_right_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "k.jsonl", N, Some(test_key()));
    let v = verify_files(&one(&path), Some(&test_key())).expect("verifies with the key");
    assert!(v.keyed);
    assert!(read_file(&path).expect("read").iter().all(|r| r.keyed));
    let f = fail(&one(&path), None);
    assert_eq!((f.problem, f.line), (Problem::BadKey, 1), "{f}");
    assert!(f.detail.contains("pass the key"), "{f}");
    let wrong = AuditKey::from_bytes(b"integration-test-key-0123456780").expect("key");
    let f = fail(&one(&path), Some(&wrong));
    assert_eq!((f.problem, f.line, f.seq), (Problem::BadKey, 1, Some(1)), "{f}");
    // An unkeyed log checked with a key.
    let plain = write_log(dir.path(), "p.jsonl", 3, None);
    let f = fail(&one(&plain), Some(&test_key()));
    assert_eq!(f.problem, Problem::BadKey, "{f}");
    // A record modified after the first is still "modified".
    let mut l = lines(&path);
    let at = l[4].windows(5).position(|w| w == b"value").expect("field");
    l[4][at] = b'V';
    write_lines(&path, &l);
    let f = fail(&one(&path), Some(&test_key()));
    assert_eq!((f.problem, f.seq), (Problem::Modified, Some(5)), "{f}");
}

/// What someone who can rewrite the file but lacks the key can do: recompute a plain chain.
pub fn rechain(path: &Path, keep_k: bool) {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for mut line in lines(path) {
        line.pop();
        let mut s = String::from_utf8(line).expect("utf8");
        if !keep_k {
            s = s.replacen("\"k\":1,", "", 1);
        }
        let body = &s[..s.len() - 75 - 75 + 1];
        let canonical = format!("{body},\"prev\":\"{prev}\"}}");
        let hash: String = Sha256::digest(format!("{prev}{canonical}")).iter().map(|b| format!("{b:02x}")).collect();
        out.push(format!("{body},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}\n"));
        prev = hash;
    }
    std::fs::write(path, out.concat()).expect("write");
}

#[test]
fn a_recomputed_unkeyed_chain_fails_with_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_log(dir.path(), "k.jsonl", N, Some(test_key()));
    let mut l = lines(&path);
    let at = l[4].windows(5).position(|w| w == b"value").expect("field");
    l[4][at] = b'V';
    write_lines(&path, &l);
    rechain(&path, false);
    verify_files(&one(&path), None).expect("the forged chain is a valid unkeyed chain");
    let f = fail(&one(&path), Some(&test_key()));
    assert_eq!((f.problem, f.line), (Problem::BadKey, 1), "{f}");
    // Keeping the keyed marker does not help either.
    let path = write_log(dir.path(), "k2.jsonl", N, Some(test_key()));
    rechain(&path, true);
    let f = fail(&one(&path), Some(&test_key()));
    assert_eq!((f.problem, f.line), (Problem::BadKey, 1), "{f}");
}
