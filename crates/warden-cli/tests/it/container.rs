//! warden inside a container (issue 9, item 5): a `FROM scratch` image holding the binary under
//! test and a static busybox, built and run with podman (runc), with the default settings and
//! with the ones docs/containers.md documents. Each case asserts what that page says.
//!
//! Needs root (rootful podman) and podman, runc and busybox-static (scripts/test.sh installs them
//! as root). Outside CI a missing tool skips with a note; with `CI` set it fails.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::ESCAPED;

/// The image, built once per test process.
fn image() -> Option<&'static str> {
    static IMAGE: OnceLock<Option<String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let missing: Vec<&str> = ["/usr/bin/podman", "/usr/sbin/runc", "/usr/bin/busybox"]
                .into_iter()
                .filter(|p| !Path::new(p).exists())
                .collect();
            if !missing.is_empty() {
                assert!(std::env::var_os("CI").is_none(), "CI must run the container test; missing {missing:?}");
                eprintln!("note: skipped, missing {missing:?} (apt-get install podman runc busybox-static)");
                return None;
            }
            let ctx = tempfile::tempdir().expect("build context");
            std::fs::copy(crate::warden_path(), ctx.path().join("warden")).expect("copy warden");
            std::fs::copy("/usr/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
            std::fs::create_dir(ctx.path().join("bin")).expect("mkdir");
            for applet in ["sh", "cat", "echo", "grep", "hostname", "id", "ls", "mkdir", "nc", "sleep", "test", "touch"]
            {
                std::os::unix::fs::symlink("busybox", ctx.path().join("bin").join(applet)).expect("symlink");
            }
            std::fs::write(
                ctx.path().join("Containerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\nCOPY bin/ /bin/\nCOPY warden /bin/warden\n",
            )
            .expect("Containerfile");
            // One tag, replaced by each run (the old image is removed first, so runs leave one).
            let name = "localhost/warden-it:latest".to_owned();
            let mut rmi = crate::scrubbed_command("podman");
            rmi.args(["rmi", "-f", &name]);
            let _ = crate::run_bounded(rmi, Duration::from_secs(60));
            let mut cmd = crate::scrubbed_command("podman");
            cmd.args(["--runtime", "runc", "build", "-q", "-t", &name]).arg(ctx.path());
            crate::run_bounded(cmd, Duration::from_secs(300)).success();
            Some(name)
        })
        .as_deref()
}

/// `podman run --rm [OPTS] IMAGE sh -c SCRIPT`, with a writable /work and /state (tmpfs). The
/// script's stderr goes to its stdout: one stream, in order (podman may cut a second stream short
/// when the container exits).
fn podman(image: &str, opts: &[&str], script: &str) -> warden_testkit::Output {
    let mut cmd = crate::scrubbed_command("podman");
    cmd.args(["--runtime", "runc", "run", "--rm", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"])
        .args(["--tmpfs", "/work:mode=1777", "--tmpfs", "/state:mode=1777", "--env", "HOME=/work/home"])
        .args(opts)
        .args([image, "/bin/sh", "-c", &format!("exec 2>&1; {script}")]);
    crate::run_bounded(cmd, Duration::from_secs(120))
}

/// A subset of the escape battery, run by `warden run --allow-degraded -p workspace-write` in
/// /work/proj, with a loopback listener of the container outside the sandbox and a secret in
/// $HOME/.ssh; afterwards the container's state is checked from outside the sandbox.
fn battery(warden_flags: &str) -> String {
    format!(
        "mkdir -p /work/proj $HOME/.ssh && echo PRIVATE-KEY > $HOME/.ssh/id_rsa && \
         (nc -l -p 7777 -e echo LOOPBACK-SERVED &) && sleep 0.3 && cd /work/proj && \
         warden run {warden_flags} -p workspace-write --audit-log /state/audit.jsonl -- sh -c '\
           echo x > /etc/escaped && echo {ESCAPED}-etc; \
           cat $HOME/.ssh/id_rsa; \
           nc 127.0.0.1 7777 </dev/null | grep -q LOOPBACK && echo {ESCAPED}-loopback; \
           echo kept > /work/proj/f; echo inside-hostname=$(hostname); id -u'; \
         echo rc=$?; test -e /etc/escaped && echo {ESCAPED}-host; cat /work/proj/f; \
         nc 127.0.0.1 7777 </dev/null; \
         warden audit show --audit-log /state/audit.jsonl --event policy.degraded; \
         warden audit verify --audit-log /state/audit.jsonl"
    )
}

#[test]
fn warden_in_a_default_container_degrades_one_layer_at_a_time() {
    root_only!();
    let Some(image) = image() else { return };
    for user in [None, Some("65534:65534")] {
        let as_user: Vec<&str> = user.map(|u| vec!["--user", u]).unwrap_or_default();
        // Refused without --allow-degraded, naming the layer and the settings that restore it.
        let out = podman(image, &as_user, "cd /work && warden run --no-audit -- true; echo rc=$?");
        out.stdout_has("rc=125")
            .stdout_has("cannot enforce the proc layer")
            .stdout_has("systempaths=unconfined")
            .stdout_has("procMount: Unmasked")
            .stdout_has("--allow-degraded");
        // One layer at a time: proc and hostname go, everything else holds.
        let out = podman(image, &as_user, &battery("--allow-degraded"));
        out.stdout_has("rc=0")
            .stdout_lacks(ESCAPED)
            .stdout_lacks("PRIVATE-KEY")
            .stdout_has("kept")
            .stdout_has("LOOPBACK-SERVED")
            .stdout_has("running without the proc layer (--allow-degraded)")
            .stdout_has("running without the hostname layer (--allow-degraded)")
            .stdout_has("policy.degraded")
            .stdout_has("ok: ");
        assert!(out.stdout.contains("layers=proc") && out.stdout.contains("layers=hostname"), "{}", out.stdout);
        assert!(!out.stdout.contains("inside-hostname=warden"), "the hostname could not be set: {}", out.stdout);
        let uid = if user.is_some() { "65534" } else { "0" };
        assert!(out.stdout.contains(&format!("\n{uid}\n")), "runs as uid {uid}: {}", out.stdout);
        // doctor names what to change.
        let out = podman(image, &as_user, "warden doctor; echo rc=$?");
        out.stdout_has("rc=1")
            .stdout_has("container: podman")
            .stdout_has("FAIL proc")
            .stdout_has("FAIL hostname")
            .stdout_has("to restore proc in this container: podman: --security-opt unmask=ALL")
            .stdout_has("Kubernetes: securityContext.seccompProfile.type: Unconfined");
    }
}

#[test]
fn with_the_documented_settings_every_layer_holds() {
    root_only!();
    let Some(image) = image() else { return };
    let opts = ["--security-opt", "unmask=ALL", "--security-opt", "seccomp=unconfined"];
    let out = podman(image, &opts, &battery(""));
    out.stdout_has("rc=0")
        .stdout_lacks(ESCAPED)
        .stdout_lacks("PRIVATE-KEY")
        .stdout_has("inside-hostname=warden")
        .stdout_has("kept")
        .stdout_lacks("running without");
    let out = podman(image, &opts, "warden doctor; echo rc=$?");
    out.stdout_has("rc=0").stdout_has("every profile can be enforced here");
}

#[test]
fn without_user_namespaces_the_landlock_mode_works_in_an_image_without_tmp() {
    root_only!();
    let Some(image) = image() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("nouserns.json");
    // Everything allowed but user namespaces (clone/unshare with CLONE_NEWUSER; clone3 answers
    // ENOSYS so that callers fall back to clone).
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
  {"names":["clone","unshare"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
   "args":[{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]},
  {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
    )
    .expect("profile");
    let seccomp = format!("seccomp={}", profile.display());
    let opts = ["--security-opt", seccomp.as_str()];
    let script = "test -e /tmp && echo HAS-TMP; cd /work && warden run --no-audit -- true; echo rc=$?; \
                  mkdir -p proj && cd proj && warden run --no-audit --allow-degraded -p workspace-write -- \
                  sh -c 'echo t > $TMPDIR/t && echo tmp-ok=$TMPDIR; echo x > /etc/escaped || echo etc-denied; echo w > f'; \
                  echo rc=$?; cat f";
    let out = podman(image, &opts, script);
    out.stdout_lacks("HAS-TMP")
        .stdout_has("rc=125")
        .stdout_has("cannot enforce the user namespace layer")
        .stdout_has("tmp-ok=/dev/shm/warden-")
        .stdout_has("etc-denied")
        .stdout_has("rc=0\nw\n")
        .stdout_has("running with Landlock and seccomp only");
}
