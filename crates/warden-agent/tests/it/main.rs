//! warden-agent's integration tests: the client against the testkit's fake worker (every fault
//! mode) and against the real Codex app-server.

mod approvals;
mod codex;
mod concurrency;
mod faults;
mod supervision;
mod support;
mod turns;
