//! A pids cgroup that caps the number of processes of one sandbox.
//!
//! Why: `RLIMIT_NPROC` is not enforced for the host's root user (the kernel exempts uid 0 of
//! the initial user namespace), so `--max-procs` under root needs the pids controller. The
//! cgroup is created before the init is spawned, the init joins it between fork and exec, and
//! it is removed after every process in it has ended.

use std::path::{Path, PathBuf};

/// A created cgroup directory; removed on drop.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
}

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
            let dir = root.join(format!("warden-{}-{}", std::process::id(), unique()));
            if let Err(e) = std::fs::create_dir(&dir) {
                tried.push(format!("{}: {e}", dir.display()));
                continue;
            }
            let cg = PidsCgroup { dir };
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

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
