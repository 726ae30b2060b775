//! The command's terminal: a pty of the sandbox's own, relayed by warden.
//!
//! Each test wraps warden in `script` (util-linux), which gives warden a terminal even in CI,
//! and feeds keystrokes through a pipe into `script`.

use std::process::Command;
use std::time::Duration;

use crate::Scratch;

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
