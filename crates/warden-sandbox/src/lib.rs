//! Linux enforcement for warden: turns a [`warden_policy::Policy`] into a [`plan::LaunchPlan`]
//! and runs a command under it (namespaces, mounts, Landlock, seccomp, capabilities, rlimits).
//!
//! What this crate trusts: the policy it is given (already validated by `warden-policy`) and
//! the kernel. What it guarantees: a layer the plan asks for is either in force before the
//! command's first instruction, or the command does not run and the error names the layer.
#![warn(missing_docs)]
// Every unsafe block lives in `sys`, the one module allowed to have them.
#![deny(unsafe_code)]

pub mod cgroup;
pub mod doctor;
pub mod init;
pub mod landlock;
pub mod launch;
pub mod plan;
pub mod protect;
pub mod protocol;
pub mod relay;
pub mod seccomp;
#[allow(unsafe_code)]
pub mod sys;
