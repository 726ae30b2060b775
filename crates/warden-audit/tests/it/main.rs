//! Integration tests of warden-audit: tamper detection (within the chain and at both of its
//! ends), crash safety, concurrent writers, the documented Python verifier, and redaction
//! properties.

mod concurrent;
mod crash;
mod ends;
mod python;
mod redact_props;
mod tamper;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use warden_audit::{AuditConfig, AuditKey, AuditLog, Fsync};

/// A JSON object literal as a field map.
pub fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// An unsynced config for `path`.
pub fn cfg(path: &Path) -> AuditConfig {
    AuditConfig { fsync: Fsync::Never, ..AuditConfig::new(path) }
}

pub fn test_key() -> AuditKey {
    AuditKey::from_bytes(b"integration-test-key-0123456789").expect("key")
}

/// Writes `n` records with varied fields to a fresh log in `dir`; returns its path.
pub fn write_log(dir: &Path, name: &str, n: u64, key: Option<AuditKey>) -> PathBuf {
    let path = dir.join(name);
    let mut log = AuditLog::open(AuditConfig { key, ..cfg(&path) }).expect("open");
    for i in 1..=n {
        let fields = map(serde_json::json!({
            "i": i,
            "data": format!("value-{i}-abcdefghij"),
            "nested": {"list": [i, "x\"y\\z\n", "ünïcødé"]},
        }));
        assert_eq!(log.append("test.event", fields).expect("append"), i);
    }
    path
}

/// A log rotated with `keep = 2` until rotation has pruned its oldest files at least twice; returns
/// its files, oldest first, after checking that they verify with the head accounted for.
pub fn pruned_log(dir: &Path, key: Option<AuditKey>) -> Vec<PathBuf> {
    let path = dir.join("audit.jsonl");
    let verify_key = key.clone();
    let mut log = AuditLog::open(AuditConfig { max_bytes: Some(1500), keep: 2, key, ..cfg(&path) }).expect("open");
    for i in 0..60 {
        log.append("tick", map(serde_json::json!({ "i": i, "pad": "p".repeat(100) }))).expect("append");
    }
    drop(log);
    let files = warden_audit::read::log_files(&path);
    assert_eq!(files.len(), 3, "{files:?}");
    let prunes: usize = files
        .iter()
        .flat_map(|f| warden_audit::read::read_file(f).expect("read"))
        .filter(|r| r.event == "log.pruned")
        .count();
    assert!(prunes >= 2, "expected several prunes, got {prunes}");
    let v = warden_audit::verify::verify_files(&files, verify_key.as_ref()).unwrap_or_else(|f| panic!("{f}"));
    assert!(v.first_seq > Some(1) && v.pruned_through.map(|p| p + 1) == v.first_seq, "{v:?}");
    files
}

/// Both modes a test runs in: unkeyed and keyed with [`test_key`].
pub fn both_modes() -> [Option<AuditKey>; 2] {
    [None, Some(test_key())]
}

/// A name that tells the modes apart: `plain` or `keyed`.
pub fn mode_name(key: &Option<AuditKey>) -> &'static str {
    if key.is_some() {
        "keyed"
    } else {
        "plain"
    }
}

/// [`pruned_log`] in a subdirectory of `dir` named after the mode.
pub fn pruned_log_in(dir: &Path, key: &Option<AuditKey>) -> Vec<PathBuf> {
    let sub = dir.join(mode_name(key));
    std::fs::create_dir(&sub).expect("mkdir");
    pruned_log(&sub, key.clone())
}

/// The lines of a file, each with its newline.
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path).expect("read").split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).expect("write");
}
