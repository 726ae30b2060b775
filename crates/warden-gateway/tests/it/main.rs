//! warden-gateway's integration tests: the gateway in-process over a pool of the testkit's
//! fake workers (plain child processes: the sandboxed path is tested through `warden serve` in
//! warden-cli's tests), driven over real TCP on 127.0.0.1 with a minimal HTTP/1.1 client.

mod api;
mod errors;
mod faults;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden_agent::approval::{ApprovalMode, ApprovalPolicy};
use warden_agent::pool::{Pool, PoolSettings};
use warden_agent::rpc::ConnectionOptions;
use warden_agent::supervisor::{CommandLauncher, Launcher, SupervisorSettings};
use warden_gateway::keys::ClientKeys;
use warden_gateway::settings::ModelEntry;
use warden_gateway::{Gateway, GatewaySettings};
use warden_session::{NullEvents, Recorder};

pub const KEY: &str = "sk-client-alice-0123456789abcdef0123456789";

/// The gateway's settings for tests: short timeouts.
pub fn settings() -> GatewaySettings {
    GatewaySettings {
        models: vec![
            ModelEntry { id: "codex".into(), codex_model: None, effort: None },
            ModelEntry { id: "fast".into(), codex_model: Some("fake-mini".into()), effort: Some("low".into()) },
        ],
        max_body_bytes: 64 * 1024,
        max_streams: 64,
        timeout: Duration::from_secs(20),
        request_timeout: Duration::from_secs(15),
        idle_timeout: Duration::from_secs(5),
        sse_keepalive: Duration::from_secs(5),
        cors_origins: vec![],
        thread_ttl: Duration::from_secs(600),
        max_threads: 100,
        shutdown_grace: Duration::from_secs(2),
        cwd: std::env::temp_dir(),
        approval: ApprovalMode::Never,
        profile: "offline".into(),
        sandbox_mode: "read-only".into(),
        credential: "test".into(),
    }
}

/// The pool's shape for tests.
pub fn pool_settings(workers: usize, per_worker: usize) -> PoolSettings {
    PoolSettings {
        workers,
        per_worker,
        queue: 8,
        queue_timeout: Duration::from_secs(5),
        supervisor: SupervisorSettings {
            startup_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(1),
            connection: ConnectionOptions { request_timeout: Duration::from_secs(5), ..ConnectionOptions::default() },
            ..SupervisorSettings::default()
        },
    }
}

/// A pool of fake workers started with `args` (every worker, the spare too).
pub fn fake_pool(args: &[&str], ps: PoolSettings) -> Pool {
    let mut argv = vec![warden_testkit::fake_worker_bin().display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let policy = Arc::new(ApprovalPolicy::new(ApprovalMode::Never, vec![], vec![], Arc::new(|_: &_| {})));
    Pool::start(ps, move |_| Arc::new(CommandLauncher { argv: argv.clone(), env: vec![] }) as Arc<dyn Launcher>, policy)
}

/// A running gateway.
pub struct Server {
    pub addr: SocketAddr,
    pub gateway: Gateway,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    pub audit: PathBuf,
}

impl Server {
    /// Serves `pool` with `settings`, keys `keys` (`None`: no auth), an audit log in a temp dir.
    pub async fn start(settings: GatewaySettings, pool: Pool, keys: Option<ClientKeys>) -> Server {
        let dir = tempfile::Builder::new().prefix("gw").tempdir_in(scratch_root()).expect("tempdir");
        let audit = dir.path().join("audit.jsonl");
        let audit_settings = warden_policy::AuditSettings {
            enabled: true,
            path: Some(audit.clone()),
            fsync: "never".into(),
            max_bytes: None,
            keep: 1,
            key_file: None,
            forward: false,
            run_budget: warden_policy::policy::DEFAULT_RUN_BUDGET,
        };
        let recorder = Recorder::open(&audit_settings, Arc::new(NullEvents)).expect("audit log");
        let gateway = Gateway::new(settings, pool, keys, recorder);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gw = gateway.clone();
        let task = tokio::spawn(async move {
            gw.serve(listener, async {
                let _ = stopped.await;
            })
            .await
        });
        let s = Server { addr, gateway, stop: Some(stop), task: Some(task), _dir: dir, audit };
        s.wait_ready().await;
        s
    }

    /// Until every worker is ready (10 s).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.gateway.pool().supervisors().iter().all(|s| s.current().is_some()) {
            if tokio::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops serving (drain, then the pool), waits, and returns the audit log.
    pub async fn stop(mut self) -> String {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), t).await.expect("serve ends after shutdown").expect("join");
        }
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }
}

/// Where temp dirs go (a directory `nobody` can write when the suite runs unprivileged).
pub fn scratch_root() -> PathBuf {
    std::env::var_os("WARDEN_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// SSE frames: (event name, data) for every frame with data.
    pub fn sse(&self) -> Vec<(Option<String>, String)> {
        self.text()
            .split("\n\n")
            .filter_map(|frame| {
                let mut event = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(d.to_owned());
                    }
                }
                data.map(|d| (event, d))
            })
            .collect()
    }

    /// The SSE data frames as JSON (`[DONE]` left out).
    pub fn sse_json(&self) -> Vec<Value> {
        self.sse()
            .into_iter()
            .filter(|(_, d)| d != "[DONE]")
            .map(|(_, d)| serde_json::from_str(&d).expect("JSON"))
            .collect()
    }

    /// The envelope's `error.code`.
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    // Bounded: each pass consumes a chunk or stops.
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        b = &b[nl + 2..];
        if size == 0 || b.len() < size {
            out.extend_from_slice(&b[..size.min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or_default();
    }
    out
}

/// A raw request (`Connection: close`), read to the end within 30 s.
pub async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the response ends within 30 s")
        .expect("read");
    parse(&buf)
}

/// Parses a whole response.
pub fn parse(buf: &[u8]) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect();
    let raw_body = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(raw_body) } else { raw_body.to_vec() };
    Resp { status, headers, body }
}

/// `POST path` with a JSON body and the test key.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> Resp {
    raw(
        addr,
        "POST",
        path,
        &[("Authorization", &format!("Bearer {KEY}")), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// A one-message chat completion.
pub async fn chat(addr: SocketAddr, text: &str) -> Resp {
    post(
        addr,
        "/v1/chat/completions",
        &serde_json::json!({"model": "codex", "messages": [{"role": "user", "content": text}]}),
    )
    .await
}

/// A one-message streamed chat completion.
pub async fn chat_stream(addr: SocketAddr, text: &str) -> Resp {
    let body = serde_json::json!({"model": "codex", "stream": true, "messages": [{"role": "user", "content": text}]});
    post(addr, "/v1/chat/completions", &body).await
}

/// `GET path` with the test key.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    raw(addr, "GET", path, &[("Authorization", &format!("Bearer {KEY}"))], b"").await
}

/// The test keys: `alice` (KEY) and `bob`.
pub fn keys(concurrency: usize, rate: u32) -> ClientKeys {
    ClientKeys::new(
        vec![("alice".into(), KEY.into()), ("bob".into(), "sk-client-bob-0123456789abcdef0123456789ab".into())],
        concurrency,
        rate,
    )
    .expect("keys")
}

/// Until `pred` or `limit`.
pub async fn eventually(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pred()
}
