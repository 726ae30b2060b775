//! Codex app-server workers inside warden's sandbox.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod worker;
