//! SOCKS5 greeting and request parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, n))) = warden_egress::socks::parse_greeting(data) {
        assert!(n <= data.len());
    }
    if let Ok(Some((_, n))) = warden_egress::socks::parse_request(data) {
        assert!(n <= data.len() && n <= warden_egress::socks::MAX_REQUEST_LEN);
    }
});
