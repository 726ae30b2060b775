//! The verifier printed in docs/audit-format.md, run with /usr/bin/python3 against real logs:
//! rotated and pruned, keyed and unkeyed, with checkpoints, and tampered at both ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use warden_audit::checkpoint::Checkpoint;
use warden_audit::read::log_files;
use warden_audit::verify::{verify_files, verify_with_checkpoint};
use warden_audit::{AuditConfig, AuditLog};

use crate::{both_modes, cfg, lines, map, pruned_log, pruned_log_in, test_key, write_lines, write_log};

const PYTHON: &str = "/usr/bin/python3";
const VECTOR: &str = r#"{"v":1,"seq":1,"ts":"2026-11-22T00:59:01.123Z","session":"0123456789abcdef","event":"run.start","argv":["ls","-la"],"uid":1000,"workdir":"/home/[USER]/src","prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"e51bdd966701d4d1ee775a2717f3493e7065ad6e87ceaa43ee7ff66437751408"}"#;

fn doc() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit-format.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Writes the doc's python block to `dir/verify.py`.
fn script(dir: &Path) -> PathBuf {
    let doc = doc();
    let start = doc.find("```python\n").expect("a python block in the doc") + "```python\n".len();
    let len = doc[start..].find("```").expect("end of the python block");
    let code = &doc[start..start + len];
    assert!(code.lines().count() <= 50, "the doc promises a short verifier");
    let p = dir.join("verify.py");
    std::fs::write(&p, code).expect("write script");
    p
}

/// Runs the script; returns (success, stdout + stderr).
fn run(script: &Path, key: Option<&Path>, files: &[PathBuf]) -> (bool, String) {
    run_cp(script, key, None, files)
}

/// [`run`] with `--checkpoint`.
fn run_cp(script: &Path, key: Option<&Path>, checkpoint: Option<&Path>, files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    if let Some(c) = checkpoint {
        cmd.arg("--checkpoint").arg(c);
    }
    cmd.args(files);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), format!("{cmd:?}\n{text}"))
}

#[test]
fn doc_verifier_accepts_the_test_vector() {
    assert!(doc().contains(VECTOR), "the doc's test vector changed");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path());
    let p = dir.path().join("vector.jsonl");
    std::fs::write(&p, format!("{VECTOR}\n")).expect("write");
    verify_files(std::slice::from_ref(&p), None).expect("the crate accepts the vector");
    let (ok, out) = run(&s, None, std::slice::from_ref(&p));
    assert!(ok, "{out}");
    assert!(out.contains("ok: last seq 1, last hash e51bdd96"), "{out}");
    std::fs::write(&p, format!("{}\n", VECTOR.replace("1000", "1001"))).expect("write");
    let (ok, out) = run(&s, None, &[p]);
    assert!(!ok && out.contains("hash mismatch"), "{out}");
}

#[test]
fn doc_verifier_checks_real_logs_unkeyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path());
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(AuditConfig { max_bytes: Some(2000), keep: 10, ..cfg(&path) }).expect("open");
    for i in 0..40 {
        let fields = map(serde_json::json!({
            "i": i, "neg": -i, "s": "tab\there \"quoted\" back\\slash \u{1} ünï 中文 🦀",
            "seq": "renamed", "nested": {"a": [true, null, {"b": "/home/alice"}]},
        }));
        log.append("py.test", fields).expect("append");
    }
    drop(log);
    let files = log_files(&path);
    assert!(files.len() >= 3, "{files:?}");
    let v = verify_files(&files, None).expect("verifies");
    let (ok, out) = run(&s, None, &files);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "ok: last seq {}, last hash {}",
            v.last_seq.unwrap_or(0),
            v.last_hash.unwrap_or_default()
        )),
        "{out}"
    );
    // Tampered copies fail in Python too.
    let single = write_log(dir.path(), "single.jsonl", 6, None);
    let original = lines(&single);
    let mut edits: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut l = original.clone();
    l[2][40] ^= 1;
    edits.push(l);
    let mut l = original.clone();
    l.remove(3);
    edits.push(l);
    let mut l = original.clone();
    l.swap(1, 2);
    edits.push(l);
    let mut l = original.clone();
    l.insert(2, original[1].clone());
    edits.push(l);
    for (n, e) in edits.iter().enumerate() {
        write_lines(&single, e);
        let (ok, out) = run(&s, None, std::slice::from_ref(&single));
        assert!(!ok, "edit {n} passed the python verifier: {out}");
        assert!(verify_files(std::slice::from_ref(&single), None).is_err());
    }
    let mut l = original.concat();
    l.pop();
    std::fs::write(&single, l).expect("write");
    let (ok, out) = run(&s, None, &[single]);
    assert!(!ok && out.contains("truncated"), "{out}");
    // Files out of order.
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    let (ok, out) = run(&s, None, &swapped);
    assert!(!ok && out.contains("does not follow"), "{out}");
}

#[test]
fn doc_verifier_checks_real_logs_keyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path());
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, b"integration-test-key-0123456789\n").expect("write key");
    assert_eq!(
        format!("{:?}", warden_audit::AuditKey::from_file(&key_file).expect("key")),
        format!("{:?}", test_key())
    );
    let path = write_log(dir.path(), "k.jsonl", 12, Some(warden_audit::AuditKey::from_file(&key_file).expect("key")));
    verify_files(std::slice::from_ref(&path), Some(&test_key())).expect("verifies");
    let (ok, out) = run(&s, Some(&key_file), std::slice::from_ref(&path));
    assert!(ok, "{out}");
    let (ok, out) = run(&s, None, std::slice::from_ref(&path));
    assert!(!ok, "a keyed log passed without the key: {out}");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, b"integration-test-key-0123456780").expect("write key");
    let (ok, out) = run(&s, Some(&wrong), &[path]);
    assert!(!ok && out.contains("hash mismatch"), "{out}");
}

/// The key of [`test_key`] in a file.
fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("key");
    std::fs::write(&p, b"integration-test-key-0123456789\n").expect("write key");
    p
}

#[test]
fn doc_verifier_accepts_pruned_logs_and_reports_a_missing_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path());
    let kf = key_file(dir.path());
    for key in both_modes() {
        let kp = key.as_ref().map(|_| kf.as_path());
        let files = pruned_log_in(dir.path(), &key);
        let v = verify_files(&files, key.as_ref()).expect("verifies");
        let (ok, out) = run(&s, kp, &files);
        assert!(ok, "a pruned log failed the python verifier: {out}");
        assert!(out.contains(&format!("ok: last seq {}", v.last_seq.unwrap_or(0))), "{out}");
        // Only the newest files: the log.pruned record that accounts for the head is not among them.
        let (ok, out) = run(&s, kp, &files[2..]);
        assert!(!ok && out.contains("head missing"), "{out}");
        // The oldest retained file deleted.
        std::fs::remove_file(&files[0]).expect("delete");
        let (ok, out) = run(&s, kp, &files[1..]);
        assert!(
            !ok && out.contains(&format!("{}:1: seq ", files[1].display())) && out.contains("head missing"),
            "{out}"
        );
        assert!(verify_files(&files[1..], key.as_ref()).is_err());
    }
    // The first record of a single file deleted.
    let single = write_log(dir.path(), "single.jsonl", 5, None);
    let l = lines(&single);
    write_lines(&single, &l[1..]);
    let (ok, out) = run(&s, None, std::slice::from_ref(&single));
    assert!(!ok && out.contains("seq 2: head missing: no log.pruned record accounts for seq 1..1"), "{out}");
    // A first record with seq 1 but a non-zero prev.
    write_lines(&single, &l[..1]);
    let mut text = std::fs::read_to_string(&single).expect("read");
    text = text.replacen("\"seq\":1,", "\"seq\":2,", 1);
    std::fs::write(&single, text).expect("write");
    let (ok, out) = run(&s, None, std::slice::from_ref(&single));
    assert!(!ok, "{out}");
}

#[test]
fn doc_verifier_checks_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path());
    let kf = key_file(dir.path());
    let key = test_key();
    let files = pruned_log(dir.path(), Some(key.clone()));
    let v = verify_files(&files, Some(&key)).expect("verifies");
    let last = v.last_seq.expect("records");
    let write_cp = |name: &str, cp: &Checkpoint| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{}\n", cp.to_json())).expect("write");
        p
    };
    let check = |cp_file: &Path, files: &[PathBuf], want: Option<&str>| {
        let (ok, out) = run_cp(&s, Some(&kf), Some(cp_file), files);
        let cp = Checkpoint::read(cp_file).expect("checkpoint");
        let rust = verify_with_checkpoint(files, Some(&key), &cp, cp_file);
        match want {
            None => assert!(ok && rust.is_ok(), "{out}\n{rust:?}"),
            Some(w) => assert!(!ok && out.contains(w) && rust.is_err(), "want {w:?}: {out}\n{rust:?}"),
        }
    };
    let head = write_cp("head.json", &Checkpoint::new(last, v.last_hash.as_deref().unwrap_or_default(), Some(&key)));
    check(&head, &files, None);
    // At the boundary of what was pruned, vouched for by the log.pruned record; older: unverifiable.
    let first = v.first_seq.expect("records");
    let boundary_hash = warden_audit::read::read_file(&files[0]).expect("read")[0].prev.clone();
    check(&write_cp("boundary.json", &Checkpoint::new(first - 1, &boundary_hash, Some(&key))), &files, None);
    check(
        &write_cp("old.json", &Checkpoint::new(1, &boundary_hash, Some(&key))),
        &files,
        Some("pruned before checkpoint"),
    );
    // A forged mac, and an unkeyed checkpoint of a keyed log.
    let mut forged = Checkpoint::new(last, v.last_hash.as_deref().unwrap_or_default(), Some(&key));
    forged.seq = last - 1;
    check(&write_cp("forged.json", &forged), &files, Some("bad checkpoint"));
    forged.mac = None;
    check(&write_cp("nomac.json", &forged), &files, Some("bad checkpoint"));
    // The newest records cut off.
    let live = &files[2];
    let original = lines(live);
    write_lines(live, &original[..original.len() - 2]);
    check(&head, &files, Some(&format!("checkpoint seq {last}: log shorter than checkpoint")));
    // ... and replaced by new ones with the same seqs.
    let mut log =
        AuditLog::open(AuditConfig { key: Some(key.clone()), ..cfg(&dir.path().join("audit.jsonl")) }).expect("open");
    for _ in 0..3 {
        log.append("replacement", serde_json::Map::new()).expect("append");
    }
    drop(log);
    check(&head, &files, Some(&format!("checkpoint seq {last}: log diverges from checkpoint")));
}
