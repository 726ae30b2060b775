//! `warden credproxy`: the key comes from stdin, is injected upstream and appears nowhere else.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use warden_testkit::fake_upstream::FakeUpstream;

use crate::Scratch;

const KEY: &str = "sk-proj-CredProxyTestKey_0123456789abcdef";

fn post(port: u16, path: &str, extra_headers: &str) -> String {
    let body = r#"{"model":"m","stream":true,"input":[]}"#;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect proxy");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra_headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn injects_the_key_from_stdin_and_keeps_it_out_of_everything_else() {
    let s = Scratch::temp();
    let up = FakeUpstream::start();
    let info = s.root.join("server.json");
    let dumps = s.root.join("dumps");
    let log = s.root.join("state/audit.jsonl");
    let mut child = warden_testkit::scrubbed_command(crate::warden_path())
        .args(["credproxy", "--http-shutdown", "--server-info"])
        .arg(&info)
        .args(["--upstream-url", &up.url("/v1/responses"), "--dump-dir"])
        .arg(&dumps)
        .arg("--audit-log")
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden credproxy");
    child.stdin.take().expect("piped").write_all(format!("{KEY}\n").as_bytes()).expect("key");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !info.exists() {
        assert!(Instant::now() < deadline, "no server info");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&info).expect("server info");
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("server info is JSON");
    let port = u16::try_from(v["port"].as_u64().expect("port")).expect("port");
    assert_eq!(v["pid"].as_u64(), Some(u64::from(child.id())));
    // Locked memory for the key, and not dumpable (so /proc/PID/environ and mem are closed to the user).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let vmlck = status.lines().find(|l| l.starts_with("VmLck:")).unwrap_or_default().to_owned();
    assert!(!vmlck.contains(" 0 kB"), "{vmlck}");

    let ok = post(port, "/v1/responses", "Authorization: Bearer client-own-token\r\n");
    assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("response.completed"), "{ok}");
    let denied = post(port, "/v1/chat/completions", "");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "only the allowed route reaches upstream");
    assert_eq!(reqs[0].header_values("authorization"), [format!("Bearer {KEY}")]);

    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(c, "GET /shutdown HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("shutdown");
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "credproxy did not stop on /shutdown");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().expect("piped").read_to_string(&mut stderr);
    assert!(status.success(), "{stderr}");
    // The key is in none of: stderr, the audit log, the dumps.
    assert!(!stderr.contains(KEY), "{stderr}");
    let audit = std::fs::read_to_string(&log).expect("audit log");
    assert!(audit.contains("credproxy.request") && !audit.contains(KEY), "{audit}");
    let mut dumped = 0;
    for f in std::fs::read_dir(&dumps).expect("dumps").flatten() {
        let text = std::fs::read_to_string(f.path()).expect("dump");
        assert!(!text.contains(KEY) && !text.contains("client-own-token"), "{}: {text}", f.path().display());
        dumped += 1;
    }
    assert_eq!(dumped, 2, "one request and one response dump");
}

#[test]
fn bad_keys_are_refused_without_echoing_them() {
    for (input, needle) in [("", "empty"), ("not a key!\n", "character"), (&"x".repeat(1100)[..], "long")] {
        let out = crate::warden().args(["credproxy", "--no-audit"]).stdin(input.as_bytes()).run();
        out.code(125).stderr_has(needle);
        if !input.trim().is_empty() {
            assert!(!out.stderr.contains(input.trim()), "{}", out.stderr);
        }
    }
}

/// `warden run --credential-*` with the fake upstream; the command posts to $OPENAI_BASE_URL.
fn run_with_credential(s: &Scratch, up: &FakeUpstream, how: &[&str], script: &str) -> warden_testkit::Output {
    crate::warden()
        .env("MY_LLM_KEY", KEY)
        .current_dir(&s.ws)
        .args(["run", "--audit-log"])
        .args([s.root.join("state/audit.jsonl")])
        .args(how)
        .args(["--credential-upstream", &up.url("/v1/responses"), "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", script])
        .run()
}

const INSIDE: &str = "env | grep -E '^(OPENAI|MY_LLM)' | sort; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c MY_LLM; \
     curl -sS -X POST \"$OPENAI_BASE_URL/responses\" -H \"Authorization: Bearer $OPENAI_API_KEY\" \
     -H 'Content-Type: application/json' -d '{\"model\":\"m\",\"stream\":true,\"input\":[]}' | grep -c '^event: response.completed'";

#[test]
fn the_sandbox_sees_a_dummy_key_and_the_upstream_the_real_one() {
    let s = Scratch::temp();
    let up = FakeUpstream::start();
    let out = run_with_credential(&s, &up, &["--credential-env", "MY_LLM_KEY"], INSIDE);
    out.success()
        .stdout_has("OPENAI_API_KEY=warden-proxied\nOPENAI_BASE_URL=http://127.0.0.1:8787/v1\n0\n1\n")
        .stdout_lacks(KEY)
        .stderr_lacks(KEY);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header_values("authorization"), [format!("Bearer {KEY}")]);
    let audit = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(audit.contains("credproxy.request") && audit.contains("environment variable MY_LLM_KEY"), "{audit}");
    assert!(!audit.contains(KEY), "{audit}");
}

/// The environment block of a process, as `/proc/PID/environ` shows it.
fn environ_of(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_else(|e| panic!("environ of {pid}: {e}"));
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn the_key_is_in_neither_wardens_nor_pid1s_environment() {
    // Only root may read the environment of a non-dumpable process (warden, holding the key).
    root_only!();
    let s = Scratch::temp();
    let up = FakeUpstream::start();
    let marker = crate::sleep_marker(81);
    let mut cmd = crate::scrubbed_command(crate::warden_path());
    cmd.env("MY_LLM_KEY", KEY)
        .env("WARDEN_TEST_VISIBLE", "visible-in-environ")
        .current_dir(&s.ws)
        .args(["run", "--no-audit", "--credential-env", "MY_LLM_KEY", "--credential-upstream"])
        .arg(up.url("/v1/responses"))
        .arg("-C")
        .arg(&s.ws)
        .args(["--", "sleep", &marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn warden");
    let warden = child.id();
    // warden's own argv holds the marker too: wait for the sandboxed sleep.
    let running =
        crate::wait_until(Duration::from_secs(20), || crate::marker_pids(&marker).iter().any(|&p| p != warden));
    let pid1 = std::fs::read_to_string(format!("/proc/{warden}/task/{warden}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()));
    let (warden_env, pid1_env) = (environ_of(warden), pid1.map(environ_of));
    let _ = child.kill();
    let _ = child.wait();
    assert!(running, "the sandboxed sleep never started");
    let pid1_env = pid1_env.expect("warden has a child, the sandbox's PID 1");
    for (who, env) in [("warden", &warden_env), ("PID 1", &pid1_env)] {
        // What the test reads is the real environment block: another variable is there.
        assert!(env.contains("WARDEN_TEST_VISIBLE=visible-in-environ"), "{who}: {env:?}");
        assert!(!env.contains(KEY), "{who} holds the key in /proc/PID/environ: {env:?}");
    }
}

#[test]
fn a_credential_file_is_masked_and_works_with_the_network_off() {
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    let key_file = s.file("llm.key", &format!("{KEY}\n"));
    let script = format!("cat {} ; echo masked=$?; {INSIDE}", key_file.display());
    let out = run_with_credential(&s, &up, &["--credential-file", &key_file.display().to_string()], &script);
    out.success().stdout_lacks(KEY).stdout_has("masked=1").stdout_has("OPENAI_API_KEY=warden-proxied");
    assert_eq!(up.requests()[0].header_values("authorization"), [format!("Bearer {KEY}")]);
    // Without a network namespace of its own there is nowhere safe to put the proxy.
    run_with_credential(&s, &up, &["--credential-env", "MY_LLM_KEY", "--net", "host"], "true")
        .code(125)
        .stderr_has("network namespace");
}

/// The real Codex CLI, or a skip note (a failure in CI): see [`warden_testkit::codex_bin`].
fn codex_bin() -> Option<std::path::PathBuf> {
    warden_testkit::codex_bin()
}

/// The Codex config the README tells users to write, taken from the README itself so the
/// documented recipe is what is tested.
fn readme_codex_config() -> String {
    let readme = include_str!("../../../../README.md");
    let start = "cat > ~/.codex-warden/config.toml <<'EOF'\n";
    let from = readme.find(start).expect("the README has the Codex config recipe") + start.len();
    let len = readme[from..].find("\nEOF\n").expect("the recipe ends with EOF");
    let config = &readme[from..from + len + 1];
    assert!(config.contains("base_url = \"http://127.0.0.1:8787/v1\""), "{config}");
    config.to_owned()
}

#[test]
fn real_codex_reaches_the_upstream_with_the_key_it_never_holds() {
    let Some(codex) = codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["Hello from ", "the fake upstream"]);
    // CODEX_HOME must not be under the command's TMPDIR (the reference's pitfall 1); it is a
    // host directory the run may write (sessions, logs), outside the workdir.
    let codex_home = s.root.join("codex-home");
    std::fs::create_dir(&codex_home).expect("mkdir codex home");
    warden_testkit::set_mode(&codex_home, 0o777);
    std::fs::write(codex_home.join("config.toml"), readme_codex_config()).expect("write codex config");
    warden_testkit::set_mode(&codex_home.join("config.toml"), 0o644);
    let script = format!(
        "{codex} exec --sandbox danger-full-access --skip-git-repo-check 'say hi' </dev/null; rc=$?; \
         env | grep -E '^(OPENAI|MY_LLM|CODEX_HOME)' | sort; \
         cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -e {KEY} -e MY_LLM; exit $rc",
        codex = codex.display()
    );
    let out = crate::warden()
        .env("MY_LLM_KEY", KEY)
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-write", "--yes", "--timeout", "120", "--audit-log"])
        .args([s.root.join("state/audit.jsonl")])
        .args(["--credential-env", "MY_LLM_KEY", "--credential-upstream", &up.url("/v1/responses")])
        .args(["--writable"])
        .args([&codex_home])
        .args(["--env-set", &format!("CODEX_HOME={}", codex_home.display()), "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", &script])
        .limit(Duration::from_secs(150))
        .run();
    out.success()
        .stdout_has("Hello from the fake upstream")
        .stdout_has("OPENAI_API_KEY=warden-proxied\nOPENAI_BASE_URL=http://127.0.0.1:8787/v1\n0\n")
        .stdout_lacks(KEY)
        .stderr_lacks(KEY);
    // Codex's request arrived upstream, through the proxy, carrying the real key and only it.
    let reqs = up.requests();
    assert!(!reqs.is_empty(), "no request reached the fake upstream; stderr:\n{}", out.stderr);
    for r in &reqs {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/responses"));
        assert_eq!(r.header_values("authorization"), [format!("Bearer {KEY}")]);
        assert!(!r.header_values("authorization").iter().any(|v| v.contains("warden-proxied")));
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("codex sent JSON");
        assert!(body["model"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        assert!(r.body.windows(6).any(|w| w == b"say hi"), "the prompt is in the request");
    }
    // Nothing Codex wrote (sessions, logs, its sqlite state) and nothing warden logged holds the key.
    for entry in walkdir(&codex_home) {
        let data = std::fs::read(&entry).unwrap_or_default();
        assert!(!data.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "{} holds the key", entry.display());
    }
    let audit = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(audit.contains("\"event\":\"credproxy.request\""), "{audit}");
    assert!(!audit.contains(KEY), "{audit}");
}

/// Every regular file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => out.push(e.path()),
                _ => {}
            }
        }
    }
    out
}

/// The usage section of Codex's `codex-responses-api-proxy` README, with the proxy replaced by
/// `warden credproxy` and only `--upstream-url` added (the fake upstream); then its Azure example's
/// upstream URL with a query string. Codex runs with the reference's offline `CODEX_HOME` (features
/// that would reach the internet off) and no key of its own.
#[test]
fn the_seed_readme_works_as_written() {
    let Some(codex) = codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["seed ", "readme ", "works"]);
    let codex_home = s.root.join("codex-home");
    std::fs::create_dir(&codex_home).expect("mkdir codex home");
    let offline = readme_codex_config();
    let offline = offline.split("model_provider =").next().unwrap_or_default();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "{offline}check_for_update_on_startup = false\n[features]\nplugins = false\napps = false\n\
             remote_plugin = false\nunbounded_connection_retries = false\n"
        ),
    )
    .expect("write codex config");
    let bin_dir = |p: &std::path::Path| p.parent().expect("a directory").display().to_string();
    let path = format!("{}:{}:/usr/local/bin:/usr/bin:/bin", bin_dir(&crate::warden_path()), bin_dir(&codex));
    let info = s.root.join("server-info.json");
    let azure = up.url("/openai/deployments/D/responses?api-version=2025-04-01-preview");
    let script = format!(
        r#"set -eu
git init -q .
printenv OPENAI_API_KEY | env -u OPENAI_API_KEY warden credproxy --http-shutdown --server-info {info} --upstream-url {upstream} &
for i in $(seq 100); do [ -s {info} ] && break; sleep 0.05; done
PROXY_PORT=$(jq .port {info})
PROXY_BASE_URL="http://127.0.0.1:${{PROXY_PORT}}"
env -u OPENAI_API_KEY codex exec -c "model_providers.openai-proxy={{ name = 'OpenAI Proxy', base_url = '${{PROXY_BASE_URL}}/v1', wire_api='responses' }}" \
    -c model_provider="openai-proxy" \
    'Your prompt here' </dev/null
curl --fail --silent --show-error "${{PROXY_BASE_URL}}/shutdown"
wait; echo "proxy exit $?"
rm {info}
printenv OPENAI_API_KEY | env -u OPENAI_API_KEY warden credproxy --http-shutdown --server-info {info} --upstream-url "{azure}" &
for i in $(seq 100); do [ -s {info} ] && break; sleep 0.05; done
PROXY_BASE_URL="http://127.0.0.1:$(jq .port {info})"
curl --fail --silent --show-error -X POST "${{PROXY_BASE_URL}}/v1/responses" -d '{{"input":[]}}' | grep -c '^event: response.completed'
curl --fail --silent --show-error "${{PROXY_BASE_URL}}/shutdown"
wait; echo "proxy exit $?"
"#,
        info = info.display(),
        upstream = up.url("/v1/responses"),
    );
    let mut cmd = warden_testkit::scrubbed_command("bash");
    cmd.args(["-c", &script])
        .current_dir(&s.ws)
        .env("PATH", &path)
        .env("OPENAI_API_KEY", KEY)
        .env("CODEX_HOME", &codex_home);
    let out = warden_testkit::run_bounded(cmd, Duration::from_secs(120));
    out.success()
        .stdout_has("seed readme works")
        .stdout_has("shutting down\nproxy exit 0\n1\nshutting down\nproxy exit 0\n")
        .stdout_lacks(KEY)
        .stderr_lacks(KEY);
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].path, "/v1/responses");
    assert_eq!(reqs[1].path, "/openai/deployments/D/responses?api-version=2025-04-01-preview");
    for r in &reqs {
        assert_eq!(r.header_values("authorization"), [format!("Bearer {KEY}")]);
    }
}
