//! `warden serve`: flags, environment and `[serve]` into settings, the keys read before any
//! thread exists, startup warnings, then the gateway until SIGTERM or Ctrl-C (drain, then the
//! workers stop and their homes are removed).

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use warden_gateway::keys::{ClientKeys, MIN_REMOTE_KEY_LEN};
use warden_gateway::settings::{CredentialChoice, Layer, ServeSettings};
use warden_gateway::{Gateway, GatewaySettings};
use warden_policy::{HostContext, PolicyOptions, WardenConfig};
use warden_session::{fields, CredentialSource, Recorder};

use crate::args::ServeArgs;
use crate::ui::{fail, StderrEvents};

/// Connections the kernel queues before serve accepts them (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

fn flag_layer(a: &ServeArgs) -> Layer {
    let mut l = Layer::default();
    l.opt("listen", a.listen.as_ref(), "--listen");
    l.list("models", &a.models, "--model");
    l.opt("workers", a.workers, "--workers");
    l.opt("worker_concurrency", a.worker_concurrency, "--worker-concurrency");
    l.opt("codex_bin", a.codex_bin.as_ref().map(|p| p.display()), "--codex-bin");
    l.opt("credential_upstream", a.credential_upstream.as_ref(), "--credential-upstream");
    l.opt("credential_env", a.credential_env.as_ref(), "--credential-env");
    l.opt("credential_file", a.credential_file.as_ref().map(|p| p.display()), "--credential-file");
    l.opt("codex_auth", a.codex_auth.as_ref().map(|p| p.display()), "--codex-auth");
    l.opt("api_key_file", a.api_key_file.as_ref().map(|p| p.display()), "--api-key-file");
    l.flag("no_auth", a.no_auth, "--no-auth");
    l.opt("profile", a.profile.as_ref(), "--profile");
    l.opt("sandbox", a.sandbox.as_ref(), "--sandbox");
    l.opt("approval_policy", a.approval_policy.as_ref(), "--approval-policy");
    l.opt("workdir", a.workdir.as_ref().map(|p| p.display()), "--workdir");
    l.opt("worker_home", a.worker_home.as_ref().map(|p| p.display()), "--worker-home");
    l.list("allow_domains", &a.allow_domain, "--allow-domain");
    l.flag("allow_trusted", a.allow_trusted, "--allow-trusted");
    l.list("cors_origins", &a.cors_origin, "--cors-origin");
    l
}

fn is_loopback(a: &SocketAddr) -> bool {
    a.ip().is_loopback()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// The first of `$XDG_STATE_HOME/warden-serve`, `~/.local/state/warden-serve`,
/// `/var/tmp/warden-serve-UID` that lies outside `TMPDIR`, with a directory of this process.
fn default_worker_home(host: &HostContext) -> PathBuf {
    let env = |k: &str| host.env.iter().find(|(n, v)| n == k && !v.is_empty()).map(|(_, v)| PathBuf::from(v));
    let tmp = env("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(65534);
    let candidates = [
        env("XDG_STATE_HOME").map(|d| d.join("warden-serve")),
        env("HOME").map(|h| h.join(".local/state/warden-serve")),
        Some(PathBuf::from(format!("/var/tmp/warden-serve-{uid}"))),
    ];
    let base = candidates
        .into_iter()
        .flatten()
        .filter(|c| c.is_absolute() && !c.starts_with(&tmp))
        .find(|c| std::fs::create_dir_all(c).is_ok())
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/warden-serve-{uid}")));
    base.join(format!("serve-{}", std::process::id()))
}

fn make_private_dir(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| format!("cannot create the workers' home directory {}: {e}", p.display()))
}

/// Removes the workers' directory of this process when serve ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn serve(args: ServeArgs) -> i32 {
    match serve_inner(args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn serve_inner(args: ServeArgs) -> Result<(), String> {
    let mut host = crate::config::host()?;
    let env: Vec<(String, String)> = host.env.clone();
    // [serve] and [[agent.rule]] of the same file `warden run` reads.
    let config_path =
        args.config.clone().or_else(|| warden_policy::resolve::default_config_path(&host).filter(|p| p.exists()));
    let config = match &config_path {
        Some(p) => Some(WardenConfig::load(p, host.home.as_deref()).map_err(|e| e.to_string())?.0),
        None => None,
    };
    let flags = flag_layer(&args);
    let env_layer = Layer::from_env(&env);
    let cfg_layer = config.as_ref().map(|c| Layer::from_config(&c.serve)).unwrap_or_default();
    let s = ServeSettings::resolve(&[&flags, &env_layer, &cfg_layer], &env)?;

    // Keys first, while this process has one thread: the environment is wiped in place.
    let mut key_pairs: Vec<(String, String)> = Vec::new();
    if let Some(f) = &s.api_key_file {
        key_pairs.extend(ClientKeys::read_file(f)?);
    }
    if let Ok(k) = std::env::var("PROXY_API_KEY") {
        warden_credproxy::scrub_env_var("PROXY_API_KEY");
        if !k.trim().is_empty() {
            key_pairs.push(("default".into(), k.trim().to_owned()));
        }
    }
    let model_key = match &s.credential {
        Some(CredentialChoice::Env(var)) => Some(
            warden_session::load_credential(&CredentialSource::Env { var: var.clone() }).map_err(|e| e.to_string())?,
        ),
        Some(CredentialChoice::File(path)) => Some(
            warden_session::load_credential(&CredentialSource::File { path: path.clone() })
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // The snapshot of the environment no longer holds either key.
    let secret_vars: Vec<String> = match &s.credential {
        Some(CredentialChoice::Env(var)) => vec![var.clone(), "PROXY_API_KEY".into()],
        _ => vec!["PROXY_API_KEY".into()],
    };
    host.env.retain(|(k, _)| !secret_vars.contains(k));
    let keys = if s.no_auth {
        if !key_pairs.is_empty() {
            return Err("--no-auth and client keys (--api-key-file / PROXY_API_KEY): give one".into());
        }
        if !is_loopback(&s.listen) {
            return Err(format!(
                "--no-auth on {}: serving without client keys is allowed on loopback addresses only (127.0.0.1, ::1); pass --api-key-file FILE or PROXY_API_KEY",
                s.listen
            ));
        }
        None
    } else {
        if key_pairs.is_empty() {
            return Err(format!(
                "no client key: pass --api-key-file FILE (\"name:key\" lines) or set PROXY_API_KEY; or --no-auth to serve {} without keys (loopback only)",
                s.listen
            ));
        }
        let keys = ClientKeys::new(key_pairs, s.key_concurrency, s.key_rate_per_minute)?;
        if !is_loopback(&s.listen) {
            let short = keys.shorter_than(MIN_REMOTE_KEY_LEN);
            if !short.is_empty() {
                return Err(format!(
                    "{} is not a loopback address: every client key needs at least {MIN_REMOTE_KEY_LEN} characters; too short: {}",
                    s.listen,
                    short.join(", ")
                ));
            }
        }
        Some(keys)
    };

    // The workers' policy: the caller's audit flags and config; the key files hidden from them.
    let mut base = PolicyOptions { config: config_path.clone(), ..args.audit.options() };
    if let Some(CredentialChoice::File(p)) = &s.credential {
        base.credential_file = Some(p.clone());
    }
    base.deny_read.extend(s.api_key_file.iter().cloned());
    base.read_only.extend(s.codex_mount.iter().cloned());
    let audit = warden_policy::resolve(&base, &host).map_err(|e| e.to_string())?.policy.audit;
    let recorder = Recorder::open(&audit, Arc::new(StderrEvents { verbose: false })).map_err(|e| e.to_string())?;

    let home_base = match &s.worker_home {
        Some(p) => std::path::absolute(p)
            .map_err(|e| format!("--worker-home {}: {e}", p.display()))?
            .join(format!("serve-{}", std::process::id())),
        None => default_worker_home(&host),
    };
    make_private_dir(&home_base)?;
    let _remove_homes = RemoveOnDrop(home_base.clone());
    let warden = std::env::current_exe().map_err(|e| format!("cannot find warden's own binary: {e}"))?;
    let rules = config.map(|c| c.agent_rules).unwrap_or_default();
    let cwd = s.workdir.clone().unwrap_or_else(|| host.cwd.clone());
    let worker_host = HostContext { cwd: cwd.clone(), ..host.clone() };

    // Bound now (a taken port is an error before any worker starts), listening once the runtime
    // runs, with a backlog for bursts of clients (std's listen gives 128: SYNs past it are
    // dropped and retried a second later).
    let listen_err = |e: std::io::Error| format!("cannot listen on {}: {e}", s.listen);
    let socket = if s.listen.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(listen_err)?;
    socket.set_reuseaddr(true).map_err(listen_err)?;
    socket.bind(s.listen).map_err(listen_err)?;
    let local = socket.local_addr().map_err(listen_err)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let model_key = model_key.map(Arc::new);
        let workers = warden_gateway::workers::start(
            &s,
            &warden,
            &worker_host,
            model_key,
            base,
            rules,
            recorder.clone(),
            home_base.clone(),
        )?;
        let mut warnings = workers.warnings.clone();
        if s.sandbox != "read-only" || !s.allow_domains.is_empty() {
            warnings.push(format!(
                "the workers' sandbox is weakened: {} ({}){}",
                s.sandbox,
                s.sandbox_source,
                if s.allow_domains.is_empty() {
                    String::new()
                } else {
                    format!(", domains allowed: {}", s.allow_domains.join(", "))
                }
            ));
        }
        if running_as_root() {
            warnings.push(
                "warden serve runs as root: run it as an unprivileged user (the sandbox needs no privilege)".into(),
            );
        }
        if !is_loopback(&local) {
            warnings.push(format!(
                "listening on {local}, which is not a loopback address: every client with a key can run agent turns"
            ));
        }
        if keys.is_none() {
            warnings.push(format!("--no-auth: any local process can use http://{local}/v1 without a key"));
        }
        for w in &warnings {
            eprintln!("warden: warning: {w}");
            recorder.record("serve.warning", fields([("message", json!(w))]));
        }
        let credential = match (&s.credential, &s.codex_auth) {
            (Some(_), _) => {
                "warden: the credential proxy in each worker's sandbox injects the key; workers hold a dummy".to_owned()
            }
            (None, Some(f)) => format!("ChatGPT login {} mounted read-only into each worker", f.display()),
            (None, None) => "none".to_owned(),
        };
        let gs = GatewaySettings {
            models: s.models.clone(),
            max_body_bytes: s.max_body_bytes,
            max_streams: s.max_streams,
            timeout: s.timeout,
            request_timeout: s.request_timeout,
            idle_timeout: s.idle_timeout,
            sse_keepalive: s.sse_keepalive,
            cors_origins: s.cors_origins.clone(),
            thread_ttl: s.thread_ttl,
            max_threads: s.max_threads,
            shutdown_grace: s.shutdown_grace,
            cwd,
            approval: workers.approval,
            profile: workers.profile.clone(),
            sandbox_mode: workers.sandbox_mode.clone(),
            credential,
        };
        let auth = keys.is_some();
        let gateway = Gateway::new(gs, workers.pool, keys, recorder.clone());
        let listener = socket.listen(LISTEN_BACKLOG).map_err(|e| format!("cannot listen on {local}: {e}"))?;
        recorder.record(
            "serve.start",
            fields([
                ("listen", json!(local.to_string())),
                ("workers", json!(s.workers)),
                ("worker_concurrency", json!(s.worker_concurrency)),
                ("profile", json!(workers.profile)),
                ("sandbox_mode", json!(workers.sandbox_mode)),
                ("models", json!(s.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>())),
                ("auth", json!(auth)),
            ]),
        );
        eprintln!(
            "warden: serving http://{local}/v1 ({} workers x {} turns + 1 spare, profile {}, models {})",
            s.workers,
            s.worker_concurrency,
            workers.profile,
            s.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
        );
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("warden: draining (up to {} ms), then stopping the workers", s.shutdown_grace.as_millis());
        };
        gateway.serve(listener, shutdown).await;
        eprintln!("warden: stopped");
        Ok::<(), String>(())
    })
}
