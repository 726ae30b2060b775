//! The client against the real Codex app-server (not sandboxed: the supervisor does that), with
//! the testkit's fake Responses upstream as its model server, configured as
//! `shared/reference/codex-app-server.md` says.
//!
//! `$WARDEN_CODEX_BIN` names the binary (scripts/install-codex.sh prints it). Without it the tests
//! are skipped with a note, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_agent::approval::ApprovalMode;
use warden_agent::rpc::{ConnectionOptions, RefuseAll, ServerRequestHandler};
use warden_agent::turn::{self, SandboxMode, ThreadParams, TurnEvent, TurnStatus};
use warden_agent::AgentError;
use warden_policy::RuleDecision::{Allow, Deny};
use warden_testkit::fake_upstream::FakeUpstream;

use crate::support::*;

/// A Codex home (outside `$TMPDIR`: the reference's pitfall 1) with the offline config, and a
/// workdir beside it.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new(up: &FakeUpstream) -> Home {
        let base = std::env::var_os("WARDEN_TEST_HOST_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        let dir = tempfile::Builder::new().prefix("warden-agent-codex-").tempdir_in(&base).expect("codex home");
        let tmp = std::env::temp_dir();
        assert!(
            !dir.path().starts_with(&tmp),
            "CODEX_HOME {} must not be under TMPDIR {}",
            dir.path().display(),
            tmp.display()
        );
        let config = format!(
            r#"model = "fake-model"
model_provider = "fake"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false
web_search = "disabled"
[analytics]
enabled = false
[feedback]
enabled = false
[otel]
exporter = "none"
log_user_prompt = false
[features]
plugins = false
apps = false
remote_plugin = false
plugin_sharing = false
tool_suggest = false
image_generation = false
unbounded_connection_retries = false
[model_providers.fake]
name = "Fake local Responses"
base_url = {base_url}
wire_api = "responses"
env_key = "FAKE_API_KEY"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000
"#,
            base_url = warden_policy::toml_quote(&up.url("/v1"))
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config.toml");
        for sub in ["work", "extra"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn work(&self) -> PathBuf {
        self.path().join("work")
    }
}

/// `codex app-server` on stdio, with nothing of this process's environment but PATH and TMPDIR.
async fn codex(bin: &Path, home: &Home, handler: Arc<dyn ServerRequestHandler>) -> Worker {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("app-server")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("HOME", home.path())
        .env("CODEX_HOME", home.path())
        .env("FAKE_API_KEY", "fake-key")
        .current_dir(home.work());
    if let Some(t) = std::env::var_os("TMPDIR") {
        cmd.env("TMPDIR", t);
    }
    let opts = ConnectionOptions { request_timeout: Duration::from_secs(30), ..ConnectionOptions::default() };
    let w = Worker::spawn(cmd, handler, opts);
    let r = w.conn.initialize(&warden_agent::rpc::ClientInfo::warden(), Duration::from_secs(30)).await;
    let info = r.unwrap_or_else(|e| panic!("initialize: {e}; stderr: {}", w.stderr()));
    assert!(info.user_agent.starts_with("warden/"), "{info:?}");
    assert_eq!(info.codex_home.as_deref(), home.path().to_str());
    w
}

fn params(home: &Home, sandbox: SandboxMode, mode: ApprovalMode, ephemeral: bool) -> ThreadParams {
    ThreadParams {
        cwd: home.work(),
        sandbox,
        approval_policy: mode,
        developer_instructions: Some("You are tested by warden.".into()),
        model: None,
        ephemeral,
    }
}

async fn run_turn(w: &Worker, thread: &turn::ThreadId, text: &str) -> Vec<TurnEvent> {
    let mut stream = turn::start_turn(&w.conn, thread, turn_params(text, Duration::from_secs(60)))
        .await
        .unwrap_or_else(|e| panic!("turn/start: {e}; stderr: {}", w.stderr()));
    let (events, end) = within(Duration::from_secs(90), "the turn", drain(&mut stream)).await;
    assert_eq!(end, None, "{events:?}; stderr: {}", w.stderr());
    match events.last() {
        Some(TurnEvent::Completed { status: TurnStatus::Completed, error: None, .. }) => {}
        other => panic!("the turn did not complete: {other:?}; events: {events:?}; stderr: {}", w.stderr()),
    }
    events
}

#[tokio::test]
async fn a_simple_turn_completes_with_the_upstreams_text() {
    let Some(bin) = warden_testkit::codex_bin() else { return };
    let up = FakeUpstream::start();
    up.set_deltas(&["Hello from ", "the fake upstream"]);
    let home = Home::new(&up);
    let w = codex(&bin, &home, Arc::new(RefuseAll)).await;
    let thread = turn::start_thread(&w.conn, &params(&home, SandboxMode::ReadOnly, ApprovalMode::Never, true))
        .await
        .expect("thread/start");
    let events = run_turn(&w, &thread, "say hi").await;
    assert_eq!(text_of(&events), "Hello from the fake upstream");
    assert!(events.iter().any(|e| matches!(e, TurnEvent::ItemCompleted(i) if i.kind == "agentMessage")), "{events:?}");
    let reqs = up.requests();
    assert!(!reqs.is_empty());
    assert!(reqs
        .iter()
        .all(|r| r.path == "/v1/responses" && r.header("authorization").as_deref() == Some("Bearer fake-key")));
    assert!(reqs[0].body.windows(6).any(|x| x == b"say hi"), "the prompt reached the model server");
    assert!(reqs[0].body.windows(25).any(|x| x == b"You are tested by warden."), "developer instructions too");
    w.finish().await;
}

#[tokio::test]
async fn command_approvals_of_a_conversation_are_answered_by_rules() {
    let Some(bin) = warden_testkit::codex_bin() else { return };
    let up = FakeUpstream::start();
    up.set_deltas(&["ran it"]);
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"git status"}"#)));
    let home = Home::new(&up);
    let (policy, records) = policy(
        ApprovalMode::Untrusted,
        vec![rule(&["git", "status"], Allow), rule(&["git", "push"], Deny)],
        &[&home.work()],
    );
    let w = codex(&bin, &home, policy).await;
    // warden is the sandbox: Codex's own is off; `untrusted` still makes it ask.
    let thread =
        turn::start_thread(&w.conn, &params(&home, SandboxMode::DangerFullAccess, ApprovalMode::Untrusted, false))
            .await
            .expect("thread/start");
    let events = run_turn(&w, &thread, "check the status").await;
    assert_eq!(text_of(&events), "ran it");
    {
        let r = records.lock().expect("lock");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].method, "item/commandExecution/requestApproval");
        assert_eq!(r[0].decision, "accept", "{:?}", r[0]);
        assert_eq!(r[0].words, Some(vec!["git".to_owned(), "status".to_owned()]), "{:?}", r[0]);
        assert_eq!(r[0].thread.as_deref(), Some(thread.as_str()));
        assert_eq!(r[0].rule.as_ref().map(|r| r.decision), Some(Allow));
    }
    let outputs = up.function_outputs();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert!(outputs[0].contains("exited with code") && !outputs[0].contains("rejected"), "it ran: {outputs:?}");

    // The next turn of the same (kept) thread: a denied command.
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"git push origin main"}"#)));
    run_turn(&w, &thread, "now push").await;
    {
        let r = records.lock().expect("lock");
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1].decision, "decline", "{:?}", r[1]);
        assert_eq!(
            r[1].rule.as_ref().map(|r| (r.prefix.clone(), r.decision)),
            Some((vec!["git".into(), "push".into()], Deny))
        );
    }
    let outputs = up.function_outputs();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(outputs[1].contains("rejected by user"), "declined: {outputs:?}");
    // The second request carried the first turn: it is one conversation.
    let last = up.requests().pop().expect("requests");
    assert!(last.body.windows(16).any(|x| x == b"check the status"), "the history went along");
    w.finish().await;
}

#[tokio::test]
async fn file_change_approvals_follow_the_writable_roots() {
    let Some(bin) = warden_testkit::codex_bin() else { return };
    let up = FakeUpstream::start();
    up.set_deltas(&["patched"]);
    let home = Home::new(&up);
    let extra = home.path().join("extra");
    let outside = home.path().join("outside.txt");
    // Codex asks for writes outside its workspace; warden's writable roots include `extra`.
    let (policy, records) = policy(ApprovalMode::OnRequest, Vec::new(), &[&home.work(), &extra]);
    let w = codex(&bin, &home, policy).await;
    let thread =
        turn::start_thread(&w.conn, &params(&home, SandboxMode::WorkspaceWrite, ApprovalMode::OnRequest, true))
            .await
            .expect("thread/start");
    for (target, accepted) in [(extra.join("in.txt"), true), (outside.clone(), false)] {
        let patch = format!(
            "apply_patch <<'EOF'\n*** Begin Patch\n*** Add File: {}\n+hi\n*** End Patch\nEOF\n",
            target.display()
        );
        let args = json!({ "cmd": patch }).to_string();
        up.set_tool_call(Some(("exec_command", &args)));
        run_turn(&w, &thread, "patch it").await;
        {
            let r = records.lock().expect("lock");
            let last = r.last().expect("a decision");
            assert_eq!(last.method, "item/fileChange/requestApproval", "{r:?}");
            assert_eq!(last.paths, [target.display().to_string()]);
            assert_eq!(last.decision, if accepted { "accept" } else { "decline" }, "{last:?}");
        }
        assert_eq!(target.exists(), accepted, "{}: {}", target.display(), up.function_outputs().join("\n"));
    }
    w.finish().await;
}

#[tokio::test]
async fn the_real_app_server_refuses_on_failure() {
    let Some(bin) = warden_testkit::codex_bin() else { return };
    let up = FakeUpstream::start();
    let home = Home::new(&up);
    let w = codex(&bin, &home, Arc::new(RefuseAll)).await;
    let mut p = params(&home, SandboxMode::ReadOnly, ApprovalMode::Never, true).to_params().expect("params");
    p["approvalPolicy"] = json!("on-failure");
    let e = w.conn.request("thread/start", p, Duration::from_secs(30)).await.expect_err("refused");
    assert!(
        matches!(&e, AgentError::Rpc { code: -32600, message, .. } if message.contains("unknown variant `on-failure`")),
        "{e:?}"
    );
    w.finish().await;
}
