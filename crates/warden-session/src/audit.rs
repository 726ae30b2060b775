//! The session's audit records, and the adapters through which the egress and credential proxies
//! (which depend on no warden crate) report into the audit log and the session's events.
//!
//! Guarantees: a record that cannot be appended is reported as [`SessionEvent::AuditFailed`] and
//! as `false`, so the caller can refuse to go on (a run that cannot be recorded does not start);
//! the proxies' records never hold a header value or a body. What the sandbox's own activity
//! causes (egress decisions, credential-proxy requests) is bounded: egress decisions are
//! aggregated per (host, port, decision, reason) and flushed as one `egress.decision` record with
//! a `count` per key and flush (at least every second, and at the end), and those records share a
//! budget per run and hour ([`warden_policy::AuditSettings::run_budget`]); past it one
//! `audit.budget_exhausted` record is written and the rest only counted (`run.exit` has the
//! counts). Enforcement does not change when the budget is spent. warden's own records (the run's
//! start and end, degraded layers, refs) are never subject to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};
use warden_audit::{AuditConfig, AuditKey, AuditLog, AuditStream, Fsync};
use warden_credproxy::{RequestRecord, RequestSink};
use warden_egress::{Decision, DecisionSink};
use warden_policy::AuditSettings;

use crate::{EventSink, SessionError, SessionEvent};

/// Builds a field map from `(name, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    fields_of(pairs)
}

fn fields_of<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Where a [`Recorder`]'s records go.
enum Sink {
    /// A log file.
    File(AuditLog),
    /// Standard output (`--audit-log -`).
    Stream(AuditStream),
    /// The session's owner, as [`SessionEvent::Record`]s over the control channel.
    Owner,
}

/// Appends audit records (when auditing is on), from any thread.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<Mutex<Option<Sink>>>,
    events: Arc<dyn EventSink>,
    budget: Arc<Mutex<Budget>>,
}

/// The window of a run's record budget.
const BUDGET_WINDOW: Duration = Duration::from_secs(3600);

/// What the sandbox's activity has cost in the current window.
#[derive(Debug)]
struct Budget {
    limit: (u64, u64),
    window: Instant,
    records: u64,
    bytes: u64,
    exhausted: bool,
    /// Records not written because the budget was spent, per event, over the whole run.
    dropped: BTreeMap<String, u64>,
}

impl Budget {
    fn new(limit: (u64, u64)) -> Budget {
        Budget { limit, window: Instant::now(), records: 0, bytes: 0, exhausted: false, dropped: BTreeMap::new() }
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("session", &self.session()).finish_non_exhaustive()
    }
}

impl Recorder {
    /// Opens the log the settings name (none when auditing is off). Failures report to `events`.
    pub fn open(settings: &AuditSettings, events: Arc<dyn EventSink>) -> Result<Recorder, SessionError> {
        let log = open_log(settings)?;
        let budget = Arc::new(Mutex::new(Budget::new(settings.run_budget)));
        Ok(Recorder { log: Arc::new(Mutex::new(log)), events, budget })
    }

    /// A recorder that writes nothing.
    pub fn disabled(events: Arc<dyn EventSink>) -> Recorder {
        let budget = Arc::new(Mutex::new(Budget::new(warden_policy::policy::DEFAULT_RUN_BUDGET)));
        Recorder { log: Arc::new(Mutex::new(None)), events, budget }
    }

    /// Appends a record the sandbox's activity caused, within the run's budget: past it, the
    /// first one is replaced by one `audit.budget_exhausted` record and the rest only counted.
    pub fn record_within_budget(&self, event: &str, fields: Map<String, Value>) -> bool {
        // The record's size, near enough: its fields as JSON plus the fixed part of a line.
        let size = serde_json::to_vec(&fields).map_or(0, |v| v.len() as u64) + 200;
        let exhausted_now = {
            let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
            if b.window.elapsed() >= BUDGET_WINDOW {
                (b.window, b.records, b.bytes, b.exhausted) = (Instant::now(), 0, 0, false);
            }
            if b.exhausted || b.records + 1 > b.limit.0 || b.bytes + size > b.limit.1 {
                *b.dropped.entry(event.to_owned()).or_default() += 1;
                let first = !b.exhausted;
                b.exhausted = true;
                first.then(|| (b.limit, b.records, b.bytes))
            } else {
                b.records += 1;
                b.bytes += size;
                return self.record(event, fields);
            }
        };
        if let Some((limit, records, bytes)) = exhausted_now {
            self.events.event(&SessionEvent::Warning {
                message: format!(
                    "the audit record budget of this run is spent ({} records or {} bytes per hour): further \
                     egress decisions and credential-proxy requests are counted, not recorded, until the hour is \
                     over (enforcement is unchanged)",
                    limit.0, limit.1
                ),
            });
            self.record(
                "audit.budget_exhausted",
                fields_of([
                    ("records", json!(records)),
                    ("bytes", json!(bytes)),
                    ("limit_records", json!(limit.0)),
                    ("limit_bytes", json!(limit.1)),
                    ("first_dropped", json!(event)),
                ]),
            );
        }
        false
    }

    /// Records not written because the budget was spent, per event, so far.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.budget.lock().unwrap_or_else(|p| p.into_inner()).dropped.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Sink>> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one record; `false` (and an [`SessionEvent::AuditFailed`]) when it could not be.
    pub fn record(&self, event: &str, fields: Map<String, Value>) -> bool {
        let mut guard = self.lock();
        let result = match guard.as_mut() {
            None => None,
            Some(Sink::File(log)) => Some(log.append(event, fields)),
            Some(Sink::Stream(log)) => Some(log.append(event, fields)),
            Some(Sink::Owner) => {
                drop(guard);
                self.events.event(&SessionEvent::Record { name: event.to_owned(), fields });
                return true;
            }
        };
        drop(guard);
        match result {
            None | Some(Ok(_)) => true,
            Some(Err(e)) => {
                self.events.event(&SessionEvent::AuditFailed { record: event.to_owned(), error: e.to_string() });
                false
            }
        }
    }

    /// Syncs pending records (batch mode) now.
    pub fn flush(&self) {
        self.sync_with(AuditLog::flush);
    }

    /// Ends the batch of a session that is over: starts the writeback of pending records without
    /// waiting for the disk (see `warden_audit::Fsync::Batch`), so that a run's end is not
    /// delayed by it.
    pub fn start_writeback(&self) {
        self.sync_with(AuditLog::start_writeback);
    }

    /// Runs `sync` on the log file, if records go to one; a failure becomes an `AuditFailed` event.
    fn sync_with(&self, sync: fn(&mut AuditLog) -> Result<(), warden_audit::AuditError>) {
        let result = match self.lock().as_mut() {
            Some(Sink::File(log)) => Some(sync(log)),
            _ => None,
        };
        if let Some(Err(e)) = result {
            self.events.event(&SessionEvent::AuditFailed { record: "sync".to_owned(), error: e.to_string() });
        }
    }

    /// The session id of this recorder's records (`None` when auditing is off).
    pub fn session(&self) -> Option<String> {
        match self.lock().as_ref() {
            Some(Sink::File(log)) => Some(log.session().to_owned()),
            Some(Sink::Stream(log)) => Some(log.session().to_owned()),
            Some(Sink::Owner) | None => None,
        }
    }
}

/// Opens the log per the settings (`None` when auditing is off).
fn open_log(settings: &AuditSettings) -> Result<Option<Sink>, SessionError> {
    if !settings.enabled {
        return Ok(None);
    }
    if settings.forward {
        return Ok(Some(Sink::Owner));
    }
    let Some(path) = &settings.path else { return Ok(None) };
    let fsync: Fsync = settings.fsync.parse().map_err(|e| SessionError::Audit(format!("[audit] fsync: {e}")))?;
    let key = settings
        .key_file
        .as_deref()
        .map(|p| AuditKey::from_file(p).map_err(|e| SessionError::Audit(e.to_string())))
        .transpose()?;
    if settings.is_stdout() {
        return AuditStream::stdout(key)
            .map(|s| Some(Sink::Stream(s)))
            .map_err(|e| SessionError::Audit(format!("cannot write the audit log to standard output: {e}")));
    }
    let cfg = AuditConfig { path: path.clone(), fsync, max_bytes: settings.max_bytes, keep: settings.keep, key };
    AuditLog::open(cfg).map(|l| Some(Sink::File(l))).map_err(|e| {
        SessionError::Audit(format!(
            "cannot open the audit log {}: {e}. Fix it, choose another place with --audit-log PATH, \
             or run without a record on purpose with --no-audit",
            path.display()
        ))
    })
}

/// The egress proxy's decisions: a connection event each, and `egress.decision` records
/// aggregated per (host, port, decision, reason) until [`EgressAudit::flush`].
pub struct EgressAudit {
    recorder: Recorder,
    events: Arc<dyn EventSink>,
    pending: Mutex<HashMap<DecisionKey, Repeated>>,
}

/// What identifies an aggregated decision.
type DecisionKey = (String, u16, bool, Option<&'static str>);

/// Decisions of one key since the last flush.
struct Repeated {
    protocol: &'static str,
    rule: Option<String>,
    addr: Option<String>,
    count: u64,
    first: SystemTime,
    last: SystemTime,
}

impl EgressAudit {
    /// Decisions go to `recorder` (aggregated) and `events` (each).
    pub fn new(recorder: Recorder, events: Arc<dyn EventSink>) -> EgressAudit {
        EgressAudit { recorder, events, pending: Mutex::new(HashMap::new()) }
    }

    /// Writes one `egress.decision` record per key seen since the last flush, with its `count`
    /// and the `first` and `last` times. Called at least every second while the proxy serves,
    /// and at the end.
    pub fn flush(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut batch: Vec<(DecisionKey, Repeated)> = pending.into_iter().collect();
        batch.sort_by_key(|(_, r)| r.first);
        for ((host, port, allowed, reason), r) in batch {
            self.recorder.record_within_budget(
                "egress.decision",
                fields([
                    ("protocol", json!(r.protocol)),
                    ("host", json!(host)),
                    ("port", json!(port)),
                    ("decision", json!(if allowed { "allow" } else { "deny" })),
                    ("reason", json!(reason)),
                    ("rule", json!(r.rule)),
                    ("addr", json!(r.addr)),
                    ("count", json!(r.count)),
                    ("first", json!(warden_audit::format_ts(r.first))),
                    ("last", json!(warden_audit::format_ts(r.last))),
                ]),
            );
        }
    }
}

impl DecisionSink for EgressAudit {
    fn decision(&self, d: &Decision) {
        let event = if d.allowed {
            SessionEvent::ConnectionAllowed { protocol: d.protocol.to_owned(), host: d.host.clone(), port: d.port }
        } else {
            SessionEvent::ConnectionDenied {
                protocol: d.protocol.to_owned(),
                host: d.host.clone(),
                port: d.port,
                reason: d.reason.map(str::to_owned),
            }
        };
        self.events.event(&event);
        let now = SystemTime::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.entry((d.host.clone(), d.port, d.allowed, d.reason)).or_insert_with(|| Repeated {
            protocol: d.protocol,
            rule: d.rule.clone(),
            addr: d.addr.map(|a| a.to_string()),
            count: 0,
            first: now,
            last: now,
        });
        entry.count += 1;
        entry.last = now;
    }
}

/// Every request the credential proxy served as a `credproxy.request` record (never a header
/// value).
pub struct CredproxyAudit(pub Recorder);

impl RequestSink for CredproxyAudit {
    fn request(&self, r: &RequestRecord) {
        self.0.record_within_budget(
            "credproxy.request",
            fields([
                ("method", json!(r.method)),
                ("path", json!(r.path)),
                ("status", json!(r.status)),
                ("bytes_in", json!(r.bytes_in)),
                ("bytes_out", json!(r.bytes_out)),
                ("duration_ms", json!(r.duration_ms)),
            ]),
        );
    }
}
