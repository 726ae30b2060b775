//! `warden egress`: the egress proxy of `warden run --net allowlist`, standalone.

use std::sync::Arc;

use serde_json::json;
use warden_session::{fields, EventSink, Recorder};

use crate::args::EgressArgs;
use crate::ui::{denied_line, fail, StderrEvents};

pub fn standalone(args: EgressArgs) -> i32 {
    let (rules, audit_settings) = match crate::config::egress_settings(&args) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let events: Arc<dyn EventSink> = Arc::new(StderrEvents { verbose: args.verbose });
    let audit = match Recorder::open(&audit_settings, events.clone()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (egress, decisions) = match warden_session::build_egress(&rules, &audit, &events) {
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
        tokio::spawn(warden_session::flush_every_second(decisions.clone()));
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
    decisions.flush();
    if let Some(line) = denied_line(&egress.denied_summary()) {
        eprintln!("{line}");
    }
    code
}
