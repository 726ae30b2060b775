//! `warden`: run AI coding agents (or any command) with least privilege.
//!
//! This crate is wiring only: clap parsing, the terminal prompt, messages for people, exit codes.
//! Policy lives in `warden-policy`, sessions (proxies, audit, credential, the launch) in
//! `warden-session`, enforcement in `warden-sandbox`.
#![forbid(unsafe_code)]

mod args;
mod audit;
mod codex;
mod config;
mod credproxy;
mod docs;
mod doctor;
mod egress;
mod explain;
mod run;
mod serve;
mod ui;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};

/// `Cli::parse()` without dropping clap's command tree afterwards: the process needs it only
/// once, and freeing every argument and subcommand of it cost 0.2 M instructions (a sixth of the
/// user-space work of `warden run -- true`, callgrind). Errors, `--help` and `--version` exit as
/// `parse()` makes them.
fn parse_args() -> args::Cli {
    let mut cmd = args::Cli::command();
    let parsed =
        cmd.try_get_matches_from_mut(std::env::args_os()).and_then(|mut m| args::Cli::from_arg_matches_mut(&mut m));
    match parsed {
        Ok(cli) => {
            std::mem::forget(cmd);
            cli
        }
        Err(e) => e.format(&mut cmd).exit(),
    }
}

fn main() -> ExitCode {
    let cli = parse_args();
    let code = match cli.command {
        args::Command::Run(a) => run::run(a),
        args::Command::Explain(a) => explain::explain(a),
        args::Command::Doctor(a) => doctor::doctor(a),
        args::Command::Audit(a) => audit::audit(a),
        args::Command::Egress(a) => egress::standalone(a),
        args::Command::Credproxy(a) => credproxy::standalone(a),
        args::Command::Serve(a) => serve::serve(a),
        args::Command::Codex(a) => codex::codex(a),
        args::Command::Completions(a) => docs::completions(&a),
        args::Command::Man(a) => docs::man(&a),
        args::Command::Session(a) => session_child(&a),
        args::Command::True => 0,
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `warden __session`: the child of warden-session's spawn path. It prints nothing: errors go
/// back to the parent over the control socket.
fn session_child(args: &args::SessionArgs) -> i32 {
    match warden_sandbox::process::take_inherited_socket(args.control_fd) {
        Ok(fd) => warden_session::child::serve(fd),
        Err(e) => ui::fail(format!(
            "__session is started by warden-session's spawn path, with its control socket at descriptor {}: {e}",
            args.control_fd
        )),
    }
}
