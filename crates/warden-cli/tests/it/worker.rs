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
        model: Some("fake-model".into()),
        approval_policy: "never".into(),
        base_options: warden_policy::PolicyOptions { no_audit: true, ..Default::default() },
        ..WorkerSettings::new(codex, base, upstream)
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

/// Every descendant of `pid` (through `/proc/<pid>/task/*/children`), bounded.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if out.len() > 256 {
            break;
        }
        for task in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// A pool of real Codex workers, each in warden's sandbox (started through warden-session's spawn
/// path by the supervisor): a turn through the pool completes against the fake upstream, the
/// command approval real Codex asks (policy `untrusted`) is answered by an `[[agent.rule]]`, the
/// key reaches only the upstream, a killed worker is restarted with a fresh home (nothing planted
/// in the old one survives) and the pool serves again, and shutdown removes every worker's home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_sandboxed_codex_workers_serves_turns_and_answers_approvals_by_rules() {
    use std::sync::{Arc, Mutex};
    use warden_agent::approval::{ApprovalMode, ApprovalPolicy, ApprovalRecord};
    use warden_agent::pool::{Pool, PoolSettings};
    use warden_agent::supervisor::{Launcher, SandboxLauncher, SupervisorSettings};
    use warden_agent::turn::{SandboxMode, ThreadParams, TurnEvent, TurnParams, TurnStatus};
    use warden_policy::{AgentRule, RuleDecision};

    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["ran it"]);
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"git status"}"#)));
    let base = s.root.join("workers");
    let mut ws = settings(&codex, &base, &up.url("/v1/responses"));
    ws.approval_policy = "untrusted".into();
    let host = host(&s.ws);
    let key = Arc::new(warden_credproxy::key_from_str(KEY).expect("key"));
    let records: Arc<Mutex<Vec<ApprovalRecord>>> = Arc::default();
    let sink = records.clone();
    let rule = |prefix: &[&str], decision| AgentRule {
        prefix: prefix.iter().map(|w| w.to_string()).collect(),
        decision,
        line: None,
    };
    let policy = ApprovalPolicy::new(
        ApprovalMode::Untrusted,
        vec![rule(&["git", "status"], RuleDecision::Allow), rule(&["git", "push"], RuleDecision::Deny)],
        vec![s.ws.clone()],
        Arc::new(move |r: &ApprovalRecord| sink.lock().expect("lock").push(r.clone())),
    );
    let supervisor = SupervisorSettings {
        startup_timeout: Duration::from_secs(20),
        handshake_timeout: Duration::from_secs(30),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..SupervisorSettings::default()
    };
    let ps = PoolSettings { workers: 1, per_worker: 2, queue: 4, queue_timeout: Duration::from_secs(60), supervisor };
    let pool = Pool::start(
        ps,
        |i| {
            let (launcher, warnings) = SandboxLauncher::new(
                crate::warden_path(),
                ws.clone(),
                host.clone(),
                &format!("w{i}"),
                Some(key.clone()),
            )
            .expect("prepare");
            assert!(warnings.is_empty(), "{warnings:?}");
            Arc::new(launcher) as Arc<dyn Launcher>
        },
        Arc::new(policy),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pool.supervisors().iter().all(|s| s.current().is_some()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the workers are not ready within 60 s: {:?}",
            pool.supervisors().iter().map(|s| s.stderr_tail()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_dir(&base).expect("the homes").count(), 2, "one home per worker, the spare's too");
    let thread = ThreadParams {
        cwd: s.ws.clone(),
        // warden is the sandbox: Codex's own is off; `untrusted` still makes it ask.
        sandbox: SandboxMode::DangerFullAccess,
        approval_policy: ApprovalMode::Untrusted,
        developer_instructions: None,
        model: None,
        ephemeral: true,
    };
    let run = |text: &'static str| {
        let (pool, thread) = (pool.clone(), thread.clone());
        async move {
            let params = TurnParams { idle_timeout: Duration::from_secs(60), ..TurnParams::text(text) };
            let mut t = pool.turn(&thread, params).await.expect("a pool turn");
            let mut events = Vec::new();
            for _ in 0..10_000 {
                match tokio::time::timeout(Duration::from_secs(90), t.next()).await.expect("the turn goes on") {
                    Some(Ok(e)) => events.push(e),
                    Some(Err(e)) => panic!("the turn failed: {e}; stderr: {}", pool.supervisors()[0].stderr_tail()),
                    None => break,
                }
            }
            let worker = t.worker.clone();
            (events, worker)
        }
    };
    let (events, served_by) = run("check the status").await;
    assert!(matches!(events.last(), Some(TurnEvent::Completed { status: TurnStatus::Completed, .. })), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            TurnEvent::TextDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "ran it");
    {
        let r = records.lock().expect("lock");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].method, "item/commandExecution/requestApproval");
        assert_eq!(r[0].decision, "accept", "{:?}", r[0]);
        assert_eq!(r[0].rule.as_ref().map(|r| r.decision), Some(RuleDecision::Allow));
    }
    let outputs = up.function_outputs();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(outputs[0].contains("exited with code") && !outputs[0].contains("rejected"), "it ran: {outputs:?}");
    // The real key reached the upstream, and no process of any worker holds it.
    let reqs = up.requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.header_values("authorization") == [format!("Bearer {KEY}")]));
    let mut checked = 0;
    for sup in pool.supervisors() {
        let pid = sup.current().and_then(|w| w.pid).expect("a worker pid");
        for p in descendants(pid).into_iter().chain([pid]) {
            let Ok(env) = std::fs::read(format!("/proc/{p}/environ")) else { continue };
            let env = String::from_utf8_lossy(&env);
            assert!(!env.contains(KEY) && !env.contains("gateway-client-key"), "process {p}: {env}");
            checked += 1;
        }
    }
    assert!(checked >= 4, "the session, PID 1 and Codex of each worker were checked: {checked}");

    // A worker killed mid-life is restarted; the pool serves again meanwhile and after.
    let victim = served_by.pid.expect("a pid");
    let name = served_by.name.clone();
    drop(served_by);
    // What a prompt-injected worker could leave in its writable home for the next process.
    let index = name.strip_prefix("worker-").expect("a worker name");
    let victim_home = base.join(format!("w{index}"));
    std::fs::write(victim_home.join("planted.md"), "planted").expect("plant a file");
    let mut config = std::fs::read_to_string(victim_home.join("config.toml")).expect("config");
    config.push_str("\n# POISONED\n");
    std::fs::write(victim_home.join("config.toml"), config).expect("poison the config");
    let killed = std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status().expect("kill");
    assert!(killed.success());
    let sup = pool.supervisors().iter().find(|s| s.name() == name).expect("its supervisor").clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sup.current().is_none_or(|w| w.generation < 2) {
        assert!(std::time::Instant::now() < deadline, "no restart within 60 s: {}", sup.stderr_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted worker got a fresh home.
    assert!(!victim_home.join("planted.md").exists(), "a planted file survived the restart");
    let config = std::fs::read_to_string(victim_home.join("config.toml")).expect("config");
    assert!(!config.contains("POISONED"), "the config was not regenerated: {config}");
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"git push origin main"}"#)));
    let (events, _) = run("now push").await;
    assert!(matches!(events.last(), Some(TurnEvent::Completed { .. })), "{events:?}");
    {
        let r = records.lock().expect("lock");
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1].decision, "decline", "{:?}", r[1]);
    }
    assert!(up.function_outputs()[1].contains("rejected by user"));
    for v in &events {
        assert!(!format!("{v:?}").contains(KEY));
    }
    pool.shutdown().await;
    drop(pool);
    // The supervisors' tasks ended and dropped their launchers: every home is removed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&base).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(std::time::Instant::now() < deadline, "worker homes left in {}", base.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
