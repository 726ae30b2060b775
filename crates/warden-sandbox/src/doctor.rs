//! Facts about the running kernel that decide which layers warden can enforce.
//!
//! Read-only: nothing here changes the process. The end-to-end probe (actually starting a
//! sandbox) lives in the CLI, which owns the `warden` executable to spawn.

use serde::Serialize;

use crate::sys;

/// Landlock ABI that gives every layer warden's profiles promise (fs rules, ioctl on devices,
/// signal and abstract-unix-socket scoping).
pub const LANDLOCK_ABI_FULL: u32 = 6;

/// What the kernel offers.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// Landlock ABI, `None` if Landlock is disabled or absent.
    pub landlock_abi: Option<u32>,
    /// seccomp filter mode is available (`Seccomp:` in /proc/self/status).
    pub seccomp: bool,
    /// `user.max_user_namespaces` (0 means user namespaces are off).
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` where the kernel has it (Debian/Ubuntu patch).
    pub unprivileged_userns_clone: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` where present (Ubuntu 23.10+).
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
    /// Effective uid of warden.
    pub uid: u32,
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads the facts.
pub fn kernel_facts() -> KernelFacts {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    KernelFacts {
        release: sys::kernel_release(),
        landlock_abi: sys::landlock_abi(),
        seccomp: status.lines().any(|l| l.starts_with("Seccomp:")),
        max_user_namespaces: read_number("/proc/sys/user/max_user_namespaces"),
        unprivileged_userns_clone: read_number("/proc/sys/kernel/unprivileged_userns_clone"),
        apparmor_restrict_unprivileged_userns: read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        uid: sys::getuid(),
    }
}
