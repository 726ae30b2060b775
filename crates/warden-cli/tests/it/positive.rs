//! What must keep working inside the sandbox (a sandbox that breaks everything proves nothing).

use std::path::Path;

use crate::{read, Scratch, PY};

#[test]
fn reading_usr_works() {
    let s = Scratch::temp();
    let out = s.sh("offline", "head -c 4 /usr/bin/env | od -c | head -1; ls /usr/bin | grep -c .");
    out.success().stdout_has("E   L   F");
}

#[test]
fn python_runs() {
    let s = Scratch::temp();
    s.py("offline", "print(1 + 1)").success().stdout_has("2\n");
}

#[test]
fn shell_pipeline_works() {
    let s = Scratch::temp();
    s.sh("offline", "echo a | tr a b").success().stdout_has("b\n");
}

#[test]
fn git_status_works_in_a_fresh_repo() {
    let s = Scratch::temp();
    let init = std::process::Command::new("git").args(["init", "-q"]).current_dir(&s.ws).output().expect("git init");
    assert!(init.status.success(), "git init: {}", String::from_utf8_lossy(&init.stderr));
    s.file("ws/hello.txt", "hi\n");
    let out = crate::warden()
        .env("HOME", &s.root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-write", "-C"])
        .args([&s.ws])
        .args(["--", "git", "-c", &format!("safe.directory={}", s.ws.display()), "status", "--porcelain"])
        .run();
    out.success().stdout_has("?? hello.txt");
}

#[test]
fn dev_null_is_writable_and_zero_readable() {
    let s = Scratch::temp();
    let out = s.sh(
        "offline",
        "echo discard > /dev/null && head -c 3 /dev/zero | od -An -tx1 && head -c 8 /dev/urandom | wc -c",
    );
    out.success().stdout_has("00 00 00").stdout_has("8");
}

#[test]
fn dev_has_only_the_minimal_set() {
    let s = Scratch::temp();
    let out = s.sh("offline", "ls /dev");
    out.success();
    let mut got: Vec<&str> = out.stdout.split_whitespace().collect();
    got.sort_unstable();
    let allowed =
        ["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"];
    for name in &got {
        if !allowed.contains(name) {
            out.fail(&format!("unexpected /dev entry {name:?}"));
        }
    }
    for needed in ["null", "zero", "urandom", "tty"] {
        assert!(got.contains(&needed), "/dev lacks {needed}: {got:?}");
    }
}

#[test]
fn tmp_is_writable_but_private() {
    let s = Scratch::temp();
    let name = format!("warden-private-{}", std::process::id());
    let out = s.sh("offline", &format!("echo inside > /tmp/{name} && cat /tmp/{name}"));
    out.success().stdout_has("inside");
    assert!(!Path::new("/tmp").join(&name).exists(), "the sandbox's /tmp file appeared on the host");
}

#[test]
fn host_tmp_files_are_not_visible() {
    let s = Scratch::in_tmp();
    let probe = s.file("probe.txt", "host tmp\n");
    let out = s.sh("offline", &format!("cat {} 2>&1; exit 0", probe.display()));
    out.success().stdout_lacks("host tmp");
    assert_eq!(read(&probe), "host tmp\n");
}

#[test]
fn loopback_server_inside_is_reachable_from_inside() {
    let s = Scratch::temp();
    s.file("ws/index.html", "inside-hello\n");
    let script = format!(
        "{PY} -m http.server -b 127.0.0.1 18080 >/dev/null 2>&1 & \
         i=0; while [ $i -lt 100 ]; do \
           body=$(curl -s --max-time 2 http://127.0.0.1:18080/index.html) && [ -n \"$body\" ] && break; \
           sleep 0.1; i=$((i+1)); done; \
         echo \"$body\"; kill $!"
    );
    let out = s.sh("offline", &script);
    out.success().stdout_has("inside-hello");
}

#[test]
fn workspace_write_can_build_files() {
    let s = Scratch::temp();
    let out = s.sh("workspace-write", "mkdir -p out && for i in 1 2 3; do echo $i >> out/log; done && wc -l < out/log");
    out.success().stdout_has("3");
    assert_eq!(read(&s.ws.join("out/log")), "1\n2\n3\n");
}
