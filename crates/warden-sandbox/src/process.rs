//! Safe helpers for a parent that spawns `warden` itself as a child process (warden-session's
//! spawn path): hand it a descriptor under a fixed number, give it a terminal of its own.
//!
//! Guarantees: the code these helpers add to a spawn runs between fork and exec and makes only
//! async-signal-safe system calls, so they are sound in a multi-threaded parent (a tokio
//! runtime). Descriptors handed over stay owned by the `Command` until it is dropped.

use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;

use crate::plan::WinSize;
use crate::sys;

/// Makes `fd` descriptor number `target` in the child that `cmd` spawns, not close-on-exec there.
/// This process's copy is closed when `cmd` is dropped.
pub fn pass_fd(cmd: &mut std::process::Command, fd: OwnedFd, target: RawFd) {
    sys::pass_fd_on_spawn(cmd, fd, target);
}

/// Makes the child that `cmd` spawns the leader of a new session, with its standard input (a
/// terminal, e.g. the slave of [`open_pty`]) as its controlling terminal.
pub fn controlling_terminal(cmd: &mut std::process::Command) {
    sys::controlling_terminal_on_spawn(cmd);
}

/// A new pseudo-terminal of this host: `(master, slave)`, both close-on-exec, the slave not
/// this process's controlling terminal, the window `size`.
pub fn open_pty(size: WinSize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::AsRawFd;
    let err = |what: &str, e: sys::Errno| std::io::Error::other(format!("{what}: {e}"));
    let (master, n) = sys::open_pty_master(std::path::Path::new("/dev/ptmx")).map_err(|e| err("/dev/ptmx", e))?;
    let _ = sys::set_winsize(master.as_raw_fd(), size);
    let path = PathBuf::from(format!("/dev/pts/{n}"));
    let slave = sys::open_tty_noctty(&path).map_err(|e| err(&path.display().to_string(), e))?;
    Ok((master, slave))
}

/// Takes ownership of descriptor `fd` that the parent passed with [`pass_fd`]: an `AF_UNIX`
/// socket shared with the parent process (checked with `SO_PEERCRED`), close-on-exec from now on.
/// Each descriptor can be taken once per process.
pub fn take_inherited_socket(fd: RawFd) -> std::io::Result<OwnedFd> {
    sys::take_inherited_socket(fd)
}
