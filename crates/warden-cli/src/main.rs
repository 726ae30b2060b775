//! `warden`: run AI coding agents (or any command) with least privilege.
//!
//! This crate is wiring only: clap parsing, messages for people, exit codes. Policy lives in
//! `warden-policy`, enforcement in `warden-sandbox`.
#![forbid(unsafe_code)]

mod args;
mod audit;
mod credproxy;
mod doctor;
mod egress;
mod explain;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let code = match cli.command {
        args::Command::Run(a) => run::run(a),
        args::Command::Explain(a) => explain::explain(a),
        args::Command::Doctor(a) => doctor::doctor(a),
        args::Command::Audit(a) => audit::audit(a),
        args::Command::Egress(a) => egress::standalone(a),
        args::Command::Credproxy(a) => credproxy::standalone(a),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
