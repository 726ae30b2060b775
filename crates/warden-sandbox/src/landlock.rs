//! Landlock rules that mirror the mount tree.
//!
//! Guarantees: the whole tree is readable and executable but not writable; only the writable
//! roots, the private tmpfs directories and `/dev/shm` get write rights; `/dev` and `/proc`
//! allow writing to existing files (device nodes, `/proc/self/*`) but no creation. With ABI 6
//! the sandbox cannot signal processes outside it nor connect to abstract unix sockets outside
//! it. Landlock cannot take a right away beneath a path that has it, so read-only subpaths of
//! writable roots rely on the read-only mount alone (`warden explain` says so).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warden_policy::Policy;

/// Landlock filesystem access rights (see `linux/landlock.h`).
pub mod access {
    /// Execute a file.
    pub const EXECUTE: u64 = 1 << 0;
    /// Open a file for writing.
    pub const WRITE_FILE: u64 = 1 << 1;
    /// Open a file for reading.
    pub const READ_FILE: u64 = 1 << 2;
    /// List a directory.
    pub const READ_DIR: u64 = 1 << 3;
    /// Remove a directory.
    pub const REMOVE_DIR: u64 = 1 << 4;
    /// Remove a file.
    pub const REMOVE_FILE: u64 = 1 << 5;
    /// Create a character device.
    pub const MAKE_CHAR: u64 = 1 << 6;
    /// Create a directory.
    pub const MAKE_DIR: u64 = 1 << 7;
    /// Create a regular file.
    pub const MAKE_REG: u64 = 1 << 8;
    /// Create a unix socket.
    pub const MAKE_SOCK: u64 = 1 << 9;
    /// Create a FIFO.
    pub const MAKE_FIFO: u64 = 1 << 10;
    /// Create a block device.
    pub const MAKE_BLOCK: u64 = 1 << 11;
    /// Create a symlink.
    pub const MAKE_SYM: u64 = 1 << 12;
    /// Link or rename across directories (ABI 2).
    pub const REFER: u64 = 1 << 13;
    /// Truncate a file (ABI 3).
    pub const TRUNCATE: u64 = 1 << 14;
    /// ioctl on a device file (ABI 5).
    pub const IOCTL_DEV: u64 = 1 << 15;

    /// Reading and executing.
    pub const READ: u64 = EXECUTE | READ_FILE | READ_DIR;
    /// Everything a writable directory needs, without device creation.
    pub const WRITE: u64 = READ
        | WRITE_FILE
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_SYM
        | REFER
        | TRUNCATE
        | IOCTL_DEV;
}

/// Landlock TCP rights (ABI 4).
pub mod net_access {
    /// bind(2) a TCP port.
    pub const BIND_TCP: u64 = 1 << 0;
    /// connect(2) to a TCP port.
    pub const CONNECT_TCP: u64 = 1 << 1;
}

/// Landlock scopes (ABI 6).
pub mod scope {
    /// No connecting to abstract unix sockets created outside the domain.
    pub const ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
    /// No signals to processes outside the domain.
    pub const SIGNAL: u64 = 1 << 1;
}

/// The fs rights a kernel with this ABI knows.
pub fn handled_fs(abi: u32) -> u64 {
    let mut all = (1 << 13) - 1;
    if abi >= 2 {
        all |= access::REFER;
    }
    if abi >= 3 {
        all |= access::TRUNCATE;
    }
    if abi >= 5 {
        all |= access::IOCTL_DEV;
    }
    all
}

/// One path rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRule {
    /// The directory or file (inside the sandbox).
    pub path: PathBuf,
    /// Allowed rights (before masking by ABI).
    pub access: u64,
}

/// The Landlock ruleset for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockPlan {
    /// The kernel's ABI the plan was made for.
    pub abi: u32,
    /// Path rules.
    pub rules: Vec<PathRule>,
    /// Scope abstract unix sockets and signals (ABI 6).
    pub scoped: bool,
    /// Deny every TCP bind/connect (fallback when there is no network namespace).
    pub deny_tcp: bool,
}

/// The rules for a policy on a kernel with `abi`.
pub fn plan_for(policy: &Policy, abi: u32) -> LandlockPlan {
    let mut rules = vec![
        PathRule { path: "/".into(), access: access::READ },
        PathRule { path: "/dev".into(), access: access::READ | access::WRITE_FILE | access::IOCTL_DEV },
        PathRule { path: "/dev/shm".into(), access: access::WRITE },
        PathRule { path: "/dev/pts".into(), access: access::READ | access::WRITE_FILE | access::IOCTL_DEV },
        PathRule { path: "/proc".into(), access: access::READ | access::WRITE_FILE },
        PathRule { path: "/run".into(), access: access::WRITE },
    ];
    if policy.tmp_writable {
        rules.push(PathRule { path: "/tmp".into(), access: access::WRITE });
        rules.push(PathRule { path: "/var/tmp".into(), access: access::WRITE });
    }
    if let Some(t) = &policy.tmpdir {
        rules.push(PathRule { path: t.clone(), access: access::WRITE });
    }
    for root in &policy.writable_roots {
        rules.push(PathRule { path: root.clone(), access: access::WRITE });
    }
    LandlockPlan { abi, rules, scoped: abi >= 6, deny_tcp: false }
}

/// The rules of the degraded mode (no namespaces, so no mounts): Landlock alone keeps the host
/// read-only, and masked paths unreadable by leaving them out of the read rules.
///
/// Landlock only grants, so "everything but M" becomes: every ancestor of a masked path gets
/// only `READ_DIR` (its names can be listed), and each of its other entries gets `READ`; symlinks
/// among those entries are skipped (a rule would land on their target). `/dev` is left out the
/// same way, and only the harmless device nodes are granted (PID 1 adds the sandbox's own pty,
/// never the host's terminal, which the command does not get).
/// `private_tmp` (warden's own temporary directory, which becomes `TMPDIR`) is writable.
pub fn degraded_plan(policy: &Policy, abi: u32, private_tmp: &Path) -> LandlockPlan {
    let mut excluded: Vec<PathBuf> = policy.deny_read.clone();
    excluded.push("/dev".into());
    let mut rules = Vec::new();
    read_rules_excluding(Path::new("/"), &excluded, &mut rules);
    let device = access::READ_FILE | access::WRITE_FILE | access::IOCTL_DEV;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        rules.push(PathRule { path: Path::new("/dev").join(node), access: device });
    }
    rules.push(PathRule { path: private_tmp.to_path_buf(), access: access::WRITE });
    for root in &policy.writable_roots {
        rules.push(PathRule { path: root.clone(), access: access::WRITE });
    }
    LandlockPlan { abi, rules, scoped: abi >= 6, deny_tcp: policy.net != warden_policy::NetMode::Host }
}

/// Adds rules granting `READ` on everything beneath `dir` except the `excluded` paths.
fn read_rules_excluding(dir: &Path, excluded: &[PathBuf], out: &mut Vec<PathRule>) {
    if excluded.iter().any(|e| e == dir) {
        return;
    }
    if !excluded.iter().any(|e| e.starts_with(dir)) {
        out.push(PathRule { path: dir.to_path_buf(), access: access::READ });
        return;
    }
    out.push(PathRule { path: dir.to_path_buf(), access: access::READ_DIR });
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            read_rules_excluding(&path, excluded, out);
        } else if !excluded.iter().any(|e| e == &path) {
            out.push(PathRule { path, access: access::READ });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_subtrees_are_left_out_of_the_read_rules() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        for dir in ["home/u/.ssh", "home/u/src", "etc"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        std::fs::write(root.join("home/u/.netrc"), "machine x").expect("write");
        std::fs::write(root.join("home/u/notes"), "n").expect("write");
        std::os::unix::fs::symlink(root.join("home/u/.ssh"), root.join("home/u/link")).expect("symlink");
        let excluded = vec![root.join("home/u/.ssh"), root.join("home/u/.netrc")];
        let mut rules = Vec::new();
        read_rules_excluding(root, &excluded, &mut rules);
        let grant = |p: &str| rules.iter().find(|r| r.path == root.join(p)).map(|r| r.access);
        assert_eq!(grant(""), Some(access::READ_DIR));
        assert_eq!(grant("home/u"), Some(access::READ_DIR));
        assert_eq!(grant("etc"), Some(access::READ));
        assert_eq!(grant("home/u/src"), Some(access::READ));
        assert_eq!(grant("home/u/notes"), Some(access::READ));
        assert_eq!(grant("home/u/.ssh"), None);
        assert_eq!(grant("home/u/.netrc"), None);
        assert_eq!(grant("home/u/link"), None, "a symlink would carry the grant to its target");
    }
}
