//! The command's terminal: a pty of the sandbox's own, relayed by warden; the host's terminal
//! is never the sandbox's; job control stops and continues the whole sandbox.
//!
//! Each test wraps warden in `script` (util-linux), which gives warden a terminal even in CI,
//! and feeds keystrokes through a pipe into `script`: all at once with pauses ([`in_terminal`]),
//! or one step at a time when the test has seen what it waits for ([`Session`]).

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{marker_pids, pids_named, proc_state, sleep_marker, wait_until, warden_pids, Scratch, PY};

/// A terminal session under `script -qec COMMAND`, typed into step by step: keys go in when the
/// test has seen what it waits for, and the output is collected as it comes. Every wait is
/// bounded; the session is killed when dropped.
struct Session {
    child: Child,
    keys: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    cmdline: String,
}

impl Session {
    /// `script -qec COMMAND /dev/null`, from the workdir.
    fn start(s: &Scratch, command: &str) -> Session {
        assert!(crate::have("/usr/bin/script"), "util-linux `script` is required (scripts/test.sh installs it)");
        let mut cmd = crate::scrubbed_command("script");
        cmd.args(["-qec", command, "/dev/null"]).current_dir(&s.ws);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        let cmdline = format!("script -qec {command:?} /dev/null");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
        let keys = child.stdin.take();
        let mut out = child.stdout.take().expect("stdout is piped");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]);
            }
        });
        Session { child, keys, output, reader: Some(reader), cmdline }
    }

    /// An interactive bash (job control on) on the terminal.
    fn bash(s: &Scratch) -> Session {
        assert!(crate::have("/bin/bash"), "bash is required");
        Session::start(s, "bash --norc --noprofile -i")
    }

    /// Types `keys` (a session that already ended ignores them).
    fn keys(&mut self, keys: &str) {
        if let Some(k) = self.keys.as_mut() {
            let _ = k.write_all(keys.as_bytes()).and_then(|()| k.flush());
        }
    }

    /// What the terminal showed so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Waits until the terminal shows `needle`; fails the test after `limit`.
    #[track_caller]
    fn expect(&self, needle: &str, limit: Duration) {
        self.until(&format!("the terminal did not show {needle:?}"), limit, || self.text().contains(needle));
    }

    /// Waits until `cond` holds; fails the test with `what` after `limit`.
    #[track_caller]
    fn until(&self, what: &str, limit: Duration, cond: impl FnMut() -> bool) {
        if !wait_until(limit, cond) {
            self.fail(&format!("{what} (waited {limit:?})"));
        }
    }

    /// Fails the test, showing the session.
    #[track_caller]
    fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n--- session ---\n{}\n--- terminal ---\n{}\n", self.cmdline, self.text())
    }

    /// Ends the input and waits (bounded) for `script` to exit; its status and what it showed.
    fn finish(mut self, limit: Duration) -> warden_testkit::Output {
        drop(self.keys.take());
        let start = Instant::now();
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
                _ => self.fail(&format!("the session did not end within {limit:?}")),
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        warden_testkit::Output { cmdline: self.cmdline.clone(), code, stdout: self.text(), stderr: String::new() }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tries to take the terminal the way an attacker would: open `/dev/tty`, become its foreground
/// process group, turn echo off, read what is typed next. Prints each step's result.
pub(crate) const STEAL: &str = r#"import errno, os, signal, sys, termios
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
stat = open('/proc/self/stat').read().rsplit(')', 1)[1].split()
print('tty_nr', stat[4], flush=True)
try:
    fd = os.open('/dev/tty', os.O_RDWR)
except OSError as e:
    print('tty-open', errno.errorcode[e.errno], flush=True)
    sys.exit(0)
try:
    os.setpgid(0, 0)
    os.tcsetpgrp(fd, os.getpgrp())
    print('foreground', flush=True)
except OSError as e:
    print('tcsetpgrp', errno.errorcode[e.errno], flush=True)
a = termios.tcgetattr(fd)
a[3] &= ~termios.ECHO
termios.tcsetattr(fd, termios.TCSANOW, a)
print('READ', os.read(fd, 100), flush=True)
"#;

/// An executable `name` in the scratch root that execs `warden run ARGS` (ARGS are shell words).
fn job(s: &Scratch, name: &str, warden_args: &str) -> std::path::PathBuf {
    let path = s.root.join(name);
    let body = format!("#!/bin/sh\nexec {} run -C {} {warden_args}\n", crate::warden_path().display(), s.ws.display());
    std::fs::write(&path, body).expect("write job script");
    warden_testkit::set_mode(&path, 0o755);
    path
}

/// Shell lines that start `sleep MARKER` in the background and wait (bounded) until it runs
/// `sleep`: a child stopped before its exec would never show the marker.
fn background_sleep(marker: &str) -> String {
    format!(
        "sleep {marker} &\ni=0\nwhile [ $i -lt 1000 ] && [ \"$(cat /proc/$!/comm)\" != sleep ]; do i=$((i+1)); sleep 0.01; done\n"
    )
}

/// Whether there are processes with `marker` in their command line, all in `state` (`T`, `S`).
fn all_in_state(marker: &str, state: char) -> bool {
    let pids = marker_pids(marker);
    !pids.is_empty() && pids.iter().all(|p| proc_state(*p) == Some(state))
}

/// Sends `sig` to the `warden` processes whose command line contains `marker`.
fn signal_wardens(marker: &str, sig: libc::c_int) {
    for p in warden_pids(marker) {
        let pid = libc::pid_t::try_from(p).expect("pid fits");
        // SAFETY: kill(2) with integers only.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Whether `file` exists and contains `needle`.
fn file_has(file: &std::path::Path, needle: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|t| t.contains(needle))
}

/// The terminal's settings saved by `stty -g` into `file` of the scratch root.
fn stty_saved(s: &Scratch, file: &str) -> String {
    crate::read(&s.root.join(file)).trim().to_owned()
}

/// Runs `sh -c "(INPUT) | script -qec 'warden run ARGS' /dev/null"` from the workdir.
fn in_terminal(s: &Scratch, input: &str, warden_args: &str) -> warden_testkit::Output {
    assert!(crate::have("/usr/bin/script"), "util-linux `script` is required (scripts/test.sh installs it)");
    let inner = format!("{} run -C {} {warden_args}", crate::warden_path().display(), s.ws.display());
    let outer = format!("({input}) | script -qec \"{inner}\" /dev/null");
    let mut cmd = crate::scrubbed_command("sh");
    cmd.args(["-c", &outer]).current_dir(&s.ws);
    crate::run_bounded(cmd, Duration::from_secs(60))
}

#[test]
fn interactive_shell_runs_on_the_sandboxs_own_pty() {
    let s = Scratch::temp();
    let out = in_terminal(
        &s,
        "sleep 0.5; printf 'echo hi-$((40+2)); tty; ls /dev/pts; exit 7\\n'",
        "-- bash --norc --noprofile -i",
    );
    // `script -e` exits with warden's status, which is the shell's.
    out.code(7).stdout_has("hi-42").stdout_has("/dev/pts/0");
    // Only the sandbox's own pty (and ptmx) exist in its /dev/pts: no host terminal.
    out.stdout_lacks("/dev/pts/1");
}

#[test]
fn ctrl_c_interrupts_the_command_through_the_pty() {
    let s = Scratch::temp();
    let start = std::time::Instant::now();
    let out = in_terminal(&s, "sleep 1; printf '\\003'", "-- sh -c 'sleep 30; echo finished'");
    out.code(130).stdout_lacks("finished");
    assert!(start.elapsed() < Duration::from_secs(25), "Ctrl-C did not stop the command");
}

#[test]
fn window_size_follows_warden_s_terminal() {
    let s = Scratch::temp();
    let inner = format!("{} run -C {} -- stty size", crate::warden_path().display(), s.ws.display());
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &format!("stty rows 33 cols 111; {inner}"), "/dev/null"]).current_dir(&s.ws);
    let out = crate::run_bounded(cmd, Duration::from_secs(60));
    out.success().stdout_has("33 111");
}

#[test]
fn without_a_terminal_the_command_has_none() {
    let s = Scratch::temp();
    s.sh("offline", "tty; exit 0").success().stdout_has("not a tty");
}

#[test]
fn writable_outside_the_workdir_is_confirmed_on_a_terminal() {
    let s = Scratch::visible();
    let ext = s.root.join("ext");
    std::fs::create_dir(&ext).expect("mkdir");
    let args = format!("-p workspace-write --writable {} -- sh -c 'echo yes > {}/f'", ext.display(), ext.display());
    // "n" (or anything but y/yes): nothing runs.
    let out = in_terminal(&s, "sleep 0.5; printf 'n\\n'", &args);
    out.code(125).stdout_has("writable?");
    assert!(!ext.join("f").exists());
    // "y": it runs, and the write lands.
    let out = in_terminal(&s, "sleep 0.5; printf 'y\\n'", &args);
    out.success();
    assert_eq!(std::fs::read_to_string(ext.join("f")).expect("written"), "yes\n");
}

/// Ctrl-Z stops the command (its process group is the foreground group of the sandbox's pty and
/// not orphaned), warden gives the terminal back and stops like a job; `fg` continues both.
#[test]
fn ctrl_z_stops_warden_like_a_job_and_fg_resumes_the_command() {
    assert!(crate::have("/usr/bin/script") && crate::have("/bin/bash"), "script and bash are required");
    let s = Scratch::temp();
    let job = s.root.join("job.sh");
    std::fs::write(
        &job,
        format!(
            "#!/bin/sh\nexec {} run -C {} -- sh -c 'echo started; cat; echo ended-$((6*7))'\n",
            crate::warden_path().display(),
            s.ws.display()
        ),
    )
    .expect("write job.sh");
    warden_testkit::set_mode(&job, 0o755);
    let keys = format!(
        "sleep 0.5; printf '%s\\n' {job}; sleep 2; printf '\\032'; sleep 1.5; printf 'jobs; echo jobs-$((1+1))\\n'; \
         sleep 1; printf 'fg\\n'; sleep 1.5; printf 'typed-after-fg\\n'; sleep 1; printf '\\004'; sleep 1.5; \
         printf 'exit\\n'",
        job = job.display()
    );
    let outer = format!("({keys}) | script -qec 'bash --norc --noprofile -i' /dev/null");
    let mut cmd = crate::scrubbed_command("sh");
    cmd.args(["-c", &outer]).current_dir(&s.ws);
    let out = crate::run_bounded(cmd, Duration::from_secs(60));
    out.success().stdout_has("started").stdout_has("jobs-2").stdout_has("ended-42");
    let at = |needle: &str| out.stdout.find(needle).unwrap_or_else(|| out.fail(&format!("no {needle:?}")));
    // bash reported the job stopped before `jobs` ran, and the command ended only after `fg`.
    assert!(at("Stopped") < at("jobs-2"), "{}", out.stdout);
    assert!(at("jobs-2") < at("typed-after-fg") && at("typed-after-fg") < at("ended-42"), "{}", out.stdout);
    // cat was stopped: what was typed while the job was stopped went to bash, not to cat.
    assert_eq!(out.stdout.matches("jobs; echo").count(), 1, "{}", out.stdout);
}

/// When warden cannot stop as a job (here it leads `script`'s session, so its process group is
/// orphaned and the kernel discards SIGTSTP), a stopped command is continued at once rather than
/// left hanging.
#[test]
fn a_stopped_command_is_continued_when_warden_cannot_stop_as_a_job() {
    let s = Scratch::temp();
    // The terminal stays open past the timeout: only warden's own SIGCONT can resume the command
    // in time (closing the terminal would continue it too, by SIGHUP and SIGCONT).
    // `\$\$`: in_terminal's outer shell must not expand it; the command's own shell does.
    let out = in_terminal(&s, "sleep 12", "--timeout 6 -- sh -c 'kill -STOP \\$\\$ && echo resumed-$((2*3))'");
    out.success().stdout_has("resumed-6");
}

/// With warden's standard streams redirected away from the terminal, the sandbox still has no
/// controlling terminal: `/dev/tty` fails with ENXIO, so nothing can be read from the user's
/// terminal or change its modes, and the terminal is as warden found it.
#[test]
fn with_stdio_redirected_the_sandbox_cannot_reach_the_terminal() {
    let s = Scratch::temp();
    s.file("ws/steal.py", STEAL);
    let out = s.root.join("out");
    let run = job(&s, "run.sh", &format!("-- {PY} {}/steal.py", s.ws.display()));
    let session = s.file(
        "session.sh",
        &format!(
            "stty -g > {root}/before\n{run} </dev/null >{out} 2>&1\necho rc-$?\nstty -g > {root}/after\n",
            root = s.root.display(),
            run = run.display(),
            out = out.display()
        ),
    );
    let mut term = Session::start(&s, &format!("sh {}", session.display()));
    term.until("the command did not start", Duration::from_secs(30), || file_has(&out, "tty_nr"));
    // What the user types next must not reach the sandbox.
    term.keys("typed-secret-line\n");
    term.expect("rc-", Duration::from_secs(30));
    let result = term.finish(Duration::from_secs(30));
    let shown = crate::read(&out);
    assert!(shown.contains("tty-open ENXIO") && shown.contains("tty_nr 0"), "{shown}\n{}", result.stdout);
    assert!(!shown.contains("READ") && !shown.contains("typed-secret"), "the sandbox read the terminal: {shown}");
    assert_eq!(stty_saved(&s, "before"), stty_saved(&s, "after"), "terminal modes changed: {shown}");
}

/// A run in the background of an interactive shell can neither make itself the terminal's
/// foreground group nor read what the user types to the shell: with its streams redirected (no
/// terminal at all) or on the terminal (the sandbox's own pty, which warden feeds only while it
/// is in the foreground).
#[test]
fn a_background_run_cannot_take_the_terminal_or_read_keystrokes() {
    let s = Scratch::temp();
    s.file("ws/steal.py", STEAL);
    let out = s.root.join("out");
    let steal = format!("-- {PY} {}/steal.py", s.ws.display());
    let redirected = job(&s, "redirected.sh", &format!("--timeout 30 {steal} </dev/null >{} 2>&1", out.display()));
    let on_terminal = job(&s, "on-terminal.sh", &format!("--timeout 4 {steal}"));
    let root = s.root.display().to_string();
    let mut term = Session::bash(&s);
    term.keys(&format!("stty -g > {root}/before; {} &\n", redirected.display()));
    term.until("the background command did not start", Duration::from_secs(30), || file_has(&out, "tty_nr"));
    // The shell, not the sandbox, reads this line.
    term.keys("echo typed-at-shell-$((1+1))\n");
    term.expect("typed-at-shell-2", Duration::from_secs(20));
    term.keys("wait $!; echo rc1-$?\n");
    term.expect("rc1-0", Duration::from_secs(30));
    // On the terminal: the sandbox's /dev/tty is its own pty, which it may take, but warden in
    // the background does not read the user's keystrokes into it.
    term.keys(&format!("{} &\n", on_terminal.display()));
    term.expect("foreground", Duration::from_secs(30));
    term.keys("echo typed-at-shell-$((2+2))\n");
    term.expect("typed-at-shell-4", Duration::from_secs(20));
    term.keys(&format!("wait $!; echo rc2-$?; stty -g > {root}/after\n"));
    term.expect("rc2-124", Duration::from_secs(30));
    term.keys("exit\n");
    let result = term.finish(Duration::from_secs(30));
    let shown = crate::read(&out);
    assert!(shown.contains("tty-open ENXIO"), "{shown}\n{}", result.stdout);
    assert!(
        !shown.contains("READ") && !result.stdout.contains("READ"),
        "the sandbox read keystrokes: {}",
        result.stdout
    );
    assert_eq!(stty_saved(&s, "before"), stty_saved(&s, "after"), "terminal modes changed");
}

/// A command that stops itself while warden holds the terminal stops warden's job, and with it
/// every process of the sandbox (here a background `sleep`); `fg` continues them all.
#[test]
fn a_self_stop_stops_every_process_of_the_sandbox_and_fg_continues_them() {
    let s = Scratch::temp();
    let marker = sleep_marker(20);
    s.file("ws/inner.sh", &format!("{}kill -STOP $$\necho resumed-$((6*7))\n", background_sleep(&marker)));
    let run = job(&s, "job.sh", &format!("--timeout 60 -- sh {}/inner.sh", s.ws.display()));
    let mut term = Session::bash(&s);
    term.keys(&format!("{}\n", run.display()));
    term.expect("Stopped", Duration::from_secs(30));
    let what = "the sandbox's background process did not stop with the job";
    term.until(what, Duration::from_secs(10), || all_in_state(&marker, 'T'));
    assert!(warden_pids(&s.ws.display().to_string()).iter().all(|p| proc_state(*p) == Some('T')), "warden runs");
    term.keys("fg\n");
    term.expect("resumed-42", Duration::from_secs(20));
    term.keys("echo rc-$?\n");
    term.expect("rc-0", Duration::from_secs(20));
    term.keys("exit\n");
    term.finish(Duration::from_secs(30));
    assert!(
        wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()),
        "a sandbox process outlived the run: {:?}",
        marker_pids(&marker)
    );
}

/// `--timeout` bounds the whole sandbox in wall-clock time even while warden's job is stopped:
/// PID 1 kills everything at the deadline, and warden exits 124 as soon as it is continued.
#[test]
fn the_timeout_holds_while_warden_is_stopped() {
    let s = Scratch::temp();
    let marker = sleep_marker(21);
    // `started` only once the sleep runs: the test sees it gone, never merely not yet there.
    s.file("ws/inner.sh", &format!("{}echo $! > started\nkill -STOP $$\necho resumed\n", background_sleep(&marker)));
    let run = job(&s, "job.sh", &format!("-p workspace-write --timeout 3 -- sh {}/inner.sh", s.ws.display()));
    let mut term = Session::bash(&s);
    let start = Instant::now();
    term.keys(&format!("{}\n", run.display()));
    term.until("the command did not start", Duration::from_secs(30), || s.ws.join("started").exists());
    term.expect("Stopped", Duration::from_secs(30));
    let wardens = warden_pids(&s.ws.display().to_string());
    let stopped = |pids: &[u32]| !pids.is_empty() && pids.iter().all(|p| proc_state(*p) == Some('T'));
    assert!(stopped(&wardens), "warden is not stopped: {wardens:?}");
    let what = "the sandbox outlived --timeout 3 while warden was stopped";
    term.until(what, Duration::from_secs(20), || marker_pids(&marker).is_empty());
    assert!(stopped(&wardens), "warden was continued before the sandbox was killed: {wardens:?}");
    let gone_after = start.elapsed();
    let resumed = Instant::now();
    term.keys("fg\n");
    term.expect("timed out", Duration::from_secs(10));
    term.keys("echo rc-$?\n");
    term.expect("rc-124", Duration::from_secs(10));
    assert!(resumed.elapsed() < Duration::from_secs(10), "warden took {:?} to exit after fg", resumed.elapsed());
    term.keys("exit\n");
    let result = term.finish(Duration::from_secs(30));
    assert!(!result.stdout.contains("resumed\r\n"), "the command ran past the deadline: {}", result.stdout);
    assert!(gone_after < Duration::from_secs(25), "the sandbox was killed only after {gone_after:?}");
}

/// Ctrl-Z with warden's streams redirected (the sandbox has no terminal, so only warden gets
/// SIGTSTP) still stops the whole job: warden stops every process of the sandbox, then itself;
/// `fg` continues them.
#[test]
fn ctrl_z_stops_the_whole_sandbox_without_a_pty() {
    let s = Scratch::temp();
    let marker = sleep_marker(22);
    s.file("ws/inner.sh", &format!("{}echo $! > started\nwait\n", background_sleep(&marker)));
    let out = s.root.join("out");
    let run = job(
        &s,
        "job.sh",
        &format!("-p workspace-write -- sh {}/inner.sh </dev/null >{} 2>&1", s.ws.display(), out.display()),
    );
    let mut term = Session::bash(&s);
    term.keys(&format!("{}\n", run.display()));
    term.until("the command did not start", Duration::from_secs(30), || s.ws.join("started").exists());
    term.keys("\x1a");
    term.expect("Stopped", Duration::from_secs(20));
    term.until("Ctrl-Z did not stop the sandbox's processes", Duration::from_secs(10), || all_in_state(&marker, 'T'));
    term.keys("fg\n");
    term.until("fg did not continue the sandbox's processes", Duration::from_secs(10), || all_in_state(&marker, 'S'));
    // End it: SIGTERM to warden reaches the command.
    signal_wardens(&s.ws.display().to_string(), libc::SIGTERM);
    term.keys("echo rc-$?\n");
    term.expect("rc-143", Duration::from_secs(20));
    term.keys("exit\n");
    term.finish(Duration::from_secs(30));
}

/// A signal that would end warden by default (here SIGPWR) reaches the command instead, and
/// warden ends with it, with its terminal back in the modes it found (not in raw mode).
#[test]
fn a_fatal_signal_to_warden_reaches_the_command_and_the_terminal_is_restored() {
    let s = Scratch::temp();
    let marker = sleep_marker(23);
    let run = job(&s, "run.sh", &format!("-- sleep {marker}"));
    let root = s.root.display();
    let session = s.file(
        "session.sh",
        &format!("stty -g > {root}/before\n{}\necho rc-$?\nstty -g > {root}/after\n", run.display()),
    );
    let term = Session::start(&s, &format!("sh {}", session.display()));
    // warden's argv (and PID 1's) carries the marker too.
    term.until("the command did not start", Duration::from_secs(30), || {
        !pids_named(&marker, "sleep").is_empty() && !warden_pids(&marker).is_empty()
    });
    signal_wardens(&marker, libc::SIGPWR);
    term.expect("rc-", Duration::from_secs(20));
    let result = term.finish(Duration::from_secs(30));
    // 128 + SIGPWR: the command died of it, and warden reported that.
    assert!(result.stdout.contains(&format!("rc-{}", 128 + libc::SIGPWR)), "{}", result.stdout);
    assert_eq!(stty_saved(&s, "before"), stty_saved(&s, "after"), "warden left its terminal changed");
    assert!(wait_until(Duration::from_secs(5), || marker_pids(&marker).is_empty()), "the command survived");
}
