//! Appends per second into a temp-dir file, one writer, for each fsync mode.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{Map, Value};
use warden_audit::{AuditConfig, AuditLog, Fsync};

fn fields() -> Map<String, Value> {
    let v = serde_json::json!({
        "profile": "workspace-write",
        "argv": ["cargo", "test", "--workspace"],
        "workdir": "/home/alice/src/project",
        "uid": 1000,
        "policy_digest": "3f1b6c0e9d2a4b7c8e5f1a2b3c4d5e6f",
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));
    for mode in [Fsync::Never, Fsync::Batch, Fsync::Always] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = AuditConfig { fsync: mode, ..AuditConfig::new(dir.path().join("audit.jsonl")) };
        let mut log = AuditLog::open(cfg).expect("open");
        let f = fields();
        if mode == Fsync::Always {
            group.sample_size(10);
        }
        group.bench_function(mode.as_str(), |b| b.iter(|| log.append("run.start", f.clone()).expect("append")));
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
