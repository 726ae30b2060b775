//! The egress proxy in `warden run --net allowlist` and as `warden egress`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::json;
use warden_egress::{Decision, DecisionSink, Egress, EgressConfig, Limits, RuleSpec, RulesConfig};
use warden_policy::NetworkRules;

use crate::args::EgressArgs;
use crate::audit::fields;
use crate::run::{fail, Recorder};

/// Every decision becomes an `egress.decision` audit record (and, with `-v`, a line on stderr).
pub struct AuditSink {
    pub audit: Recorder,
    pub verbose: bool,
}

impl DecisionSink for AuditSink {
    fn decision(&self, d: &Decision) {
        if self.verbose {
            let verdict = if d.allowed { "allow" } else { "deny" };
            let why = d.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            // \r: the terminal may be in raw mode while a pty is relayed.
            eprint!("warden: egress {verdict} {} {}:{}{why}\r\n", d.protocol, d.host, d.port);
        }
        self.audit.record(
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

/// The proxy's configuration from the policy's rules.
pub fn config(rules: &NetworkRules) -> EgressConfig {
    EgressConfig {
        rules: RulesConfig {
            allow: rules
                .allow
                .iter()
                .map(|r| RuleSpec { pattern: r.pattern.clone(), expires: r.expires.clone() })
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

/// Builds the proxy, printing and auditing startup warnings (expired rules).
pub fn build(rules: &NetworkRules, audit: &Recorder, verbose: bool) -> Result<Egress, String> {
    let sink = Arc::new(AuditSink { audit: audit.clone(), verbose });
    let (egress, warnings) = Egress::new(config(rules), sink).map_err(|e| format!("[network] rules: {e}"))?;
    for w in warnings {
        eprintln!("warden: warning: {}", w.message);
        audit.record(
            "config.warning",
            fields([("file", json!("network rules")), ("key", json!("network.allow")), ("message", json!(w.message))]),
        );
    }
    Ok(egress)
}

/// Collects the listeners PID 1 passes up and starts serving once both are there, on a tokio
/// runtime of its own thread (started only now: the sandbox was cloned while warden was still
/// single-threaded).
pub struct Server {
    egress: Egress,
    http: Option<OwnedFd>,
    socks: Option<OwnedFd>,
    started: bool,
}

impl Server {
    pub fn new(egress: Egress) -> Self {
        Server { egress, http: None, socks: None, started: false }
    }

    pub fn listener(&mut self, kind: &str, fd: OwnedFd) {
        match kind {
            "http" => self.http = Some(fd),
            "socks5" => self.socks = Some(fd),
            _ => return,
        }
        if self.started || self.http.is_none() || self.socks.is_none() {
            return;
        }
        if let (Some(http), Some(socks)) = (self.http.take(), self.socks.take()) {
            self.started = true;
            let egress = self.egress.clone();
            std::thread::Builder::new()
                .name("warden-egress".into())
                .spawn(move || serve(egress, std::net::TcpListener::from(http), std::net::TcpListener::from(socks)))
                .map(drop)
                .unwrap_or_else(|e| eprintln!("warden: error: cannot start the egress proxy: {e}"));
        }
    }

    /// The one-line summary of denials, if any.
    pub fn summary(&self) -> Option<String> {
        summary_line(&self.egress)
    }

    pub fn denied_total(&self) -> u64 {
        self.egress.denied_summary().iter().map(|(_, n)| n).sum()
    }
}

fn summary_line(egress: &Egress) -> Option<String> {
    let denied = egress.denied_summary();
    if denied.is_empty() {
        return None;
    }
    let total: u64 = denied.iter().map(|(_, n)| n).sum();
    let hosts: Vec<String> = denied.iter().map(|(h, n)| format!("{h} ({n})")).collect();
    Some(format!("warden: denied {total} connection{}: {}", if total == 1 { "" } else { "s" }, hosts.join(", ")))
}

fn serve(egress: Egress, http: std::net::TcpListener, socks: std::net::TcpListener) {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("warden: error: cannot start the egress proxy runtime: {e}"),
    };
    rt.block_on(async move {
        let listen =
            |l: std::net::TcpListener| l.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(l));
        let (http, socks) = match (listen(http), listen(socks)) {
            (Ok(h), Ok(s)) => (h, s),
            (Err(e), _) | (_, Err(e)) => return eprintln!("warden: error: egress proxy listeners: {e}"),
        };
        let (a, b) = tokio::join!(egress.serve_http(http), egress.serve_socks5(socks));
        for r in [a, b] {
            if let Err(e) = r {
                eprintln!("warden: error: egress proxy stopped: {e}");
            }
        }
    });
}

/// `warden egress`: the same proxy, standalone.
pub fn standalone(args: EgressArgs) -> i32 {
    let prepared = match crate::run::prepare_for_egress(&args) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let audit = match crate::audit::open_log(&prepared.audit) {
        Ok(log) => Recorder::new(log),
        Err(e) => return fail(e),
    };
    let egress = match build(&prepared.network, &audit, args.verbose) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let code = rt.block_on(async {
        let http = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => return fail(format!("cannot listen on {}: {e}", args.listen)),
        };
        let socks = match &args.socks_listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
            },
            None => None,
        };
        let local = http.local_addr().map(|a| a.to_string()).unwrap_or_default();
        eprintln!("warden: egress proxy listening on {local} (HTTP and CONNECT)");
        if let Some(s) = &socks {
            eprintln!("warden: SOCKS5 on {}", s.local_addr().map(|a| a.to_string()).unwrap_or_default());
        }
        audit.record("egress.start", fields([("listen", json!(local))]));
        let serve_socks = async {
            match socks {
                Some(s) => egress.serve_socks5(s).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = egress.serve_http(http) => r,
            r = serve_socks => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
        match result {
            Ok(()) => 0,
            Err(e) => fail(format!("egress proxy stopped: {e}")),
        }
    });
    if let Some(line) = summary_line(&egress) {
        eprintln!("{line}");
    }
    code
}
