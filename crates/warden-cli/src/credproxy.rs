//! `warden credproxy`: the credential-injecting proxy on its own.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_credproxy::{AuthScheme, CredConfig, CredProxy, Route};
use warden_session::{fields, CredproxyAudit, Recorder};

use crate::args::CredproxyArgs;
use crate::ui::{fail, StderrEvents};

fn config(args: &CredproxyArgs) -> Result<CredConfig, String> {
    let mut cfg = CredConfig {
        upstream: args.upstream_url.parse().map_err(|e| format!("--upstream-url {:?}: {e}", args.upstream_url))?,
        auth_header: args
            .auth_header
            .parse()
            .map_err(|_| format!("--auth-header {:?}: not a valid header name", args.auth_header))?,
        auth_scheme: args.auth_scheme.parse::<AuthScheme>().map_err(|e| format!("--auth-scheme: {e}"))?,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        max_body_bytes: args.max_body_bytes,
        dump_dir: args.dump_dir.clone(),
        http_shutdown: args.http_shutdown,
        ..CredConfig::default()
    };
    if let Some(dir) = &args.dump_dir {
        // Dumps hold request and response bodies: a private directory, created up front so that
        // a dump that cannot be written is an error now, not a silent loss later.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("--dump-dir {}: {e}", dir.display()))?;
    }
    if !args.route.is_empty() {
        cfg.routes = args
            .route
            .iter()
            .map(|r| r.parse::<Route>().map_err(|e| format!("--route {r:?}: {e}")))
            .collect::<Result<_, _>>()?;
    }
    Ok(cfg)
}

pub fn standalone(args: CredproxyArgs) -> i32 {
    // Before anything else, and before any thread: no core dumps, not ptrace-able by the same
    // user, no LD_* influence on what this process runs.
    if let Err(e) = warden_credproxy::harden_process() {
        return fail(e);
    }
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let key = match warden_credproxy::read_key_from_fd(std::io::stdin().as_fd()) {
        Ok(k) => k,
        Err(e) => return fail(format!("reading the API key from stdin: {e}")),
    };
    let audit_settings = match crate::config::audit_settings(&args.audit) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let audit = match Recorder::open(&audit_settings, Arc::new(StderrEvents { verbose: false })) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let proxy = match CredProxy::new(cfg, key, Arc::new(CredproxyAudit(audit.clone()))) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async {
        let serving = match args.listen.as_deref() {
            Some(spec) if spec.starts_with("unix:") => {
                let path = &spec["unix:".len()..];
                let l = match tokio::net::UnixListener::bind(path) {
                    Ok(l) => l,
                    Err(e) => return fail(format!("cannot listen on {spec}: {e}")),
                };
                eprintln!("warden: credential proxy listening on {spec}");
                audit.record("credproxy.start", fields([("listen", json!(spec))]));
                tokio::select! {
                    r = proxy.serve_unix(l) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
            other => {
                let addr = other.map(str::to_owned).unwrap_or_else(|| format!("127.0.0.1:{}", args.port.unwrap_or(0)));
                let l = match tokio::net::TcpListener::bind(&addr).await {
                    Ok(l) => l,
                    Err(e) => return fail(format!("cannot listen on {addr}: {e}")),
                };
                let local = match l.local_addr() {
                    Ok(a) => a,
                    Err(e) => return fail(format!("cannot read the listening address: {e}")),
                };
                if let Some(info) = &args.server_info {
                    if let Err(e) = warden_credproxy::write_server_info(info, local.port()) {
                        return fail(format!("cannot write {}: {e}", info.display()));
                    }
                }
                eprintln!("warden: credential proxy listening on {local}");
                audit.record("credproxy.start", fields([("listen", json!(local.to_string()))]));
                tokio::select! {
                    r = proxy.serve(l) => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            }
        };
        match serving {
            Ok(()) => 0,
            Err(e) => fail(format!("credential proxy stopped: {e}")),
        }
    })
}
