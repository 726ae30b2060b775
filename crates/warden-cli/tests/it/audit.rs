//! `warden run` leaves a verifiable record; `warden audit verify/head/show/tail` read it; the
//! sandbox can neither read nor alter it; both ends of the chain are checked (a deleted head, and
//! against a checkpoint, a cut or replaced tail).

use std::path::{Path, PathBuf};

use warden_audit::{AuditConfig, AuditKey, AuditLog, Fsync};

use crate::Scratch;

/// A log under a host-visible directory of its own (outside the workdir).
fn log_in(s: &Scratch) -> PathBuf {
    s.root.join("state/audit.jsonl")
}

fn run_logged(s: &Scratch, log: &Path, extra: &[&str], argv: &[&str]) -> warden_testkit::Output {
    s.run(&["--audit-log", log.to_str().expect("UTF-8 log path")], extra, argv)
}

fn audit(log: &Path, sub: &[&str]) -> warden_testkit::Output {
    crate::warden().args(["audit"]).args(sub).args(["--audit-log"]).args([log]).run()
}

fn events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .expect("read log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

#[test]
fn every_run_leaves_a_verifiable_record() {
    let s = Scratch::temp();
    let log = log_in(&s);
    run_logged(&s, &log, &[], &["sh", "-c", "exit 3"]).code(3);
    run_logged(&s, &log, &["-p", "workspace-write"], &["true"]).success();
    let ev = events(&log);
    let names: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["run.start", "run.exit", "run.start", "run.exit"], "{ev:?}");
    assert_eq!(ev[0]["profile"], "offline");
    assert_eq!(ev[0]["argv"], serde_json::json!(["sh", "-c", "exit 3"]));
    assert_eq!(ev[1]["exit_code"], 3);
    assert_eq!(ev[1]["outcome"], "exited");
    assert_eq!(ev[2]["profile"], "workspace-write");
    assert!(ev[1]["duration_ms"].is_u64() && ev[1]["peak_rss_kib"].is_u64());
    assert_ne!(ev[0]["session"], ev[2]["session"], "one session per warden process");
    let mode = std::fs::metadata(&log).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.expect("stat"), 0o600);
    audit(&log, &["verify"]).success().stdout_has("ok: 4 records");
    audit(&log, &["show"]).success().stdout_has("run.start").stdout_has("run.exit");
    audit(&log, &["show", "--event", "run.exit", "--json"]).success().stdout_lacks("run.start");
    audit(&log, &["tail", "-n", "1"]).success().stdout_has("run.exit").stdout_lacks("run.start");
}

#[test]
fn secrets_in_the_command_line_are_redacted() {
    let s = Scratch::temp();
    let log = log_in(&s);
    let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
    run_logged(&s, &log, &[], &["echo", secret, "Bearer abc.def.ghi"]).success().stdout_has(secret);
    let text = std::fs::read_to_string(&log).expect("read");
    assert!(!text.contains(secret), "{text}");
    assert!(!text.contains("abc.def.ghi"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[test]
fn tampering_is_detected_and_named() {
    let s = Scratch::temp();
    let log = log_in(&s);
    for _ in 0..2 {
        run_logged(&s, &log, &[], &["true"]).success();
    }
    let text = std::fs::read_to_string(&log).expect("read");
    std::fs::write(&log, text.replacen("\"offline\"", "\"trusted\"", 1)).expect("tamper");
    audit(&log, &["verify"]).code(1).stdout_has("FAILED").stdout_has("seq 1");
}

#[test]
fn the_sandbox_cannot_read_or_alter_the_log() {
    let s = Scratch::temp();
    let log = log_in(&s);
    run_logged(&s, &log, &[], &["true"]).success();
    let before = std::fs::read_to_string(&log).expect("read");
    let dir = log.parent().map(|p| p.display().to_string()).unwrap_or_default();
    // The log's directory is masked: not even listed.
    let script = format!("cat {0}; ls {dir}; exit 0", log.display());
    run_logged(&s, &log, &[], &["sh", "-c", &script]).success().stdout_lacks("run.start").stdout_lacks("audit.jsonl");
    // A writable root that contains it is refused outright (before, such a run had the log's
    // directory masked but could rename it away); the message names both paths and the way out.
    let root = s.root.display().to_string();
    let script = format!("rm -rf {dir}; echo ran > {root}/ran");
    let out = run_logged(&s, &log, &["-p", "workspace-write", "--writable", &root, "--yes"], &["sh", "-c", &script]);
    out.code(125).stderr_has(&format!("the writable root {root}")).stderr_has(&dir).stderr_has("--audit-log PATH");
    assert!(!s.root.join("ran").exists(), "the command ran");
    let after = std::fs::read_to_string(&log).expect("log still there");
    assert!(after.starts_with(&before), "earlier records changed");
    audit(&log, &["verify"]).success();
}

#[test]
fn no_audit_writes_nothing_and_an_unusable_log_refuses_to_run() {
    let s = Scratch::temp();
    let log = log_in(&s);
    crate::warden().current_dir(&s.ws).args(["run", "--no-audit", "--", "true"]).run().success();
    assert!(!log.exists());
    // A path that cannot be created: the run is refused, and the message says how to proceed.
    let bad = s.root.join("file-not-dir");
    std::fs::write(&bad, "x").expect("write");
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--audit-log"])
        .args([bad.join("audit.jsonl")])
        .args(["--", "sh", "-c", "echo ran"])
        .run();
    out.code(125).stderr_has("--no-audit").stdout_lacks("ran");
}

#[test]
fn warnings_refusals_and_keyed_logs_are_recorded() {
    let s = Scratch::temp();
    let log = log_in(&s);
    let cfg = s.file("cfg.toml", "profile = \"bogus\"\n");
    crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--audit-log"])
        .args([&log])
        .args(["--config"])
        .args([&cfg])
        .args(["--", "true"])
        .run()
        .success();
    // Refused: a writable path outside the workdir, not confirmed (no terminal, no --yes).
    let other = s.root.join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let outside = other.display().to_string();
    run_logged(&s, &log, &["-p", "workspace-write", "--writable", &outside], &["true"]).code(125);
    let names: Vec<String> = events(&log).iter().map(|e| e["event"].as_str().unwrap_or("").to_owned()).collect();
    assert!(names.contains(&"config.warning".to_owned()), "{names:?}");
    assert!(names.contains(&"run.refused".to_owned()), "{names:?}");

    let keyed = s.root.join("keyed/audit.jsonl");
    let key = s.file("key", "0123456789abcdef0123456789abcdef\n");
    let key_s = key.display().to_string();
    run_logged(&s, &keyed, &["--audit-key-file", &key_s], &["true"]).success();
    audit(&keyed, &["verify"]).code(1);
    crate::warden()
        .args(["audit", "verify", "--audit-log"])
        .args([&keyed])
        .args(["--audit-key-file"])
        .args([&key])
        .run()
        .success()
        .stdout_has("HMAC");
}

#[test]
fn show_filters_by_time_session_and_event() {
    let s = Scratch::temp();
    let log = log_in(&s);
    run_logged(&s, &log, &[], &["true"]).success();
    run_logged(&s, &log, &[], &["true"]).success();
    let sessions: Vec<String> = events(&log).iter().map(|e| e["session"].as_str().unwrap_or("").to_owned()).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    audit(&log, &["show", "--since", "1h"]).success().stdout_has(&format!("{:>7}", 4));
    let none = audit(&log, &["show", "--since", "0s"]);
    none.success();
    assert!(none.stdout.trim().is_empty(), "nothing is newer than now: {}", none.stdout);
    let first = audit(&log, &["show", "--json", "--session", &sessions[0][..8]]);
    assert_eq!(first.stdout.lines().count(), 2, "{}", first.stdout);
    assert!(first.stdout.lines().all(|l| l.contains(&sessions[0])));
    audit(&log, &["show", "--since", "5x"]).code(2).stderr_has("accepted: s, m, h, d");
}

#[test]
fn tail_follow_prints_new_records() {
    use std::io::{BufRead, BufReader};
    let s = Scratch::temp();
    let log = log_in(&s);
    run_logged(&s, &log, &[], &["true"]).success();
    let mut child = warden_testkit::scrubbed_command(crate::warden_path())
        .args(["audit", "tail", "-f", "-n", "0", "--json", "--audit-log"])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tail -f");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    run_logged(&s, &log, &[], &["sh", "-c", "exit 5"]).code(5);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("\"exit_code\":5")) {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains("run.start")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("\"exit_code\":5")), "{seen:?}");
    assert!(!seen.iter().any(|l| l.contains("\"seq\":1,")), "-n 0 prints no old record: {seen:?}");
}

/// Appends `n` records to the log at `log` directly (no sandbox run needed), rotating past
/// `max_bytes` and keeping `keep` rotated files.
fn append_records(log: &Path, n: u64, key: Option<&Path>, max_bytes: Option<u64>, keep: u32) {
    let key = key.map(|k| AuditKey::from_file(k).expect("key"));
    let cfg = AuditConfig { fsync: Fsync::Never, max_bytes, keep, key, ..AuditConfig::new(log) };
    let mut w = AuditLog::open(cfg).expect("open log");
    for i in 0..n {
        let fields = serde_json::json!({ "i": i, "pad": "p".repeat(100) });
        let serde_json::Value::Object(fields) = fields else { unreachable!("an object literal") };
        w.append("test.event", fields).expect("append");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `warden audit head` for `log`; its stdout must be one checkpoint line, returned as printed and
/// parsed.
fn head_of(log: &Path, extra: &[&str]) -> (String, serde_json::Map<String, serde_json::Value>) {
    let out = audit(log, &[&["head"], extra].concat());
    out.success();
    assert_eq!(out.stdout.lines().count(), 1, "one line: {}", out.stdout);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let serde_json::Value::Object(map) = v else { panic!("not an object: {}", out.stdout) };
    let keys: Vec<&str> = map.keys().map(String::as_str).collect();
    assert_eq!(keys, ["hash", "mac", "seq"], "{}", out.stdout);
    assert!(out.stdout.starts_with("{\"seq\":"), "seq first: {}", out.stdout);
    (out.stdout.trim().to_owned(), map)
}

#[test]
fn head_prints_a_checkpoint_that_verify_accepts() {
    let s = Scratch::temp();
    let log = log_in(&s);
    append_records(&log, 5, None, None, 5);
    let (line, cp) = head_of(&log, &[]);
    let last: serde_json::Value = events(&log).pop().expect("records");
    assert_eq!((cp["seq"].as_u64(), &cp["hash"], &cp["mac"]), (Some(5), &last["hash"], &serde_json::Value::Null));
    // FILE names the log as --audit-log does.
    let positional = crate::warden().args(["audit", "head"]).args([&log]).run();
    positional.success();
    assert_eq!(positional.stdout.trim(), line);
    let cp_file = s.file("cp.json", &format!("{line}\n"));
    audit(&log, &["verify", "--checkpoint", path_str(&cp_file)])
        .success()
        .stdout_has("ok: 5 records in 1 file(s), seq 1..5, chain intact, checkpoint seq 5 matches");
    // Keyed: the mac is the documented HMAC; without the key, head refuses.
    let keyed = s.root.join("keyed/audit.jsonl");
    let key = s.file("key", "0123456789abcdef0123456789abcdef\n");
    append_records(&keyed, 3, Some(&key), None, 5);
    let (_, cp) = head_of(&keyed, &["--audit-key-file", path_str(&key)]);
    let want = warden_audit::checkpoint::Checkpoint::new(
        3,
        cp["hash"].as_str().unwrap_or_default(),
        Some(&AuditKey::from_file(&key).expect("key")),
    );
    assert_eq!(cp["mac"].as_str(), want.mac.as_deref());
    assert_eq!(cp["mac"].as_str().map(str::len), Some(64));
    let out = audit(&keyed, &["head"]);
    out.code(1).stderr_has("does not verify, so it gets no checkpoint").stderr_has("bad key");
    assert!(out.stdout.is_empty(), "a failure must not look like a checkpoint: {}", out.stdout);
}

#[test]
fn verify_checkpoint_catches_a_cut_or_replaced_tail_and_a_forged_checkpoint() {
    let s = Scratch::temp();
    let log = log_in(&s);
    let key = s.file("key", "0123456789abcdef0123456789abcdef\n");
    let k = ["--audit-key-file", path_str(&key)];
    append_records(&log, 6, Some(&key), None, 5);
    let (cp_text, cp) = head_of(&log, &k);
    let cp_file = s.file("cp.json", &cp_text);
    let verify_cp = |file: &Path| audit(&log, &[&["verify", "--checkpoint", path_str(file)], &k[..]].concat());
    verify_cp(&cp_file).success().stdout_has("(HMAC-SHA256), checkpoint seq 6 matches");
    // Forged: the mac of another record, or none.
    let forged = s.file("forged.json", &cp_text.replace("\"seq\":6", "\"seq\":5"));
    verify_cp(&forged)
        .code(1)
        .stdout_has("FAILED: ")
        .stdout_has("seq 5: bad checkpoint: the checkpoint's mac does not verify");
    let unkeyed = s.file("nomac.json", &cp_text.replace(&format!("\"{}\"", cp["mac"].as_str().unwrap_or("-")), "null"));
    verify_cp(&unkeyed).code(1).stdout_has("bad checkpoint: the checkpoint has no mac");
    // Malformed: the field is named, and it is warden's failure (125), not a verdict on the log.
    let bad = s.file("bad.json", "{\"seq\":6,\"mac\":null}");
    verify_cp(&bad).code(125).stderr_has("field \"hash\": missing");
    verify_cp(&s.root.join("absent.json")).code(125).stderr_has("cannot read checkpoint");
    // The newest two records cut off: intact on its own, shorter than the checkpoint.
    let text = std::fs::read_to_string(&log).expect("read");
    let kept: Vec<&str> = text.lines().take(4).collect();
    std::fs::write(&log, format!("{}\n", kept.join("\n"))).expect("truncate");
    audit(&log, &["verify", "--audit-key-file", path_str(&key)]).success();
    verify_cp(&cp_file)
        .code(1)
        .stdout_has("seq 4: shorter than checkpoint: the log ends at seq 4, before checkpoint")
        .stdout_has("at seq 6: seq 5..6 were removed from its end");
    // ... and replaced by new records with the same seqs.
    append_records(&log, 3, Some(&key), None, 5);
    verify_cp(&cp_file).code(1).stdout_has("seq 6: diverges from checkpoint");
}

#[test]
fn a_pruned_head_verifies_and_a_deleted_one_is_head_missing() {
    let s = Scratch::temp();
    let log = log_in(&s);
    append_records(&log, 40, None, Some(1200), 1);
    let files = warden_audit::read::log_files(&log);
    assert_eq!(files.len(), 2, "{files:?}");
    audit(&log, &["verify"]).success().stdout_has("pruned by rotation), chain intact");
    // Only the live file: the record that accounts for its head is in the rotated one.
    let only_live = crate::warden().args(["audit", "verify"]).args([&log]).run();
    only_live.code(1).stdout_has("head missing: the log starts at seq");
    // The first record of the oldest file deleted.
    let text = std::fs::read_to_string(&files[0]).expect("read");
    let first_seq = events(&files[0])[0]["seq"].as_u64().expect("seq");
    std::fs::write(&files[0], text.split_once('\n').map(|(_, rest)| rest).unwrap_or_default()).expect("write");
    let next = first_seq + 1;
    audit(&log, &["verify"]).code(1).stdout_has(&format!(
        "FAILED: {}:1: seq {next}: head missing: the log starts at seq {next} without a log.pruned record (records 1..{first_seq} were deleted",
        files[0].display()
    ));
    let out = audit(&log, &["head"]);
    out.code(1).stderr_has("head missing");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn head_refuses_a_missing_or_empty_log() {
    let s = Scratch::temp();
    let log = log_in(&s);
    audit(&log, &["head"]).code(125).stderr_has("no audit log at");
    std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
    std::fs::write(&log, "").expect("empty log");
    let out = audit(&log, &["head"]);
    out.code(125).stderr_has("holds no records: nothing to checkpoint");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    // FILE and --audit-log name the same thing: not both.
    crate::warden().args(["audit", "head"]).args([&log]).args(["--audit-log"]).args([&log]).run().code(2);
}

/// A python client in the sandbox: HTTP requests through the egress proxy to `hosts` (cycled),
/// for `secs` seconds or `max` requests; prints how many it made.
fn flood_script(hosts: &[String], secs: u32, max: u32) -> String {
    format!(
        "import http.client, time, os\n\
         hosts = {hosts:?}\n\
         end = time.time() + {secs}; n = 0\n\
         while time.time() < end and n < {max}:\n\
         \x20   c = http.client.HTTPConnection('127.0.0.1', 3128, timeout=5)\n\
         \x20   c.request('GET', 'http://%s/' % hosts[n % len(hosts)]); c.getresponse().read(); c.close()\n\
         \x20   n += 1\n\
         print('requests', n)\n"
    )
}

#[test]
fn a_flood_of_denied_requests_is_aggregated_and_keeps_earlier_records() {
    let s = Scratch::temp();
    let log = log_in(&s);
    run_logged(&s, &log, &[], &["true"]).success();
    let earlier = std::fs::read_to_string(&log).expect("read");
    let code = flood_script(&["flood.test".to_owned()], 3, 100_000);
    let out =
        run_logged(&s, &log, &["--net", "allowlist", "--allow-domain", "allowed.test"], &[crate::PY, "-c", &code]);
    out.success();
    let made: u64 = out.stdout.trim().strip_prefix("requests ").and_then(|n| n.parse().ok()).expect("count");
    assert!(made > 50, "the flood made only {made} requests");
    let records: Vec<serde_json::Value> =
        events(&log).into_iter().filter(|e| e["event"] == "egress.decision" && e["host"] == "flood.test").collect();
    let counted: u64 = records.iter().map(|r| r["count"].as_u64().unwrap_or(0)).sum();
    assert_eq!(counted, made, "every request is counted: {records:?}");
    assert!(records.len() <= 6, "{} records for a 3 s flood: at most one per key and second", records.len());
    assert!(records
        .iter()
        .all(|r| r["decision"] == "deny" && r["reason"] == "not-allowlisted" && r["first"].is_string()));
    let after = std::fs::read_to_string(&log).expect("read");
    assert!(after.starts_with(&earlier), "earlier records changed");
    assert!(after.len() - earlier.len() < 64 << 10, "the flood grew the log by {} bytes", after.len() - earlier.len());
    audit(&log, &["verify"]).success();
}

#[test]
fn the_sandbox_cannot_exceed_the_record_budget() {
    let s = Scratch::temp();
    let log = log_in(&s);
    let cfg = s.file("budget.toml", "[audit]\nrun_budget_records = 20\n");
    let cfg_s = cfg.display().to_string();
    let hosts: Vec<String> = (0..60).map(|i| format!("h{i}.test")).collect();
    let code = flood_script(&hosts, 20, 60);
    let out = run_logged(
        &s,
        &log,
        &["--config", &cfg_s, "--net", "allowlist", "--allow-domain", "allowed.test"],
        &[crate::PY, "-c", &code],
    );
    out.success().stdout_has("requests 60").stderr_has("audit record budget of this run is spent");
    let all = events(&log);
    let decisions = all.iter().filter(|e| e["event"] == "egress.decision").count();
    assert_eq!(decisions, 20, "the budget caps the records the sandbox causes");
    assert_eq!(all.iter().filter(|e| e["event"] == "audit.budget_exhausted").count(), 1);
    let exit = all.iter().rev().find(|e| e["event"] == "run.exit").expect("run.exit");
    assert_eq!(exit["records_dropped"]["egress.decision"], 40, "{exit}");
    assert_eq!(exit["denied_connections"], 60, "enforcement and its counts are unchanged: {exit}");
    audit(&log, &["verify"]).success();
}
