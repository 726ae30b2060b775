//! TLS ClientHello / SNI scanner.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = warden_egress::tls::scan_client_hello(data);
});
