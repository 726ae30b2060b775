//! The CLI around `run`: refusals with clear messages (exit 125), `explain`, `doctor`, config
//! files.

use crate::{read, Scratch};

#[test]
fn explain_prints_the_profile_and_masks() {
    let s = Scratch::visible();
    s.file("home/.ssh/id_rsa", "k\n");
    let home = s.root.join("home");
    let out = crate::warden()
        .env("HOME", &home)
        .current_dir(&s.ws)
        .args(["explain", "-p", "workspace-write", "-C"])
        .args([&s.ws])
        .run();
    out.success().stdout_has("workspace-write").stdout_has(&format!("{}/.ssh", home.display())).stdout_has("masked");
    out.stdout_has(".git").stdout_has("seccomp");
}

#[test]
fn explain_json_is_valid_and_has_policy() {
    let s = Scratch::temp();
    let out = crate::warden().current_dir(&s.ws).args(["explain", "--json", "-C"]).args([&s.ws]).run();
    out.success();
    let v: serde_json::Value = match serde_json::from_str(&out.stdout) {
        Ok(v) => v,
        Err(e) => out.fail(&format!("invalid JSON: {e}")),
    };
    assert!(v.get("policy").is_some_and(|p| p.is_object()), "no policy object: {v}");
}

#[test]
fn explain_limits_line_reads_none() {
    let s = Scratch::temp();
    let out = crate::warden().current_dir(&s.ws).args(["explain", "-C"]).args([&s.ws]).run();
    out.success().stdout_has("timeout none").stdout_lacks("nones");
}

#[test]
fn doctor_succeeds_here() {
    crate::warden().args(["doctor"]).run().success().stdout_has("landlock").stdout_has("seccomp");
}

#[test]
fn offline_runs_with_root_as_workdir() {
    let out =
        crate::warden().current_dir(std::path::Path::new("/")).args(["run", "-C", "/", "--", "sh", "-c", "pwd"]).run();
    out.success().stdout_has("/\n");
}

#[test]
fn workspace_write_refuses_root_as_workdir() {
    let out = crate::warden().args(["run", "-p", "workspace-write", "-C", "/", "--", "true"]).run();
    out.code(125).stderr_has("refusing to use /");
}

#[test]
fn workspace_write_refuses_home_as_workdir() {
    let s = Scratch::temp();
    let out = crate::warden()
        .env("HOME", &s.ws)
        .args(["run", "-p", "workspace-write", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "echo ran"])
        .run();
    out.code(125).stderr_has("home directory").stderr_has(&s.ws.display().to_string()).stdout_lacks("ran");
}

#[test]
fn writable_outside_workdir_needs_yes() {
    let s = Scratch::visible();
    let ext = s.root.join("ext");
    std::fs::create_dir(&ext).expect("mkdir");
    let script = format!("echo written > {}/f", ext.display());
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-write", "-C"])
        .args([&s.ws])
        .args(["--writable"])
        .args([&ext])
        .args(["--", "sh", "-c", &script])
        .run();
    out.code(125).stderr_has("--yes").stderr_has(&ext.display().to_string());
    assert!(!ext.join("f").exists(), "the command ran without confirmation");

    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-write", "--yes", "-C"])
        .args([&s.ws])
        .args(["--writable"])
        .args([&ext])
        .args(["--", "sh", "-c", &script])
        .run();
    out.success();
    assert_eq!(read(&ext.join("f")), "written\n");
}

#[test]
fn workspace_net_without_rules_denies_everything() {
    let s = Scratch::temp();
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-net", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "echo ran; curl -sS -o /dev/null -w '%{http_code}\\n' http://example.com/"])
        .run();
    out.success().stdout_has("ran").stdout_has("403").stderr_has("denied 1 connection: example.com (1)");
}

#[test]
fn unknown_config_key_names_file_and_line() {
    let s = Scratch::temp();
    let cfg = s.file("ws/warden.toml", "profile = \"offline\"\nbogus_key = 1\n");
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--config"])
        .args([&cfg])
        .args(["-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "echo ran"])
        .run();
    out.code(125).stderr_has(&format!("{}:2", cfg.display())).stderr_has("bogus_key").stdout_lacks("ran");
}

#[test]
fn invalid_profile_in_config_warns_once_and_runs_offline() {
    let s = Scratch::temp();
    let cfg = s.file("ws/warden.toml", "profile = \"bogus\"\n");
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--config"])
        .args([&cfg])
        .args(["-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "echo ran; echo x > written.txt && echo WROTE; ip -o link | grep -vc ' lo:'; exit 0"])
        .run();
    out.success().stdout_has("ran").stdout_lacks("WROTE").stdout_has("0\n");
    assert_eq!(out.stderr.matches("bogus").count(), 1, "expected one warning{}", out.stderr);
    out.stderr_has("offline");
    assert!(!s.ws.join("written.txt").exists());
}

#[test]
fn doctor_probes_the_kernel_not_the_users_config() {
    let s = Scratch::temp();
    s.file("xdg/warden/config.toml", "bogus_key = 1\n");
    let xdg = s.root.join("xdg");
    // `run` reads that config and refuses; `doctor` must still judge the kernel alone.
    crate::warden().env("XDG_CONFIG_HOME", &xdg).args(["run", "--", "true"]).run().code(125).stderr_has("bogus_key");
    crate::warden().env("XDG_CONFIG_HOME", &xdg).args(["doctor"]).run().success().stdout_has("ok   offline sandbox");
}

#[test]
fn version_names_the_commit_and_its_date() {
    let out = crate::warden().args(["--version"]).run();
    out.success();
    let line = out.stdout.trim();
    // "warden X.Y.Z (<12 hex or unknown> <YYYY-MM-DD or unknown>)"
    let rest = line.strip_prefix("warden ").unwrap_or_else(|| out.fail("no \"warden \" prefix"));
    let (version, stamp) = rest.split_once(' ').unwrap_or_else(|| out.fail("no commit stamp"));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let stamp = stamp.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or_else(|| out.fail("no (...)"));
    let (commit, date) = stamp.split_once(' ').unwrap_or_else(|| out.fail("no date"));
    assert!(commit == "unknown" || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())), "{line}");
    let d: Vec<&str> = date.split('-').collect();
    assert!(date == "unknown" || (d.len() == 3 && d.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))), "{line}");
    crate::warden().args(["run", "--version"]).run().success().stdout_has(stamp);
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::warden().args(["completions", shell]).run();
        out.success();
        for sub in ["run", "codex", "serve", "egress", "credproxy", "audit", "doctor", "explain", "man"] {
            out.stdout_has(sub);
        }
        assert!(!out.stdout.contains("__session"), "a hidden command in the {shell} completions");
    }
    // The bash script parses.
    let s = Scratch::temp();
    let script = s.root.join("warden.bash");
    std::fs::write(&script, crate::warden().args(["completions", "bash"]).run().stdout).expect("write");
    let mut bash = std::process::Command::new("bash");
    bash.arg("-n").arg(&script);
    warden_testkit::run_bounded(bash, std::time::Duration::from_secs(20)).success();
    crate::warden().args(["completions", "tcsh"]).run().failure().stderr_has("bash").stderr_has("fish");
}

#[test]
fn man_pages_render_for_warden_and_each_command() {
    let out = crate::warden().args(["man"]).run();
    out.success().stdout_has(".TH warden 1").stdout_has("least privilege");
    let s = Scratch::temp();
    let dir = s.root.join("man1");
    crate::warden().args(["man", "--out"]).args([&dir]).run().success().stdout_has("warden-codex.1");
    for page in ["warden", "warden-run", "warden-codex", "warden-serve", "warden-audit-verify"] {
        let text = read(&dir.join(format!("{page}.1")));
        assert!(text.starts_with(".ie") || text.starts_with(".TH"), "{page}: {text:.80}");
        assert!(text.contains(&format!(".TH {page} 1")), "{page}");
    }
    assert!(!dir.join("warden-__session.1").exists() && !dir.join("warden-help.1").exists());
    // groff renders them without a warning.
    if std::path::Path::new("/usr/bin/groff").exists() {
        let mut groff = std::process::Command::new("/usr/bin/groff");
        groff.args(["-man", "-Tutf8", "-ww", "-z"]).arg(dir.join("warden-run.1"));
        let out = warden_testkit::run_bounded(groff, std::time::Duration::from_secs(20));
        out.success();
        assert!(out.stderr.is_empty(), "groff warnings: {}", out.stderr);
    }
}
