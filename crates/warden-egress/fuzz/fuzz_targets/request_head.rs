//! Request line and headers: httparse plus warden's target classification and Host check, for
//! proxy requests and for requests inside a tunnel; the request-line recognizer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, n))) = warden_egress::request::parse_request_head(data, 64 * 1024) {
        assert!(n <= data.len());
    }
    let host = warden_egress::rules::Host::Name("allowed.test".to_owned());
    if let Ok(Some((path, n))) = warden_egress::request::parse_tunneled_head(data, 64 * 1024, &host, 80) {
        assert!(n <= data.len());
        assert!(path.starts_with('/') || path == "*", "{path:?}");
    }
    if warden_egress::request::scan_request_line(data) == Some(true) {
        // Decided: a longer flight keeps the answer.
        let mut more = data.to_vec();
        more.extend_from_slice(b"\r\n");
        assert_eq!(warden_egress::request::scan_request_line(&more), Some(true));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = warden_egress::rules::parse_authority(s, Some(80));
        let _ = warden_egress::rules::normalize_host(s);
    }
});
