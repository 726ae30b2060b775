//! `warden run`: flags to a session spec, the terminal prompt, messages and the exit status.
//! Everything that makes a run a run is warden-session's.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use warden_policy::Policy;
use warden_sandbox::CommandStatus;
use warden_session::{Outcome, Session, SessionError};

use crate::args::RunArgs;
use crate::ui::{denied_line, fail, StderrEvents, EXIT_WARDEN};

pub fn run(args: RunArgs) -> i32 {
    // This process exits right after the run: the placeholders it removes are freed by a child,
    // off the run's exit path (`warden __session`, whose parent may live long, frees them itself).
    warden_sandbox::release_in_a_child(true);
    if args.policy.audit.audit_log.as_ref().is_some_and(|p| p.as_os_str() == warden_policy::policy::AUDIT_STDOUT) {
        return fail(
            "--audit-log -: in warden run, standard output is the command's; write the log to a file (--audit-log PATH)",
        );
    }
    let credential = args.credential();
    // First, while warden is single-threaded and before the environment is read for the policy:
    // the key goes into locked memory and its variable out of warden's environment.
    let key = match credential.as_ref().map(|c| warden_session::load_credential(&c.source)).transpose() {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let mut spec = match crate::config::host()
        .and_then(|host| crate::config::session_spec(&args.policy, &args.command, host, credential))
    {
        Ok(s) => s,
        Err(msg) => return fail(msg),
    };
    spec.init_hook = args.init_hook.clone();
    let prepared = match warden_session::prepare(spec) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    if let (Some(base), Some(c)) = (prepared.credential_base_url(), &prepared.spec.credential) {
        if args.session.verbose {
            eprintln!(
                "warden: OPENAI_BASE_URL={base} -> credential proxy -> {} (key from the {}; the command sees OPENAI_API_KEY={})",
                c.upstream,
                c.source.describe(),
                warden_session::DUMMY_KEY
            );
        }
    }
    for w in &prepared.spec.warnings {
        eprintln!("{w}");
    }
    let events = Arc::new(StderrEvents { verbose: args.session.verbose });
    let session = match Session::open(prepared, key, events) {
        Ok(s) => s,
        Err(SessionError::Degraded { layers }) => {
            for d in &layers {
                eprintln!("warden: error: cannot enforce the {} layer: {}", d.layer, d.why);
            }
            eprintln!(
                "warden: refusing to run with a weaker sandbox than the profile promises; pass --allow-degraded to \
                 accept this on purpose"
            );
            return EXIT_WARDEN;
        }
        Err(e) => return fail(e),
    };
    for risk in session.prepared().risks() {
        eprintln!("warden: warning: {risk}");
    }
    if let Err(code) = confirm_outside_writes(&session.prepared().spec.policy, args.session.yes, &args.preconfirmed) {
        session.refuse("writable paths outside the workdir were not confirmed");
        return code;
    }
    if args.session.verbose {
        crate::explain::print_layers(session.prepared(), &mut std::io::stderr());
    }
    let policy = session.prepared().spec.policy.clone();
    let report = match session.run() {
        Ok(r) => r,
        Err(SessionError::NotRecorded) => {
            eprintln!("warden: {}", SessionError::NotRecorded);
            return EXIT_WARDEN;
        }
        Err(e) => return fail(e),
    };
    match &report.outcome {
        Outcome::SetupFailed { layer, detail } if layer.ends_with("namespace") && !policy.allow_degraded => {
            eprintln!("warden: error: cannot enforce the {layer} layer: {detail}");
            eprintln!(
                "warden: the command did not run. --allow-degraded runs it with Landlock and seccomp only \
                 (no private /tmp, /dev, /proc; no pid, ipc, uts or network namespace)"
            );
            return EXIT_WARDEN;
        }
        Outcome::SetupFailed { layer, detail } => {
            eprintln!("warden: error: cannot enforce the {layer} layer: {detail}");
            eprintln!("warden: the command did not run. `warden doctor` shows what this kernel can enforce");
        }
        Outcome::ExecFailed { program, errno } => {
            let what = if errno.0 == libc::ENOENT { "command not found" } else { "cannot execute" };
            let hint = if errno.0 == libc::ENOEXEC { "; a script needs a first line such as #!/bin/sh" } else { "" };
            eprintln!("warden: {program}: {what} inside the sandbox ({errno}){hint}");
        }
        Outcome::TimedOut => {
            eprintln!(
                "warden: timed out after {}s: killed the command and every process it started",
                policy.limits.timeout_secs.unwrap_or_default()
            );
        }
        Outcome::HookFailed { program, status } => {
            let how = match status {
                CommandStatus::Exited(c) => format!("exited with status {c}"),
                CommandStatus::Signaled(s) => format!("was killed by signal {s}"),
            };
            eprintln!("warden: the init hook {program} {how}; the command did not start");
        }
        Outcome::Finished(_) | Outcome::Cancelled { .. } => {}
    }
    if let Some(line) = denied_line(&report.denied) {
        eprintln!("{line}");
    }
    if args.session.verbose {
        eprintln!(
            "warden: exit {} after {:.3}s, peak RSS {} KiB",
            report.exit_code(),
            report.duration.as_secs_f64(),
            report.peak_rss_kib
        );
    }
    report.exit_code()
}

/// Writable roots outside the workdir, and writable paths given through a symlink that leads out
/// of their directory, need a yes: on a terminal we ask, otherwise `--yes`.
fn confirm_outside_writes(policy: &Policy, yes: bool, preconfirmed: &[PathBuf]) -> Result<(), i32> {
    let outside: Vec<&PathBuf> = policy
        .writable_outside_workdir
        .iter()
        .filter(|p| !preconfirmed.iter().any(|c| std::fs::canonicalize(c).is_ok_and(|c| c == **p)))
        .collect();
    // `trusted` makes everything writable by definition; choosing it is the confirmation.
    let nothing_to_ask = outside.is_empty() && policy.redirected.is_empty();
    if nothing_to_ask || yes || policy.profile.everything_writable() {
        return Ok(());
    }
    let mut list: Vec<String> = outside.iter().map(|p| p.display().to_string()).collect();
    let links: Vec<String> = policy
        .redirected
        .iter()
        .map(|(given, to)| format!("{} -> {} (a symlink out of its directory)", given.display(), to.display()))
        .collect();
    list.extend(links.iter().cloned());
    let stdin = std::io::stdin();
    if stdin.is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "warden: make these paths outside the workdir {} writable? {} [y/N] ",
            policy.workdir.display(),
            list.join(", ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
        return Err(fail("not confirmed; nothing ran"));
    }
    if outside.is_empty() {
        return Err(fail(format!(
            "writable path(s) given through a symlink that leads out of their directory: {}; confirm with --yes \
             when not on a terminal",
            links.join(", ")
        )));
    }
    Err(fail(format!(
        "writable path(s) outside the workdir {}: {}; confirm with --yes when not on a terminal",
        policy.workdir.display(),
        list.join(", ")
    )))
}
