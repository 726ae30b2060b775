//! warden-testkit's own tests: the fake worker behaves like Codex's app-server where the
//! reference says how that behaves; the fake upstream's tool-call mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The fake worker on pipes, its output lines on a channel.
struct Fake {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Fake {
    fn start(args: &[&str]) -> Fake {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-worker"))
            .args(args)
            .env_remove("FAKE_WORKER_FAULTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the fake worker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Fake { child, stdin, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write");
        stdin.flush().expect("flush");
    }

    /// The next message (bounded).
    fn next(&self) -> Value {
        let line = self.lines.recv_timeout(Duration::from_secs(5)).expect("a message within 5 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Messages until one satisfies `f` (bounded in count).
    fn until(&self, f: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        for _ in 0..200 {
            let m = self.next();
            let done = f(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
        panic!("not found in {seen:?}");
    }

    /// Closes stdin; the exit code within 5 s.
    fn close_and_wait(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the fake worker did not exit at stdin EOF");
    }
}

/// The text of the agent message deltas among `msgs`.
fn reply_text(msgs: &[Value]) -> String {
    msgs.iter()
        .filter(|m| m["method"] == "item/agentMessage/delta")
        .filter_map(|m| m["params"]["delta"].as_str())
        .collect()
}

const INIT: &str = r#"{"id":0,"method":"initialize","params":{"clientInfo":{"name":"t","title":null,"version":"1"}}}"#;

#[test]
fn speaks_v2_like_codex_and_exits_at_stdin_eof() {
    let mut f = Fake::start(&[]);
    f.send(r#"{"id":"a","method":"thread/start","params":{}}"#);
    assert_eq!(f.next(), json!({ "id": "a", "error": { "code": -32600, "message": "Not initialized" } }));
    f.send("this is not json");
    f.send(INIT);
    let init = f.next();
    assert_eq!(init["id"], 0);
    assert!(init["result"]["userAgent"].as_str().is_some_and(|u| u.starts_with("t/")), "{init}");
    assert!(init.get("jsonrpc").is_none(), "no jsonrpc field: {init}");
    f.send(INIT);
    assert_eq!(f.next()["error"]["message"], "Already initialized");
    f.send(r#"{"method":"initialized"}"#);
    f.send(
        r#"{"id":1,"method":"thread/start","params":{"cwd":"/","approvalPolicy":"on-failure","sandbox":"read-only"}}"#,
    );
    let refused = f.next();
    assert!(
        refused["error"]["message"].as_str().is_some_and(|m| m.contains("unknown variant `on-failure`")),
        "{refused}"
    );
    f.send(r#"{"id":2,"method":"thread/start","params":{"cwd":"/","approvalPolicy":"untrusted","sandbox":"workspace-write"}}"#);
    let started = f.next();
    let thread = started["result"]["thread"]["id"].as_str().expect("thread id").to_owned();
    assert_eq!(started["result"]["sandbox"]["type"], "workspaceWrite");
    assert_eq!(f.next()["method"], "thread/started");
    f.send(&json!({ "id": 3, "method": "turn/start", "params": { "threadId": thread, "input": [{ "type": "text", "text": "hey" }] } }).to_string());
    let msgs = f.until(|m| m["method"] == "turn/completed");
    assert_eq!(msgs[0]["id"], 3);
    let turn = msgs[0]["result"]["turn"]["id"].as_str().expect("turn id").to_owned();
    for n in &msgs[1..] {
        assert!(n.get("id").is_none() && n.get("jsonrpc").is_none(), "{n}");
        assert!(n["params"]["emittedAtMs"].is_u64(), "{n}");
        let t = n["params"].get("turnId").or_else(|| n["params"].pointer("/turn/id"));
        assert_eq!(t.and_then(Value::as_str), Some(turn.as_str()), "{n}");
        assert_eq!(n["params"]["threadId"].as_str(), Some(thread.as_str()), "{n}");
    }
    let text = reply_text(&msgs);
    assert_eq!(text, format!("You said: hey [turn 1 of {thread}]"));
    assert_eq!(f.close_and_wait(), Some(0));
}

#[test]
fn server_requests_have_their_own_ids_and_unanswered_ones_are_reported() {
    let mut f = Fake::start(&["--fault", "approvals", "--approval-wait-ms", "100"]);
    f.send(INIT);
    f.next();
    f.send(r#"{"id":1,"method":"thread/start","params":{}}"#);
    let thread = f.next()["result"]["thread"]["id"].as_str().expect("id").to_owned();
    f.send(&json!({ "id": 2, "method": "turn/start", "params": { "threadId": thread, "input": [] } }).to_string());
    // Answer the first server request only; the others time out (100 ms each).
    let first = f.until(|m| m.get("method").is_some() && m.get("id").is_some());
    let req = first.last().expect("a request");
    assert_eq!((req["id"].clone(), req["method"].clone()), (json!(0), json!("item/commandExecution/requestApproval")));
    assert_eq!(req["params"]["command"], "/bin/bash -lc 'git status'");
    f.send(r#"{"id":0,"result":{"decision":"decline"}}"#);
    let msgs = f.until(|m| m["method"] == "turn/completed");
    let ids: Vec<u64> = msgs.iter().filter(|m| m.get("method").is_some()).filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids, (1..warden_testkit::fake_worker::APPROVAL_PROBES.len() as u64).collect::<Vec<_>>());
    let text = reply_text(&msgs);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "command=\"decline\"");
    assert!(lines[1..].iter().all(|l| l.ends_with("=silence")), "{lines:?}");
    assert_eq!(f.close_and_wait(), Some(0));
}

#[test]
fn bad_options_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_fake-worker")).args(["--fault", "nope"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault \"nope\" (accepted: crash-mid-turn"));
}

/// One POST to the fake upstream over plain HTTP/1.1; the response body.
fn post(up: &warden_testkit::fake_upstream::FakeUpstream, body: &Value) -> String {
    let mut s = std::net::TcpStream::connect(up.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let body = body.to_string();
    write!(s, "POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_fake_upstream_calls_a_function_per_user_turn() {
    let up = warden_testkit::fake_upstream::FakeUpstream::start();
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"ls"}"#)));
    let user = json!({ "input": [{ "type": "message", "role": "user", "content": [] }] });
    let first = post(&up, &user);
    assert!(first.contains("\"type\":\"function_call\"") && first.contains("call_fake_1"), "{first}");
    let follow = json!({ "input": [{ "type": "function_call_output", "call_id": "call_fake_1", "output": "out" }] });
    let second = post(&up, &follow);
    assert!(second.contains("response.output_text.delta") && !second.contains("function_call\""), "{second}");
    assert_eq!(up.function_outputs(), ["out"]);
    up.set_tool_call(None);
    assert!(!post(&up, &user).contains("function_call"));
}
