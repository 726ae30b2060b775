//! The verifier printed in docs/audit-format.md, run with /usr/bin/python3 against real logs.

use std::path::{Path, PathBuf};
use std::process::Command;

use warden_audit::read::log_files;
use warden_audit::verify::verify_files;
use warden_audit::{AuditConfig, AuditLog};

use crate::{cfg, lines, map, test_key, write_lines, write_log};

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
    assert!(code.lines().count() <= 30, "the doc promises a short verifier");
    let p = dir.join("verify.py");
    std::fs::write(&p, code).expect("write script");
    p
}

/// Runs the script; returns (success, stdout + stderr).
fn run(script: &Path, key: Option<&Path>, files: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
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
