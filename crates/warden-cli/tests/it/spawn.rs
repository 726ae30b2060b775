//! warden-session's spawn path, driven from multi-threaded tokio tests as the agent pool and the
//! gateway drive it: many sandboxed sessions with piped stdio, dropped handles, kill with a grace
//! period, events over the control channel, and a key that only ever travels as a frame.
//!
//! Every session of a test runs in the process group of its `warden __session` process, and its
//! sandbox in the session that PID 1 leads (its pid is the session's and the process group's id;
//! the command inherits them), so "no process of theirs survives" is checked by scanning `/proc`
//! for members of those groups and sessions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use warden_session::{spawn, SessionEvent, SessionSpec, StdioMode};

/// Every wait of these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// A spec for `argv` in the offline profile (or `profile`), workdir `ws`, audit log `audit`.
fn spec(
    ws: &Path,
    audit: &Path,
    profile: &str,
    extra: impl FnOnce(&mut warden_policy::PolicyOptions),
    argv: &[&str],
) -> SessionSpec {
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned();
    // A neutral host view: no home and no XDG variables, so no user config is read.
    let host = warden_policy::HostContext { cwd: ws.to_path_buf(), home: None, env: vec![("PATH".into(), path)] };
    let mut opts = warden_policy::PolicyOptions {
        profile: Some(profile.parse().expect("profile")),
        workdir: Some(ws.to_path_buf()),
        audit_log: Some(audit.to_path_buf()),
        ..Default::default()
    };
    extra(&mut opts);
    let resolved = warden_policy::resolve(&opts, &host).expect("policy");
    SessionSpec {
        policy: resolved.policy,
        warnings: resolved.warnings,
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        host_env: host.env,
        credential: None,
        stdio: StdioMode::Pipes,
        allow_nested_userns: false,
        init_hook: None,
    }
}

/// A workdir and, apart from it (the log's directory may not contain the workdir), an audit log.
struct Place {
    _ws: tempfile::TempDir,
    _state: tempfile::TempDir,
    ws: PathBuf,
    audit: PathBuf,
}

fn place() -> Place {
    let ws = warden_testkit::world_tempdir();
    let state = warden_testkit::world_tempdir();
    let (w, a) = (ws.path().to_path_buf(), state.path().join("audit.jsonl"));
    Place { _ws: ws, _state: state, ws: w, audit: a }
}

/// The `run.exit` records of a log.
fn exits(audit: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "run.exit")
        .collect()
}

/// Processes (pid, comm) whose process group or session is one of `groups`.
fn members_of(groups: &[u32]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let Some(close) = stat.rfind(')') else { continue };
        let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let mut id = || rest.next().and_then(|p| p.parse::<u32>().ok());
        let (_state, _ppid, pgrp, session) = (id(), id(), id(), id());
        if [pgrp, session].into_iter().flatten().any(|g| groups.contains(&g)) {
            out.push((pid, comm));
        }
    }
    out
}

/// Waits (bounded) until no process of `groups` (process groups or sessions) is left; returns
/// what is left.
async fn survivors(groups: &[u32]) -> Vec<(u32, String)> {
    let start = Instant::now();
    loop {
        let left = members_of(groups);
        if left.is_empty() || start.elapsed() > Duration::from_secs(15) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_sessions_at_once_and_ten_dropped_mid_run_leave_nothing_behind() {
    let p = place();
    let warden = crate::warden_path();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50u32 {
        let spec = spec(&p.ws, &p.audit, "offline", |_| {}, &["cat"]);
        let warden = warden.clone();
        tasks.spawn(async move {
            let mut h = spawn(&warden, spec, None).await.expect("spawn");
            let group = h.pid().expect("pid");
            let mut stdin = h.stdin.take().expect("stdin");
            let mut stdout = BufReader::new(h.stdout.take().expect("stdout"));
            let line = format!("hello from session {i}\n");
            stdin.write_all(line.as_bytes()).await.expect("write");
            let mut echoed = String::new();
            tokio::time::timeout(LIMIT, stdout.read_line(&mut echoed)).await.expect("echo in time").expect("read");
            assert_eq!(echoed, line, "the round trip through cat in session {i}");
            // The echo can overtake the Started event (stdout and the control channel are two
            // streams); wait for the event itself.
            let pid1 = tokio::time::timeout(LIMIT, h.started()).await.expect("in time").expect("started");
            assert_eq!(h.sandbox_pid(), Some(pid1));
            if i < 10 {
                // Mid-run: cat still waits for input (its stdin stays open, held by the test until
                // the end). Dropping the handle must end it all.
                drop(h);
                (i, group, pid1, None, Some((stdin, stdout)))
            } else {
                drop(stdin);
                let end = tokio::time::timeout(LIMIT, h.wait()).await.expect("end in time").expect("wait");
                (i, group, pid1, Some(end), None)
            }
        });
    }
    let mut groups = Vec::new();
    let mut pids1 = Vec::new();
    let mut held_pipes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (i, group, pid1, end, pipes) = r.expect("task");
        groups.push(group);
        pids1.push(pid1);
        held_pipes.extend(pipes);
        if let Some(end) = end {
            let exit = end.exit.as_ref().unwrap_or_else(|| panic!("session {i} reported no end: {end:?}"));
            assert_eq!((exit.exit_code, exit.outcome.as_str()), (0, "exited"), "session {i}: {end:?}");
            assert_eq!(end.exit_code(), 0);
            assert!(end.status.success(), "session {i}: {end:?}");
        }
    }
    assert_eq!(groups.len(), 50);
    groups.extend(pids1.iter().map(|&p| u32::try_from(p).expect("a pid")));
    let left = survivors(&groups).await;
    assert!(left.is_empty(), "processes of the sessions survived: {left:?}");
    for pid in pids1 {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "PID 1 {pid} of a session is still there");
    }
    // Every end is reported with its status: 40 exits and 10 cancellations in the audit log.
    let start = Instant::now();
    let mut records = exits(&p.audit);
    while records.len() < 50 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        records = exits(&p.audit);
    }
    let count = |outcome: &str, code: i64| {
        records.iter().filter(|r| r["outcome"] == outcome && r["exit_code"].as_i64() == Some(code)).count()
    };
    assert_eq!(records.len(), 50, "one run.exit per session: {records:#?}");
    assert_eq!(count("exited", 0), 40, "{records:#?}");
    assert_eq!(count("cancelled", 137), 10, "{records:#?}");
    assert!(records
        .iter()
        .filter(|r| r["outcome"] == "cancelled")
        .all(|r| r["detail"].as_str().is_some_and(|d| d.contains("closed the control channel"))));
    drop(held_pipes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_terminates_first_and_kills_what_ignores_sigterm() {
    let p = place();
    let warden = crate::warden_path();
    // sleep ends on SIGTERM.
    let mut h = spawn(&warden, spec(&p.ws, &p.audit, "offline", |_| {}, &["sleep", "60"]), None).await.expect("spawn");
    h.started().await.expect("started");
    let t = Instant::now();
    let end = h.kill(Duration::from_secs(5)).await.expect("kill");
    assert_eq!(end.exit.as_ref().map(|e| (e.outcome.as_str(), e.signal)), Some(("signaled", Some(15))), "{end:?}");
    assert_eq!(end.exit_code(), 143);
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM ended it without the grace period");
    // A command that ignores SIGTERM is killed after the grace period, with its whole sandbox.
    let script = "trap '' TERM; sleep 60 & wait; sleep 60";
    let mut h =
        spawn(&warden, spec(&p.ws, &p.audit, "offline", |_| {}, &["sh", "-c", script]), None).await.expect("spawn");
    let pid1 = h.started().await.expect("started");
    let group = [h.pid().expect("pid"), u32::try_from(pid1).expect("a pid")];
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(members_of(&group).len() >= 3, "warden __session, PID 1, sh and sleep run: {:?}", members_of(&group));
    let end = h.kill(Duration::from_millis(300)).await.expect("kill");
    let exit = end.exit.as_ref().expect("a report");
    assert_eq!((exit.outcome.as_str(), exit.exit_code), ("cancelled", 137), "{end:?}");
    assert!(exit.detail.as_deref().is_some_and(|d| d.contains("killed by the session's owner")), "{end:?}");
    let left = survivors(&group).await;
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_come_back_over_the_control_channel() {
    let p = place();
    let warden = crate::warden_path();
    let curl = "curl -s -o /dev/null -w '%{http_code}' -x \"$HTTP_PROXY\" http://denied.test/";
    let allow = |o: &mut warden_policy::PolicyOptions| {
        o.net = Some(warden_policy::NetMode::Allowlist);
        o.network.allow.push(warden_policy::AllowRule { pattern: "allowed.test".into(), expires: None, raw: false });
    };
    let mut h =
        spawn(&warden, spec(&p.ws, &p.audit, "offline", allow, &["sh", "-c", curl]), None).await.expect("spawn");
    let mut stdout = h.stdout.take().expect("stdout");
    let mut events = Vec::new();
    let collected = tokio::time::timeout(LIMIT, async {
        while let Some(e) = h.next_event().await {
            let last = matches!(e, SessionEvent::Exited(_));
            events.push(e);
            if last {
                break;
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "events in time: {events:?}");
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.expect("stdout");
    assert_eq!(out, "403", "the proxy denied it");
    assert!(
        matches!(events.first(), Some(SessionEvent::Started { pid, audit_session: Some(_) }) if *pid > 0),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, SessionEvent::ConnectionDenied { host, port: 80, reason: Some(r), .. }
            if host == "denied.test" && r == "not-allowlisted")),
        "{events:?}"
    );
    let end = h.wait().await.expect("wait");
    assert_eq!(end.exit.as_ref().map(|e| (e.exit_code, e.denied_connections)), Some((0, 1)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_start_says_why() {
    let p = place();
    let warden = crate::warden_path();
    let mut h = spawn(&warden, spec(&p.ws, &p.audit, "offline", |_| {}, &[]), None).await.expect("spawn");
    let err = h.started().await.expect_err("no command");
    assert!(err.to_string().contains("no command given"), "{err}");
    let end = h.wait().await.expect("wait");
    assert_eq!(end.exit_code(), 125, "{end:?}");
    assert!(end.refused.as_deref().is_some_and(|m| m.contains("no command given")), "{end:?}");
    // A warden binary that is not there is an error naming it.
    let missing = Path::new("/nonexistent/warden");
    let err = spawn(missing, spec(&p.ws, &p.audit, "offline", |_| {}, &["true"]), None).await.expect_err("no binary");
    assert!(err.to_string().contains("/nonexistent/warden"), "{err}");
    // The hidden entry refuses to run without a control socket from a parent.
    let out = crate::warden().args(["__session"]).run();
    out.code(125).stderr_has("control socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_given_key_reaches_the_upstream_and_nothing_else() {
    use warden_testkit::fake_upstream::FakeUpstream;
    const KEY: &str = "sk-spawned-SECRET_0123456789";
    let up = FakeUpstream::start();
    let p = place();
    let warden = crate::warden_path();
    let mut s = spec(
        &p.ws,
        &p.audit,
        "offline",
        |_| {},
        &[
            "sh",
            "-c",
            "sleep 0.5; curl -s -X POST -H \"authorization: Bearer $OPENAI_API_KEY\" -d '{}' \"$OPENAI_BASE_URL/responses\"; \
             echo; env",
        ],
    );
    s.credential = Some(warden_session::CredentialSpec {
        source: warden_session::CredentialSource::Given,
        upstream: up.url("/v1/responses"),
    });
    let key = warden_credproxy::key_from_str(KEY).expect("key");
    let mut h = spawn(&warden, s, Some(&key)).await.expect("spawn");
    let child = h.pid().expect("pid");
    // Neither argv nor the environment of `warden __session` carries the key (the environment is
    // empty, and only root may read that of a process holding a key: it is not dumpable).
    let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).expect("cmdline of the running child");
    let argv: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(argv, [warden.display().to_string().as_str(), "__session", "--control-fd", "3", ""], "{argv:?}");
    if let Ok(env) = std::fs::read(format!("/proc/{child}/environ")) {
        assert!(env.is_empty(), "{}", String::from_utf8_lossy(&env));
    }
    let mut stdout = h.stdout.take().expect("stdout");
    let mut out = String::new();
    tokio::time::timeout(LIMIT, stdout.read_to_string(&mut out)).await.expect("in time").expect("stdout");
    let end = h.wait().await.expect("wait");
    assert_eq!(end.exit_code(), 0, "{end:?}\n{out}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{out}");
    assert_eq!(seen[0].header("authorization").as_deref(), Some(format!("Bearer {KEY}").as_str()));
    assert!(out.contains("OPENAI_API_KEY=warden-proxied"), "{out}");
    assert!(!out.contains(KEY), "the sandbox saw the key:\n{out}");
    let log = std::fs::read_to_string(&p.audit).expect("log");
    assert!(!log.contains(KEY) && log.contains("credproxy.request"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_session_gives_the_command_a_terminal() {
    let p = place();
    let warden = crate::warden_path();
    let mut s =
        spec(&p.ws, &p.audit, "offline", |_| {}, &["sh", "-c", "read line; tty; stty size; echo \"got $line\""]);
    s.stdio = StdioMode::Pty { rows: 33, cols: 101 };
    let mut h = spawn(&warden, s, None).await.expect("spawn");
    let master = std::fs::File::from(h.take_pty().expect("a pty"));
    h.started().await.expect("started");
    let out = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut m = master;
        m.write_all(b"typed\r").expect("type");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // EOF or EIO once every slave is closed.
        while let Ok(n) = m.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let end = tokio::time::timeout(LIMIT, h.wait()).await.expect("in time").expect("wait");
    let out = tokio::time::timeout(LIMIT, out).await.expect("output in time").expect("reader");
    assert_eq!(end.exit_code(), 0, "{end:?}\n{out}");
    // The sandbox's own pty (relayed), with the size asked for.
    assert!(out.contains("/dev/pts/0") && out.contains("33 101") && out.contains("got typed"), "{out:?}");
}
