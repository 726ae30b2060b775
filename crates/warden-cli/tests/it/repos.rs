//! Every repository in a writable root, commits without a way out, and what configures later
//! runs kept out of reach (issue 9, items 1-3). Each attack asserts the denial and that the host
//! is unchanged; each allowed operation that it happened on the host.

use std::path::{Path, PathBuf};

use crate::{Scratch, ESCAPED};

/// `git -c ... ARGS` in `dir` on the host (the test's own git, outside any sandbox).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = crate::scrubbed_command("git")
        .args(["-c", "user.email=t@example.test", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository at `dir` with one commit.
fn repo(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    git(dir, &["init", "-q"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", "first"]);
}

/// Git in the sandbox with an identity, from `sh -c`.
const GIT: &str = "git -c user.email=t@example.test -c user.name=t";

#[test]
fn nested_repositories_keep_hooks_and_config_read_only() {
    let s = Scratch::visible();
    repo(&s.ws);
    repo(&s.ws.join("vendor/lib"));
    // A submodule-style checkout: `.git` is a pointer into the outer repository's modules/.
    let modules = s.ws.join(".git/modules/sub");
    std::fs::create_dir_all(&modules).expect("mkdir");
    git(&modules, &["init", "-q", "--bare"]);
    std::fs::create_dir_all(s.ws.join("sub")).expect("mkdir");
    std::fs::write(s.ws.join("sub/.git"), "gitdir: ../.git/modules/sub\n").expect("write");
    let nested_config = std::fs::read(s.ws.join("vendor/lib/.git/config")).expect("read");
    let script = format!(
        "printf '#!/bin/sh\\necho owned\\n' > vendor/lib/.git/hooks/pre-commit && echo {ESCAPED}1; \
         printf '[core]\\n\\tfsmonitor = touch /tmp/x\\n' >> vendor/lib/.git/config && echo {ESCAPED}2; \
         echo 'gitdir: /elsewhere' > sub/.git && echo {ESCAPED}3; \
         printf '#!/bin/sh\\n' > .git/modules/sub/hooks/post-checkout && echo {ESCAPED}4; \
         mv vendor/lib/.git vendor/lib/moved && echo {ESCAPED}5; \
         echo ok > vendor/lib/file && echo worktree-writable; exit 0"
    );
    let out = s.sh("workspace-write", &script);
    out.success().stdout_lacks(ESCAPED).stdout_has("worktree-writable");
    assert!(!s.ws.join("vendor/lib/.git/hooks/pre-commit").exists(), "a hook appeared in the nested repository");
    assert_eq!(std::fs::read(s.ws.join("vendor/lib/.git/config")).expect("read"), nested_config);
    assert_eq!(crate::read(&s.ws.join("sub/.git")), "gitdir: ../.git/modules/sub\n");
    assert!(!modules.join("hooks/post-checkout").exists());
    // The positive control: the same writes by the same user outside the sandbox succeed.
    std::fs::write(s.ws.join("vendor/lib/.git/hooks/pre-commit"), "#!/bin/sh\n").expect("host write");
}

#[test]
fn included_configs_and_hooks_paths_cannot_be_planted() {
    let s = Scratch::visible();
    repo(&s.ws);
    let mut config = crate::read(&s.ws.join(".git/config"));
    config
        .push_str("[include]\n\tpath = ../shared.gitconfig\n[includeIf \"gitdir:/\"]\n\tpath = ../missing.gitconfig\n");
    config.push_str("[core]\n\thooksPath = .githooks\n");
    std::fs::write(s.ws.join(".git/config"), &config).expect("write");
    std::fs::write(s.ws.join("shared.gitconfig"), "[user]\n\tname = shared\n").expect("write");
    let script = format!(
        "printf '[core]\\n\\tfsmonitor = x\\n' >> shared.gitconfig && echo {ESCAPED}1; \
         printf '[core]\\n\\tfsmonitor = x\\n' > missing.gitconfig && echo {ESCAPED}2; \
         mkdir -p .githooks && printf '#!/bin/sh\\n' > .githooks/pre-commit && echo {ESCAPED}3; \
         rm -f shared.gitconfig && echo {ESCAPED}4; exit 0"
    );
    s.sh("workspace-write", &script).success().stdout_lacks(ESCAPED);
    assert_eq!(crate::read(&s.ws.join("shared.gitconfig")), "[user]\n\tname = shared\n");
    for planted in ["missing.gitconfig", ".githooks"] {
        assert!(!s.ws.join(planted).exists(), "{planted} was left on the host");
    }
}

#[test]
fn commit_mode_commits_but_config_and_hooks_stay_read_only() {
    let s = Scratch::visible();
    repo(&s.ws);
    let audit = s.root.join("state/audit.jsonl");
    let config = std::fs::read(s.ws.join(".git/config")).expect("read");
    let script = format!(
        "echo hello > f && {GIT} add f && {GIT} commit -q -m second && echo COMMITTED; \
         {GIT} branch topic && {GIT} stash list && echo BRANCHED; \
         printf '#!/bin/sh\\n' > .git/hooks/pre-commit && echo {ESCAPED}1; \
         git config core.hooksPath /tmp/hooks && echo {ESCAPED}2; \
         git config core.fsmonitor 'touch /tmp/x' && echo {ESCAPED}3; \
         git config alias.x '!touch /tmp/x' && echo {ESCAPED}4; \
         echo '.' > .git/commondir && echo {ESCAPED}5; \
         mv .git/hooks .git/hooks.old && echo {ESCAPED}6; \
         mv .git .git.old && echo {ESCAPED}7; exit 0"
    );
    let audit_s = audit.display().to_string();
    let out =
        s.run(&["-p", "workspace-write", "--git", "commit", "--audit-log", &audit_s], &[], &["sh", "-c", &script]);
    out.success().stdout_has("COMMITTED").stdout_has("BRANCHED").stdout_lacks(ESCAPED);
    let log = git(&s.ws, &["log", "--format=%s"]);
    assert_eq!(log, "second\nfirst\n", "the commit made inside is on the host");
    assert!(git(&s.ws, &["branch", "--list", "topic"]).contains("topic"));
    assert_eq!(std::fs::read(s.ws.join(".git/config")).expect("read"), config, "the host's config changed");
    assert!(!s.ws.join(".git/hooks/pre-commit").exists() && !s.ws.join(".git/commondir").exists());
    // The refs before and after the run are in the audit log.
    let text = std::fs::read_to_string(&audit).expect("audit log");
    let refs: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "git.refs")
        .collect();
    assert_eq!(refs.len(), 2, "{text}");
    assert_eq!(refs[0]["when"], "before");
    assert_eq!(refs[1]["when"], "after");
    let head_after = git(&s.ws, &["rev-parse", "HEAD"]);
    assert_eq!(refs[1]["refs"]["refs/heads/main"].as_str(), Some(head_after.trim()), "{:?}", refs[1]);
    assert_ne!(refs[0]["refs"]["refs/heads/main"], refs[1]["refs"]["refs/heads/main"]);
    assert!(refs[1]["refs"]["refs/heads/topic"].is_string());
}

#[test]
fn read_only_mode_is_the_default_and_refuses_commits() {
    let s = Scratch::visible();
    repo(&s.ws);
    let out = s.sh("workspace-write", &format!("echo x > f && {GIT} add f && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_eq!(git(&s.ws, &["log", "--format=%s"]), "first\n");
}

#[test]
fn a_cut_short_search_warns_and_is_audited() {
    let s = Scratch::visible();
    for i in 0..30 {
        std::fs::write(s.ws.join(format!("file{i}")), "").expect("write");
    }
    let cfg = s.file("w.toml", "[filesystem]\nrepo_scan = { max_entries = 10 }\n");
    let audit = s.root.join("state/audit.jsonl");
    let audit_s = audit.display().to_string();
    let out = s.run(
        &["-p", "workspace-write", "--config", cfg.to_str().expect("utf8"), "--audit-log", &audit_s],
        &[],
        &["true"],
    );
    out.success().stderr_has("search for git repositories").stderr_has("repo_scan.max_entries");
    assert!(std::fs::read_to_string(&audit).expect("log").contains("\"event\":\"repo_scan.truncated\""));
    // Bad bounds are errors that name the file, the line and the accepted range.
    let bad = s.file("bad.toml", "[filesystem]\nrepo_scan = { max_depth = 100 }\n");
    s.run(&["--config", bad.to_str().expect("utf8")], &[], &["true"])
        .code(125)
        .stderr_has("bad.toml:2")
        .stderr_has("0..=64");
}

#[test]
fn explain_lists_the_protected_repositories() {
    let s = Scratch::visible();
    repo(&s.ws);
    repo(&s.ws.join("third_party/dep"));
    let out = crate::warden().current_dir(&s.ws).args(["explain", "--no-audit", "-p", "workspace-write"]).run();
    out.success()
        .stdout_has("repositories   2 found in the writable roots (gitdir read-only")
        .stdout_has(&s.ws.join("third_party/dep/.git").display().to_string());
}

/// A home with the given directories, and a project in it.
fn home_with(s: &Scratch, dirs: &[&str]) -> PathBuf {
    let home = s.root.join("home");
    for d in dirs {
        std::fs::create_dir_all(home.join(d)).expect("mkdir");
    }
    home
}

/// `warden run --yes -p workspace-write EXTRA -- sh -c SCRIPT` with `home` as HOME (its
/// `.local/state` as XDG_STATE_HOME), from the workdir.
fn run_in_home(s: &Scratch, home: &Path, extra: &[&str], script: &str) -> warden_testkit::Output {
    crate::warden()
        .env("HOME", home)
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .current_dir(&s.ws)
        .args(["run", "--yes", "-p", "workspace-write"])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .run()
}

#[test]
fn writable_parents_of_wardens_config_and_state_are_refused_existing_or_not() {
    let s = Scratch::visible();
    let home = home_with(&s, &[".config", ".local"]);
    let plant = "mkdir -p ~/.config/warden && echo 'profile = \"trusted\"' > ~/.config/warden/config.toml; echo ran";
    let run = |extra: &[&str]| run_in_home(&s, &home, extra, plant);
    let config_parent = home.join(".config").display().to_string();
    run(&["--writable", &config_parent])
        .code(125)
        .stdout_lacks("ran")
        .stderr_has(&format!("the writable root {config_parent} contains warden's config directory"))
        .stderr_has(&home.join(".config/warden").display().to_string());
    assert!(!home.join(".config/warden").exists(), "the config directory was created");
    let state_parent = home.join(".local").display().to_string();
    run(&["--writable", &state_parent]).code(125).stderr_has("state directory").stderr_has("--audit-log PATH");
    // The way out: the log elsewhere.
    let elsewhere = s.root.join("log/audit.jsonl");
    run(&["--writable", &state_parent, "--audit-log", elsewhere.to_str().expect("utf8")]).success().stdout_has("ran");
}

#[test]
fn a_config_read_for_the_run_cannot_be_changed_renamed_or_replaced() {
    let s = Scratch::visible();
    let cfg = s.file("ws/conf/warden/w.toml", "profile = \"workspace-write\"\n");
    let before = crate::read(&cfg);
    let script = format!(
        "echo 'profile = \"trusted\"' > conf/warden/w.toml && echo {ESCAPED}1; \
         mv conf conf.old && echo {ESCAPED}2; mv conf/warden conf/w2 && echo {ESCAPED}3; \
         rm -f conf/warden/w.toml && echo {ESCAPED}4; \
         touch conf/warden/other && echo dir-writable; exit 0"
    );
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--no-audit", "--config"])
        .args([&cfg])
        .args(["--", "sh", "-c", &script])
        .run();
    out.success().stdout_lacks(ESCAPED).stdout_has("dir-writable");
    assert_eq!(crate::read(&cfg), before);
    assert!(s.ws.join("conf/warden").is_dir());
}

#[test]
fn a_symlink_planted_for_a_later_run_needs_confirmation() {
    let s = Scratch::visible();
    let target = s.root.join("elsewhere");
    std::fs::create_dir(&target).expect("mkdir");
    // An earlier run plants the link in its workdir.
    let plant = format!("ln -s {} pkg", target.display());
    s.sh("workspace-write", &plant).success();
    assert!(s.ws.join("pkg").is_symlink());
    let run = |extra: &[&str]| {
        crate::warden()
            .current_dir(&s.ws)
            .args(["run", "--no-audit", "-p", "workspace-write", "-C", "./pkg"])
            .args(extra)
            .args(["--", "sh", "-c", "echo owned > planted"])
            .run()
    };
    run(&[])
        .code(125)
        .stderr_has(&format!("-> {}", target.display()))
        .stderr_has("a symlink out of its directory")
        .stderr_has("--yes");
    assert!(!target.join("planted").exists(), "the redirected workdir was written without confirmation");
    run(&["--yes"]).success();
    assert!(target.join("planted").exists());
    // The same for --writable; explain shows where the link leads.
    let out = crate::warden()
        .current_dir(&s.ws)
        .args(["explain", "--no-audit", "-p", "workspace-write", "--writable", "pkg"])
        .run();
    out.success().stdout_has("is a symlink out of its directory");
}

#[test]
fn a_symlinked_ancestor_like_home_to_var_home_needs_no_confirmation() {
    let s = Scratch::visible();
    let real = s.root.join("var-home");
    std::fs::create_dir_all(real.join("u/proj")).expect("mkdir");
    let link = s.root.join("home");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let out = crate::warden()
        .current_dir(&s.root)
        .args(["run", "--no-audit", "-p", "workspace-write", "-C"])
        .args([link.join("u/proj")])
        .args(["--", "sh", "-c", "echo ok > f"])
        .run();
    out.success();
    assert_eq!(crate::read(&real.join("u/proj/f")), "ok\n");
}

#[test]
fn renaming_an_ancestor_of_wardens_state_or_config_cannot_happen() {
    let s = Scratch::visible();
    let home = home_with(&s, &[".config/warden", ".local/state/warden"]);
    let log = home.join(".local/state/warden/audit.jsonl");
    let warden = |extra: &[&str], script: &str| run_in_home(&s, &home, extra, script);
    warden(&[], "true").success();
    let before = crate::read(&log);
    // The attack of issue 10: move the real state (or config) away and put a fresh one in place.
    let local = home.join(".local").display().to_string();
    let state_attack =
        format!("mv {local}/state {local}/state.x && mkdir -p {local}/state/warden && echo {ESCAPED}; exit 0");
    warden(&["--writable", &local], &state_attack).code(125).stdout_lacks(ESCAPED).stderr_has("state directory");
    let config = home.join(".config").display().to_string();
    let config_attack = format!(
        "mv {config} {config}.x && mkdir -p {config}/warden && echo 'profile = \"trusted\"' > {config}/warden/config.toml && echo {ESCAPED}; exit 0"
    );
    let parent = home.display().to_string();
    warden(&["--writable", &parent], &config_attack).code(125).stdout_lacks(ESCAPED);
    assert!(!home.join(".local/state.x").exists() && !home.join(".config.x").exists());
    assert!(crate::read(&log).starts_with(&before));
    // The next plain run still obeys no planted config and appends to the real log.
    warden(&[], "true").success();
    assert!(!home.join(".config/warden/config.toml").exists());
}

#[test]
fn masked_secrets_stay_unreadable_after_their_ancestors_are_renamed() {
    let s = Scratch::visible();
    let secret = s.file("ws/a/b/secret.txt", "SECRET-VALUE");
    let secret_dir = s.file("ws/c/keys/id", "KEY-VALUE");
    let keys = secret_dir.parent().expect("parent").display().to_string();
    let deny = secret.display().to_string();
    let script = "mv a a2 && cat a2/b/secret.txt; mv a2/b a2/z && cat a2/z/secret.txt; \
                  mv c c2 && cat c2/keys/id; ls c2/keys; mv a2/z/secret.txt moved.txt && cat moved.txt; exit 0";
    let out = s.sh_with("workspace-write", &["--deny-read", &deny, "--deny-read", &keys], script);
    out.success().stdout_lacks("SECRET-VALUE").stdout_lacks("KEY-VALUE");
    // On the host the files are where the renames put them, unchanged.
    assert_eq!(crate::read(&s.ws.join("a2/z/secret.txt")), "SECRET-VALUE");
    assert_eq!(crate::read(&s.ws.join("c2/keys/id")), "KEY-VALUE");
}

#[test]
fn repositories_the_command_creates_are_disabled_after_the_run() {
    let s = Scratch::visible();
    let audit = s.root.join("state/audit.jsonl");
    let audit_s = audit.display().to_string();
    let marker = s.root.join("fsmonitor-ran");
    // A bare layout git discovers on its own, acting on the workdir (core.worktree), with an
    // fsmonitor hook; at the top of the root it cannot be made, in a subdirectory it is disabled
    // after the run. And a plain `git init` of a nested repository.
    let bare = format!(
        "mkdir -p {{d}}/objects {{d}}/refs && echo 'ref: refs/heads/main' > {{d}}/HEAD && \
         printf '[core]\\n\\tworktree = ..\\n\\tfsmonitor = touch {m}\\n' > {{d}}/config",
        m = marker.display()
    );
    let script = format!(
        "{top} && echo {ESCAPED}-top; {sub} && echo sub-made; git init -q nested && echo nested-made; exit 0",
        top = bare.replace("{d}", "."),
        sub = bare.replace("{d}", "sub"),
    );
    let out = s.run(&["-p", "workspace-write", "--audit-log", &audit_s], &[], &["sh", "-c", &script]);
    out.success()
        .stdout_lacks(ESCAPED)
        .stdout_has("sub-made")
        .stdout_has("nested-made")
        .stderr_has("created a git bare repository")
        .stderr_has("created a git repository")
        .stderr_has("to use it after checking it: mv");
    assert!(!s.ws.join("HEAD").exists(), "the top of the workdir became a repository");
    assert!(!s.ws.join("sub/HEAD").exists() && s.ws.join("sub/HEAD.warden-disabled").exists());
    assert!(!s.ws.join("nested/.git").exists() && s.ws.join("nested/.git.warden-disabled").is_dir());
    // Host git no longer finds them (and so runs no fsmonitor); the documented mv restores one.
    // (The scratch directory may itself be inside a repository: git must not look above it.)
    let status = crate::scrubbed_command("git")
        .args(["status"])
        .env("GIT_CEILING_DIRECTORIES", &s.root)
        .current_dir(s.ws.join("sub"))
        .output()
        .expect("git");
    assert!(!status.status.success(), "git still takes sub/ for a repository");
    assert!(!marker.exists(), "the planted fsmonitor ran");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["event"] == "repo.neutralised")
        .collect();
    assert_eq!(records.len(), 2, "{records:?}");
    std::fs::rename(s.ws.join("nested/.git.warden-disabled"), s.ws.join("nested/.git")).expect("restore");
    git(&s.ws.join("nested"), &["status", "--short"]);
}

/// Runs sharing a workdir without a `.git` share its placeholder. A run whose start-time search
/// saw no `.git`, ending while another run still holds the placeholder (here: a shared `flock`
/// taken from outside, as that run's warden takes it), finds a `.git` it did not see at its start:
/// that placeholder, not a repository the command made. Nothing is renamed, nothing is warned.
#[test]
fn a_placeholder_another_run_still_holds_is_not_taken_for_a_created_repository() {
    let s = Scratch::visible();
    let dot_git = s.ws.join(".git");
    let holder = std::process::Command::new(crate::PY)
        .args([
            "-c",
            "import fcntl, os, sys, time\n\
             p = sys.argv[1]\n\
             for _ in range(500):\n\
             \x20   if os.path.isdir(p): break\n\
             \x20   time.sleep(0.01)\n\
             fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)\n\
             fcntl.flock(fd, fcntl.LOCK_SH)\n\
             print('held', flush=True)\n\
             time.sleep(4)\n",
        ])
        .arg(&dot_git)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let out = s.sh("workspace-write", "sleep 1.5");
    let mut holder = holder;
    let held = {
        let mut line = String::new();
        std::io::Read::read_to_string(holder.stdout.as_mut().expect("stdout"), &mut line).expect("read");
        line
    };
    let _ = holder.wait();
    assert!(held.contains("held"), "the placeholder was held by the other 'run'");
    out.success().stderr_lacks("created a git repository");
    assert!(!s.ws.join(".git.warden-disabled").exists(), "the other run's placeholder was renamed");
}
