//! `warden codex` with the real Codex CLI (npm 0.169.0) against the testkit's fake upstream: an
//! `exec` turn completes through the credential proxy (the upstream saw the real key, Codex's
//! output never holds it), the per-project home gets the user's config once and keeps it,
//! a second project gets a home of its own, `--list` and `--forget` manage them; refusals say
//! what to do.

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
        .stderr_has("no model key")
        .stderr_has("--credential-env");
    let cmd = codex_cmd(&s, fake, &s.ws, &["--credential-env", "WARDEN_TEST_KEY", "--no-audit"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(30)).failure().stderr_has("no terminal").stderr_has("exec");
    let inside = s.ws.join("home-inside");
    let mut cmd = codex_cmd(&s, fake, &s.ws, &["--credential-env", "WARDEN_TEST_KEY", "--no-audit", "--codex-home"]);
    cmd.arg(&inside).args(["--", "exec", "x"]);
    warden_testkit::run_bounded(cmd, Duration::from_secs(30)).failure().stderr_has("inside the project");
}
