//! Append throughput driver for `bench/audit.sh`.
//!
//! `append_bench --fsync MODE --writers N --records M --path P` appends M records from each of N
//! writer processes (this program re-run with `--child`) to P and prints the total records per
//! second over the wall time of the whole run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Map, Value};
use warden_audit::{AuditConfig, AuditLog, Fsync};

struct Args {
    fsync: Fsync,
    writers: u32,
    records: u64,
    path: PathBuf,
    child: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { fsync: Fsync::Batch, writers: 1, records: 100_000, path: PathBuf::new(), child: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--child" {
            a.child = true;
            continue;
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--fsync" => a.fsync = val.parse().map_err(|e| format!("{e}"))?,
            "--writers" => a.writers = val.parse().map_err(|e| format!("--writers: {e}"))?,
            "--records" => a.records = val.parse().map_err(|e| format!("--records: {e}"))?,
            "--path" => a.path = PathBuf::from(val),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.path.as_os_str().is_empty() {
        return Err("--path is required".to_owned());
    }
    Ok(a)
}

fn fields() -> Map<String, Value> {
    match serde_json::json!({
        "profile": "workspace-write",
        "argv": ["cargo", "test", "--workspace"],
        "workdir": "/home/alice/src/project",
        "uid": 1000,
        "policy_digest": "3f1b6c0e9d2a4b7c8e5f1a2b3c4d5e6f",
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn write(a: &Args) -> Result<(), String> {
    let cfg = AuditConfig { fsync: a.fsync, ..AuditConfig::new(&a.path) };
    let mut log = AuditLog::open(cfg).map_err(|e| e.to_string())?;
    let f = fields();
    for _ in 0..a.records {
        log.append("run.start", f.clone()).map_err(|e| e.to_string())?;
    }
    log.flush().map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    let a = parse()?;
    let start = Instant::now();
    if a.child || a.writers == 1 {
        write(&a)?;
    } else {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let children = (0..a.writers)
            .map(|_| {
                Command::new(&exe)
                    .args(["--child", "--fsync", a.fsync.as_str(), "--records", &a.records.to_string(), "--path"])
                    .arg(&a.path)
                    .spawn()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        for mut c in children {
            let status = c.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a writer failed: {status}"));
            }
        }
    }
    if !a.child {
        let secs = start.elapsed().as_secs_f64();
        let total = a.records * u64::from(a.writers);
        println!("{:.0}", total as f64 / secs);
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("append_bench: {e}");
        std::process::exit(1);
    }
}
