//! Benchmark driver for `bench/credproxy.sh`: time to first SSE byte and streamed throughput, direct
//! vs through warden's credential proxy vs (when given) Codex's `codex responses-api-proxy`, every
//! party in its own process, all on 127.0.0.1.
//!
//! Modes:
//! - `credproxy_bench [--codex PATH] [--mb N] [--ttfb-requests N]`: runs everything, prints a table;
//! - `credproxy_bench upstream [--bytes N]`: the fake Responses upstream (SSE, or N streamed bytes per
//!   `POST`); prints its port, runs until killed;
//! - `credproxy_bench proxy --upstream URL --server-info FILE`: warden's proxy, key on stdin (what
//!   `warden credproxy` does).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const KEY: &str = "sk-bench-0123456789abcdef";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("upstream") => upstream(flag("--bytes").map(|b| b.parse().expect("--bytes N"))),
        Some("proxy") => {
            proxy(&flag("--upstream").expect("--upstream URL"), &flag("--server-info").expect("--server-info"))
        }
        _ => run(
            flag("--codex").map(PathBuf::from),
            flag("--mb").map(|m| m.parse().expect("--mb N")).unwrap_or(100),
            flag("--ttfb-requests").map(|m| m.parse().expect("--ttfb-requests N")).unwrap_or(300),
        ),
    }
}

fn upstream(bytes: Option<u64>) {
    let up = warden_testkit::fake_upstream::FakeUpstream::start_with_threads(2);
    up.stream_bytes(bytes);
    println!("{}", up.addr().port());
    std::io::stdout().flush().expect("flush");
    // Until the driver kills us.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn proxy(upstream: &str, info: &str) {
    warden_credproxy::harden_process().expect("harden");
    let key = warden_credproxy::read_key_from_fd(std::os::fd::AsFd::as_fd(&std::io::stdin())).expect("key on stdin");
    let cfg = warden_credproxy::CredConfig { upstream: upstream.parse().expect("url"), ..Default::default() };
    let p = warden_credproxy::CredProxy::new(cfg, key, Arc::new(warden_credproxy::NullSink)).expect("proxy");
    // WARDEN_BENCH_PROXY_THREADS=N: runtime workers of the proxy (default: one per core).
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("WARDEN_BENCH_PROXY_THREADS").ok().and_then(|n| n.parse().ok()) {
        b.worker_threads(n);
    }
    let rt = b.enable_all().build().expect("runtime");
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        warden_credproxy::write_server_info(Path::new(info), l.local_addr().expect("addr").port()).expect("info");
        p.serve(l).await.expect("serve");
    });
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_upstream(bytes: Option<u64>) -> (Kill, u16) {
    let exe = std::env::current_exe().expect("exe");
    let mut c = Command::new(exe);
    c.arg("upstream").stdout(Stdio::piped());
    if let Some(b) = bytes {
        c.args(["--bytes", &b.to_string()]);
    }
    let mut child = c.spawn().expect("spawn upstream");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
    (Kill(child), line.trim().parse().expect("port number"))
}

fn wait_info(path: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(s.trim()) {
                if let Some(p) = v["port"].as_u64() {
                    return p as u16;
                }
            }
        }
        assert!(Instant::now() < deadline, "no server info in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a proxy (`None`: warden's, `Some(codex)`: Codex's) in front of `upstream_port`.
fn spawn_proxy(codex: Option<&Path>, upstream_port: u16, dir: &Path, tag: &str) -> (Kill, u16) {
    let info = dir.join(format!("{tag}.json"));
    let url = format!("http://127.0.0.1:{upstream_port}/v1/responses");
    let mut c = match codex {
        None => {
            let mut c = Command::new(std::env::current_exe().expect("exe"));
            c.args(["proxy", "--upstream", &url, "--server-info"]).arg(&info);
            c
        }
        Some(codex) => {
            let mut c = Command::new(codex);
            c.args(["responses-api-proxy", "--upstream-url", &url, "--server-info"]).arg(&info);
            c.env("CODEX_HOME", dir);
            c
        }
    };
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn proxy");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("{KEY}\n").as_bytes()).expect("write key");
    }
    let port = wait_info(&info);
    (Kill(child), port)
}

/// One POST on a fresh connection; returns (time to first body byte, body bytes, total time).
async fn one(port: u16) -> (Duration, u64, Duration) {
    let t0 = Instant::now();
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = s.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/v1/responses")
        .header("host", format!("127.0.0.1:{port}"))
        .header("authorization", "Bearer warden-proxied")
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"model":"bench","stream":true,"input":[]}"#)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "status from port {port}");
    let mut body = resp.into_body();
    let mut first = None;
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.expect("frame").into_data() {
            if first.is_none() && !d.is_empty() {
                first = Some(t0.elapsed());
            }
            n += d.len() as u64;
        }
    }
    (first.unwrap_or_else(|| t0.elapsed()), n, t0.elapsed())
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// (p50 ms, p99 ms) of time to first byte at `conc` with `total` requests.
async fn ttfb(port: u16, conc: usize, total: usize) -> (f64, f64) {
    for _ in 0..20 {
        one(port).await;
    }
    let per = total.div_ceil(conc);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::with_capacity(per);
            for _ in 0..per {
                v.push(one(port).await.0);
            }
            v
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (pct(&mut all, 0.5), pct(&mut all, 0.99))
}

/// Aggregate MB/s of `conc` concurrent downloads of the streamed body.
async fn throughput(port: u16, conc: usize) -> f64 {
    one(port).await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..conc).map(|_| tokio::spawn(one(port))).collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.expect("worker").1;
    }
    bytes as f64 / 1e6 / t0.elapsed().as_secs_f64()
}

struct Row {
    name: &'static str,
    t1: (f64, f64),
    t64: (f64, f64),
    mb1: f64,
    mb64: f64,
}

fn run(codex: Option<PathBuf>, mb: u64, ttfb_requests: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sse_up, sse_port) = spawn_upstream(None);
    let (_bytes_up, bytes_port) = spawn_upstream(Some(mb * 1_000_000));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut targets: Vec<(&'static str, Option<PathBuf>, bool)> = vec![("direct", None, false), ("warden", None, true)];
    if let Some(c) = codex {
        targets.push(("codex", Some(c), true));
    }
    let mut rows = Vec::new();
    for (name, codex, proxied) in targets {
        let (_p1, _p2, sse, bytes) = if proxied {
            let (a, ap) = spawn_proxy(codex.as_deref(), sse_port, dir.path(), &format!("{name}-sse"));
            let (b, bp) = spawn_proxy(codex.as_deref(), bytes_port, dir.path(), &format!("{name}-bytes"));
            (Some(a), Some(b), ap, bp)
        } else {
            (None, None, sse_port, bytes_port)
        };
        eprintln!("measuring {name} ...");
        let row = rt.block_on(async {
            let t1 = ttfb(sse, 1, ttfb_requests).await;
            let t64 = ttfb(sse, 64, ttfb_requests.max(640)).await;
            let mb1 = throughput(bytes, 1).await;
            let mb64 = throughput(bytes, 64).await;
            Row { name, t1, t64, mb1, mb64 }
        });
        rows.push(row);
    }
    println!(
        "| target | TTFB p50 c1 (ms) | TTFB p99 c1 (ms) | TTFB p50 c64 (ms) | TTFB p99 c64 (ms) | {mb} MB c1 (MB/s) | {mb} MB x64 (MB/s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} |",
            r.name, r.t1.0, r.t1.1, r.t64.0, r.t64.1, r.mb1, r.mb64
        );
    }
    let d = &rows[0];
    for r in &rows[1..] {
        println!(
            "{}: added TTFB p50 c1 {:+.3} ms, c64 {:+.3} ms; throughput c1 {:.2}x, c64 {:.2}x of direct",
            r.name,
            r.t1.0 - d.t1.0,
            r.t64.0 - d.t64.0,
            r.mb1 / d.mb1,
            r.mb64 / d.mb64
        );
    }
}
