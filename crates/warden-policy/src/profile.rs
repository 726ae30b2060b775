//! Profiles, network modes and environment inheritance modes.
//!
//! Guarantees: every enum here has exactly one canonical spelling, shared by [`std::str::FromStr`],
//! [`std::fmt::Display`] and serde (kebab-case), and parsing rejects anything else with an error
//! that lists the accepted values. The mapping from Codex `sandbox_mode` names is total over the
//! names Codex documents and rejects everything else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An unrecognised name for one of this module's enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} \"{value}\" (accepted: {})", accepted.join(", "))]
pub struct ParseEnumError {
    /// What was being parsed, e.g. `profile`.
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted spellings.
    pub accepted: &'static [&'static str],
}

/// A sandbox profile: what the command may write and whether it may reach the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Read everything not masked, write nowhere on the host, no network (the default).
    Offline,
    /// As [`Profile::Offline`], with network access through the allowlist proxy.
    NetReadOnly,
    /// The workdir and extra writable roots are writable; no network.
    WorkspaceWrite,
    /// As [`Profile::WorkspaceWrite`], with network access through the allowlist proxy.
    WorkspaceNet,
    /// Everything writable, host network, no masks.
    Trusted,
}

/// The accepted profile names, in [`Profile::ALL`] order.
pub const PROFILE_NAMES: &[&str] = &["offline", "net-read-only", "workspace-write", "workspace-net", "trusted"];

/// The Codex `sandbox_mode` names that [`Profile::from_codex_sandbox_mode`] accepts.
pub const CODEX_SANDBOX_MODES: &[&str] = &["read-only", "workspace-write", "danger-full-access"];

impl Profile {
    /// Every profile, from least to most privileged.
    pub const ALL: [Profile; 5] =
        [Profile::Offline, Profile::NetReadOnly, Profile::WorkspaceWrite, Profile::WorkspaceNet, Profile::Trusted];

    /// The canonical name, e.g. `"workspace-write"`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Offline => "offline",
            Profile::NetReadOnly => "net-read-only",
            Profile::WorkspaceWrite => "workspace-write",
            Profile::WorkspaceNet => "workspace-net",
            Profile::Trusted => "trusted",
        }
    }

    /// Maps a Codex `sandbox_mode` (`read-only`, `workspace-write`, `danger-full-access`).
    pub fn from_codex_sandbox_mode(mode: &str) -> Option<Profile> {
        match mode {
            "read-only" => Some(Profile::Offline),
            "workspace-write" => Some(Profile::WorkspaceWrite),
            "danger-full-access" => Some(Profile::Trusted),
            _ => None,
        }
    }

    /// The network mode used when neither the command line nor a config file sets one.
    pub fn default_net(self) -> NetMode {
        match self {
            Profile::Offline | Profile::WorkspaceWrite => NetMode::None,
            Profile::NetReadOnly | Profile::WorkspaceNet => NetMode::Allowlist,
            Profile::Trusted => NetMode::Host,
        }
    }

    /// Whether the workdir is writable (`workspace-*` and `trusted`).
    pub fn workdir_writable(self) -> bool {
        matches!(self, Profile::WorkspaceWrite | Profile::WorkspaceNet | Profile::Trusted)
    }

    /// Whether the default secret masks apply (every profile but `trusted`).
    pub fn masks_secrets(self) -> bool {
        self != Profile::Trusted
    }

    /// Whether the whole filesystem is writable (`trusted` only).
    pub fn everything_writable(self) -> bool {
        self == Profile::Trusted
    }

    /// One line describing the profile, for `--help` and `warden explain`.
    pub fn description(self) -> &'static str {
        match self {
            Profile::Offline => "read everything not masked, write nowhere on the host (private /tmp), no network",
            Profile::NetReadOnly => "as offline, with network access through the allowlist proxy",
            Profile::WorkspaceWrite => {
                "workdir and extra writable roots writable (.git, .codex, .agents read-only), no network"
            }
            Profile::WorkspaceNet => "as workspace-write, with network access through the allowlist proxy",
            Profile::Trusted => "everything writable, host network, no masks",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ParseEnumError {
            what: "profile",
            value: s.to_owned(),
            accepted: PROFILE_NAMES,
        })
    }
}

/// How the sandboxed command reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetMode {
    /// No network at all (only a loopback interface in a fresh network namespace).
    None,
    /// Only through warden's egress proxy, which enforces a domain allowlist.
    Allowlist,
    /// The host's network, unrestricted.
    Host,
}

/// The accepted network mode names, in [`NetMode::ALL`] order.
pub const NET_MODE_NAMES: &[&str] = &["none", "allowlist", "host"];

impl NetMode {
    /// Every mode, from most to least restrictive.
    pub const ALL: [NetMode; 3] = [NetMode::None, NetMode::Allowlist, NetMode::Host];

    /// The canonical name, e.g. `"allowlist"`.
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Allowlist => "allowlist",
            NetMode::Host => "host",
        }
    }
}

impl fmt::Display for NetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetMode {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetMode::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ParseEnumError {
            what: "network mode",
            value: s.to_owned(),
            accepted: NET_MODE_NAMES,
        })
    }
}

/// How the git repositories inside writable roots are protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GitMode {
    /// Every repository's gitdir is read-only (the default).
    #[default]
    ReadOnly,
    /// Objects, refs, the index and HEAD are writable (`git add`, `commit`, `branch`, `stash`
    /// work); every file git reads config or hooks from stays read-only.
    Commit,
}

/// Accepted `git` modes.
pub const GIT_MODE_NAMES: &[&str] = &["read-only", "commit"];

impl GitMode {
    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            GitMode::ReadOnly => "read-only",
            GitMode::Commit => "commit",
        }
    }
}

impl fmt::Display for GitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GitMode {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [GitMode::ReadOnly, GitMode::Commit].into_iter().find(|m| m.name() == s).ok_or_else(|| ParseEnumError {
            what: "git mode",
            value: s.to_owned(),
            accepted: GIT_MODE_NAMES,
        })
    }
}

/// Which of warden's own environment variables the command starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnvInherit {
    /// The whole environment (then filtered by excludes).
    All,
    /// Only [`crate::CORE_ENV_VARS`].
    Core,
    /// Nothing.
    None,
}

/// The accepted inherit names, in [`EnvInherit::ALL`] order.
pub const ENV_INHERIT_NAMES: &[&str] = &["all", "core", "none"];

impl EnvInherit {
    /// Every mode.
    pub const ALL: [EnvInherit; 3] = [EnvInherit::All, EnvInherit::Core, EnvInherit::None];

    /// The canonical name, e.g. `"core"`.
    pub fn name(self) -> &'static str {
        match self {
            EnvInherit::All => "all",
            EnvInherit::Core => "core",
            EnvInherit::None => "none",
        }
    }
}

impl fmt::Display for EnvInherit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EnvInherit {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EnvInherit::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ParseEnumError {
            what: "env inherit mode",
            value: s.to_owned(),
            accepted: ENV_INHERIT_NAMES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_fromstr_display_and_serde() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
            let json = serde_json::to_string(&p).expect("serialize");
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Profile>(&json).expect("de"), p);
        }
        for n in NetMode::ALL {
            assert_eq!(n.name().parse::<NetMode>(), Ok(n));
            assert_eq!(serde_json::to_string(&n).expect("serialize"), format!("\"{n}\""));
        }
        for e in EnvInherit::ALL {
            assert_eq!(e.name().parse::<EnvInherit>(), Ok(e));
            assert_eq!(serde_json::to_string(&e).expect("serialize"), format!("\"{e}\""));
        }
    }

    #[test]
    fn parse_errors_list_accepted_values() {
        let err = "bogus".parse::<Profile>().expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "invalid profile \"bogus\" (accepted: offline, net-read-only, workspace-write, workspace-net, trusted)"
        );
        assert!("Offline".parse::<Profile>().is_err(), "case-sensitive");
        let err = "wifi".parse::<NetMode>().expect_err("must fail");
        assert!(err.to_string().contains("none, allowlist, host"), "{err}");
        assert!("".parse::<EnvInherit>().is_err());
    }

    #[test]
    fn codex_sandbox_modes_map() {
        assert_eq!(Profile::from_codex_sandbox_mode("read-only"), Some(Profile::Offline));
        assert_eq!(Profile::from_codex_sandbox_mode("workspace-write"), Some(Profile::WorkspaceWrite));
        assert_eq!(Profile::from_codex_sandbox_mode("danger-full-access"), Some(Profile::Trusted));
        assert_eq!(Profile::from_codex_sandbox_mode("offline"), None);
        assert_eq!(Profile::from_codex_sandbox_mode("yolo"), None);
    }

    #[test]
    fn profile_properties() {
        use Profile::*;
        let net: Vec<_> = Profile::ALL.iter().map(|p| p.default_net()).collect();
        assert_eq!(net, [NetMode::None, NetMode::Allowlist, NetMode::None, NetMode::Allowlist, NetMode::Host]);
        let w: Vec<_> = Profile::ALL.iter().map(|p| p.workdir_writable()).collect();
        assert_eq!(w, [false, false, true, true, true]);
        let m: Vec<_> = Profile::ALL.iter().map(|p| p.masks_secrets()).collect();
        assert_eq!(m, [true, true, true, true, false]);
        assert!(Trusted.everything_writable());
        assert!(!WorkspaceNet.everything_writable());
        assert!(Profile::ALL.iter().all(|p| !p.description().is_empty()));
    }
}
