//! `warden run` leaves a verifiable record; `warden audit verify/show/tail` read it; the
//! sandbox can neither read nor alter it.

use std::path::{Path, PathBuf};

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
