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

/// Without namespaces too, the command gets a pty of its own (a new one of the host's), never
/// warden's terminal, and can reopen it by name; with warden's streams redirected it has no
/// controlling terminal at all, so it can neither read the user's terminal nor change its modes.
#[test]
fn degraded_mode_gives_the_command_its_own_pty_never_the_host_terminal() {
    assert!(crate::have("/usr/bin/script"), "util-linux `script` is required (scripts/test.sh installs it)");
    let s = Scratch::temp();
    let steal = s.file("ws/steal.py", crate::tty::STEAL);
    let warden = crate::warden_path();
    let session = s.file(
        "session.sh",
        &format!(
            "echo host-tty=$(tty)\nstty -g > {root}/before\necho 0 > /proc/sys/user/max_user_namespaces\ncd {ws}\n\
             {warden} run --allow-degraded -- sh -c 'echo inner-tty=$(tty); echo x > $(tty) && echo reopen-ok'\n\
             {warden} run --allow-degraded -- {py} {steal} </dev/null >{root}/out 2>&1\nstty -g > {root}/after\n",
            root = s.root.display(),
            ws = s.ws.display(),
            warden = warden.display(),
            py = crate::PY,
            steal = steal.display()
        ),
    );
    let mut cmd = crate::scrubbed_command("script");
    cmd.args(["-qec", &format!("unshare -U -r sh {}", session.display()), "/dev/null"]).current_dir(&s.ws);
    let out = crate::run_bounded(cmd, Duration::from_secs(60));
    let tty_of = |key: &str| {
        out.stdout.lines().find_map(|l| l.trim().split_once(key).map(|(_, t)| t.to_owned())).unwrap_or_default()
    };
    let (host, inner) = (tty_of("host-tty="), tty_of("inner-tty="));
    assert!(host.starts_with("/dev/pts/") && inner.starts_with("/dev/pts/"), "{}", out.stdout);
    assert_ne!(host, inner, "the command got warden's terminal:\n{}", out.stdout);
    out.stdout_has("reopen-ok");
    let saved = |f: &str| crate::read(&s.root.join(f)).trim().to_owned();
    let stolen = saved("out");
    assert!(stolen.contains("tty-open ENXIO") && !stolen.contains("READ"), "{stolen}");
    assert_eq!(saved("before"), saved("after"), "terminal modes changed:\n{}", out.stdout);
}
