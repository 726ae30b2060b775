//! The session's audit records, and the adapters through which the egress and credential proxies
//! (which depend on no warden crate) report into the audit log and the session's events.
//!
//! Guarantees: a record that cannot be appended is reported as [`SessionEvent::AuditFailed`] and
//! as `false`, so the caller can refuse to go on (a run that cannot be recorded does not start);
//! the proxies' records never hold a header value or a body.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use warden_audit::{AuditConfig, AuditKey, AuditLog, Fsync};
use warden_credproxy::{RequestRecord, RequestSink};
use warden_egress::{Decision, DecisionSink};
use warden_policy::AuditSettings;

use crate::{EventSink, SessionError, SessionEvent};

/// Builds a field map from `(name, value)` pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Appends audit records (when auditing is on), from any thread.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<Mutex<Option<AuditLog>>>,
    events: Arc<dyn EventSink>,
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
        Ok(Recorder { log: Arc::new(Mutex::new(log)), events })
    }

    /// A recorder that writes nothing.
    pub fn disabled(events: Arc<dyn EventSink>) -> Recorder {
        Recorder { log: Arc::new(Mutex::new(None)), events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<AuditLog>> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one record; `false` (and an [`SessionEvent::AuditFailed`]) when it could not be.
    pub fn record(&self, event: &str, fields: Map<String, Value>) -> bool {
        let result = self.lock().as_mut().map(|log| log.append(event, fields));
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
        let result = self.lock().as_mut().map(|log| log.flush());
        if let Some(Err(e)) = result {
            self.events.event(&SessionEvent::AuditFailed { record: "sync".to_owned(), error: e.to_string() });
        }
    }

    /// The session id of this recorder's records (`None` when auditing is off).
    pub fn session(&self) -> Option<String> {
        self.lock().as_ref().map(|log| log.session().to_owned())
    }
}

/// Opens the log per the settings (`None` when auditing is off).
fn open_log(settings: &AuditSettings) -> Result<Option<AuditLog>, SessionError> {
    if !settings.enabled {
        return Ok(None);
    }
    let Some(path) = &settings.path else { return Ok(None) };
    let fsync: Fsync = settings.fsync.parse().map_err(|e| SessionError::Audit(format!("[audit] fsync: {e}")))?;
    let key = settings
        .key_file
        .as_deref()
        .map(|p| AuditKey::from_file(p).map_err(|e| SessionError::Audit(e.to_string())))
        .transpose()?;
    let cfg = AuditConfig { path: path.clone(), fsync, max_bytes: settings.max_bytes, keep: settings.keep, key };
    AuditLog::open(cfg).map(Some).map_err(|e| {
        SessionError::Audit(format!(
            "cannot open the audit log {}: {e}. Fix it, choose another place with --audit-log PATH, \
             or run without a record on purpose with --no-audit",
            path.display()
        ))
    })
}

/// The egress proxy's decisions as `egress.decision` records and connection events.
pub struct EgressAudit {
    /// Where records go.
    pub recorder: Recorder,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
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
        self.recorder.record(
            "egress.decision",
            fields([
                ("protocol", json!(d.protocol)),
                ("host", json!(d.host)),
                ("port", json!(d.port)),
                ("decision", json!(if d.allowed { "allow" } else { "deny" })),
                ("reason", json!(d.reason)),
                ("rule", json!(d.rule)),
                ("addr", json!(d.addr.map(|a| a.to_string()))),
            ]),
        );
    }
}

/// Every request the credential proxy served as a `credproxy.request` record (never a header
/// value).
pub struct CredproxyAudit(pub Recorder);

impl RequestSink for CredproxyAudit {
    fn request(&self, r: &RequestRecord) {
        self.0.record(
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
