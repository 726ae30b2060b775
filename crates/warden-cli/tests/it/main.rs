//! Escape battery: every test runs a real command under the real `warden run` and asserts the
//! denial (errno text, exit status) and, when the attack targets the host, that the host is
//! unchanged afterwards.
//!
//! The suite must pass both as root and as an unprivileged user (`nobody`): tests that only make
//! sense for one of them return early with a note. Every loop is bounded in count and time;
//! servers bind `127.0.0.1:0`; nothing leaves loopback.

/// Returns early (skipping the test, with a note) unless running as root.
macro_rules! root_only {
    () => {
        if !$crate::is_root() {
            eprintln!("note: skipped, needs root (the suite also runs as root)");
            return;
        }
    };
}

/// Returns early (skipping the test, with a note) when running as root.
macro_rules! non_root_only {
    () => {
        if $crate::is_root() {
            eprintln!("note: skipped, needs an unprivileged user (the suite also runs as nobody)");
            return;
        }
    };
}

mod audit;
mod cli;
mod codex;
mod container;
mod credproxy;
mod degraded;
mod egress;
mod env;
mod fs;
mod limits;
mod net;
mod positive;
mod proc_ipc;
mod repos;
mod sdk;
mod serve;
mod spawn;
mod syscalls;
mod tty;
mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use warden_testkit::{Output, Warden};

/// The system Python (the `python3` on PATH may be a pyenv shim under /root that `nobody` cannot
/// run).
pub const PY: &str = "/usr/bin/python3";

/// What a shell step prints when an attack succeeded; tests assert it never appears.
pub const ESCAPED: &str = "ESCAPED";

/// The `warden` binary under test.
pub fn warden_path() -> PathBuf {
    warden_testkit::warden_bin(env!("CARGO_BIN_EXE_warden"))
}

/// A `warden` invocation.
pub fn warden() -> Warden {
    Warden::new(&warden_path())
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A scratch area: `root/` is a world-readable temp dir, `ws/` inside it is the workdir, and
/// files next to `ws/` are "outside the workspace".
pub struct Scratch {
    _dir: tempfile::TempDir,
    /// The temp dir (parent of the workdir).
    pub root: PathBuf,
    /// The workdir.
    pub ws: PathBuf,
}

impl Scratch {
    /// Under `$WARDEN_TEST_TMP` or the system temp dir (usually `/tmp`, which is private inside).
    pub fn temp() -> Scratch {
        Scratch::from_dir(warden_testkit::world_tempdir())
    }

    /// Under a directory the sandbox can see (not `/tmp`, `/var/tmp` or `/run`, which are
    /// private tmpfs inside): needed when a host file outside the workdir must be a real attack
    /// target. `$WARDEN_TEST_HOST_DIR` (scripts/test.sh makes one that nobody can write), else
    /// cargo's `target/tmp`.
    pub fn visible() -> Scratch {
        let private = |p: &std::path::Path| ["/tmp", "/var/tmp", "/run", "/var/run"].iter().any(|d| p.starts_with(d));
        let base = std::env::var_os("WARDEN_TEST_HOST_DIR")
            .map(PathBuf::from)
            .filter(|p| !private(p))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
        assert!(!private(&base), "the host-visible scratch dir {} is private inside the sandbox", base.display());
        let d = tempfile::Builder::new().prefix("warden-test-").tempdir_in(base).expect("tempdir");
        warden_testkit::set_mode(d.path(), 0o755);
        Scratch::from_dir(d)
    }

    /// Under `/tmp` itself (private inside the sandbox).
    pub fn in_tmp() -> Scratch {
        let d = tempfile::Builder::new().prefix("warden-test-").tempdir_in("/tmp").expect("tempdir");
        warden_testkit::set_mode(d.path(), 0o755);
        Scratch::from_dir(d)
    }

    fn from_dir(d: tempfile::TempDir) -> Scratch {
        let root = d.path().to_path_buf();
        let ws = root.join("ws");
        std::fs::create_dir(&ws).expect("mkdir ws");
        warden_testkit::set_mode(&ws, 0o755);
        Scratch { _dir: d, root, ws }
    }

    /// `warden run [before] -C ws [after] -- ARGV`, from inside the workdir.
    pub fn run(&self, before: &[&str], after: &[&str], argv: &[&str]) -> Output {
        warden()
            .current_dir(&self.ws)
            .args(["run"])
            .args(before)
            .args(["-C"])
            .args([&self.ws])
            .args(after)
            .args(["--"])
            .args(argv)
            .run()
    }

    /// `warden run -p PROFILE -C ws [extra] -- sh -c SCRIPT`, from inside the workdir.
    pub fn sh_with(&self, profile: &str, extra: &[&str], script: &str) -> Output {
        self.run(&["-p", profile], extra, &["sh", "-c", script])
    }

    /// `warden run -p PROFILE -C ws -- sh -c SCRIPT`.
    pub fn sh(&self, profile: &str, script: &str) -> Output {
        self.sh_with(profile, &[], script)
    }

    /// `warden run -p PROFILE -C ws [extra] -- /usr/bin/python3 -c CODE`.
    pub fn py_with(&self, profile: &str, extra: &[&str], code: &str) -> Output {
        self.run(&["-p", profile], extra, &[PY, "-c", code])
    }

    /// `warden run -p PROFILE -C ws -- /usr/bin/python3 -c CODE`.
    pub fn py(&self, profile: &str, code: &str) -> Output {
        self.py_with(profile, &[], code)
    }

    /// Writes a host file (relative to the scratch root) and returns its path.
    pub fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir -p");
        }
        std::fs::write(&p, content).expect("write host file");
        p
    }
}

/// Where a write-denial test writes: `name` in `preferred` (e.g. `/etc`) when this user can write
/// there outside the sandbox (root), else in the host-visible scratch base (which scripts/test.sh
/// makes world-writable, and which is outside every writable root). Either way the positive
/// control has just shown that the same user's same write succeeds outside the sandbox, so a
/// denial inside is the sandbox's doing, not the file permissions'.
pub fn host_write_target(preferred: &Path, name: &str) -> PathBuf {
    let scratch = std::env::var_os("WARDEN_TEST_HOST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    for dir in [preferred, scratch.as_path()] {
        let control = dir.join(format!("{name}.control"));
        if std::fs::write(&control, "positive control").is_ok() {
            let _ = std::fs::remove_file(&control);
            return dir.join(name);
        }
    }
    panic!("positive control: this user can write neither {} nor {}", preferred.display(), scratch.display());
}

/// The real Codex CLI, or a skip note (a failure in CI): see [`warden_testkit::codex_bin`].
pub fn codex_bin() -> Option<std::path::PathBuf> {
    warden_testkit::codex_bin()
}

/// Reads a host file (panics if it cannot be read).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Asserts that stderr shows at least one of the errno texts of a denial.
#[track_caller]
pub fn assert_denied(out: &Output, texts: &[&str]) {
    if !texts.iter().any(|t| out.stderr.contains(t) || out.stdout.contains(t)) {
        out.fail(&format!("expected one of {texts:?} in the output"));
    }
}

/// The usual texts of a filesystem write denial.
pub const WRITE_DENIED: &[&str] = &["Read-only file system", "Permission denied", "Operation not permitted"];

/// PIDs of host processes whose command line contains `marker` (not this process).
pub fn marker_pids(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else { continue };
        let line: String = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// The state letter of process `pid` (`/proc/PID/stat`: `S`, `R`, `T` stopped, `Z`, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// PIDs of the processes named `comm` whose command line contains `marker`.
pub fn pids_named(marker: &str, comm: &str) -> Vec<u32> {
    let name = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    marker_pids(marker).into_iter().filter(|&p| name(p).trim_end() == comm).collect()
}

/// PIDs of the `warden` processes (not PID 1 of a sandbox, which is `warden-init`) whose command
/// line contains `marker`.
pub fn warden_pids(marker: &str) -> Vec<u32> {
    pids_named(marker, "warden")
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A marker unique to this process and `tag`, usable as a `sleep` argument (`1000.<digits>`).
pub fn sleep_marker(tag: u32) -> String {
    format!("1000.{}{:03}", std::process::id(), tag)
}

pub use warden_testkit::{run_bounded, scrubbed_command};

/// Whether an executable exists at `p`.
pub fn have(p: &str) -> bool {
    Path::new(p).exists()
}
