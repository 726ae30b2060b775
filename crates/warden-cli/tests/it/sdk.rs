//! The official OpenAI SDKs, unmodified, as clients of the real `warden serve` with real Codex
//! 0.169.0 workers and the testkit's fake upstream: the Python `openai` package and the Node
//! `openai` package, pinned in `tests/sdk/` and installed by `scripts/install-sdks.sh`
//! (`WARDEN_SDK_PYTHON`, `WARDEN_SDK_NODE_DIR`; outside CI a missing install skips with a note,
//! in CI it fails).
//!
//! Each SDK's client script (`tests/sdk/client.py`, `tests/sdk/client.mjs`) makes the calls and
//! reports what the SDK returned or raised as JSON; the checks are here, the same for both:
//! models, chat (plain and streamed with usage: chunk order, one finish, usage last), responses
//! (plain and through the SDK's stream helper), `previous_response_id` continuing the Codex
//! thread, and the error rows the SDKs map onto their exception types (401, 404 model and
//! conversation, 400 `n`, tools, images, tool messages, 409 busy conversation, 413, no route).
//! Then, with the upstream's events gated so a turn stays open: a client that disconnects frees
//! its worker within 5 s although the upstream never finished (the turn was interrupted), and a
//! worker killed mid-stream ends that stream with an error event the SDK raises, while the next
//! request succeeds. The model key reaches the upstream only: no script output, no SDK error and
//! no audit record holds it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_testkit::fake_upstream::FakeUpstream;

use crate::Scratch;

const MODEL_KEY: &str = "sk-sdk-REALKEY_0123456789abcdef";
const CLIENT_KEY: &str = "sk-sdk-client-0123456789abcdef0123456789";
const WRONG_KEY: &str = "sk-sdk-wrong-0123456789abcdef0123456789abc";
/// The fake upstream's answer, in deltas; every completed turn's text is their concatenation.
const DELTAS: [&str; 6] = ["Hello", " from", " the", " fake", " up", "stream"];
const PY_CLIENT: &str = include_str!("../sdk/client.py");
const NODE_CLIENT: &str = include_str!("../sdk/client.mjs");

fn answer() -> String {
    DELTAS.concat()
}

/// The installed SDKs (`WARDEN_SDK_PYTHON`, `WARDEN_SDK_NODE_DIR`), or a skip note naming what
/// is missing (a failure in CI, where scripts/test.sh installs them).
fn installed() -> Option<(PathBuf, PathBuf)> {
    let var = |name| std::env::var_os(name).filter(|v: &std::ffi::OsString| !v.is_empty()).map(PathBuf::from);
    if let (Some(python), Some(node_dir)) = (var("WARDEN_SDK_PYTHON"), var("WARDEN_SDK_NODE_DIR")) {
        return Some((python, node_dir));
    }
    let why = "WARDEN_SDK_PYTHON and WARDEN_SDK_NODE_DIR are not both set (scripts/install-sdks.sh installs the SDKs and prints them)";
    assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "{why}");
    eprintln!("skipped: {why}");
    None
}

/// How to run one SDK's client script.
struct Sdk {
    name: &'static str,
    program: PathBuf,
    script: PathBuf,
}

/// The client scripts written into `dir` (the Node one beside a `node_modules` link to the
/// installed SDK, so `import OpenAI from 'openai'` resolves as in any project).
fn clients(dir: &Path, python: PathBuf, node_dir: &Path) -> [Sdk; 2] {
    std::fs::create_dir_all(dir).expect("mkdir");
    warden_testkit::set_mode(dir, 0o755);
    std::os::unix::fs::symlink(node_dir.join("node_modules"), dir.join("node_modules")).expect("link node_modules");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write a client script");
        warden_testkit::set_mode(&p, 0o644);
        p
    };
    [
        Sdk { name: "python", program: python, script: write("client.py", PY_CLIENT) },
        Sdk {
            name: "node",
            program: node_dir.join("node_modules/.bin/node"),
            script: write("client.mjs", NODE_CLIENT),
        },
    ]
}

/// A running `warden serve` with real Codex workers.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    audit: PathBuf,
}

impl Gateway {
    /// One worker of 4 turns (and the spare), the model key in an environment variable, a client
    /// key in a keys file, the audit log in `s`.
    fn start(s: &Scratch, codex: &Path, upstream: &str) -> Gateway {
        let keys = s.file("clients.txt", &format!("sdk-tests:{CLIENT_KEY}\n"));
        // A small body cap: the scripts' 413 row sends 100 kB.
        let config = s.file("warden.toml", "[serve]\nmax_body_bytes = \"64K\"\n");
        let audit = s.root.join("audit").join("audit.jsonl");
        let mut cmd = warden_testkit::scrubbed_command(crate::warden_path());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--model", "codex=fake-model", "--workers", "1"])
            .args(["--worker-concurrency", "4", "--credential-env", "WARDEN_SDK_TEST_MODEL_KEY"])
            .args(["--credential-upstream", upstream])
            .arg("--codex-bin")
            .arg(codex)
            .arg("--config")
            .arg(&config)
            .arg("--api-key-file")
            .arg(&keys)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--worker-home")
            .arg(s.root.join("homes"))
            .env("WARDEN_SDK_TEST_MODEL_KEY", MODEL_KEY)
            .env("WORKER_STARTUP_TIMEOUT_MS", "30000")
            .env("WORKER_BACKOFF_INITIAL_MS", "100")
            .env("PROXY_IDLE_TIMEOUT_MS", "60000")
            .current_dir(&s.ws)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn warden serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let (pipe, sink) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok).take(100_000) {
                let addr = line.strip_prefix("warden: serving http://").and_then(|r| r.split('/').next());
                if let Some(a) = addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
                    let _ = tx.send(a);
                }
                sink.lock().expect("lock").push_str(&format!("{line}\n"));
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(90)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warden serve did not start within 90 s:\n{}", log.lock().expect("lock"))
        };
        Gateway { child, addr, log, audit }
    }

    fn log(&self) -> String {
        self.log.lock().expect("lock").clone()
    }

    /// `GET path` (with the client key): the status and the JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let Ok(mut conn) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) else {
            return (0, Value::Null);
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {CLIENT_KEY}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut raw = Vec::new();
        if conn.write_all(head.as_bytes()).is_err() || conn.read_to_end(&mut raw).is_err() {
            return (0, Value::Null);
        }
        let raw = String::from_utf8_lossy(&raw);
        let (status_line, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// `/debug/workers`: name, pid, ready, in_flight, restarts, ... of each worker.
    fn workers(&self) -> Vec<Value> {
        match self.get("/debug/workers") {
            (200, Value::Array(w)) => w,
            other => panic!("/debug/workers answered {other:?}"),
        }
    }

    /// Until every worker, the spare too, is ready (90 s).
    fn all_ready(&self) {
        let ready = || {
            let w = self.workers();
            !w.is_empty() && w.iter().all(|w| w["ready"] == true)
        };
        if !crate::wait_until(Duration::from_secs(90), ready) {
            panic!("the workers are not all ready within 90 s: {:?}\n{}", self.workers(), self.log());
        }
    }

    /// SIGTERM: the exit code within 30 s and serve's stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                return (st.code(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("warden serve did not stop within 30 s of SIGTERM:\n{}", self.log())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of a client script: its stdout lines as they come, its stderr at the end.
struct Script {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Script {
    /// `sdk`'s script with `args`, in a clean environment that points the SDK at `gw`.
    fn start(sdk: &Sdk, gw: &Gateway, args: &[&str]) -> Script {
        let home = sdk.script.parent().expect("the scripts' directory");
        let mut child = Command::new(&sdk.program)
            .arg(&sdk.script)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .env("OPENAI_BASE_URL", format!("http://{}/v1", gw.addr))
            .env("OPENAI_API_KEY", CLIENT_KEY)
            .env("WARDEN_SDK_MODEL", "codex")
            .env("WARDEN_SDK_WRONG_KEY", WRONG_KEY)
            .current_dir(home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", sdk.program.display()));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (out, copy) = (child.stdout.take().expect("stdout"), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                copy.lock().expect("lock").push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Script { name: sdk.name, child, stdin, lines, stdout, stderr: Some(stderr) }
    }

    /// The next line the script prints, as JSON, within `limit`.
    fn line(&mut self, limit: Duration) -> Value {
        match self.lines.recv_timeout(limit) {
            Ok(l) => {
                serde_json::from_str(&l).unwrap_or_else(|e| self.fail(&format!("a line that is not JSON ({e}): {l}")))
            }
            Err(_) => self.fail(&format!("no line within {limit:?}")),
        }
    }

    /// Writes one command line to the script's stdin.
    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(format!("{command}\n").as_bytes()).expect("write to the script");
        stdin.flush().expect("flush");
    }

    /// Waits (30 s) for a successful exit; no key appears in anything the script printed.
    fn finish(mut self) {
        drop(self.stdin.take());
        if !crate::wait_until(Duration::from_secs(30), || self.child.try_wait().ok().flatten().is_some()) {
            self.fail("did not exit within 30 s");
        }
        let status = self.child.wait().expect("wait");
        let stderr = self.stderr();
        let stdout = self.stdout.lock().expect("lock").clone();
        assert!(status.success(), "the {} client failed: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}", self.name);
        for key in [MODEL_KEY, CLIENT_KEY, WRONG_KEY] {
            assert!(
                !stdout.contains(key) && !stderr.contains(key),
                "the {} client saw a key:\n{stdout}\n{stderr}",
                self.name
            );
        }
    }

    /// Everything the script wrote to stderr (once it has exited).
    fn stderr(&mut self) -> String {
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        panic!("the {} client {why}\nstdout:\n{}\nstderr:\n{stderr}", self.name, self.stdout.lock().expect("lock"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one SDK reported for its calls, with the assertions on it.
struct Report<'a> {
    sdk: &'a str,
    all: &'a Value,
}

impl Report<'_> {
    /// The value a call returned (it must have succeeded).
    #[track_caller]
    fn ok(&self, check: &str) -> &Value {
        let c = &self.all["checks"][check];
        c.get("ok").unwrap_or_else(|| panic!("{}: {check} failed: {c}\nthe whole report: {}", self.sdk, self.all))
    }

    /// The exception a call raised, which must be `class` (`None`: any) with `status` and `code`.
    #[track_caller]
    fn raised(&self, check: &str, class: Option<&str>, status: u64, code: &str) -> &Value {
        let c = &self.all["checks"][check];
        let e = c.get("raised").unwrap_or_else(|| panic!("{}: {check} should have raised: {c}", self.sdk));
        if let Some(class) = class {
            assert_eq!(e["class"], class, "{}: {check}: {e}", self.sdk);
        }
        assert_eq!(
            (e["status"].as_u64(), e["code"].as_str()),
            (Some(status), Some(code)),
            "{}: {check}: {e}",
            self.sdk
        );
        assert!(
            e["request_id"].as_str().is_some_and(|r| r.starts_with("req_")),
            "{}: {check}: no X-Request-Id: {e}",
            self.sdk
        );
        e
    }
}

/// Token usage: present, consistent, non-zero.
#[track_caller]
fn assert_usage(u: &Value, what: &str) {
    let n = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("{what}: no usage.{k}: {u}"));
    assert!(n("total") > 0 && n("total") == n("input") + n("output"), "{what}: usage {u}");
}

fn check_chat_stream(sdk: &str, chunks: &[Value]) {
    let what = format!("{sdk}: chat stream {chunks:#?}");
    assert!(chunks.len() >= 4, "{what}");
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"] && c["model"] == "codex"), "one id and model: {what}");
    assert_eq!(chunks[0]["role"], "assistant", "the role chunk first: {what}");
    let text: String = chunks.iter().filter_map(|c| c["content"].as_str()).collect();
    assert_eq!(text, answer(), "{what}");
    let finishes: Vec<usize> = (0..chunks.len()).filter(|&i| !chunks[i]["finish"].is_null()).collect();
    assert_eq!(finishes, [chunks.len() - 2], "exactly one finish chunk, just before the usage chunk: {what}");
    assert_eq!(chunks[finishes[0]]["finish"], "stop", "{what}");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], 0, "the usage chunk has no choices: {what}");
    assert_usage(&last["usage"], &what);
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["usage"].is_null()), "usage only in the last chunk: {what}");
}

fn check_responses_stream(sdk: &str, v: &Value) {
    let what = format!("{sdk}: responses stream helper {v:#}");
    let events = v["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    let at = |t: &str| types.iter().position(|x| *x == t).unwrap_or_else(|| panic!("no {t}: {what}"));
    assert_eq!(types[..2], ["response.created", "response.in_progress"], "{what}");
    let first_delta = at("response.output_text.delta");
    assert!(
        at("response.output_item.added") < first_delta && at("response.content_part.added") < first_delta,
        "{what}"
    );
    assert_eq!(types.last(), Some(&"response.completed"), "{what}");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>(), "sequence numbers from 0: {what}");
    for d in events.iter().filter(|e| e["type"] == "response.output_text.delta") {
        assert!(d["item_id"].as_str().is_some_and(|i| !i.is_empty()), "{what}");
        assert_eq!((d["output_index"].as_u64(), d["content_index"].as_u64()), (Some(0), Some(0)), "{what}");
    }
    assert_eq!(v["text"], answer(), "{what}");
    assert_eq!(
        (v["final"]["status"].as_str(), v["final"]["text"].as_str()),
        (Some("completed"), Some(&*answer())),
        "{what}"
    );
    assert_usage(&v["final"]["usage"], &what);
}

/// Everything `client.* api` reported, checked; `up` saw the conversation's history.
fn check_api(sdk: &str, all: &Value, up: &FakeUpstream) {
    let r = Report { sdk, all };
    let models = r.ok("models");
    assert_eq!((&models["ids"], &models["one"]), (&serde_json::json!(["codex"]), &serde_json::json!("codex")), "{sdk}");
    let chat = r.ok("chat");
    assert_eq!(chat["content"], answer(), "{sdk}: {chat}");
    assert_eq!((chat["role"].as_str(), chat["finish"].as_str()), (Some("assistant"), Some("stop")), "{sdk}: {chat}");
    assert_eq!((chat["object"].as_str(), chat["model"].as_str()), (Some("chat.completion"), Some("codex")), "{sdk}");
    assert!(chat["id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-")), "{sdk}: {chat}");
    assert!(chat["request_id"].as_str().is_some_and(|i| i.starts_with("req_")), "{sdk}: {chat}");
    assert_usage(&chat["usage"], sdk);
    check_chat_stream(sdk, r.ok("chat_stream")["chunks"].as_array().expect("chunks"));
    let resp = r.ok("responses");
    assert_eq!(
        (resp["status"].as_str(), resp["text"].as_str()),
        (Some("completed"), Some(&*answer())),
        "{sdk}: {resp}"
    );
    assert!(resp["id"].as_str().is_some_and(|i| i.starts_with("resp_")), "{sdk}: {resp}");
    assert_usage(&resp["usage"], sdk);
    check_responses_stream(sdk, r.ok("responses_stream"));

    let conv = r.ok("conversation");
    assert_eq!(
        (conv["status"].as_str(), conv["text"].as_str()),
        (Some("completed"), Some(&*answer())),
        "{sdk}: {conv}"
    );
    assert_ne!(conv["first"], conv["second"], "{sdk}: {conv}");
    assert_eq!(conv["previous"], conv["first"], "{sdk}: the response names what it continued: {conv}");
    let e = &conv["stale"]["raised"];
    assert_eq!((e["class"].as_str(), e["status"].as_u64()), (Some("NotFoundError"), Some(404)), "{sdk}: {conv}");
    assert_eq!(e["code"], "previous_response_not_found", "only the latest response continues: {conv}");
    // Codex sent the first exchange again with the second question: the thread went on.
    let question = format!("what did {sdk} say first?");
    let bodies: Vec<String> = up.requests().iter().map(|q| String::from_utf8_lossy(&q.body).into_owned()).collect();
    let second = bodies
        .iter()
        .find(|b| b.contains(&question))
        .unwrap_or_else(|| panic!("{sdk}: no upstream request asked {question:?}"));
    assert!(second.contains(&format!("remember FIRST-{sdk}-TOKEN")) && second.contains(&answer()), "{sdk}: {second}");

    let e = r.raised("unknown_previous", Some("NotFoundError"), 404, "previous_response_not_found");
    assert_eq!(e["param"], "previous_response_id", "{sdk}: {e}");
    r.raised("wrong_key", Some("AuthenticationError"), 401, "invalid_api_key");
    let e = r.raised("unknown_model", Some("NotFoundError"), 404, "model_not_found");
    assert_eq!(e["param"], "model", "{sdk}: {e}");
    let e = r.raised("n", Some("BadRequestError"), 400, "invalid_request_error");
    assert_eq!(e["param"], "n", "{sdk}: {e}");
    let rows = [
        ("tools", "tools"),
        ("image", "messages[0].content[1]"),
        ("input_image", "input[0].content[0]"),
        ("tool_message", "messages[1].role"),
    ];
    for (check, param) in rows {
        let e = r.raised(check, Some("BadRequestError"), 400, "unsupported_parameter");
        assert_eq!(e["param"], param, "{sdk}: {check}: {e}");
    }
    // No dedicated class for 413 in either SDK: their generic status error.
    r.raised("too_large", None, 413, "request_entity_too_large");
    assert!(
        r.ok("after_too_large").as_array().is_some_and(|a| !a.is_empty()),
        "{sdk}: the pooled client goes on after a 413"
    );
    r.raised("no_route", Some("NotFoundError"), 404, "not_found");
}

/// How a held stream ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The client closes its connection.
    Disconnect,
    /// The worker serving it is killed (SIGKILL).
    KillWorker,
}

/// `sdk`'s client holds a `route` stream open (the upstream's events gated after the first
/// delta), then `end` happens to it.
fn hold(sdk: &Sdk, gw: &Gateway, up: &FakeUpstream, route: &str, end: End) {
    let what = format!("{} {route} {end:?}", sdk.name);
    let mut run = Script::start(sdk, gw, &["hold", route]);
    assert_eq!(run.line(Duration::from_secs(60))["phase"], "ready", "{what}");
    gw.all_ready();
    up.gate_events(true);
    // response.output_item.added and the first text delta; the rest waits.
    up.release(2);
    run.send("go");
    assert_eq!(run.line(Duration::from_secs(60))["phase"], "streaming", "{what}");
    let busy: Vec<Value> = gw.workers().into_iter().filter(|w| w["in_flight"].as_u64() > Some(0)).collect();
    assert_eq!(busy.len(), 1, "{what}: one worker serves the held turn: {busy:?}");
    let out = match end {
        End::Disconnect => {
            run.send("close");
            let out = run.line(Duration::from_secs(30));
            // The upstream's answer never finished: only an interrupted turn frees the slot.
            let freed = crate::wait_until(Duration::from_secs(5), || {
                gw.workers().iter().all(|w| w["in_flight"].as_u64() == Some(0))
            });
            assert!(freed, "{what}: the turn still runs 5 s after the client left: {:?}\n{}", gw.workers(), gw.log());
            up.gate_events(false);
            up.release(1);
            assert_eq!(out["end"], "closed", "{what}: {out}");
            out
        }
        End::KillWorker => {
            let pid = busy[0]["pid"].as_u64().unwrap_or_else(|| panic!("{what}: no pid: {busy:?}"));
            let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("kill");
            assert!(killed.success(), "{what}: kill -9 {pid}");
            run.send("read");
            up.gate_events(false);
            up.release(1);
            run.send("next");
            let out = run.line(Duration::from_secs(90));
            let e = &out["end"]["raised"];
            assert_eq!(e["class"], "APIError", "{what}: the SDK raises the stream's error event: {out}");
            assert_eq!(e["code"], "worker_exited", "{what}: {out}");
            let next = out["next"].get("ok").unwrap_or_else(|| panic!("{what}: the next request failed: {out}"));
            assert_eq!(next["content"], answer(), "{what}: {out}");
            // Its supervisor restarted the killed worker.
            let name = busy[0]["name"].clone();
            let restarted = crate::wait_until(Duration::from_secs(60), || {
                gw.workers()
                    .iter()
                    .any(|w| w["name"] == name && w["ready"] == true && w["restarts"] != busy[0]["restarts"])
            });
            assert!(restarted, "{what}: {name} was not restarted within 60 s: {:?}", gw.workers());
            out
        }
    };
    if route == "responses" {
        let e = &out["busy"]["raised"];
        assert_eq!((e["class"].as_str(), e["status"].as_u64()), (Some("ConflictError"), Some(409)), "{what}: {out}");
        assert_eq!(e["code"], "conversation_busy", "{what}: {out}");
    }
    run.finish();
}

#[test]
fn the_official_python_and_node_sdks_work_against_warden_serve_with_real_codex() {
    let Some(codex) = crate::codex_bin() else { return };
    let Some((python, node_dir)) = installed() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&DELTAS);
    let gw = Gateway::start(&s, &codex, &up.url("/v1/responses"));
    gw.all_ready();
    let sdks = clients(&s.root.join("sdk"), python, &node_dir);
    for sdk in &sdks {
        let mut run = Script::start(sdk, &gw, &["api"]);
        let report = run.line(Duration::from_secs(120));
        run.finish();
        assert_eq!(report["sdk"]["name"], sdk.name, "{report}");
        check_api(sdk.name, &report, &up);
    }
    let [py, node] = &sdks;
    hold(py, &gw, &up, "responses", End::Disconnect);
    hold(node, &gw, &up, "chat", End::KillWorker);
    hold(node, &gw, &up, "responses", End::Disconnect);
    hold(py, &gw, &up, "chat", End::KillWorker);

    // The real key reached the upstream on every request, and nothing else.
    let reqs = up.requests();
    assert!(reqs.iter().all(|r| r.header_values("authorization") == [format!("Bearer {MODEL_KEY}")]));
    let audit = gw.audit.clone();
    let (code, log) = gw.stop();
    assert_eq!(code, Some(0), "{log}");
    let records = std::fs::read_to_string(&audit).expect("the audit log");
    for secret in [MODEL_KEY, CLIENT_KEY, WRONG_KEY, "FIRST-python-TOKEN", "FIRST-node-TOKEN"] {
        assert!(!records.contains(secret) && !log.contains(secret), "{secret} in the audit log or serve's stderr");
    }
    let outcomes: Vec<(String, String)> = records
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"] == "serve.request")
        .map(|r| (r["outcome"].as_str().unwrap_or("").to_owned(), r["code"].as_str().unwrap_or("").to_owned()))
        .collect();
    let count = |outcome: &str, code: &str| outcomes.iter().filter(|(o, c)| o == outcome && c == code).count();
    assert_eq!(count("aborted", "request_aborted"), 2, "the two disconnects: {outcomes:?}");
    assert_eq!(count("failed", "worker_exited"), 2, "the two killed turns: {outcomes:?}");
}
