//! `fake-worker`: a fake Codex app-server for tests (see `warden_testkit::fake_worker`).
#![forbid(unsafe_code)]

fn main() {
    let faults = std::env::var("FAKE_WORKER_FAULTS").ok();
    match warden_testkit::fake_worker::Config::from_args(std::env::args().skip(1), faults.as_deref()) {
        Ok(cfg) => std::process::exit(warden_testkit::fake_worker::run(cfg)),
        Err(e) => {
            eprintln!("fake-worker: {e}");
            std::process::exit(2);
        }
    }
}
