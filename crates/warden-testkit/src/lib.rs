//! Test support for warden: run the real `warden` binary and explain failures; fakes of what
//! warden talks to.
//!
//! [`Warden`] builds a command line, runs it with a bounded wait, and every assertion helper
//! prints the command, exit status, stdout and stderr when it fails (like ripgrep's
//! `TestCommand`), so a red test says what happened without a rerun. [`fake_upstream`] is a fake
//! Responses server; [`fake_worker`] (the `fake-worker` binary, found with [`fake_worker_bin`])
//! a fake Codex app-server with fault modes.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

/// A fake OpenAI Responses upstream that records requests and streams SSE answers.
pub mod fake_upstream;
pub mod fake_worker;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the `warden` binary under test: `$WARDEN_BIN`, else `CARGO_BIN_EXE_warden` passed by
/// the caller.
pub fn warden_bin(cargo_bin_exe: &str) -> PathBuf {
    std::env::var_os("WARDEN_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(cargo_bin_exe))
}

/// Path of the `fake-worker` binary ([`fake_worker`]): `$WARDEN_FAKE_WORKER` when set (the
/// unprivileged test pass copies it to its stage), else the one cargo builds (and rebuilds when
/// its sources changed) with `cargo build -p warden-testkit --bin fake-worker`, run once per
/// process. Tests of other crates cannot name it with `CARGO_BIN_EXE_*` (that is only given to
/// the tests of the crate that defines the binary).
pub fn fake_worker_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("WARDEN_FAKE_WORKER").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--locked", "--message-format=json", "--bin", "fake-worker", "--manifest-path"])
            .arg(&manifest);
        let out = run_bounded(cmd, Duration::from_secs(600));
        out.success();
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "fake-worker")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| out.fail("cargo built no fake-worker binary (set WARDEN_FAKE_WORKER to one)"))
    })
    .clone()
}

/// The real Codex CLI (`$WARDEN_CODEX_BIN`; scripts/test.sh installs it with
/// scripts/install-codex.sh, which prints the path). Outside CI a missing binary skips the
/// calling test with a message (`None`); in CI (`CI` set) it fails, so an end-to-end check
/// against Codex cannot silently vanish.
pub fn codex_bin() -> Option<PathBuf> {
    match std::env::var_os("WARDEN_CODEX_BIN").filter(|v| !v.is_empty()) {
        Some(p) => Some(p.into()),
        None if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("WARDEN_CODEX_BIN is not set: scripts/test.sh installs @openai/codex@0.169.0 and exports it")
        }
        None => {
            eprintln!("skipped: WARDEN_CODEX_BIN is not set (scripts/install-codex.sh prints the path)");
            None
        }
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    fn explain(&self) -> String {
        format!(
            "\n--- command ---\n{}\n--- exit ---\n{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, Some(expected), "unexpected exit status{}", self.explain());
        self
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    /// Asserts a non-zero exit code.
    #[track_caller]
    pub fn failure(&self) -> &Self {
        assert!(self.code.is_some_and(|c| c != 0), "expected a failure{}", self.explain());
        self
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}{}", self.explain());
        self
    }

    /// Asserts stdout does not contain `needle`.
    #[track_caller]
    pub fn stdout_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stdout.contains(needle), "stdout contains {needle:?}{}", self.explain());
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}{}", self.explain());
        self
    }

    /// Asserts stderr does not contain `needle`.
    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Self {
        assert!(!self.stderr.contains(needle), "stderr contains {needle:?}{}", self.explain());
        self
    }

    /// Panics with the full explanation and `msg`.
    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}{}", self.explain())
    }
}

/// A `warden` invocation under construction.
pub struct Warden {
    cmd: Command,
    shown: Vec<String>,
    stdin: Option<Vec<u8>>,
    limit: Duration,
}

impl Warden {
    /// `warden` with no arguments yet; the environment is inherited minus `WARDEN_*`/`XDG_CONFIG_HOME`
    /// so that no user config leaks into tests.
    pub fn new(bin: &Path) -> Self {
        let cmd = scrubbed_command(bin);
        Warden { cmd, shown: vec![bin.display().to_string()], stdin: None, limit: Duration::from_secs(60) }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.shown.push(a.as_ref().to_string_lossy().into_owned());
            self.cmd.arg(a);
        }
        self
    }

    /// Sets an environment variable of warden itself.
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Self {
        self.shown.insert(0, format!("{k}={}", v.as_ref().to_string_lossy()));
        self.cmd.env(k, v);
        self
    }

    /// Removes an environment variable of warden itself.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// Sets warden's working directory.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds `data` on stdin.
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// The longest the run may take before the test fails (default 60 s).
    pub fn limit(mut self, d: Duration) -> Self {
        self.limit = d;
        self
    }

    /// Runs to completion (bounded by the limit; the process is killed past it and the test fails).
    pub fn run(self) -> Output {
        let cmdline = self.shown.join(" ");
        run_captured(self.cmd, cmdline, self.stdin, self.limit)
    }
}

/// A `Command` for `program` without warden's own `WARDEN_*` variables (so no user setting leaks
/// into a test), except `WARDEN_BIN`, and with `XDG_STATE_HOME` pointing at [`test_state_home`]
/// so that tests never append to the real audit log of whoever runs them.
pub fn scrubbed_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("WARDEN_") && name != "WARDEN_BIN" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("XDG_STATE_HOME", test_state_home());
    cmd
}

/// A state directory shared by the tests of this process (warden's default audit log goes to
/// `<it>/warden/audit.jsonl`).
pub fn test_state_home() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("WARDEN_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!("warden-test-state-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("test state dir");
        d
    })
    .clone()
}

/// Runs any command with stdin from /dev/null and a bounded wait, capturing its output like
/// [`Warden::run`].
pub fn run_bounded(cmd: Command, limit: Duration) -> Output {
    let cmdline = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
    );
    run_captured(cmd, cmdline, None, limit)
}

fn run_captured(mut cmd: Command, cmdline: String, input: Option<Vec<u8>>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
    if let (Some(data), Some(mut pipe)) = (input, child.stdin.take()) {
        use std::io::Write;
        let _ = pipe.write_all(&data);
    }
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    let out = Output { cmdline, code: status.and_then(|s| s.code()), stdout, stderr };
    if status.is_none() {
        out.fail(&format!("did not finish within {limit:?}"));
    }
    out
}

/// A temporary directory that is readable by every user (tests also run as `nobody`).
pub fn world_tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("WARDEN_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let d = tempfile::Builder::new().prefix("warden-test-").tempdir_in(base).expect("tempdir");
    set_mode(d.path(), 0o755);
    d
}

/// `chmod`.
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
