//! A pids cgroup that caps the number of processes of one sandbox.
//!
//! Why: `RLIMIT_NPROC` is not enforced for the host's root user (the kernel exempts uid 0 of
//! the initial user namespace), so `--max-procs` under root needs the pids controller. The
//! cgroup is created before the init is spawned, the init joins it between fork and exec, and
//! it is removed after every process in it has ended.
//!
//! A warden killed with `SIGKILL` cannot remove its cgroup (its sandbox dies with it, so the
//! directory is left empty). Each run therefore first removes the stale ones it finds in the
//! hierarchy it uses, by this scheme: warden names its cgroup `warden-PID-START-N` (its pid, its
//! start time in clock ticks since boot from `/proc/PID/stat`, and a counter) and holds a shared
//! `flock` on the directory for the whole run. A directory is stale only if its name follows
//! that scheme (or the older `warden-PID-N`), no process with that pid and start time is alive
//! (for the older name: no process with that pid), nobody holds its lock (which also covers a
//! warden in another pid namespace), and it lists no process; then it is removed, and the
//! kernel refuses to remove a cgroup that still has processes or child cgroups anyway. Nothing
//! else in the hierarchy is touched.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::sys;

/// A created cgroup directory; removed on drop.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
    /// A shared `flock` on `dir` while the run lasts: the cgroup is not stale.
    _lock: OwnedFd,
}

/// The most entries of a hierarchy's top directory looked at for stale cgroups.
const MAX_SCANNED: usize = 4096;

/// Candidate hierarchies, in order: cgroup v2 (unified), v2 mounted beside v1, v1 pids.
const ROOTS: &[(&str, bool)] =
    &[("/sys/fs/cgroup", true), ("/sys/fs/cgroup/unified", true), ("/sys/fs/cgroup/pids", false)];

impl PidsCgroup {
    /// Creates a cgroup limited to `max` processes.
    pub fn create(max: u64) -> Result<Self, String> {
        let mut tried = Vec::new();
        for &(root, v2) in ROOTS {
            let root = Path::new(root);
            if v2 {
                let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                if !controllers.split_whitespace().any(|c| c == "pids") {
                    tried.push(format!("{} (no pids controller)", root.display()));
                    continue;
                }
            } else if !root.join("pids.max").exists() && !root.join("cgroup.procs").exists() {
                tried.push(format!("{} (absent)", root.display()));
                continue;
            }
            remove_stale(root);
            let me = std::process::id();
            let dir = root.join(format!("warden-{me}-{}-{}", start_time(me).unwrap_or(0), unique()));
            if let Err(e) = std::fs::create_dir(&dir) {
                tried.push(format!("{}: {e}", dir.display()));
                continue;
            }
            let lock = match sys::open_dir_nofollow(&dir).and_then(|fd| sys::flock(&fd, false, false).map(|()| fd)) {
                Ok(fd) => fd,
                Err(e) => {
                    tried.push(format!("{}: cannot lock: {e}", dir.display()));
                    let _ = std::fs::remove_dir(&dir);
                    continue;
                }
            };
            let cg = PidsCgroup { dir, _lock: lock };
            if let Err(e) = std::fs::write(cg.dir.join("pids.max"), max.to_string()) {
                tried.push(format!("{}: {e}", cg.dir.join("pids.max").display()));
                continue;
            }
            return Ok(cg);
        }
        Err(format!("no writable pids cgroup hierarchy: {}", tried.join("; ")))
    }

    /// The `cgroup.procs` file a process writes "0" to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Kills every process still in the cgroup (bounded retries).
    pub fn kill_all(&self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.procs_file()).unwrap_or_default();
            let pids: Vec<i32> = procs.split_whitespace().filter_map(|p| p.parse().ok()).collect();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = crate::sys::kill(p, libc::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Removes the stale cgroups of killed wardens directly under `root` (see the module docs).
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.take(MAX_SCANNED).flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(parse_name) else { continue };
        let alive = match owner.start {
            Some(start) => start_time(owner.pid) == Some(start),
            None => Path::new(&format!("/proc/{}", owner.pid)).exists(),
        };
        if alive {
            continue;
        }
        let dir = entry.path();
        // Held by a run (in any pid namespace): not stale.
        let Ok(lock) = sys::open_dir_nofollow(&dir) else { continue };
        if sys::flock(&lock, true, true).is_err() {
            continue;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).map(|p| p.trim().is_empty());
        if procs.unwrap_or(false) {
            // EBUSY when it still has processes or child cgroups: then it stays.
            let _ = sys::rmdir(&dir);
        }
    }
}

/// Who made a cgroup named by warden's scheme.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// Its start time (clock ticks since boot); `None` for the older `warden-PID-N` names.
    start: Option<u64>,
}

/// Parses `warden-PID-START-N` (or the older `warden-PID-N`); `None` for any other name.
fn parse_name(name: &str) -> Option<Owner> {
    let parts: Vec<&str> = name.strip_prefix("warden-")?.split('-').collect();
    if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    match parts[..] {
        [pid, start, _] => Some(Owner { pid: pid.parse().ok()?, start: Some(start.parse().ok()?) }),
        [pid, _] => Some(Owner { pid: pid.parse().ok()?, start: None }),
        _ => None,
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may contain anything) start at 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warden_s_names_are_candidates() {
        assert_eq!(parse_name("warden-12-345-0"), Some(Owner { pid: 12, start: Some(345) }));
        assert_eq!(parse_name("warden-12-3"), Some(Owner { pid: 12, start: None }));
        for other in ["warden-", "warden-x-1", "warden-1-2-3-4", "warden-1--2", "warden-1", "system.slice", "warden"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id();
        let t = start_time(me).expect("start time of this process");
        assert_eq!(start_time(me), Some(t));
        // A process that does not exist has none.
        assert_eq!(start_time(u32::MAX), None);
    }
}
