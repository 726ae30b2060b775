//! Request line and headers: httparse plus warden's target classification and Host check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, n))) = warden_egress::request::parse_request_head(data, 64 * 1024) {
        assert!(n <= data.len());
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = warden_egress::rules::parse_authority(s, Some(80));
        let _ = warden_egress::rules::normalize_host(s);
    }
});
