//! Integration tests of warden-audit: tamper detection, crash safety, concurrent writers, the
//! documented Python verifier, and redaction properties.

mod concurrent;
mod crash;
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

/// The lines of a file, each with its newline.
pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path).expect("read").split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).expect("write");
}
