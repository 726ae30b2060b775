//! A real Codex app-server worker (npm 0.169.0) set up by `warden_agent::worker` and started in
//! warden's sandbox through warden-session's spawn path, driven with raw JSON-RPC lines: a turn
//! completes against the testkit's fake Responses upstream, the upstream saw the real key, and
//! no environment, file or output of the worker holds it. Also: `-c` values quoted by warden read
//! back intact through Codex's own config parser.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use warden_agent::worker::{self, WorkerSettings};
use warden_testkit::fake_upstream::FakeUpstream;

use crate::Scratch;

const KEY: &str = "sk-worker-REALKEY_0123456789abcdef";

/// One JSON-RPC line conversation with a worker.
struct Rpc {
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<Value>,
}

impl Rpc {
    async fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("write to the worker");
    }

    /// The next message matching `pred` (others are kept in `seen`), within 60 s.
    async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {what} within 60 s; seen: {:#?}", self.seen))
                .expect("read from the worker")
                .unwrap_or_else(|| panic!("the worker ended before {what}; seen: {:#?}", self.seen));
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if pred(&v) {
                return v;
            }
            self.seen.push(v);
        }
    }

    /// `initialize`, `initialized`, `thread/start`: the thread's `result`.
    async fn start_thread(&mut self, cwd: &Path) -> Value {
        self.send(json!({"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "warden-test", "title": null, "version": "0"}, "capabilities": {"experimentalApi": false}}})).await;
        self.until("the initialize result", |v| v["id"] == 0).await;
        self.send(json!({"method": "initialized"})).await;
        self.send(json!({"id": 1, "method": "thread/start", "params": {"cwd": cwd, "approvalPolicy": "never", "sandbox": "danger-full-access", "ephemeral": true}})).await;
        let r = self.until("the thread/start result", |v| v["id"] == 1).await;
        assert!(r.get("error").is_none(), "thread/start failed: {r}");
        r["result"].clone()
    }
}

fn settings(codex: &Path, base: &Path, upstream: &str) -> WorkerSettings {
    WorkerSettings {
        codex_bin: codex.to_path_buf(),
        model: Some("fake-model".into()),
        sandbox_mode: "read-only".into(),
        allow_trusted: false,
        workdir: None,
        approval_policy: "never".into(),
        source_home: None,
        codex_auth: None,
        allow_domains: vec![],
        credential_upstream: upstream.to_owned(),
        config_overrides: vec![],
        home_base: base.to_path_buf(),
        base_options: warden_policy::PolicyOptions { no_audit: true, ..Default::default() },
    }
}

fn host(cwd: &Path) -> warden_policy::HostContext {
    let mut env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME").collect();
    // What a gateway process has in its environment: none of it may reach a worker.
    env.push(("PROXY_API_KEY".into(), "gateway-client-key-0123456789abcdef0123".into()));
    env.push(("OPENAI_API_KEY".into(), KEY.into()));
    warden_policy::HostContext { cwd: cwd.to_path_buf(), home: None, env }
}

async fn spawn(prepared: &worker::PreparedWorker) -> (warden_session::SessionHandle, Rpc) {
    let key = warden_credproxy::key_from_str(KEY).expect("key");
    let mut h = warden_session::spawn(&crate::warden_path(), prepared.spec.clone(), Some(&key)).await.expect("spawn");
    let rpc = Rpc {
        stdin: h.stdin.take().expect("stdin"),
        lines: BufReader::new(h.stdout.take().expect("stdout")).lines(),
        seen: Vec::new(),
    };
    (h, rpc)
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_codex_worker_completes_a_turn_without_holding_the_key() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    let base = s.root.join("workers");
    let prepared =
        worker::prepare(&settings(&codex, &base, &up.url("/v1/responses")), &host(&s.ws), "w0").expect("prepare");
    let home = prepared.home.path().to_path_buf();
    let (mut h, mut rpc) = spawn(&prepared).await;
    let thread = rpc.start_thread(&s.ws).await;
    let tid = thread["thread"]["id"].clone();
    rpc.send(json!({"id": 2, "method": "turn/start", "params": {"threadId": tid, "input": [{"type": "text", "text": "say hi"}]}})).await;
    let done = rpc.until("turn/completed", |v| v["method"] == "turn/completed").await;
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
    let text: String = done["params"]["turn"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "agentMessage")
        .filter_map(|i| i["text"].as_str())
        .collect();
    assert!(!text.is_empty(), "no agent message: {done}");
    // The real key reached the upstream, through the credential proxy.
    let reqs = up.requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.header_values("authorization") == [format!("Bearer {KEY}")]));
    // Neither the worker's environment (its PID 1's and the command's) nor its files hold it.
    let pid1 = h.sandbox_pid().expect("started");
    let codex_pid = std::fs::read_to_string(format!("/proc/{pid1}/task/{pid1}/children")).unwrap_or_default();
    let mut checked = 0;
    for pid in codex_pid.split_whitespace() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).expect("the worker's environment is readable");
        let env = String::from_utf8_lossy(&env);
        assert!(!env.contains(KEY) && !env.contains("gateway-client-key"), "worker env: {env}");
        assert!(env.contains("OPENAI_API_KEY=warden-proxied"), "worker env: {env}");
        checked += 1;
    }
    assert_eq!(checked, 1, "PID 1 has one child, Codex");
    drop(rpc.stdin);
    let end =
        tokio::time::timeout(Duration::from_secs(30), h.wait()).await.expect("worker ends at stdin EOF").expect("wait");
    assert_eq!(end.exit_code(), 0, "{end:?}");
    for f in files(&home) {
        let data = std::fs::read(&f).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&data).contains(KEY), "{} holds the key", f.display());
    }
    for v in &rpc.seen {
        assert!(!v.to_string().contains(KEY), "the worker's output holds the key: {v}");
    }
    drop(prepared);
    assert!(!home.exists(), "the worker's home is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_values_quoted_by_warden_read_back_intact_in_codex() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    let base = s.root.join("workers");
    let weird = "we\"ird\\model\twith 'quotes' = [brackets] # hash\u{7}";
    let mut settings = settings(&codex, &base, &up.url("/v1/responses"));
    settings.config_overrides = vec![("model".into(), weird.into())];
    let prepared = worker::prepare(&settings, &host(&s.ws), "w1").expect("prepare");
    let (mut h, mut rpc) = spawn(&prepared).await;
    let thread = rpc.start_thread(&s.ws).await;
    assert_eq!(thread["model"].as_str(), Some(weird), "{thread}");
    drop(rpc.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), h.wait()).await;
}
