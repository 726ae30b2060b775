//! Counters of the gateway, rendered in the Prometheus text format with the pool's per-worker
//! counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use warden_agent::pool::Pool;

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Sum of request durations, microseconds.
    pub duration_us: AtomicU64,
    /// Input tokens of completed turns.
    pub input_tokens: AtomicU64,
    /// Output tokens of completed turns.
    pub output_tokens: AtomicU64,
    /// Turns interrupted because their client went away.
    pub disconnects: AtomicU64,
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, route: &str, status: u16, micros: u64) {
        *self.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route.to_owned(), status)).or_default() += 1;
        self.duration_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The Prometheus text.
    pub fn render(&self, pool: &Pool, kept_threads: usize) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP warden_serve_requests_total HTTP requests by route and status.");
        let _ = writeln!(o, "# TYPE warden_serve_requests_total counter");
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut total = 0;
        for ((route, status), n) in &requests {
            total += n;
            let _ = writeln!(o, "warden_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let gauge = |o: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let _ = writeln!(o, "# HELP warden_serve_request_duration_seconds Time spent on requests.");
        let _ = writeln!(o, "# TYPE warden_serve_request_duration_seconds summary");
        let secs = self.duration_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "warden_serve_request_duration_seconds_sum {secs}");
        let _ = writeln!(o, "warden_serve_request_duration_seconds_count {total}");
        gauge(
            &mut o,
            "warden_serve_requests_in_flight",
            "Requests being served.",
            "gauge",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "warden_serve_input_tokens_total",
            "Input tokens of completed turns.",
            "counter",
            self.input_tokens.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "warden_serve_output_tokens_total",
            "Output tokens of completed turns.",
            "counter",
            self.output_tokens.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "warden_serve_client_disconnects_total",
            "Turns interrupted because the client went away.",
            "counter",
            self.disconnects.load(Ordering::Relaxed),
        );
        gauge(
            &mut o,
            "warden_serve_kept_threads",
            "Conversations kept for previous_response_id.",
            "gauge",
            kept_threads as u64,
        );
        gauge(&mut o, "warden_serve_ready", "1 when some worker is ready.", "gauge", u64::from(pool.is_ready()));
        gauge(
            &mut o,
            "warden_serve_live",
            "0 once a worker hit its restart limit.",
            "gauge",
            u64::from(pool.is_live()),
        );
        type Counter = fn(&warden_agent::supervisor::WorkerMetrics) -> u64;
        let per: [(&str, &str, &str, Counter); 5] = [
            ("warden_worker_turns_total", "Turns started on the worker.", "counter", |m| {
                m.turns.load(Ordering::Relaxed)
            }),
            ("warden_worker_failures_total", "Turns that failed on the worker.", "counter", |m| {
                m.failures.load(Ordering::Relaxed)
            }),
            ("warden_worker_restarts_total", "Restarts of the worker.", "counter", |m| {
                m.restarts.load(Ordering::Relaxed)
            }),
            (
                "warden_worker_recycled_total",
                "Times the worker was ended for breaking the protocol or hanging.",
                "counter",
                |m| m.recycled.load(Ordering::Relaxed),
            ),
            ("warden_worker_turn_seconds_total", "Time spent in turns on the worker.", "counter", |m| {
                m.latency_us_total.load(Ordering::Relaxed) / 1_000_000
            }),
        ];
        for (name, help, kind, get) in per {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in pool.supervisors() {
                let _ = writeln!(o, "{name}{{worker=\"{}\"}} {}", s.name(), get(s.metrics()));
            }
        }
        let _ = writeln!(o, "# HELP warden_worker_ready 1 when the worker is ready.\n# TYPE warden_worker_ready gauge");
        for s in pool.supervisors() {
            let _ = writeln!(o, "warden_worker_ready{{worker=\"{}\"}} {}", s.name(), u64::from(s.current().is_some()));
        }
        let _ = writeln!(
            o,
            "# HELP warden_worker_in_flight Turns the worker serves now.\n# TYPE warden_worker_in_flight gauge"
        );
        for s in pool.supervisors() {
            let n = s.current().map_or(0, |w| w.in_flight.load(Ordering::Relaxed));
            let _ = writeln!(o, "warden_worker_in_flight{{worker=\"{}\"}} {n}", s.name());
        }
        o
    }
}
