//! Crash safety: writer processes appending with `fsync = always` while one is SIGKILLed.
//!
//! The test binary re-runs itself as the writers (`writer_child`, driven by environment
//! variables). Each child prints `SEQ <writer> <i> <seq>` after `append` returned `Ok`; after every
//! round the log must open (recovering a torn tail), verify, parse line by line, and hold every
//! reported record with the content its writer gave it.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warden_audit::read::{log_files, read_file};
use warden_audit::verify::verify_files;
use warden_audit::{AuditConfig, AuditLog, Fsync};

use crate::map;

const ROUNDS: u64 = 20;
const WRITERS: u64 = 4;
const APPENDS: u64 = 1000;

/// Not a test on its own: the writer process of `sigkill_during_concurrent_appends`.
#[test]
#[ignore = "run by sigkill_during_concurrent_appends as a child process"]
fn writer_child() {
    let (Ok(path), Ok(id), Ok(n)) = (
        std::env::var("WARDEN_AUDIT_CHILD_PATH"),
        std::env::var("WARDEN_AUDIT_CHILD_ID"),
        std::env::var("WARDEN_AUDIT_CHILD_APPENDS"),
    ) else {
        return;
    };
    let n: u64 = n.parse().expect("count");
    let mut log = AuditLog::open(AuditConfig { fsync: Fsync::Always, ..AuditConfig::new(&path) }).expect("open");
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let seq = log.append("crash.test", map(serde_json::json!({ "writer": id, "i": i }))).expect("append");
        writeln!(out, "SEQ {id} {i} {seq}").expect("report");
        out.flush().expect("flush");
    }
}

/// A small xorshift generator seeded from the clock: no dependency, different points per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn spawn(path: &Path, id: u64) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["crash::writer_child", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env("WARDEN_AUDIT_CHILD_PATH", path)
        .env("WARDEN_AUDIT_CHILD_ID", id.to_string())
        .env("WARDEN_AUDIT_CHILD_APPENDS", APPENDS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn writer")
}

/// Reads `SEQ` lines from a child's stdout on a thread; returns (writer, i) -> seq.
fn collect(child: &mut std::process::Child) -> std::thread::JoinHandle<Vec<(String, u64, u64)>> {
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["SEQ", id, i, seq] = parts[..] {
                if let (Ok(i), Ok(seq)) = (i.parse(), seq.parse()) {
                    got.push((id.to_owned(), i, seq));
                }
            }
        }
        got
    })
}

#[test]
fn sigkill_during_concurrent_appends() {
    let started = Instant::now();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut reported: Vec<(String, u64, u64)> = Vec::new();
    let mut killed_early = 0;
    for round in 0..ROUNDS {
        let mut children: Vec<_> = (0..WRITERS).map(|w| spawn(&path, round * WRITERS + w)).collect();
        let readers: Vec<_> = children.iter_mut().map(collect).collect();
        let victim = rng.next(WRITERS) as usize;
        // A random point within the time the writers take (about 0.2 to 1.5 s with these counts).
        std::thread::sleep(Duration::from_millis(20 + rng.next(400)));
        if round % 2 == 1 {
            // A write(2) of a small record is not split by SIGKILL in practice, so also play a
            // writer that died mid-write: take the lock, leave half a record, let go. The live
            // writers must cut it off (log.recovered) before their next record.
            let f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
            f.lock().expect("lock");
            (&f).write_all(br#"{"v":1,"seq":999999,"ts":"2026-"#).expect("torn write");
            drop(f);
        }
        children[victim].kill().expect("SIGKILL");
        for (w, mut c) in children.into_iter().enumerate() {
            let status = c.wait().expect("wait");
            if w == victim {
                continue;
            }
            if !status.success() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut c.stderr.take().expect("stderr"), &mut err);
                panic!("writer {w} of round {round} failed: {status}\n{err}");
            }
        }
        let mut victim_count = 0;
        for (w, r) in readers.into_iter().enumerate() {
            let got = r.join().expect("reader");
            if w == victim {
                victim_count = got.len();
            } else {
                assert_eq!(got.len() as u64, APPENDS, "a surviving writer reported fewer appends");
            }
            reported.extend(got);
        }
        if (victim_count as u64) < APPENDS {
            killed_early += 1;
        }
        // A new writer recovers a torn tail, if any; then the whole log must verify.
        drop(AuditLog::open(AuditConfig { fsync: Fsync::Always, ..AuditConfig::new(&path) }).expect("open recovers"));
        let files = log_files(&path);
        let v = verify_files(&files, None).unwrap_or_else(|f| panic!("round {round}: {f}"));
        assert_eq!(v.first_seq, Some(1));
    }
    // Every line parses (no interleaved bytes), and every reported record is there, as written.
    let mut by_seq = HashMap::new();
    for f in log_files(&path) {
        for rec in read_file(&f).expect("every line parses") {
            by_seq.insert(rec.seq, rec);
        }
    }
    for (id, i, seq) in &reported {
        let rec = by_seq.get(seq).unwrap_or_else(|| panic!("reported seq {seq} is missing"));
        assert_eq!(rec.event, "crash.test");
        assert_eq!(rec.fields.get("writer").and_then(|w| w.as_str()), Some(id.as_str()), "seq {seq}");
        assert_eq!(rec.fields.get("i").and_then(serde_json::Value::as_u64), Some(*i), "seq {seq}");
    }
    let recovered = by_seq.values().filter(|r| r.event == "log.recovered").count();
    eprintln!(
        "crash test: {ROUNDS} rounds x {WRITERS} writers x {APPENDS} appends, {} records, {} reported, \
         victim killed before finishing in {killed_early} rounds, {recovered} torn tails recovered, {:.1?}",
        by_seq.len(),
        reported.len(),
        started.elapsed()
    );
    // Each torn tail is cut off (the chain verified after every round). Its log.recovered record is
    // missing only if the victim itself was recovering and died between the cut and the record.
    assert!(
        recovered >= 1 && recovered as u64 <= ROUNDS / 2,
        "{recovered} log.recovered records for {} torn tails",
        ROUNDS / 2
    );
    assert!(killed_early >= ROUNDS / 2, "the kill came too late in most rounds; the test proves little");
    assert!(started.elapsed() < Duration::from_secs(120), "took {:?}", started.elapsed());
}
