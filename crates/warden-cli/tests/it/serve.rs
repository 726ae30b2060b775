//! `warden serve` as users start it: refusals of unsafe starts (no client key, `--no-auth` or a
//! short key off loopback, bad settings naming their source), sandboxed fake workers end to end
//! (health names warden's profile, audit records, SIGTERM drains and removes the workers'
//! homes), and real Codex 0.169.0 workers against the testkit's fake upstream: a chat turn, a
//! conversation continued by `previous_response_id`, the key only at the upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_testkit::fake_upstream::FakeUpstream;

use crate::Scratch;

const MODEL_KEY: &str = "sk-serve-REALKEY_0123456789abcdef";
const CLIENT_KEY: &str = "sk-client-0123456789abcdef0123456789abcdef";

/// A running `warden serve`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

/// `warden serve` with `args`, the model key in `WARDEN_TEST_MODEL_KEY`, `env` on top of a
/// scrubbed environment; waits (90 s) for its "serving" line.
fn start(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = warden_testkit::scrubbed_command(crate::warden_path());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--credential-env", "WARDEN_TEST_MODEL_KEY"])
        .arg("--worker-home")
        .arg(s.root.join("homes"))
        .args(args)
        .env("WARDEN_TEST_MODEL_KEY", MODEL_KEY)
        .current_dir(&s.ws)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn warden serve");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let sink = stderr.clone();
    let pipe = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok).take(100_000) {
            if let Some(rest) = line.strip_prefix("warden: serving http://") {
                if let Some(addr) = rest.split('/').next().and_then(|a| a.parse().ok()) {
                    let _ = tx.send(addr);
                }
            }
            let mut s = sink.lock().expect("lock");
            s.push_str(&line);
            s.push('\n');
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("warden serve did not start within 90 s: {}", stderr.lock().expect("lock"))
    });
    Serve { child, addr, stderr }
}

impl Serve {
    /// Until `/readyz` is 200 (90 s).
    fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while http(self.addr, "GET", "/readyz", None, None).0 != 200 {
            assert!(Instant::now() < deadline, "not ready within 90 s: {}", self.stderr.lock().expect("lock"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status within 30 s.
    fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                return (st.code().unwrap_or(-1), self.stderr.lock().expect("lock").clone());
            }
            assert!(Instant::now() < deadline, "warden serve did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request (`Connection: close`): status and body.
fn http(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    let chunked =
        text.split("\r\n\r\n").next().is_some_and(|h| h.to_ascii_lowercase().contains("transfer-encoding: chunked"));
    (status, if chunked { dechunk(&body) } else { body })
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = b.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        b = rest.get(n + 2..).unwrap_or_default();
    }
    out
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The fake worker copied where sandboxed workers can see it (the sandbox's /tmp is private).
fn visible_fake(s: &Scratch) -> PathBuf {
    let fake = s.root.join("fake-worker");
    if !fake.exists() {
        std::fs::copy(warden_testkit::fake_worker_bin(), &fake).expect("copy the fake worker");
        warden_testkit::set_mode(&fake, 0o755);
    }
    fake
}

fn refused(s: &Scratch, args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let mut cmd = warden_testkit::scrubbed_command(crate::warden_path());
    cmd.arg("serve").args(["--credential-env", "WARDEN_TEST_MODEL_KEY", "--no-audit"]);
    if !args.contains(&"--codex-bin") {
        cmd.arg("--codex-bin").arg(visible_fake(s));
    }
    cmd.arg("--worker-home")
        .arg(s.root.join("homes"))
        .args(args)
        .env("WARDEN_TEST_MODEL_KEY", MODEL_KEY)
        .current_dir(&s.ws);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = warden_testkit::run_bounded(cmd, Duration::from_secs(30));
    out.failure();
    for n in needles {
        out.stderr_has(n);
    }
    out.stderr_lacks(MODEL_KEY);
    out.stderr_lacks("sk-short");
}

#[test]
fn unsafe_or_invalid_starts_are_refused_with_the_reason() {
    let s = Scratch::visible();
    refused(&s, &["--listen", "127.0.0.1:0"], &[], &["no client key", "--api-key-file", "--no-auth"]);
    refused(&s, &["--listen", "0.0.0.0:0", "--no-auth"], &[], &["--no-auth on 0.0.0.0:0", "loopback"]);
    refused(&s, &["--listen", "0.0.0.0:0"], &[("PROXY_API_KEY", "sk-short")], &["at least 32 characters", "default"]);
    refused(&s, &["--no-auth"], &[("WORKER_MAX_CONCURRENCY", "lots")], &["WORKER_MAX_CONCURRENCY", "1..=4096"]);
    refused(&s, &["--no-auth", "--listen", "nowhere"], &[], &["--listen", "ADDR:PORT"]);
    refused(&s, &["--no-auth", "--model", "bad id"], &[], &["--model", "model id"]);
    refused(&s, &["--no-auth", "--sandbox", "workspace-write"], &[], &["workdir"]);
    let cfg = s.file("warden.toml", "[serve]\nworkers = \"two\"\n");
    refused(&s, &["--no-auth", "--config", cfg.to_str().expect("utf-8")], &[], &["warden.toml", "workers"]);
    let cfg = s.file("bad.toml", "[serve]\nlisten_on = \"x\"\n");
    refused(&s, &["--no-auth", "--config", cfg.to_str().expect("utf-8")], &[], &["listen_on", "accepted"]);
    let keys = s.file("keys.txt", "alice sk-no-colon\n");
    refused(&s, &["--api-key-file", keys.to_str().expect("utf-8")], &[], &["keys.txt:1", "name:key"]);
}

fn homes_left(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

#[test]
fn sandboxed_fake_workers_serve_and_sigterm_drains_and_cleans_up() {
    let s = Scratch::visible();
    let audit = s.root.join("log").join("audit.jsonl");
    let keys = s.file("keys.txt", &format!("# clients\nci:{CLIENT_KEY}\n"));
    let fake = visible_fake(&s);
    let srv = start(
        &s,
        &[
            "--codex-bin",
            fake.to_str().expect("utf-8"),
            "--api-key-file",
            keys.to_str().expect("utf-8"),
            "--audit-log",
            audit.to_str().expect("utf-8"),
            "--model",
            "codex=gpt-test:low",
        ],
        &[("PROXY_IDLE_TIMEOUT_MS", "5000")],
    );
    srv.ready();
    let (st, body) = http(srv.addr, "GET", "/healthz", None, None);
    assert_eq!(st, 200);
    let h = json_of(&body);
    assert_eq!((h["profile"].as_str(), h["sandbox_mode"].as_str()), (Some("offline"), Some("read-only")), "{h}");
    assert!(h["credential"].as_str().is_some_and(|c| c.contains("credential proxy")), "{h}");
    assert_eq!(h["workers"].as_array().map(Vec::len), Some(3));
    let chat = json!({"model": "codex", "messages": [{"role": "user", "content": "hello"}]});
    assert_eq!(http(srv.addr, "POST", "/v1/chat/completions", None, Some(&chat)).0, 401);
    let (st, body) = http(srv.addr, "POST", "/v1/chat/completions", Some(CLIENT_KEY), Some(&chat));
    assert_eq!(st, 200, "{body}");
    assert!(
        json_of(&body)["choices"][0]["message"]["content"].as_str().is_some_and(|c| c.starts_with("You said: hello")),
        "{body}"
    );
    let stream = json!({"model": "codex", "stream": true, "input": "streamed"});
    let (st, body) = http(srv.addr, "POST", "/v1/responses", Some(CLIENT_KEY), Some(&stream));
    assert_eq!(st, 200);
    assert!(body.contains("event: response.completed"), "{body}");
    // The workers run in the sandbox: PID 1 of each is warden's init, the fake worker its child.
    let homes = homes_left(&s.root.join("homes"));
    assert_eq!(homes.len(), 1, "one directory of this serve process: {homes:?}");
    assert_eq!(homes_left(&homes[0]).len(), 3, "a home per worker and the spare");
    let (code, err) = srv.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warden: draining"), "{err}");
    assert!(homes_left(&s.root.join("homes")).is_empty(), "the workers' homes are removed at exit");
    let log = std::fs::read_to_string(&audit).expect("audit log");
    assert!(!log.contains("hello") && !log.contains(CLIENT_KEY) && !log.contains(MODEL_KEY), "{log}");
    let events: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    for e in ["serve.start", "serve.request", "run.start", "serve.stop"] {
        assert!(events.iter().any(|x| x == e), "{e} in {events:?}");
    }
    let verify = crate::warden().args(["audit", "verify", "--audit-log"]).args([&audit]).run();
    verify.success();
}

#[test]
fn real_codex_workers_answer_and_continue_conversations_without_the_key() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["first ", "answer"]);
    let url = up.url("/v1/responses");
    let srv = start(
        &s,
        &[
            "--codex-bin",
            codex.to_str().expect("utf-8"),
            "--credential-upstream",
            &url,
            "--model",
            "codex=fake-model",
            "--workers",
            "1",
            "--no-audit",
        ],
        &[("PROXY_API_KEY", CLIENT_KEY), ("WORKER_STARTUP_TIMEOUT_MS", "30000"), ("PROXY_IDLE_TIMEOUT_MS", "60000")],
    );
    srv.ready();
    let chat = json!({"model": "codex", "messages": [{"role": "system", "content": "SYSTEM-RULES"}, {"role": "user", "content": "say hi"}]});
    let (st, body) = http(srv.addr, "POST", "/v1/chat/completions", Some(CLIENT_KEY), Some(&chat));
    assert_eq!(st, 200, "{body}\n{}", srv.stderr.lock().expect("lock"));
    assert_eq!(json_of(&body)["choices"][0]["message"]["content"], "first answer", "{body}");
    let reqs = up.requests();
    assert!(
        reqs.iter().all(|r| r.header_values("authorization") == [format!("Bearer {MODEL_KEY}")]),
        "the upstream saw the real key"
    );
    let first_body = String::from_utf8_lossy(&reqs.last().expect("a request").body).into_owned();
    assert!(first_body.contains("SYSTEM-RULES"), "the system message reached the model as developer instructions");

    // A conversation: the second response continues the first's thread without resending it.
    let r1 = json_of(
        &http(
            srv.addr,
            "POST",
            "/v1/responses",
            Some(CLIENT_KEY),
            Some(&json!({"model": "codex", "input": "remember FIRST-TURN-TOKEN"})),
        )
        .1,
    );
    assert_eq!(r1["status"], "completed", "{r1}");
    up.set_deltas(&["second ", "answer"]);
    let (st, body) = http(
        srv.addr,
        "POST",
        "/v1/responses",
        Some(CLIENT_KEY),
        Some(&json!({"model": "codex", "input": "what did I say?", "previous_response_id": r1["id"]})),
    );
    assert_eq!(st, 200, "{body}\n{}", srv.stderr.lock().expect("lock"));
    assert_eq!(json_of(&body)["output_text"], "second answer", "{body}");
    let last = String::from_utf8_lossy(&up.requests().last().expect("a request").body).into_owned();
    assert!(
        last.contains("FIRST-TURN-TOKEN") && last.contains("what did I say?"),
        "Codex sent the thread's history: {last}"
    );
    let (st, body) = http(
        srv.addr,
        "POST",
        "/v1/responses",
        Some(CLIENT_KEY),
        Some(&json!({"model": "codex", "input": "x", "previous_response_id": "resp_unknown"})),
    );
    assert_eq!((st, json_of(&body)["error"]["code"].as_str()), (404, Some("previous_response_not_found")));

    // No process of the workers holds the model key or the client key.
    // warden serve itself included: both keys were wiped from its environment block.
    let mut checked = 0;
    let mut stack: Vec<u32> = vec![srv.child.id()];
    while let Some(p) = stack.pop() {
        if checked > 200 {
            break;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{p}/environ")) {
            let env = String::from_utf8_lossy(&env);
            assert!(!env.contains(MODEL_KEY) && !env.contains(CLIENT_KEY), "process {p} holds a key: {env}");
            checked += 1;
        }
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            stack.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
    }
    assert!(checked >= 4, "the workers' processes were checked: {checked}");
    let (code, err) = srv.stop();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(MODEL_KEY) && !err.contains(CLIENT_KEY));
}

#[test]
fn a_codex_installed_under_tmp_is_shown_to_the_workers_read_only() {
    let s = Scratch::visible();
    let in_tmp = Scratch::in_tmp();
    let fake = in_tmp.root.join("fake-worker");
    std::fs::copy(warden_testkit::fake_worker_bin(), &fake).expect("copy the fake worker");
    warden_testkit::set_mode(&fake, 0o755);
    let srv = start(&s, &["--no-auth", "--no-audit", "--codex-bin", fake.to_str().expect("utf-8")], &[]);
    srv.ready();
    let chat = json!({"model": "codex", "messages": [{"role": "user", "content": "from tmp"}]});
    let (st, body) = http(srv.addr, "POST", "/v1/chat/completions", None, Some(&chat));
    assert_eq!(st, 200, "{body}");
    assert_eq!(srv.stop().0, 0);
}

#[test]
fn an_audit_log_on_stdout_is_one_verifiable_chain_with_the_workers_records() {
    let s = Scratch::visible();
    let fake = visible_fake(&s);
    let out = s.root.join("stdout.jsonl");
    let mut cmd = warden_testkit::scrubbed_command(crate::warden_path());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--audit-log", "-", "--credential-env", "WARDEN_TEST_MODEL_KEY"])
        .arg("--codex-bin")
        .arg(&fake)
        .arg("--worker-home")
        .arg(s.root.join("homes"))
        .env("WARDEN_TEST_MODEL_KEY", MODEL_KEY)
        .current_dir(&s.ws)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create"))
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr: SocketAddr = lines
        .by_ref()
        .take(50)
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("warden: serving http://").and_then(|r| r.split('/').next()).and_then(|a| a.parse().ok())
        })
        .expect("the serving line");
    let srv = Serve { child, addr, stderr: Arc::default() };
    srv.ready();
    let chat = json!({"model": "codex", "messages": [{"role": "user", "content": "PROMPT-TEXT"}]});
    assert_eq!(http(srv.addr, "POST", "/v1/chat/completions", None, Some(&chat)).0, 200);
    let (code, _) = srv.stop();
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&out).expect("stdout");
    let records: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("every stdout line is a record")).collect();
    let sessions: std::collections::BTreeSet<&str> = records.iter().filter_map(|r| r["session"].as_str()).collect();
    assert_eq!(sessions.len(), 1, "one writer, one chain");
    for e in ["serve.start", "run.start", "serve.request", "run.exit", "serve.stop"] {
        assert!(records.iter().any(|r| r["event"] == e), "{e}: {text}");
    }
    assert_eq!(
        records.iter().filter(|r| r["event"] == "run.start").count(),
        3,
        "each worker's session, the spare's too"
    );
    assert!(records.iter().filter(|r| r["event"] == "run.start").all(|r| r["session_pid"].as_u64().is_some()));
    assert!(!text.contains("PROMPT-TEXT") && !text.contains(MODEL_KEY));
    crate::warden().args(["audit", "verify", "--audit-log"]).args([&out]).run().success().stdout_has("chain intact");
    crate::warden()
        .args(["run", "--audit-log", "-", "--", "true"])
        .run()
        .code(125)
        .stderr_has("standard output is the command's");
}
