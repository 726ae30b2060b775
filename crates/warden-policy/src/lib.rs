//! warden's policy model: profiles, the resolved [`Policy`], config files and validation.
//!
//! This crate is pure data. It never enforces anything and never changes the filesystem; its only
//! I/O is reading config files (capped at [`config::MAX_CONFIG_SIZE`]), reading filesystem metadata
//! and canonicalizing paths. The single entry point for the CLI is [`resolve()`], which merges the
//! command line, the environment, `warden.toml` and Codex's `config.toml` into one [`Policy`] and a
//! list of [`ConfigWarning`]s. Every value that would weaken the sandbox comes from an explicit
//! source; an invalid value in a file or the environment falls back to the safest choice.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod env;
pub mod error;
pub mod paths;
pub mod policy;
pub mod profile;
pub mod quote;
pub mod resolve;
pub mod size;
mod toml_tree;

pub use config::{
    AgentRule, AllowRule, AuditConfig, CodexConfig, ConfigPath, ConfigWarning, EnvConfig, NetworkRules, RuleDecision,
    ServeEntry, ServeType, ServeValue, WardenConfig, RULE_DECISION_NAMES, SERVE_KEYS,
};
pub use env::{glob_match, EnvPolicy, CORE_ENV_VARS, DEFAULT_ENV_EXCLUDES};
pub use error::{Location, PolicyError};
pub use paths::DEFAULT_MASKS;
pub use policy::{
    AuditSettings, BindAt, Limits, Policy, RepoScan, AUDIT_FSYNC_MODES, DEFAULT_PROTECTED_NAMES, DEFAULT_REPO_SCAN_SKIP,
};
pub use profile::{EnvInherit, GitMode, NetMode, ParseEnumError, Profile};
pub use quote::toml_quote;
pub use resolve::{default_audit_path, resolve, HostContext, PolicyOptions, Resolved};
pub use size::parse_size;
