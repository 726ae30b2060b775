//! `warden`: run AI coding agents (or any command) with least privilege.
//!
//! This crate is wiring only: clap parsing, messages for people, exit codes. Policy lives in
//! `warden-policy`, enforcement in `warden-sandbox`.

mod args;
mod doctor;
mod explain;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox init is an internal re-exec of this binary: dispatch before clap so that it
    // stays single-threaded and parses nothing from the user.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__sandbox-init") {
        warden_sandbox::init::main();
    }
    let cli = args::Cli::parse();
    let code = match cli.command {
        args::Command::Run(a) => run::run(a),
        args::Command::Explain(a) => explain::explain(a),
        args::Command::Doctor(a) => doctor::doctor(a),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
