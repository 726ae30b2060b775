//! `warden credproxy`: the credential-injecting proxy on its own.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_credproxy::{AuthScheme, CredConfig, CredProxy, RequestRecord, RequestSink, Route};

use crate::args::CredproxyArgs;
use crate::audit::fields;
use crate::run::{fail, Recorder};

/// Every proxied request becomes a `credproxy.request` audit record (never a header value).
pub struct AuditSink(pub Recorder);

impl RequestSink for AuditSink {
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
    let audit_settings = match crate::run::audit_settings(&args.audit) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let audit = match crate::audit::open_log(&audit_settings) {
        Ok(log) => Recorder::new(log),
        Err(e) => return fail(e),
    };
    let proxy = match CredProxy::new(cfg, key, Arc::new(AuditSink(audit.clone()))) {
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

/// The credential proxy of `warden run --credential-*`, waiting for its listener.
pub struct SandboxProxy(CredProxy);

/// Builds the proxy (the key moves into it) for requests to `upstream` from inside the sandbox.
pub fn for_sandbox(
    upstream: &str,
    key: warden_credproxy::LockedSecret,
    audit: &Recorder,
) -> Result<SandboxProxy, String> {
    let cfg = CredConfig {
        upstream: upstream.parse().map_err(|e| format!("--credential-upstream {upstream:?}: {e}"))?,
        ..CredConfig::default()
    };
    CredProxy::new(cfg, key, Arc::new(AuditSink(audit.clone()))).map(SandboxProxy).map_err(|e| e.to_string())
}

impl SandboxProxy {
    /// Serves the listener PID 1 opened inside the sandbox, on a runtime thread of its own.
    pub fn start(self, fd: std::os::fd::OwnedFd) {
        let proxy = self.0;
        let spawned = std::thread::Builder::new().name("warden-credproxy".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return eprintln!("warden: error: cannot start the credential proxy runtime: {e}"),
            };
            rt.block_on(async move {
                let l = std::net::TcpListener::from(fd);
                let l = match l.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(l)) {
                    Ok(l) => l,
                    Err(e) => return eprintln!("warden: error: credential proxy listener: {e}"),
                };
                if let Err(e) = proxy.serve(l).await {
                    eprintln!("warden: error: credential proxy stopped: {e}");
                }
            });
        });
        if let Err(e) = spawned {
            eprintln!("warden: error: cannot start the credential proxy: {e}");
        }
    }
}
