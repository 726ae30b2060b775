//! Writers in several threads (each with its own descriptor, as separate processes would have)
//! share one file while rotating it.

use std::collections::HashSet;

use warden_audit::read::{log_files, read_file};
use warden_audit::verify::verify_files;
use warden_audit::{AuditConfig, AuditLog};

use crate::{cfg, map};

#[test]
fn threads_share_a_rotating_log() {
    const THREADS: u64 = 4;
    const EACH: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut log =
                    AuditLog::open(AuditConfig { max_bytes: Some(8192), keep: 1000, ..cfg(&path) }).expect("open");
                (0..EACH)
                    .map(|i| log.append("t", map(serde_json::json!({ "t": t, "i": i }))).expect("append"))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs = HashSet::new();
    for h in handles {
        for s in h.join().expect("thread") {
            assert!(seqs.insert(s), "seq {s} handed out twice");
        }
    }
    let files = log_files(&path);
    assert!(files.len() > 5, "expected rotation: {files:?}");
    let v = verify_files(&files, None).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(v.first_seq, Some(1));
    let records: Vec<_> = files.iter().flat_map(|f| read_file(f).expect("read")).collect();
    assert_eq!(records.len() as u64, v.records);
    let rotations = records.iter().filter(|r| r.event == "log.rotated").count() as u64;
    assert_eq!(v.records, THREADS * EACH + rotations);
    assert_eq!(rotations as usize, files.len() - 1);
    for s in &seqs {
        assert_eq!(records.iter().find(|r| r.seq == *s).map(|r| r.event.as_str()), Some("t"));
    }
}
