//! Start-up of the spawn path next to `warden run`, in one process, alternating, so both see the
//! same machine state.
//!
//!     cargo run --release -p warden-session --example spawn_bench -- WARDEN [RUNS] [-- ARGS...]
//!
//! Each round times (a) `WARDEN run ARGS -- true` started with `std::process::Command` and waited
//! for, and (b) `warden_session::spawn` of the same policy (resolved once, the way `warden run`
//! resolves it from this process's flags and environment) with `true`, from a 2-worker tokio
//! runtime, until `wait` returns. Prints the medians, p90s and the difference of the medians.

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9) / 10]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(warden) = args.next().map(PathBuf::from) else {
        eprintln!("usage: spawn_bench WARDEN [RUNS] [-- warden-run-options...]");
        std::process::exit(2);
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(200);
    let extra: Vec<String> = args.skip_while(|a| a != "--").skip(1).collect();
    let host = warden_policy::HostContext::from_process().expect("cwd");
    let mut opts = warden_policy::PolicyOptions::default();
    if extra.iter().any(|a| a == "--no-audit") {
        opts.no_audit = true;
    }
    let resolved = warden_policy::resolve(&opts, &host).expect("policy");
    let spec = warden_session::SessionSpec {
        policy: resolved.policy,
        warnings: resolved.warnings,
        argv: vec!["true".into()],
        host_env: host.env.clone(),
        credential: None,
        stdio: warden_session::StdioMode::Inherit,
        allow_nested_userns: false,
        init_hook: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (mut run, mut spawned) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let warmup = 20;
    for i in 0..runs + warmup {
        let t = Instant::now();
        let status = std::process::Command::new(&warden)
            .arg("run")
            .args(&extra)
            .args(["--", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("warden run");
        let d_run = t.elapsed();
        assert!(status.success(), "warden run -- true failed: {status}");
        let t = Instant::now();
        let end = rt.block_on(async {
            let mut h = warden_session::spawn(&warden, spec.clone(), None).await.expect("spawn");
            h.wait().await.expect("wait")
        });
        let d_spawn = t.elapsed();
        assert_eq!(end.exit_code(), 0, "spawned `true` failed: {end:?}");
        if i >= warmup {
            run.push(d_run);
            spawned.push(d_spawn);
        }
    }
    let (m_run, m_spawn) = (median(&mut run), median(&mut spawned));
    println!("{runs} runs each, alternating, after {warmup} warm-ups; options: {extra:?}");
    println!("warden run -- true        median {:.2} ms  p90 {:.2} ms", ms(m_run), ms(p90(&mut run)));
    println!("spawn path (spawn..wait)  median {:.2} ms  p90 {:.2} ms", ms(m_spawn), ms(p90(&mut spawned)));
    println!("difference of medians     {:+.2} ms (goal: within 1.5 ms)", ms(m_spawn) - ms(m_run));
}
