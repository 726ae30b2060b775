//! warden's client of Codex's app-server (protocol v2, as spoken by Codex 0.169.0): the layer
//! the worker supervisor, the pool and the gateway build on.
//!
//! - [`rpc`]: JSON-RPC 2.0 over a worker's stdio ([`rpc::Connection`]): size-capped lines, ids
//!   per connection, answers in any order, every server-to-client request answered,
//!   notifications routed by thread and turn, typed errors ([`AgentError`]), a typed end when
//!   the worker's stdout ends.
//! - [`turn`]: threads and turns as typed calls, a turn's events as a bounded stream
//!   ([`turn::TurnStream`]), interrupts, kept threads with an idle TTL ([`turn::Threads`]).
//! - [`worker`]: how one worker is set up to run inside warden's sandbox (its `CODEX_HOME`, the
//!   config warden writes, the environment from an allowlist, the session spec).
//! - [`supervisor`]: one worker kept alive: started in the sandbox, handshake and startup
//!   timeouts, restarts with backoff and a limit, shutdown, stderr ring, metrics.
//! - [`pool`]: N workers × M turns, least-loaded dispatch, a bounded queue, a warm spare.
//! - [`approval`]: the worker's approval policy ([`approval::ApprovalPolicy`]): approval modes
//!   plus `[[agent.rule]]` prefix rules from `warden.toml`; everything the worker asks is
//!   answered, declined unless the policy accepts it, and recorded.
//!
//! This crate does not start workers itself (warden-session's spawn path does) and trusts
//! nothing a worker sends. See `docs/agent.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod approval;
mod error;
pub mod pool;
pub mod rpc;
pub mod supervisor;
pub mod turn;
pub mod worker;

pub use error::{AgentError, INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, OVERLOADED};
