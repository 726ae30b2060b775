//! TLS ClientHello / SNI scanner, and the first-flight judgement over the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = warden_egress::tls::scan_client_hello(data);
    let host = warden_egress::rules::Host::Name("allowed.test".to_owned());
    let _ = warden_egress::tunnel::judge(data, &host);
});
