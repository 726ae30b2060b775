//! Opening and running a prepared session: audit records, proxies, degraded layers, the launch
//! and the `--allow-degraded` fallback.
//!
//! Guarantees: a session that opens has every layer its profile promises, or the policy allowed
//! the missing ones and a `policy.degraded` record says which; every refusal after the audit log
//! is open is a `run.refused` record; nothing runs unless `run.start` was recorded; every run
//! that started ends with one `run.exit` record (also when it was cancelled, refused by a proxy
//! or could not fall back).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_credproxy::{CredConfig, CredProxy};
use warden_policy::NetMode;
use warden_sandbox::launch::{self, Control, Outcome, Refusal, Supervisor};
use warden_sandbox::plan::{self, CompileOptions};
use warden_sandbox::{CommandStatus, ListenerKind};

use crate::audit::{fields, CredproxyAudit};
use crate::proxies::{build_egress, Proxies};
use crate::{EventSink, LockedSecret, Prepared, Recorder, SessionError, SessionEvent, SessionExit};

/// `git.refs` records per run and moment, at most (one per gitdir).
const MAX_REFS_RECORDS: usize = 64;

/// How a session's command ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// From the launch to the end.
    pub duration: Duration,
    /// Peak RSS of the largest process of the sandbox, KiB.
    pub peak_rss_kib: u64,
    /// Connections the egress proxy denied, per host, most first.
    pub denied: Vec<(String, u64)>,
    /// Layers skipped during the launch (`--allow-degraded`): `(layer, why)`.
    pub degraded: Vec<(String, String)>,
}

impl Report {
    /// The exit status `warden run` exits with.
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }

    /// Denied connections in all.
    pub fn denied_total(&self) -> u64 {
        self.denied.iter().map(|(_, n)| n).sum()
    }

    /// The end as its record and its event carry it.
    pub fn exit(&self) -> SessionExit {
        let mut exit = SessionExit {
            exit_code: self.exit_code(),
            outcome: String::new(),
            signal: None,
            detail: None,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            peak_rss_kib: self.peak_rss_kib,
            denied_connections: self.denied_total(),
        };
        exit.outcome = match &self.outcome {
            Outcome::Finished(CommandStatus::Exited(_)) => "exited",
            Outcome::Finished(CommandStatus::Signaled(sig)) => {
                exit.signal = Some(*sig);
                "signaled"
            }
            Outcome::TimedOut => "timed-out",
            Outcome::HookFailed { program, status } => {
                exit.detail = Some(match status {
                    CommandStatus::Exited(c) => format!("{program} exited with status {c}"),
                    CommandStatus::Signaled(s) => format!("{program} was killed by signal {s}"),
                });
                "hook-failed"
            }
            Outcome::SetupFailed { layer, detail } => {
                exit.detail = Some(format!("{layer}: {detail}"));
                "setup-failed"
            }
            Outcome::ExecFailed { program, errno } => {
                exit.detail = Some(format!("{program}: {errno}"));
                "exec-failed"
            }
            Outcome::Cancelled { reason } => {
                exit.detail = Some(reason.clone());
                "cancelled"
            }
        }
        .to_owned();
        exit
    }
}

/// What a spawned session's parent can ask while the sandbox runs (the control channel).
pub(crate) trait Controller {
    /// The descriptor to watch.
    fn fd(&self) -> std::os::fd::RawFd;
    /// It is readable: what to do.
    fn ready(&mut self) -> Control;
}

/// An open session: audit log, proxies and degraded layers settled; ready to run.
pub struct Session {
    prepared: Prepared,
    recorder: Recorder,
    events: Arc<dyn EventSink>,
    proxies: Proxies,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("argv", &self.prepared.spec.argv).finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the audit log, records the spec's config warnings, builds the proxies and settles the
    /// degraded layers. `key` is the credential (required exactly when the spec has one).
    ///
    /// Refusals after the log is open are `run.refused` records; [`SessionError::Degraded`] lists
    /// the layers when the policy does not allow degrading.
    pub fn open(
        prepared: Prepared,
        key: Option<LockedSecret>,
        events: Arc<dyn EventSink>,
    ) -> Result<Session, SessionError> {
        let policy = &prepared.spec.policy;
        let recorder = Recorder::open(&policy.audit, events.clone())?;
        for w in &prepared.spec.warnings {
            let file = w.file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "environment".into());
            recorder.record(
                "config.warning",
                fields([("file", json!(file)), ("key", json!(w.key)), ("message", json!(w.message))]),
            );
        }
        if let Some(t) = &prepared.plan.repo_scan.truncated {
            events.event(&SessionEvent::Warning {
                message: format!(
                    "the search for git repositories in the writable roots was cut short: {t}; repositories past \
                     that point are not protected (raise [filesystem] repo_scan in warden.toml)"
                ),
            });
            recorder.record(
                "repo_scan.truncated",
                fields([
                    ("reason", json!(t)),
                    ("entries", json!(prepared.plan.repo_scan.entries)),
                    ("repositories", json!(prepared.plan.repo_scan.repositories.len())),
                ]),
            );
        }
        let refused = |e: SessionError| {
            refuse_record(&recorder, &prepared, &e.to_string());
            e
        };
        let egress = if policy.net == NetMode::Allowlist {
            Some(build_egress(&policy.network, &recorder, &events).map_err(refused)?)
        } else {
            None
        };
        if !prepared.degraded.is_empty() {
            if !policy.allow_degraded {
                let layers: Vec<&str> = prepared.degraded.iter().map(|d| d.layer.as_str()).collect();
                refuse_record(&recorder, &prepared, &format!("cannot enforce: {}", layers.join(", ")));
                return Err(SessionError::Degraded { layers: prepared.degraded.clone() });
            }
            for d in &prepared.degraded {
                events.event(&SessionEvent::Degraded { layer: d.layer.clone(), why: d.why.clone() });
            }
            let layers: Vec<&str> = prepared.degraded.iter().map(|d| d.layer.as_str()).collect();
            let why: Vec<&str> = prepared.degraded.iter().map(|d| d.why.as_str()).collect();
            recorder.record("policy.degraded", fields([("layers", json!(layers)), ("why", json!(why))]));
        }
        let credential = match (&prepared.spec.credential, key) {
            (Some(c), Some(key)) => {
                let proxy = credential_proxy(&c.upstream, key, &recorder).map_err(refused)?;
                Some(proxy)
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(refused(SessionError::CredentialMismatch("the spec has a credential but no key was given")))
            }
            (None, Some(_)) => {
                return Err(refused(SessionError::CredentialMismatch("a key was given but the spec has no credential")))
            }
        };
        let proxies = Proxies::new(egress, credential);
        Ok(Session { prepared, recorder, events, proxies })
    }

    /// The prepared spec and plan.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The audit recorder of this session.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Does not run: records `run.refused` with `reason` (e.g. the user did not confirm).
    pub fn refuse(self, reason: &str) {
        refuse_record(&self.recorder, &self.prepared, reason);
    }

    /// Records `run.start`, runs the command in the sandbox and waits for its end (and every
    /// process it started), then records `run.exit`.
    ///
    /// **Single-threaded callers only**: the sandbox's PID 1 is cloned from the calling thread,
    /// which must be the only thread of the process (checked: [`SessionError::Launch`] otherwise).
    /// A multi-threaded program uses [`crate::spawn`].
    pub fn run(self) -> Result<Report, SessionError> {
        self.run_controlled(None)
    }

    pub(crate) fn run_controlled(
        mut self,
        mut control: Option<&mut (dyn Controller + '_)>,
    ) -> Result<Report, SessionError> {
        let policy = &self.prepared.spec.policy;
        let credential = self
            .prepared
            .spec
            .credential
            .as_ref()
            .map(|c| json!({ "source": c.source.describe(), "upstream": c.upstream }));
        let start_fields = fields([
            ("profile", json!(policy.profile.name())),
            ("policy_digest", json!(policy.digest())),
            ("argv", json!(self.prepared.spec.argv)),
            ("workdir", json!(policy.workdir)),
            ("uid", json!(self.prepared.plan.uid)),
            ("net", json!(policy.net.name())),
            ("degraded", json!(self.prepared.degraded.iter().map(|d| d.layer.as_str()).collect::<Vec<_>>())),
            ("credential", json!(credential)),
        ]);
        if !self.recorder.record("run.start", start_fields) {
            return Err(SessionError::NotRecorded);
        }
        self.record_refs("before");
        let timeout = policy.limits.timeout_secs.map(Duration::from_secs);
        let mut supervision = Supervision {
            proxies: &mut self.proxies,
            events: &self.events,
            recorder: &self.recorder,
            audit_session: self.recorder.session(),
            control: control.as_deref_mut(),
        };
        let launched = launch::run(&self.prepared.plan, timeout, &mut supervision);
        let report = match launched {
            Ok(r) => r,
            Err(e) => {
                self.finish(&setup_report(Outcome::SetupFailed { layer: "launch".into(), detail: e.to_string() }));
                return Err(SessionError::Launch(e));
            }
        };
        let mut report = Report {
            outcome: report.outcome,
            duration: report.duration,
            peak_rss_kib: report.peak_rss_kib,
            denied: Vec::new(),
            degraded: report.degraded,
        };
        if let Outcome::SetupFailed { layer, detail } = &report.outcome {
            if layer.ends_with("namespace") && self.prepared.spec.policy.allow_degraded {
                let (layer, detail) = (layer.clone(), detail.clone());
                match self.run_degraded(&layer, &detail, timeout, control) {
                    Ok(r) => report = r,
                    Err(e) => {
                        self.finish(&report);
                        return Err(e);
                    }
                }
            }
        }
        report.denied = self.proxies.denied_summary();
        self.neutralise_created_repositories();
        self.finish(&report);
        Ok(report)
    }

    /// After the run: a repository the command created in a writable root (where no placeholder
    /// stood) would have host git obey its config and hooks. Each is disabled by a rename that
    /// one `mv` undoes, reported as a warning and a `repo.neutralised` record.
    fn neutralise_created_repositories(&self) {
        let plan = &self.prepared.plan;
        if !plan.namespaces || self.prepared.spec.policy.writable_roots.is_empty() {
            return;
        }
        let after = plan::scan_repositories(&self.prepared.spec.policy, &plan.env);
        for created in plan::created_repositories(&plan.repo_scan, &after) {
            // Another run's `.git` placeholder, still held (runs sharing a workdir), or an empty
            // `.git`: no config, no hooks, nothing host git would obey.
            if let plan::Created::Repository(p) = &created {
                let empty = std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
                if p.file_name().is_some_and(|n| n == ".git") && (warden_sandbox::is_placeholder_dir(p) || empty) {
                    continue;
                }
            }
            let (found, what) = match &created {
                plan::Created::Repository(p) if p.file_name().is_some_and(|n| n == ".git") => (p.clone(), "repository"),
                // A bare layout: without a valid HEAD git does not take it for a repository.
                plan::Created::Repository(p) => (p.join("HEAD"), "bare repository"),
                plan::Created::Gitdir(p) => (p.clone(), "submodule or worktree gitdir"),
            };
            let result = disable(&found);
            let (moved_to, error) = match &result {
                Ok(to) => (Some(to.clone()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let message = match &result {
                Ok(to) => format!(
                    "the command created a git {what} at {}: disabled so that git does not obey its config or hooks \
                     (moved {} to {}; to use it after checking it: mv {} {})",
                    found.parent().unwrap_or(&found).display(),
                    found.display(),
                    to.display(),
                    shell_word(to),
                    shell_word(&found)
                ),
                Err(e) => format!(
                    "the command created a git {what} at {} and warden could not disable it ({e}): check its config \
                     and hooks before you run git there",
                    found.display()
                ),
            };
            self.events.event(&SessionEvent::Warning { message });
            self.recorder.record(
                "repo.neutralised",
                fields([
                    ("kind", json!(what)),
                    ("path", json!(found)),
                    ("moved_to", json!(moved_to)),
                    ("error", json!(error)),
                ]),
            );
        }
    }

    /// In commit mode, the refs of every gitdir the command may change, as `git.refs` records.
    fn record_refs(&self, when: &str) {
        if self.prepared.spec.policy.git != warden_policy::GitMode::Commit {
            return;
        }
        let gitdirs = self.prepared.plan.repo_scan.repositories.iter().flat_map(|r| &r.gitdirs);
        for gitdir in gitdirs.take(MAX_REFS_RECORDS) {
            let mut f = fields([("when", json!(when))]);
            if let serde_json::Value::Object(snapshot) = crate::gitrefs::snapshot(gitdir) {
                f.extend(snapshot);
            }
            self.recorder.record("git.refs", f);
        }
    }

    /// The proxies' end (their last records), `run.exit`, the sync and the `Exited` event.
    fn finish(&mut self, report: &Report) {
        self.proxies.shutdown();
        self.record_refs("after");
        let exit = report.exit();
        let mut f = fields([
            ("exit_code", json!(exit.exit_code)),
            ("denied_connections", json!(exit.denied_connections)),
            ("duration_ms", json!(exit.duration_ms)),
            ("peak_rss_kib", json!(exit.peak_rss_kib)),
            ("outcome", json!(exit.outcome)),
        ]);
        if !report.degraded.is_empty() {
            let layers: Vec<&str> = report.degraded.iter().map(|(l, _)| l.as_str()).collect();
            f.insert("degraded".into(), json!(layers));
        }
        match &report.outcome {
            Outcome::Finished(CommandStatus::Signaled(sig)) => {
                f.insert("signal".into(), json!(sig));
            }
            Outcome::SetupFailed { layer, detail } => {
                f.insert("layer".into(), json!(layer));
                f.insert("detail".into(), json!(detail));
            }
            Outcome::ExecFailed { program, errno } => {
                f.insert("program".into(), json!(program));
                f.insert("errno".into(), json!(errno.0));
            }
            Outcome::HookFailed { program, status } => {
                f.insert("hook".into(), json!(program));
                if let CommandStatus::Signaled(sig) = status {
                    f.insert("signal".into(), json!(sig));
                }
            }
            Outcome::Cancelled { reason } => {
                f.insert("detail".into(), json!(reason));
            }
            _ => {}
        }
        let dropped = self.recorder.dropped();
        if !dropped.is_empty() {
            f.insert("records_dropped".into(), json!(dropped));
        }
        self.recorder.record("run.exit", f);
        // The fdatasync this used to wait for cost 0.6 ms idle and up to 18 ms with other writes
        // on the disk (`perf trace`), on every run's exit path.
        self.recorder.start_writeback();
        self.events.event(&SessionEvent::Exited(exit));
    }

    /// The `--allow-degraded` fallback when no namespace can be made (see
    /// `warden_sandbox::plan::compile_degraded`).
    fn run_degraded(
        &mut self,
        layer: &str,
        detail: &str,
        timeout: Option<Duration>,
        control: Option<&mut (dyn Controller + '_)>,
    ) -> Result<Report, SessionError> {
        let prepared = &self.prepared;
        let policy = &prepared.spec.policy;
        let (layer, detail) = (layer.to_owned(), detail.to_owned());
        if prepared.landlock_abi.is_none() && !policy.profile.everything_writable() {
            return Err(SessionError::NoFallback { layer, detail });
        }
        if policy.net == NetMode::Allowlist || prepared.plan.credential_port.is_some() {
            return Err(SessionError::FallbackNeedsNetns { layer, detail });
        }
        self.recorder.record(
            "policy.degraded",
            fields([
                ("layers", json!([layer, "mount namespace", "pid namespace", "network namespace"])),
                ("why", json!([detail])),
                ("mode", json!("landlock and seccomp only")),
            ]),
        );
        self.events.event(&SessionEvent::Fallback { layer: layer.clone(), detail: detail.clone() });
        let tmp = PrivateTmp::create().map_err(SessionError::PrivateTmp)?;
        let mut plan = plan::compile_degraded(
            policy,
            &prepared.plan.argv,
            prepared.plan.env.clone(),
            prepared.plan.uid,
            prepared.plan.gid,
            &CompileOptions { allow_nested_userns: false, landlock_abi: prepared.landlock_abi },
            &tmp.0,
        )
        .map_err(SessionError::Plan)?;
        plan.init_hook = prepared.plan.init_hook.clone();
        let mut supervision = Supervision {
            proxies: &mut self.proxies,
            events: &self.events,
            recorder: &self.recorder,
            audit_session: self.recorder.session(),
            control,
        };
        let r = launch::run(&plan, timeout, &mut supervision).map_err(SessionError::Launch)?;
        Ok(Report {
            outcome: r.outcome,
            duration: r.duration,
            peak_rss_kib: r.peak_rss_kib,
            denied: Vec::new(),
            degraded: r.degraded,
        })
    }
}

/// Renames `path` to `<path>.warden-disabled` (or `-2`, `-3`, ... if taken); returns where.
fn disable(path: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for n in 1..=100 {
        let suffix = if n == 1 { String::new() } else { format!("-{n}") };
        let to = path.with_file_name(format!("{name}.warden-disabled{suffix}"));
        if to.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::rename(path, &to)?;
        return Ok(to);
    }
    Err(std::io::Error::other("100 disabled copies exist already"))
}

/// `p` quoted for a POSIX shell (single quotes).
fn shell_word(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn setup_report(outcome: Outcome) -> Report {
    Report { outcome, duration: Duration::ZERO, peak_rss_kib: 0, denied: Vec::new(), degraded: Vec::new() }
}

fn refuse_record(recorder: &Recorder, prepared: &Prepared, reason: &str) {
    recorder.record("run.refused", fields([("reason", json!(reason)), ("argv", json!(prepared.spec.argv))]));
}

/// The credential proxy of a session (the key moves into it).
fn credential_proxy(upstream: &str, key: LockedSecret, recorder: &Recorder) -> Result<CredProxy, SessionError> {
    let upstream_uri = upstream
        .parse::<http::Uri>()
        .map_err(|e| SessionError::CredentialUpstream { upstream: upstream.to_owned(), error: e.to_string() })?;
    let cfg = CredConfig { upstream: upstream_uri, ..CredConfig::default() };
    CredProxy::new(cfg, key, Arc::new(CredproxyAudit(recorder.clone()))).map_err(SessionError::CredentialProxy)
}

/// What the launch asks of the session while the sandbox runs.
struct Supervision<'a, 'c> {
    proxies: &'a mut Proxies,
    events: &'a Arc<dyn EventSink>,
    recorder: &'a Recorder,
    audit_session: Option<String>,
    control: Option<&'a mut (dyn Controller + 'c)>,
}

impl Supervisor for Supervision<'_, '_> {
    fn listeners(&mut self, listeners: Vec<(ListenerKind, OwnedFd)>) -> Result<(), Refusal> {
        self.proxies.serve(listeners, self.events)
    }

    fn degraded(&mut self, layer: &str, why: &str) {
        self.events.event(&SessionEvent::Degraded { layer: layer.to_owned(), why: why.to_owned() });
        self.recorder.record("policy.degraded", fields([("layers", json!([layer])), ("why", json!([why]))]));
    }

    fn started(&mut self, pid: libc::pid_t) {
        self.events.event(&SessionEvent::Started { pid, audit_session: self.audit_session.clone() });
    }

    fn control_fd(&self) -> Option<std::os::fd::RawFd> {
        self.control.as_ref().map(|c| c.fd())
    }

    fn control(&mut self) -> Control {
        self.control.as_mut().map_or(Control::Continue, |c| c.ready())
    }
}

/// A 0700 directory under the system temp dir, removed with everything in it on drop.
struct PrivateTmp(std::path::PathBuf);

impl PrivateTmp {
    /// In `$TMPDIR`, else the first of `/tmp`, `/var/tmp`, `/dev/shm` that takes it (a container
    /// image built `FROM scratch` may have no `/tmp`).
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("warden-{}-{nanos:09}", std::process::id());
        let candidates = std::env::var_os("TMPDIR")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(["/tmp", "/var/tmp", "/dev/shm"].map(std::path::PathBuf::from));
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no temporary directory");
        for base in candidates {
            let dir = base.join(&name);
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(PrivateTmp(dir)),
                Err(e) => last = std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
            }
        }
        Err(last)
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
