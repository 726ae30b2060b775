//! Benchmark driver for `bench/credproxy.sh`: time to first SSE byte and streamed throughput, direct
//! vs through warden's credential proxy vs (when given) Codex's `codex responses-api-proxy`, every
//! party in its own process, all on 127.0.0.1.
//!
//! Modes:
//! - `credproxy_bench [--codex PATH] [--mb N] [--ttfb-requests N] [--rounds N] [--events N]
//!   [--pace-us N] [--only ttfb,mb,sse]`: runs everything `--rounds` times (default 3), the targets
//!   alternating within each round, and prints the medians, then `summary<TAB>measure<TAB>value<TAB>goal`
//!   lines (differences and ratios against direct are taken per round, then their median);
//! - `credproxy_bench sse-upstream`: the stamped SSE upstream of the per-event latency measure (see
//!   [`sse_upstream`]); prints its port, runs until killed;
//! - `credproxy_bench upstream [--bytes N]`: the fake Responses upstream (SSE, or N streamed bytes per
//!   `POST`); prints its port, runs until killed;
//! - `credproxy_bench proxy --upstream URL --server-info FILE`: warden's proxy, key on stdin (what
//!   `warden credproxy` does).
//!
//! The SSE per-event latency: the upstream writes `--events` events (default 10,000) `--pace-us` apart
//! (default 100 µs), each stamped with the wall clock just before its `write`; the driver takes the
//! wall clock when the frame holding the event arrives. One-way latency = arrival - stamp, per event.
//! A proxied stream and a direct one run at the same time from the same upstream on the same
//! wall-clock schedule (so both see the same load); the added figure is the proxied stream's p50/p99
//! minus the direct stream's, per round, then the median over rounds. The same events back to back (pace
//! 0) give the time from the first to the last event, a throughput view of small frames.

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
        Some("sse-upstream") => sse_upstream(),
        _ => run(Opts {
            codex: flag("--codex").map(PathBuf::from),
            mb: flag("--mb").map(|m| m.parse().expect("--mb N")).unwrap_or(100),
            ttfb_requests: flag("--ttfb-requests").map(|m| m.parse().expect("--ttfb-requests N")).unwrap_or(300),
            rounds: flag("--rounds").map(|m| m.parse().expect("--rounds N")).unwrap_or(3),
            events: flag("--events").map(|m| m.parse().expect("--events N")).unwrap_or(10_000),
            pace_us: flag("--pace-us").map(|m| m.parse().expect("--pace-us N")).unwrap_or(100),
            only: flag("--only"),
        }),
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
    match bytes {
        Some(b) => spawn_child(&["upstream", "--bytes", &b.to_string()]),
        None => spawn_child(&["upstream"]),
    }
}

/// Runs this binary with `args`; it prints its port on the first line of stdout.
fn spawn_child(args: &[&str]) -> (Kill, u16) {
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new(exe).args(args).stdout(Stdio::piped()).spawn().expect("spawn upstream");
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

/// A streamed `POST /v1/responses` on a fresh connection to `port`, with the headers `extra` adds;
/// returns the 200 response's body.
async fn post_streamed(
    port: u16,
    extra: impl FnOnce(http::request::Builder) -> http::request::Builder,
) -> hyper::body::Incoming {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = s.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("/v1/responses")
        .header("host", format!("127.0.0.1:{port}"))
        .header("authorization", "Bearer warden-proxied")
        .header("accept", "text/event-stream")
        .header("content-type", "application/json");
    let req = extra(req)
        .body(Full::new(Bytes::from_static(br#"{"model":"bench","stream":true,"input":[]}"#)))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "status from port {port}");
    resp.into_body()
}

/// One POST on a fresh connection; returns (time to first body byte, body bytes, total time).
async fn one(port: u16) -> (Duration, u64, Duration) {
    let t0 = Instant::now();
    let mut body = post_streamed(port, |r| r).await;
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

/// CPU time of every thread of process `pid` so far, in ns (`/proc/PID/task/*/schedstat`); 0 when
/// unknown (`pid` 0: direct, no proxy).
fn cpu_ns(pid: u32) -> u64 {
    if pid == 0 {
        return 0;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Wall-clock nanoseconds (`CLOCK_REALTIME`: one clock for every process on the machine, so the
/// upstream's stamp and the driver's arrival time compare; a few seconds of run see no NTP step).
fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The stamped SSE upstream: plain blocking HTTP/1.1, a thread per connection (keep-alive). Every
/// `POST` is answered with `x-bench-events` events (chunked, one `write` per event), each stamped
/// with [`now_ns`] just before its write, `x-bench-pace-us` microseconds apart (0: back to back).
fn sse_upstream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", l.local_addr().expect("addr").port());
    std::io::stdout().flush().expect("flush");
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let _ = s.set_nodelay(true);
        std::thread::spawn(move || {
            let _ = sse_conn(s);
        });
    }
}

fn sse_conn(s: std::net::TcpStream) -> std::io::Result<()> {
    use std::io::Read;
    let mut r = std::io::BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let (mut events, mut pace_us, mut start_ns, mut len) = (0u64, 0u64, 0u64, 0usize);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "x-bench-events" => events = v.parse().unwrap_or(0),
                    "x-bench-pace-us" => pace_us = v.parse().unwrap_or(0),
                    "x-bench-start-ns" => start_ns = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")?;
        // The schedule is on the wall clock, so two streams given the same start run in step.
        let t0 = if start_ns == 0 { now_ns() } else { start_ns };
        let mut buf = Vec::with_capacity(256);
        for i in 0..events {
            if pace_us > 0 {
                let due = t0 + pace_us * 1000 * i;
                let now = now_ns();
                if due > now {
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
            }
            let ev = format!(
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"tok\",\"seq\":{i},\"t\":{}}}\n\n",
                now_ns()
            );
            buf.clear();
            write!(buf, "{:x}\r\n{ev}\r\n", ev.len())?;
            w.write_all(&buf)?;
        }
        w.write_all(b"0\r\n\r\n")?;
    }
}

/// One SSE request of `events` events `pace_us` apart from wall-clock time `start_ns` (0: at once)
/// on a fresh connection: per event, arrival time at the driver minus the upstream's stamp, in µs;
/// and the time from the first byte to the last.
async fn sse_latencies(port: u16, events: u64, pace_us: u64, start_ns: u64) -> (Vec<f64>, Duration) {
    let mut body = post_streamed(port, |r| {
        r.header("x-bench-events", events.to_string())
            .header("x-bench-pace-us", pace_us.to_string())
            .header("x-bench-start-ns", start_ns.to_string())
    })
    .await;
    let mut lat = Vec::with_capacity(events as usize);
    let mut pending: Vec<u8> = Vec::new();
    let mut first = None;
    while let Some(f) = body.frame().await {
        let Ok(d) = f.expect("frame").into_data() else { continue };
        let at = now_ns();
        first.get_or_insert_with(Instant::now);
        pending.extend_from_slice(&d);
        // Every complete event in the buffer arrived now.
        let mut pos = 0;
        while let Some(end) = pending[pos..].windows(2).position(|w| w == b"\n\n") {
            let ev = &pending[pos..pos + end];
            let t = ev.windows(4).position(|w| w == b"\"t\":").expect("stamp");
            let digits: String = ev[t + 4..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
            let stamp: u64 = digits.parse().expect("stamp digits");
            lat.push(at.saturating_sub(stamp) as f64 / 1e3);
            pos += end + 2;
        }
        pending.drain(..pos);
    }
    assert_eq!(lat.len() as u64, events, "events from port {port}");
    (lat, first.map(|f| f.elapsed()).unwrap_or_default())
}

fn pctf(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    pctf(&mut v, 0.5)
}

/// One round's figures of one target.
#[derive(Clone, Copy, Default)]
struct Row {
    t1: (f64, f64),
    t64: (f64, f64),
    mb1: f64,
    mb64: f64,
    /// SSE paced: p50, p99 of per-event one-way latency (µs); for a proxy, measured at the same time
    /// as a direct stream on the same schedule, whose figures are `sse_direct`.
    sse: (f64, f64),
    sse_direct: (f64, f64),
    /// SSE back to back: first to last event (ms).
    burst_ms: f64,
    /// The proxy process's CPU time per TTFB request (µs) and per 100 MB streamed (ms).
    cpu_req_us: f64,
    cpu_100mb_ms: f64,
    /// The upstream's and this driver's CPU time per 100 MB streamed (ms).
    up_100mb_ms: f64,
    driver_100mb_ms: f64,
    /// The proxy process's CPU time per paced SSE event (µs).
    cpu_event_us: f64,
}

struct Opts {
    codex: Option<PathBuf>,
    mb: u64,
    ttfb_requests: usize,
    rounds: usize,
    events: u64,
    pace_us: u64,
    only: Option<String>,
}

fn run(o: Opts) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sse_up, sse_port) = spawn_upstream(None);
    let (bytes_up, bytes_port) = spawn_upstream(Some(o.mb * 1_000_000));
    let bytes_up_pid = bytes_up.0.id();
    let (_ev_up, ev_port) = spawn_child(&["sse-upstream"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut names: Vec<&'static str> = vec!["direct", "warden"];
    if o.codex.is_some() {
        names.push("codex");
    }
    // Per target: (ttfb port, bytes port, stamped-SSE port) and the proxies kept alive for all rounds.
    let mut ports = Vec::new();
    let mut pids = Vec::new();
    let mut _procs = Vec::new();
    for &name in &names {
        if name == "direct" {
            ports.push((sse_port, bytes_port, ev_port));
            pids.push((0, 0, 0));
            continue;
        }
        let codex = if name == "codex" { o.codex.as_deref() } else { None };
        let mut p = |up, tag: &str| {
            let (k, port) = spawn_proxy(codex, up, dir.path(), &format!("{name}-{tag}"));
            let pid = k.0.id();
            _procs.push(k);
            (port, pid)
        };
        let ((a, apid), (b, bpid), (c, cpid)) = (p(sse_port, "sse"), p(bytes_port, "bytes"), p(ev_port, "ev"));
        ports.push((a, b, c));
        pids.push((apid, bpid, cpid));
    }
    let want = |what: &str| o.only.as_deref().is_none_or(|only| only.split(',').any(|w| w == what));
    // rows[round][target]: the targets alternate within each round, so load drifts hit all alike.
    let mut rows: Vec<Vec<Row>> = Vec::new();
    for round in 0..o.rounds {
        eprintln!("round {} of {} ...", round + 1, o.rounds);
        let mut r = Vec::new();
        for (&(sse, bytes, ev), &(sse_pid, bytes_pid, _)) in ports.iter().zip(&pids) {
            let row = rt.block_on(async {
                let mut row = Row::default();
                if want("ttfb") {
                    let c0 = cpu_ns(sse_pid);
                    row.t1 = ttfb(sse, 1, o.ttfb_requests).await;
                    row.t64 = ttfb(sse, 64, o.ttfb_requests.max(640)).await;
                    let n = 40 + o.ttfb_requests + o.ttfb_requests.max(640).div_ceil(64) * 64;
                    row.cpu_req_us = (cpu_ns(sse_pid) - c0) as f64 / 1e3 / n as f64;
                }
                if want("mb") {
                    let (c0, u0, d0) = (cpu_ns(bytes_pid), cpu_ns(bytes_up_pid), cpu_ns(std::process::id()));
                    row.mb1 = throughput(bytes, 1).await;
                    row.mb64 = throughput(bytes, 64).await;
                    // Warm-up downloads included: 2 + 1 + 64 bodies.
                    let per = |ns: u64| ns as f64 / 1e6 / (67.0 * o.mb as f64 / 100.0);
                    row.cpu_100mb_ms = per(cpu_ns(bytes_pid) - c0);
                    row.up_100mb_ms = per(cpu_ns(bytes_up_pid) - u0);
                    row.driver_100mb_ms = per(cpu_ns(std::process::id()) - d0);
                }
                if want("sse") {
                    let _ = sse_latencies(ev, 200, 0, 0).await;
                    row.burst_ms = sse_latencies(ev, o.events, 0, 0).await.1.as_secs_f64() * 1e3;
                }
                row
            });
            r.push(row);
        }
        if want("sse") {
            // Each proxy beside direct: two streams at once, same upstream, same schedule.
            let direct_ev = ports[0].2;
            for t in 1..ports.len() {
                let (ev, ev_pid) = (ports[t].2, pids[t].2);
                let c0 = cpu_ns(ev_pid);
                let (d, p) = rt.block_on(async {
                    let start = now_ns() + 50_000_000;
                    let d = tokio::spawn(sse_latencies(direct_ev, o.events, o.pace_us, start));
                    let p = tokio::spawn(sse_latencies(ev, o.events, o.pace_us, start));
                    (d.await.expect("direct stream").0, p.await.expect("proxied stream").0)
                });
                let q = |mut v: Vec<f64>| (pctf(&mut v, 0.5), pctf(&mut v, 0.99));
                r[t].sse = q(p);
                r[t].sse_direct = q(d);
                r[t].cpu_event_us = (cpu_ns(ev_pid) - c0) as f64 / 1e3 / o.events as f64;
                if t == 1 {
                    r[0].sse = r[1].sse_direct;
                }
            }
        }
        rows.push(r);
    }
    let med = |t: usize, f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(&r[t])).collect());
    // Per-round differences and ratios against direct, then their median.
    let rel = |t: usize, f: &dyn Fn(&Row) -> f64, ratio: bool| {
        median(rows.iter().map(|r| if ratio { f(&r[t]) / f(&r[0]) } else { f(&r[t]) - f(&r[0]) }).collect())
    };
    // SSE: against the direct stream that ran beside it.
    let sse_added = |t: usize, f: &dyn Fn((f64, f64)) -> f64| {
        median(rows.iter().map(|r| f(r[t].sse) - f(r[t].sse_direct)).collect())
    };
    println!("medians of {} rounds (targets alternating in each round):", o.rounds);
    println!(
        "| target | TTFB p50 c1 (ms) | TTFB p99 c1 (ms) | TTFB p50 c64 (ms) | TTFB p99 c64 (ms) | {mb} MB c1 (MB/s) | {mb} MB x64 (MB/s) | SSE event p50 (µs) | SSE event p99 (µs) | {ev} events back to back (ms) | proxy CPU per request (µs) | proxy CPU per 100 MB (ms) | proxy CPU per SSE event (µs) |",
        mb = o.mb,
        ev = o.events
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (t, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            med(t, &|r| r.t1.0),
            med(t, &|r| r.t1.1),
            med(t, &|r| r.t64.0),
            med(t, &|r| r.t64.1),
            med(t, &|r| r.mb1),
            med(t, &|r| r.mb64),
            med(t, &|r| r.sse.0),
            med(t, &|r| r.sse.1),
            med(t, &|r| r.burst_ms),
            med(t, &|r| r.cpu_req_us),
            med(t, &|r| r.cpu_100mb_ms),
            med(t, &|r| r.cpu_event_us),
        );
    }
    if want("mb") {
        for (t, name) in names.iter().enumerate() {
            println!(
                "{name}: CPU per 100 MB streamed: upstream {:.1} ms, driver {:.1} ms, proxy {:.1} ms",
                med(t, &|r| r.up_100mb_ms),
                med(t, &|r| r.driver_100mb_ms),
                med(t, &|r| r.cpu_100mb_ms)
            );
        }
    }
    for (t, name) in names.iter().enumerate().skip(1) {
        println!(
            "{name}: added TTFB p50 c1 {:+.3} ms, c64 {:+.3} ms; throughput c1 {:.2}x, x64 {:.2}x of direct; \
             SSE per-event added p50 {:+.1} µs, p99 {:+.1} µs; back to back {:.2}x the time",
            rel(t, &|r| r.t1.0, false),
            rel(t, &|r| r.t64.0, false),
            rel(t, &|r| r.mb1, true),
            rel(t, &|r| r.mb64, true),
            sse_added(t, &|q| q.0),
            sse_added(t, &|q| q.1),
            rel(t, &|r| r.burst_ms, true),
        );
    }
    let w = 1;
    let s = |measure: &str, value: String, goal: &str| println!("summary\t{measure}\t{value}\t{goal}");
    if want("sse") {
        s(
            &format!("credproxy SSE {} events per-event added p99", o.events),
            format!("{:+.1} µs", sse_added(w, &|q| q.1)),
            "< 50 µs",
        );
    }
    if want("mb") {
        s(&format!("credproxy {} MB c1 vs direct", o.mb), format!("{:.2}x", rel(w, &|r| r.mb1, true)), ">= 0.9x");
        s(&format!("credproxy {} MB x64 vs direct", o.mb), format!("{:.2}x", rel(w, &|r| r.mb64, true)), ">= 0.9x");
    }
    if want("ttfb") {
        s("credproxy TTFB p50 added c1", format!("{:+.3} ms", rel(w, &|r| r.t1.0, false)), "< 1 ms");
        s("credproxy TTFB p50 added c64", format!("{:+.3} ms", rel(w, &|r| r.t64.0, false)), "< 1 ms");
    }
    if names.len() > 2 {
        // Codex's figure over warden's, per round (> 1: warden ahead).
        let vs = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(|r| f(&r[2]) / f(&r[1])).collect());
        if want("ttfb") {
            s("credproxy vs codex TTFB p50 c64 (codex/warden)", format!("{:.2}x", vs(&|r| r.t64.0)), "> 1x");
        }
        if want("mb") {
            s("credproxy vs codex 100 MB x64 (warden/codex)", format!("{:.2}x", 1.0 / vs(&|r| r.mb64)), "> 1x");
        }
        if want("sse") {
            s(
                "credproxy vs codex SSE per-event added p99 (codex, warden)",
                format!("{:+.1} µs, {:+.1} µs", sse_added(2, &|q| q.1), sse_added(1, &|q| q.1)),
                "warden lower",
            );
        }
    }
}
