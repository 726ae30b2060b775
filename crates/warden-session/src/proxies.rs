//! The egress and credential proxies of a session, served on the listeners the sandbox's PID 1
//! opens inside its network namespace.
//!
//! Guarantees: the proxies' runtime (two worker threads) is started only when the listeners
//! arrive, after PID 1 was cloned; a proxy that cannot be served refuses the run before the
//! command starts (see `warden_sandbox::launch::Supervisor::listeners`); a proxy that stops later
//! is reported as a warning event.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_credproxy::CredProxy;
use warden_egress::{Egress, EgressConfig, Limits, RuleSpec, RulesConfig};
use warden_policy::NetworkRules;
use warden_sandbox::launch::Refusal;
use warden_sandbox::ListenerKind;

use crate::audit::{fields, EgressAudit};
use crate::{EventSink, Recorder, SessionError, SessionEvent};

/// The egress proxy's configuration from the policy's rules.
pub fn egress_config(rules: &NetworkRules) -> EgressConfig {
    EgressConfig {
        rules: RulesConfig {
            allow: rules
                .allow
                .iter()
                .map(|r| RuleSpec { pattern: r.pattern.clone(), expires: r.expires.clone(), raw: r.raw })
                .collect(),
            deny: rules.deny.clone(),
            allow_ports: rules.allow_ports.clone(),
            allow_cidr: rules.allow_cidr.clone(),
            allow_private: rules.allow_private.clone(),
            resolve: rules.resolve.clone(),
        },
        limits: Limits::default(),
    }
}

/// Builds the egress proxy: decisions go to the audit log and to `events`; startup warnings (an
/// expired rule) are events and `config.warning` records.
///
/// The returned [`EgressAudit`] holds decisions until it is flushed: call
/// [`EgressAudit::flush`] at least every second while the proxy serves (e.g. with
/// [`flush_every_second`]) and once at the end.
pub fn build_egress(
    rules: &NetworkRules,
    recorder: &Recorder,
    events: &Arc<dyn EventSink>,
) -> Result<(Egress, Arc<EgressAudit>), SessionError> {
    let sink = Arc::new(EgressAudit::new(recorder.clone(), events.clone()));
    let (egress, warnings) = Egress::new(egress_config(rules), sink.clone()).map_err(SessionError::EgressRules)?;
    for w in warnings {
        events.event(&SessionEvent::Warning { message: w.message.clone() });
        recorder.record(
            "config.warning",
            fields([("file", json!("network rules")), ("key", json!("network.allow")), ("message", json!(w.message))]),
        );
    }
    Ok((egress, sink))
}

/// Flushes `audit` every second, on the runtime this is spawned on, until the runtime stops.
pub async fn flush_every_second(audit: Arc<EgressAudit>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        audit.flush();
    }
}

/// The proxies of one run, and the runtime serving them once the listeners are there.
pub(crate) struct Proxies {
    pub(crate) egress: Option<(Egress, Arc<EgressAudit>)>,
    pub(crate) credential: Option<CredProxy>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxies {
    pub(crate) fn new(egress: Option<(Egress, Arc<EgressAudit>)>, credential: Option<CredProxy>) -> Proxies {
        Proxies { egress, credential, runtime: None }
    }

    /// Serves every listener, or refuses naming the layer that cannot be served.
    pub(crate) fn serve(
        &mut self,
        listeners: Vec<(ListenerKind, OwnedFd)>,
        events: &Arc<dyn EventSink>,
    ) -> Result<(), Refusal> {
        let Some(first) = listeners.first().map(|(k, _)| *k) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("warden-proxy")
            .enable_all()
            .build()
            .map_err(|e| Refusal {
                layer: first.layer().to_owned(),
                detail: format!("cannot start the proxies' runtime: {e}"),
            })?;
        let served = {
            let _entered = rt.enter();
            self.spawn_servers(&rt, listeners, events)
        };
        match served {
            Ok(()) => {
                self.runtime = Some(rt);
                Ok(())
            }
            Err(refusal) => {
                rt.shutdown_background();
                Err(refusal)
            }
        }
    }

    /// Spawns one accept loop per listener on `rt` (entered by the caller).
    fn spawn_servers(
        &self,
        rt: &tokio::runtime::Runtime,
        listeners: Vec<(ListenerKind, OwnedFd)>,
        events: &Arc<dyn EventSink>,
    ) -> Result<(), Refusal> {
        let refuse = |kind: ListenerKind, detail: String| Refusal { layer: kind.layer().to_owned(), detail };
        for (kind, fd) in listeners {
            let l = std::net::TcpListener::from(fd);
            let listener = l
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
                .map_err(|e| refuse(kind, format!("cannot serve the listener PID 1 opened: {e}")))?;
            let stopped = {
                let events = events.clone();
                move |what: &str, e: std::io::Error| {
                    events.event(&SessionEvent::Warning { message: format!("{what} stopped: {e}") })
                }
            };
            match kind {
                ListenerKind::EgressHttp | ListenerKind::EgressSocks5 => {
                    let Some(egress) = self.egress.as_ref().map(|(e, _)| e.clone()) else {
                        return Err(refuse(kind, "no egress proxy was built for this session".into()));
                    };
                    rt.spawn(async move {
                        let r = if kind == ListenerKind::EgressHttp {
                            egress.serve_http(listener).await
                        } else {
                            egress.serve_socks5(listener).await
                        };
                        if let Err(e) = r {
                            stopped("egress proxy", e);
                        }
                    });
                }
                ListenerKind::Credential => {
                    let Some(proxy) = self.credential.clone() else {
                        return Err(refuse(kind, "no credential proxy was built for this session".into()));
                    };
                    rt.spawn(async move {
                        if let Err(e) = proxy.serve(listener).await {
                            stopped("credential proxy", e);
                        }
                    });
                }
            }
        }
        if let Some((_, audit)) = &self.egress {
            rt.spawn(flush_every_second(audit.clone()));
        }
        Ok(())
    }

    /// Denied connections per host, most first.
    pub(crate) fn denied_summary(&self) -> Vec<(String, u64)> {
        self.egress.as_ref().map(|(e, _)| e.denied_summary()).unwrap_or_default()
    }

    /// Stops serving (connections in flight are dropped: the sandbox is gone) and writes the
    /// decisions not yet recorded.
    pub(crate) fn shutdown(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
        if let Some((_, audit)) = &self.egress {
            audit.flush();
        }
        // The credential proxy holds the key: drop it now, not whenever the session is dropped.
        self.credential = None;
    }
}
