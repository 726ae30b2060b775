//! Bounded random input to the three untrusted-input parsers (the cargo-fuzz targets in `fuzz/` run
//! the same functions without bounds): none may panic, and their answers must be consistent.

use proptest::prelude::*;
use warden_egress::{request, socks, tls};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn request_head_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = request::parse_request_head(&bytes, 1024);
    }

    #[test]
    fn request_head_with_random_target(target in "[ -~]{0,200}", host in "[ -~]{0,100}") {
        let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let _ = request::parse_request_head(head.as_bytes(), 64 * 1024);
        let _ = request::classify("CONNECT", &target, &[host.as_bytes()]);
    }

    #[test]
    fn socks_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, n))) = socks::parse_greeting(&bytes) {
            prop_assert!(n <= bytes.len());
        }
        if let Ok(Some((_, n))) = socks::parse_request(&bytes) {
            prop_assert!(n <= bytes.len() && n <= socks::MAX_REQUEST_LEN);
        }
    }

    #[test]
    fn client_hello_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = tls::scan_client_hello(&bytes);
    }

    #[test]
    fn mutated_client_hello(pos in 0usize..200, val in any::<u8>(), cut in 0usize..200) {
        let mut h = tls::build_client_hello(Some("mutate.example"));
        let n = h.len();
        h[pos % n] = val;
        h.truncate(n - cut % n);
        let _ = tls::scan_client_hello(&h);
    }

    #[test]
    fn normalize_host_is_idempotent(raw in "[a-zA-Z0-9.\\-_\\[\\]:]{0,80}") {
        if let Ok(h) = warden_egress::rules::normalize_host(&raw) {
            let text = match &h {
                warden_egress::rules::Host::Ip(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                other => other.to_string(),
            };
            prop_assert_eq!(warden_egress::rules::normalize_host(&text), Ok(h));
        }
    }
}
