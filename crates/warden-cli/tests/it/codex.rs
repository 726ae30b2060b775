//! `warden codex` with the real Codex CLI (npm 0.169.0) against the testkit's fake upstream: an
//! `exec` turn completes through the credential proxy (the upstream saw the real key, Codex's
//! output never holds it), the per-project home gets the user's config once and keeps it,
//! a second project gets a home of its own, `--list` and `--forget` manage them; a ChatGPT
//! login is read-only inside and never copied; the init hook runs first (and a failing one stops
//! the run); a denied domain gets warden's 403; `--sessions-path` is confirmed and used; the TUI
//! shows its first screens under tmux; refusals say what to do.

use std::path::Path;
use std::time::Duration;

use warden_testkit::fake_upstream::FakeUpstream;

use crate::Scratch;

const KEY: &str = "sk-codex-REALKEY_0123456789abcdef";

fn codex_cmd(s: &Scratch, codex: &Path, project: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = warden_testkit::scrubbed_command(crate::warden_path());
    cmd.arg("codex")
        .arg("--codex-bin")
        .arg(codex)
        .arg("--project")
        .arg(project)
        .args(args)
        .env("HOME", s.root.join("home"))
        .env("XDG_DATA_HOME", s.root.join("data"))
        .env("WARDEN_TEST_KEY", KEY)
        .current_dir(project)
        .stdin(std::process::Stdio::null());
    cmd
}

#[test]
fn warden_codex_runs_codex_exec_in_the_project_with_a_home_of_its_own() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["sandboxed ", "hello"]);
    let url = up.url("/v1/responses");
    s.file("home/.codex/config.toml", "model = \"fake-model\"\n# from the user's own config\n");
    s.file("home/.codex/prompts/review.md", "the user's review prompt\n");
    s.file("ws/.codex/prompts/review.md", "the project's review prompt\n");
    s.file("ws/.codex/prompts/deploy.md", "the project's deploy prompt\n");
    let exec = |project: &Path| {
        let mut cmd = codex_cmd(
            &s,
            &codex,
            project,
            &["--credential-env", "WARDEN_TEST_KEY", "--credential-upstream", &url, "--no-audit"],
        );
        cmd.args(["--", "exec", "--skip-git-repo-check", "say hi"]);
        warden_testkit::run_bounded(cmd, Duration::from_secs(120))
    };
    let out = exec(&s.ws);
    out.success().stdout_has("sandboxed hello").stdout_lacks(KEY).stderr_lacks(KEY);
    let reqs = up.requests();
    assert!(!reqs.is_empty() && reqs.iter().all(|r| r.header_values("authorization") == [format!("Bearer {KEY}")]));
    let homes: Vec<_> =
        std::fs::read_dir(s.root.join("data/warden/codex")).expect("homes").flatten().map(|e| e.path()).collect();
    assert_eq!(homes.len(), 1, "{homes:?}");
    let home = &homes[0];
    let config = std::fs::read_to_string(home.join("config.toml")).expect("config copied");
    assert!(config.contains("from the user's own config"));
    // Prompts: every source's, the first source winning (~/.codex before the project's).
    let prompt = |name: &str| std::fs::read_to_string(home.join("prompts").join(name)).unwrap_or_default();
    assert_eq!(prompt("review.md"), "the user's review prompt\n");
    assert_eq!(prompt("deploy.md"), "the project's deploy prompt\n");
    // Never overwritten: edits in the home stay.
    std::fs::write(home.join("config.toml"), "model = \"fake-model\"\n# edited in the home\n").expect("edit");
    std::fs::write(home.join("prompts/deploy.md"), "edited\n").expect("edit");
    exec(&s.ws).success();
    assert!(std::fs::read_to_string(home.join("config.toml")).expect("config").contains("edited in the home"));
    assert_eq!(prompt("deploy.md"), "edited\n");
    assert!(
        std::fs::read_dir(home.join("sessions")).is_ok_and(|mut d| d.next().is_some()),
        "sessions are kept in the home"
    );
    // A second project, a second home; --list names both, --forget removes one.
    let other = s.root.join("other-project");
    std::fs::create_dir(&other).expect("mkdir");
    warden_testkit::set_mode(&other, 0o755);
    exec(&other).success().stdout_has("sandboxed hello");
    let list = warden_testkit::run_bounded(codex_cmd(&s, &codex, &s.ws, &["--list"]), Duration::from_secs(30));
    list.success()
        .stdout_has(&s.ws.canonicalize().expect("canonical").display().to_string())
        .stdout_has("other-project");
    let mut forget = codex_cmd(&s, &codex, &s.ws, &[]);
    forget.arg("--forget").arg(&other);
    warden_testkit::run_bounded(forget, Duration::from_secs(30)).success().stdout_has("removed");
    assert_eq!(std::fs::read_dir(s.root.join("data/warden/codex")).expect("homes").count(), 1);
}

#[test]
fn warden_codex_refuses_without_a_key_or_a_terminal() {
    let s = Scratch::visible();
    let fake = Path::new("/bin/true");
    let mut cmd = codex_cmd(&s, fake, &s.ws, &["--no-audit", "--", "exec", "x"]);
    cmd.env_remove("OPENAI_API_KEY");
    warden_testkit::run_bounded(cmd, Duration::from_secs(30))
        .failure()
        .stderr_has("no model credential")
        .stderr_has("codex login")
        .stderr_has("--credential-env");
    let cmd = codex_cmd(&s, fake, &s.ws, &["--credential-env", "WARDEN_TEST_KEY", "--no-audit"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(30)).failure().stderr_has("no terminal").stderr_has("exec");
    let inside = s.ws.join("home-inside");
    let mut cmd = codex_cmd(&s, fake, &s.ws, &["--credential-env", "WARDEN_TEST_KEY", "--no-audit", "--codex-home"]);
    cmd.arg(&inside).args(["--", "exec", "x"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(30)).failure().stderr_has("inside the project");
    let in_state = s.root.join("home/.local/state/warden/codex");
    let mut cmd = codex_cmd(&s, fake, &s.ws, &["--credential-env", "WARDEN_TEST_KEY", "--no-audit", "--codex-home"]);
    cmd.arg(&in_state).args(["--", "exec", "x"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(30)).failure().stderr_has("warden's own directory");
    assert!(!in_state.exists());
}

/// A ChatGPT `auth.json` of the shape Codex 0.169 accepts (docs/codex-network.md): unsigned
/// tokens whose claims name a plan and an account, valid for 30 days.
fn fake_chatgpt_login() -> String {
    let b64 = |v: serde_json::Value| base64url(v.to_string().as_bytes());
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 30 * 86400;
    let claims = serde_json::json!({
        "email": "dev@example.test", "exp": exp,
        "https://api.openai.com/auth": {
            "chatgpt_plan_type": "plus", "chatgpt_user_id": "user-1", "user_id": "user-1",
            "chatgpt_account_id": "00000000-0000-4000-8000-000000000000"
        },
        "https://api.openai.com/profile": { "email": "dev@example.test" }
    });
    let token = format!("{}.{}.c2ln", b64(serde_json::json!({"alg": "none", "typ": "JWT"})), b64(claims));
    serde_json::json!({
        "auth_mode": "chatgpt", "OPENAI_API_KEY": null,
        "tokens": { "id_token": token, "access_token": token, "refresh_token": "rt_fake",
                    "account_id": "00000000-0000-4000-8000-000000000000" },
        "last_refresh": "2026-12-01T00:00:00.000000Z"
    })
    .to_string()
}

/// Unpadded base64url.
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn only_home(s: &Scratch) -> std::path::PathBuf {
    let homes: Vec<_> =
        std::fs::read_dir(s.root.join("data/warden/codex")).expect("homes").flatten().map(|e| e.path()).collect();
    assert_eq!(homes.len(), 1, "{homes:?}");
    homes[0].clone()
}

#[test]
fn a_chatgpt_login_is_mounted_read_only_and_the_init_hook_runs_first() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let login = fake_chatgpt_login();
    let auth = s.file("home/.codex/auth.json", &login);
    // The hook: runs in the project with SANDBOX_ENV_DIR, before Codex; it tries to change the
    // login (through the home, and by replacing it) and to plant a config source in the project.
    let hook = s.file(
        "init-hook.sh",
        "#!/bin/sh\n\
         { echo \"hook in $(pwd) home=$SANDBOX_ENV_DIR\"\n\
           grep -q refresh_token \"$SANDBOX_ENV_DIR/auth.json\" && echo login-readable\n\
           echo x > \"$SANDBOX_ENV_DIR/auth.json\" 2>/dev/null && echo login-WRITTEN\n\
           mv \"$SANDBOX_ENV_DIR/auth.json\" \"$SANDBOX_ENV_DIR/moved\" 2>/dev/null && echo login-MOVED\n\
           mkdir -p codex/prompts 2>/dev/null && echo codex-PLANTED\n\
           mkdir -p .codex/prompts 2>/dev/null && echo dot-codex-PLANTED\n\
         } > hook-ran 2>&1\n\
         exit 0\n",
    );
    warden_testkit::set_mode(&hook, 0o755);
    let mut cmd = codex_cmd(&s, &codex, &s.ws, &["--no-audit", "--init-script"]);
    cmd.arg(&hook).args(["--", "login", "status"]);
    let out = warden_testkit::run_bounded(cmd, Duration::from_secs(60));
    let out = out.success();
    assert!(
        out.stdout.contains("Logged in using ChatGPT") || out.stderr.contains("Logged in using ChatGPT"),
        "Codex reads the mounted login: {out:?}"
    );
    let ran = crate::read(&s.ws.join("hook-ran"));
    let ws = s.ws.canonicalize().expect("canonical");
    let home = only_home(&s);
    assert!(ran.contains(&format!("hook in {} home={}", ws.display(), home.display())), "{ran}");
    assert!(ran.contains("login-readable"), "{ran}");
    assert!(!ran.contains("WRITTEN") && !ran.contains("MOVED") && !ran.contains("PLANTED"), "{ran}");
    // The host is unchanged: the login as it was, never copied into the home, nothing planted.
    assert_eq!(crate::read(&auth), login);
    assert!(!home.join("auth.json").exists() && !home.join("moved").exists(), "never copied");
    assert!(!s.ws.join("codex").exists() && !s.ws.join(".codex").exists());
    assert!(home.join("init.sh").is_file(), "the hook is kept in the home");

    // A failing hook stops the run with its status, and Codex does not start.
    let failing = s.file("failing-hook.sh", "#!/bin/sh\necho preparing; exit 3\n");
    warden_testkit::set_mode(&failing, 0o755);
    let mut cmd = codex_cmd(&s, &codex, &s.ws, &["--no-audit", "--init-script"]);
    cmd.arg(&failing).args(["--", "login", "status"]);
    let out = warden_testkit::run_bounded(cmd, Duration::from_secs(60));
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("init hook") && out.stderr.contains("exited with status 3"), "{out:?}");
    assert!(!out.stdout.contains("Logged in") && !out.stderr.contains("Logged in"), "{out:?}");

    // Without a key or a login, warden says how to log in.
    std::fs::remove_file(&auth).expect("rm");
    std::fs::remove_file(home.join("init.sh")).expect("rm");
    let out = warden_testkit::run_bounded(
        {
            let mut c = codex_cmd(&s, &codex, &s.ws, &["--no-audit", "--", "login", "status"]);
            c.env_remove("OPENAI_API_KEY");
            c
        },
        Duration::from_secs(30),
    );
    out.failure().stderr_has("codex login").stderr_has("--auth-file");
}

#[test]
fn a_denied_domain_gets_wardens_403_reason_inside_codex() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["fetched"]);
    up.set_tool_call(Some(("exec_command", r#"{"cmd":"curl -sS -i http://denied.example.test/"}"#)));
    let url = up.url("/v1/responses");
    let mut cmd = codex_cmd(
        &s,
        &codex,
        &s.ws,
        &[
            "--credential-env",
            "WARDEN_TEST_KEY",
            "--credential-upstream",
            &url,
            "--no-audit",
            "--allow-domain",
            "allowed.example.test",
        ],
    );
    cmd.args(["--", "exec", "--skip-git-repo-check", "fetch it"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(120)).success().stdout_has("fetched");
    let outputs = up.function_outputs().join("\n");
    assert!(outputs.contains("403") && outputs.contains("not-allowlisted"), "{outputs}");
    assert!(outputs.contains("denied.example.test"), "{outputs}");
}

#[test]
fn sessions_go_to_the_sessions_path_once_it_is_confirmed() {
    let Some(codex) = crate::codex_bin() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    up.set_deltas(&["kept"]);
    let url = up.url("/v1/responses");
    let sessions = s.root.join("codex-sessions");
    let args = ["--credential-env", "WARDEN_TEST_KEY", "--credential-upstream", &url, "--no-audit", "--sessions-path"];
    let exec = |extra: &[&str]| {
        let mut cmd = codex_cmd(&s, &codex, &s.ws, &args);
        cmd.arg(&sessions).args(extra).args(["--", "exec", "--skip-git-repo-check", "say hi"]);
        warden_testkit::run_bounded(cmd, Duration::from_secs(120))
    };
    // Outside the project and no terminal: refused without --yes, and nothing ran.
    exec(&[]).failure().stderr_has("--yes").stderr_has("codex-sessions");
    assert!(up.requests().is_empty());
    exec(&["--yes"]).success().stdout_has("kept");
    let home = only_home(&s);
    assert!(std::fs::read_dir(&sessions).is_ok_and(|mut d| d.next().is_some()), "sessions in --sessions-path");
    assert!(std::fs::read_dir(home.join("sessions")).map_or(true, |mut d| d.next().is_none()), "none in the home");
}

/// tmux, which answers the TUI's terminal queries as a real terminal does (`script` does not).
fn tmux() -> Option<&'static str> {
    if Path::new("/usr/bin/tmux").exists() {
        return Some("/usr/bin/tmux");
    }
    assert!(std::env::var_os("CI").is_none(), "tmux is missing: scripts/test.sh installs it");
    eprintln!("skipped: no tmux");
    None
}

#[test]
fn the_tui_starts_under_a_terminal_and_shows_codexs_first_screens() {
    let Some(codex) = crate::codex_bin() else { return };
    let Some(tmux) = tmux() else { return };
    let s = Scratch::visible();
    let up = FakeUpstream::start();
    let exit_file = s.root.join("tui-exit");
    let q = |p: &Path| format!("'{}'", p.display());
    let script = s.file(
        "tui.sh",
        &format!(
            "#!/bin/sh\nenv -i PATH=/usr/bin:/bin HOME={home} XDG_DATA_HOME={data} TERM=xterm-256color \
             WARDEN_TEST_KEY={KEY} {warden} codex --codex-bin {codex} --project {ws} --credential-env WARDEN_TEST_KEY \
             --credential-upstream {url} --no-audit 2>{err}\necho $? > {exit}\n",
            home = q(&s.root.join("home")),
            data = q(&s.root.join("data")),
            warden = q(&crate::warden_path()),
            codex = q(&codex),
            ws = q(&s.ws),
            url = up.url("/v1"),
            err = q(&s.root.join("tui-stderr")),
            exit = q(&exit_file),
        ),
    );
    warden_testkit::set_mode(&script, 0o755);
    let socket = s.root.join("tmux.sock");
    let tmux_cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(tmux);
        // tmux runs the pane's command with $SHELL, else the user's login shell (nobody's is
        // nologin).
        c.arg("-S").arg(&socket).arg("-f").arg("/dev/null").args(args).env_remove("TMUX").env("SHELL", "/bin/sh");
        c.stdin(std::process::Stdio::null());
        warden_testkit::run_bounded(c, Duration::from_secs(20))
    };
    let script_s = script.display().to_string();
    tmux_cmd(&["new-session", "-d", "-x", "120", "-y", "40", "-s", "tui", &script_s]).success();
    let screen = || tmux_cmd(&["capture-pane", "-p", "-t", "tui"]).stdout;
    let wait_for = |text: &str| {
        let start = std::time::Instant::now();
        loop {
            let now = screen();
            if now.contains(text) {
                return now;
            }
            if start.elapsed() > Duration::from_secs(30) || exit_file.exists() {
                let err = std::fs::read_to_string(s.root.join("tui-stderr")).unwrap_or_default();
                let _ = tmux_cmd(&["kill-server"]);
                panic!("the TUI never showed {text:?}; screen:\n{now}\nstderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // First the trust question for the project, then Codex's main screen in the project.
    let first = wait_for("Trust this folder");
    assert!(first.contains(&s.ws.canonicalize().expect("canonical").display().to_string()), "{first}");
    tmux_cmd(&["send-keys", "-t", "tui", "Enter"]).success();
    let main = wait_for("OpenAI Codex");
    assert!(main.contains("v0.169.0"), "{main}");
    // /quit ends Codex; warden exits with Codex's status, which the pane's script records.
    tmux_cmd(&["send-keys", "-t", "tui", "-l", "/quit"]).success();
    wait_for("exit Codex");
    tmux_cmd(&["send-keys", "-t", "tui", "Enter"]).success();
    let start = std::time::Instant::now();
    while !exit_file.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = tmux_cmd(&["kill-server"]);
    let code = std::fs::read_to_string(&exit_file).unwrap_or_default();
    assert_eq!(code.trim(), "0", "warden codex's exit status after quitting the TUI");
    // The trust decision went to the project's own Codex home, not the user's.
    let config = crate::read(&only_home(&s).join("config.toml"));
    assert!(config.contains("trust_level"), "{config}");
    assert!(!s.root.join("home/.codex/config.toml").exists());
}
