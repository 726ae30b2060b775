//! What may travel through an allowed CONNECT or SOCKS5 tunnel: the judgement of its first flight.
//!
//! A tunnel is allowed for one host and port, but on a shared address (a CDN, a virtual-hosting
//! server) the upstream picks the site by the name the client sends *inside* the tunnel: the TLS
//! SNI or the HTTP `Host` header. [`judge`] reads the client's first bytes, before any of them is
//! forwarded, and decides:
//!
//! - a TLS ClientHello (read by [`crate::tls::scan_client_hello`]) whose SNI names the tunnel's
//!   host ([`sni_names`]) → [`Judgement::Tls`]: forwarded, and the rest of the tunnel is spliced
//!   unread;
//! - an HTTP/1.x request line ([`crate::request::scan_request_line`]) → [`Judgement::Http`]: the
//!   proxy serves the tunnel as plain HTTP itself, and every request on it must name the tunnel's
//!   host and port (`host-mismatch` otherwise, see [`crate::request::classify_tunneled`]);
//! - everything else is denied: TLS that does not end in a ClientHello naming the host (another
//!   SNI, no SNI, a leading alert or change_cipher_spec record, an SSLv2 hello, a malformed or
//!   oversized hello) is `sni-mismatch`; anything that is neither TLS nor HTTP is `not-tls`.
//!
//! What this module guarantees: [`judge`] is a pure function of the bytes so far and the host; it
//! answers [`Judgement::NeedMore`] only while fewer than [`MAX_FLIGHT_BYTES`] bytes have arrived
//! and the bytes are a prefix of something it would pass; once it says `Tls`, `Http` or `Deny`, more
//! bytes never change the answer. The caller adds the time cap (`Limits::first_flight_timeout`)
//! and judges a flight that ends early with [`incomplete`].
//!
//! What passes unjudged: tunnels to a host and port that a `raw` allow rule names. Protocols where
//! the server speaks first (SMTP, SSH, MySQL, ...) need such a rule, since their client's first bytes
//! are neither TLS nor HTTP (or never come before the server's).

use crate::request::scan_request_line;
use crate::rules::Host;
use crate::tls::{scan_client_hello, starts_like_tls, Scan};

/// The most client bytes held back before the first flight is judged: a ClientHello of
/// [`crate::tls::MAX_HELLO_LEN`] split into small records, or a long HTTP request line.
pub const MAX_FLIGHT_BYTES: usize = 64 * 1024;

/// The verdict on a tunnel's first flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Undecided: read more (within the size and time caps) and judge again.
    NeedMore,
    /// A ClientHello naming the tunnel's host: forward and splice.
    Tls,
    /// An HTTP/1.x request: serve the tunnel as plain HTTP, checking every request.
    Http,
    /// Close the tunnel.
    Deny {
        /// `sni-mismatch` or `not-tls`.
        reason: &'static str,
        /// What was seen, for the decision record (untrusted text is cut and cleaned).
        detail: String,
    },
}

/// Judges the first bytes a client sent into a tunnel to `host` (see the module documentation).
pub fn judge(buf: &[u8], host: &Host) -> Judgement {
    let Some(&first) = buf.first() else { return Judgement::NeedMore };
    let verdict = if starts_like_tls(first) {
        match scan_client_hello(buf) {
            Scan::NeedMore => Judgement::NeedMore,
            Scan::Hello { sni } if sni_names(sni.as_deref(), host) => Judgement::Tls,
            Scan::Hello { sni: Some(sni) } => sni_mismatch(format!("SNI {:?}", crate::rules::shown(&sni))),
            Scan::Hello { sni: None } => sni_mismatch("ClientHello without SNI".to_owned()),
            Scan::Malformed(why) => sni_mismatch(why.to_owned()),
            Scan::NotTls => not_tls("first bytes are neither TLS nor an HTTP/1.x request"),
        }
    } else {
        match scan_request_line(buf) {
            None => Judgement::NeedMore,
            Some(true) => Judgement::Http,
            Some(false) => not_tls("first bytes are neither TLS nor an HTTP/1.x request"),
        }
    };
    if verdict == Judgement::NeedMore && buf.len() >= MAX_FLIGHT_BYTES {
        return incomplete(buf, "it is longer than 64 KiB");
    }
    verdict
}

/// The denial for a first flight that ended undecided (`why`: the client closed, the time cap).
pub fn incomplete(buf: &[u8], why: &str) -> Judgement {
    match buf.first() {
        None => not_tls(&format!("the client sent nothing: {why}")),
        Some(&b) if starts_like_tls(b) => sni_mismatch(format!("incomplete ClientHello: {why}")),
        Some(_) => Judgement::Deny {
            reason: "not-tls",
            detail: format!("incomplete first bytes (not a complete TLS ClientHello or HTTP request line): {why}"),
        },
    }
}

fn sni_mismatch(detail: String) -> Judgement {
    Judgement::Deny { reason: "sni-mismatch", detail }
}

fn not_tls(detail: &str) -> Judgement {
    Judgement::Deny { reason: "not-tls", detail: detail.to_owned() }
}

/// Whether a ClientHello's SNI names `host`.
///
/// For a name: the SNI is required and must be that name in ASCII (A-labels, as RFC 6066 demands),
/// ignoring ASCII case and one trailing dot. No Unicode mapping is applied: a server compares the
/// bytes it gets, and one that does not know a spelling answers with its default site, which on a
/// shared address may be another tenant's. For an IP-literal host (allowed through `allow_cidr`):
/// no SNI, or exactly that address (servers select nothing by an address SNI).
pub fn sni_names(sni: Option<&str>, host: &Host) -> bool {
    match (host, sni) {
        (Host::Name(name), Some(sni)) => {
            let sni = sni.strip_suffix('.').unwrap_or(sni);
            sni.is_ascii() && sni.eq_ignore_ascii_case(name)
        }
        (Host::Name(_), None) => false,
        (Host::Ip(_), None) => true,
        (Host::Ip(ip), Some(sni)) => sni == ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{build_client_hello, split_into_records};

    fn host(s: &str) -> Host {
        crate::rules::normalize_host(s).expect("valid test host")
    }

    fn reason(j: Judgement) -> &'static str {
        match j {
            Judgement::NeedMore => "need-more",
            Judgement::Tls => "tls",
            Judgement::Http => "http",
            Judgement::Deny { reason, .. } => reason,
        }
    }

    #[test]
    fn tls_must_name_the_host() {
        let h = host("ok.example");
        assert_eq!(judge(&build_client_hello(Some("ok.example")), &h), Judgement::Tls);
        assert_eq!(judge(&build_client_hello(Some("OK.Example.")), &h), Judgement::Tls);
        for sni in [Some("evil.test"), Some("ok.example.evil.test"), Some("ｏk.example"), Some("ok.example.."), None] {
            assert_eq!(reason(judge(&build_client_hello(sni), &h)), "sni-mismatch", "{sni:?}");
        }
        let ip = host("203.0.113.7");
        assert_eq!(judge(&build_client_hello(None), &ip), Judgement::Tls);
        assert_eq!(judge(&build_client_hello(Some("203.0.113.7")), &ip), Judgement::Tls);
        assert_eq!(reason(judge(&build_client_hello(Some("evil.test")), &ip)), "sni-mismatch");
    }

    #[test]
    fn odd_tls_shapes_never_pass_as_something_else() {
        let h = host("ok.example");
        let evil = build_client_hello(Some("evil.test"));
        let mut alert = vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
        alert.extend_from_slice(&evil);
        assert_eq!(reason(judge(&alert, &h)), "sni-mismatch");
        let mut alert_ok = vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
        alert_ok.extend_from_slice(&build_client_hello(Some("ok.example")));
        assert_eq!(reason(judge(&alert_ok, &h)), "sni-mismatch", "a leading alert is refused, whatever follows");
        let odd = split_into_records(&evil[5..], 9, [0x02, 0x01]);
        assert_eq!(judge(&odd, &h), Judgement::Deny { reason: "sni-mismatch", detail: "SNI \"evil.test\"".into() });
        let odd_ok = split_into_records(&build_client_hello(Some("ok.example"))[5..], 9, [0x02, 0x01]);
        assert_eq!(judge(&odd_ok, &h), Judgement::Tls);
        for cut in 0..odd_ok.len() {
            assert_eq!(judge(&odd_ok[..cut], &h), Judgement::NeedMore, "cut {cut}");
        }
    }

    #[test]
    fn http_and_other_bytes() {
        let h = host("ok.example");
        assert_eq!(judge(b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", &h), Judgement::Http);
        assert_eq!(judge(b"GET / HTTP/1.", &h), Judgement::Http);
        assert_eq!(judge(b"GET / HTTP/", &h), Judgement::NeedMore);
        for other in
            [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"EHLO x\r\n", b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"PRI * HTTP/2.0\r\n"]
        {
            assert_eq!(reason(judge(other, &h)), "not-tls", "{other:?}");
        }
        assert_eq!(reason(judge(&[b'A'; MAX_FLIGHT_BYTES], &h)), "not-tls", "size cap");
        let mut long = b"GET /".to_vec();
        long.resize(MAX_FLIGHT_BYTES - 1, b'a');
        assert_eq!(judge(&long, &h), Judgement::NeedMore);
        long.push(b'a');
        assert_eq!(reason(judge(&long, &h)), "not-tls", "a request line over the cap");
    }

    #[test]
    fn incomplete_flights() {
        assert_eq!(reason(incomplete(b"", "timed out")), "not-tls");
        assert_eq!(reason(incomplete(&[0x16, 0x03], "timed out")), "sni-mismatch");
        assert_eq!(reason(incomplete(b"GET / HT", "closed")), "not-tls");
    }
}
