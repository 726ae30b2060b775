//! A kernel (or container) without user namespaces: warden refuses, or with `--allow-degraded`
//! runs on Landlock and seccomp alone.
//!
//! Each test makes its own such world: `unshare -U -r` (a user namespace the test owns), then
//! `user.max_user_namespaces = 0` inside it, so warden cannot create one.

use std::net::TcpListener;
use std::time::Duration;

use crate::Scratch;

/// `warden ARGS` from the workdir, in a user namespace where no further one can be made.
fn without_userns(s: &Scratch, env: &[(&str, &str)], warden_args: &str) -> warden_testkit::Output {
    let inner = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && cd {} && {} {warden_args}",
        s.ws.display(),
        crate::warden_path().display()
    );
    let mut cmd = crate::scrubbed_command("unshare");
    cmd.args(["-U", "-r", "sh", "-c", &inner]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    crate::run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn without_user_namespaces_warden_refuses_by_default() {
    let s = Scratch::temp();
    let out = without_userns(&s, &[], "run -p workspace-write -- sh -c 'touch ran'");
    out.code(125).stderr_has("cannot enforce the user namespace layer").stderr_has("--allow-degraded");
    assert!(!s.ws.join("ran").exists(), "the command must not run");
}

#[test]
fn degraded_mode_keeps_the_host_read_only_and_secrets_masked() {
    let s = Scratch::visible();
    let home = s.root.join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    std::fs::write(home.join(".ssh/id_rsa"), "PRIVATE-KEY").expect("write");
    std::fs::write(home.join("notes"), "readable").expect("write");
    let outside = s.root.join("outside");
    std::fs::write(&outside, "original").expect("write");
    let script = format!(
        "cat {home}/.ssh/id_rsa; cat {home}/notes; echo x > {out}; echo y > /etc/warden-degraded; \
         echo kept > ws-file; echo t > $TMPDIR/t && echo tmp-ok; exit 0",
        home = home.display(),
        out = outside.display()
    );
    let home_s = home.display().to_string();
    let out = without_userns(
        &s,
        &[("HOME", home_s.as_str())],
        &format!("run --allow-degraded -p workspace-write -- sh -c '{script}'"),
    );
    out.success()
        .stderr_has("--allow-degraded: running with Landlock and seccomp only")
        .stdout_lacks("PRIVATE-KEY")
        .stdout_has("readable")
        .stdout_has("tmp-ok");
    assert_eq!(std::fs::read_to_string(&outside).expect("read"), "original", "outside file changed");
    assert!(!std::path::Path::new("/etc/warden-degraded").exists());
    assert_eq!(std::fs::read_to_string(s.ws.join("ws-file")).expect("workdir write persists"), "kept\n");
}

#[test]
fn degraded_mode_refuses_network_and_named_unix_sockets() {
    let s = Scratch::temp();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let code = format!(
        "import socket\n\
         for fam, addr in ((socket.AF_INET, ('127.0.0.1', {port})), (socket.AF_UNIX, '/run/x.sock')):\n\
         \x20   try:\n\
         \x20       socket.socket(fam).connect(addr); print('ESCAPED', fam)\n\
         \x20   except OSError as e:\n\
         \x20       print('errno', e.errno)\n\
         a, b = socket.socketpair(); a.send(b'p'); print('pair', b.recv(1))\n"
    );
    let py = s.file("ws/net.py", &code);
    let out = without_userns(&s, &[], &format!("run --allow-degraded -- /usr/bin/python3 {}", py.display()));
    out.success().stdout_lacks("ESCAPED").stdout_has("pair b'p'");
    assert_eq!(out.stdout.matches("errno 1\n").count(), 2, "both sockets refused with EPERM:\n{}", out.stdout);
    assert!(listener.accept().is_err(), "the host listener saw a connection");
}
