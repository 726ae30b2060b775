//! HTTP proxy request classification: absolute-form, CONNECT, the `Host` header check, and the
//! requests the proxy serves from inside a tunnel.
//!
//! What this module guarantees: [`classify`] accepts only `http://` absolute-form requests and CONNECT
//! requests, normalizes the target with [`crate::rules::parse_authority`], and refuses an absolute-form
//! request whose `Host` header does not name the same host and port as its target (or that carries more
//! than one `Host` header). [`classify_tunneled`] holds a request read inside a tunnel to the tunnel's
//! host and port in the same way. [`scan_request_line`] recognizes the start of an HTTP/1.x request.
//! [`parse_request_head`] and [`parse_tunneled_head`] run the same logic over raw bytes (for fuzzing
//! and for tests); the proxy itself gets the request line and headers from hyper.

use crate::rules::{parse_authority, shown, Host, HostError};

/// The most header lines a request may carry.
pub const MAX_HEADERS: usize = 100;

/// Where a proxy request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET http://host:port/path`: forward `path` (origin-form) to `host:port`.
    Absolute {
        /// The normalized host.
        host: Host,
        /// The port (80 when the target names none).
        port: u16,
        /// The origin-form path and query to send upstream (`/` at least).
        path: String,
    },
    /// `CONNECT host:port`.
    Connect {
        /// The normalized host.
        host: Host,
        /// The port.
        port: u16,
    },
}

/// Why a request is refused before any rule is consulted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request is in origin-form (`GET /path`): a request to the proxy itself, not through it.
    #[error("not a proxy request: send absolute-form requests (GET http://host/path) or CONNECT host:port")]
    OriginForm,
    /// An absolute-form request with a scheme other than `http`.
    #[error("unsupported scheme in {target:?}: only http:// is proxied (use CONNECT for https)")]
    Scheme {
        /// The request target, cut to 256 characters.
        target: String,
    },
    /// The request target cannot be parsed.
    #[error("malformed request target {target:?}: {why}")]
    Target {
        /// The request target, cut to 256 characters.
        target: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The host of the target is not a valid name or address.
    #[error("{0}")]
    Host(HostError),
    /// The `Host` header does not match the target's authority.
    #[error("the Host header {header:?} does not match the request target {host}:{port}")]
    HostMismatch {
        /// The target host.
        host: Host,
        /// The target port.
        port: u16,
        /// The Host header(s), cut to 256 characters.
        header: String,
    },
    /// The head is larger than allowed or has too many headers.
    #[error("request head too large")]
    TooLarge,
    /// Not an HTTP/1.x request head.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// A CONNECT request inside a tunnel (to the tunnel's own authority).
    #[error("CONNECT inside a tunnel is not served")]
    NestedConnect,
}

/// Classifies a request from its method, request target and `Host` header values.
pub fn classify(method: &str, target: &str, host_headers: &[&[u8]]) -> Result<Target, RequestError> {
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = parse_authority(target, None).map_err(RequestError::Host)?;
        return Ok(Target::Connect { host, port });
    }
    if target.starts_with('/') || target == "*" {
        return Err(RequestError::OriginForm);
    }
    let (host, port, path) = split_absolute(target)?;
    check_host_headers(&host, port, host_headers)?;
    Ok(Target::Absolute { host, port, path })
}

/// Splits an `http://` absolute-form target into host, port (80 by default) and origin-form path.
fn split_absolute(target: &str) -> Result<(Host, u16, String), RequestError> {
    let bad = |why| RequestError::Target { target: shown(target), why };
    let (scheme, rest) = target.split_once("://").ok_or_else(|| bad("neither absolute-form nor origin-form"))?;
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(RequestError::Scheme { target: shown(target) });
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if path.contains('#') {
        return Err(bad("fragment in request target"));
    }
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let (host, port) = parse_authority(authority, Some(80)).map_err(RequestError::Host)?;
    Ok((host, port, path))
}

/// The `Host` headers must be absent or one header naming `host:port` (port 80 when it names none).
fn check_host_headers(host: &Host, port: u16, host_headers: &[&[u8]]) -> Result<(), RequestError> {
    let same = match host_headers {
        [] => true,
        [one] => std::str::from_utf8(one)
            .ok()
            .and_then(|h| parse_authority(h.trim(), Some(80)).ok())
            .is_some_and(|(h, p)| h == *host && p == port),
        _ => false,
    };
    if same {
        return Ok(());
    }
    Err(RequestError::HostMismatch {
        host: host.clone(),
        port,
        header: shown(&host_headers.iter().map(|h| String::from_utf8_lossy(h)).collect::<Vec<_>>().join(", ")),
    })
}

/// Judges one request read from inside a tunnel to `host:port` that the proxy serves as plain
/// HTTP; returns the origin-form path (or `*`) to send upstream.
///
/// The request must name the tunnel's host and port wherever it names one: an absolute-form target
/// (`http://` only) and the `Host` header (at most one; port 80 when it names none), else
/// [`RequestError::HostMismatch`]. A CONNECT inside a tunnel is never served: naming another
/// authority it is a `HostMismatch` too, else [`RequestError::NestedConnect`].
pub fn classify_tunneled(
    method: &str,
    target: &str,
    host_headers: &[&[u8]],
    host: &Host,
    port: u16,
) -> Result<String, RequestError> {
    let mismatch = || RequestError::HostMismatch { host: host.clone(), port, header: shown(target) };
    if method.eq_ignore_ascii_case("CONNECT") {
        return match parse_authority(target, None) {
            Ok((h, p)) if h == *host && p == port => Err(RequestError::NestedConnect),
            _ => Err(mismatch()),
        };
    }
    let path = if target.starts_with('/') || target == "*" {
        target.to_owned()
    } else {
        let (h, p, path) = split_absolute(target)?;
        if h != *host || p != port {
            return Err(mismatch());
        }
        path
    };
    check_host_headers(host, port, host_headers)?;
    Ok(path)
}

/// Whether `buf` starts like an HTTP/1.x request: at most four bytes of empty lines (RFC 9112 §2.2),
/// a method token of at most 32 characters, one space, a request target of visible ASCII, one
/// space and `HTTP/1.`. `None` while `buf` is a proper prefix of such a start.
///
/// Only the start is looked at: the proxy then parses every request in full (hyper) and forwards
/// nothing it cannot parse, so this decides how to read a tunnel, not what passes.
pub fn scan_request_line(buf: &[u8]) -> Option<bool> {
    const VERSION: &[u8] = b"HTTP/1.";
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut i = 0;
    while i < buf.len() && i < 4 && matches!(buf[i], b'\r' | b'\n') {
        i += 1;
    }
    let method = i;
    while i < buf.len() && is_tchar(buf[i]) {
        i += 1;
        if i - method > 32 {
            return Some(false);
        }
    }
    let &sp = buf.get(i)?;
    if i == method || sp != b' ' {
        return Some(false);
    }
    i += 1;
    let target = i;
    while i < buf.len() && (0x21..=0x7e).contains(&buf[i]) {
        i += 1;
    }
    let &sp = buf.get(i)?;
    if i == target || sp != b' ' {
        return Some(false);
    }
    let rest = &buf[i + 1..];
    let n = rest.len().min(VERSION.len());
    if rest[..n] != VERSION[..n] {
        return Some(false);
    }
    if n < VERSION.len() {
        None
    } else {
        Some(true)
    }
}

/// Parses a raw request head (request line and headers, up to `max_bytes`) and classifies it.
/// Returns `Ok(None)` when the head is incomplete, else the target and the head's length.
pub fn parse_request_head(buf: &[u8], max_bytes: usize) -> Result<Option<(Target, usize)>, RequestError> {
    parse_head(buf, max_bytes, classify)
}

/// [`parse_request_head`] for a request inside a tunnel to `host:port` ([`classify_tunneled`]).
pub fn parse_tunneled_head(
    buf: &[u8],
    max_bytes: usize,
    host: &Host,
    port: u16,
) -> Result<Option<(String, usize)>, RequestError> {
    parse_head(buf, max_bytes, |method, target, hosts| classify_tunneled(method, target, hosts, host, port))
}

fn parse_head<T>(
    buf: &[u8],
    max_bytes: usize,
    judge: impl FnOnce(&str, &str, &[&[u8]]) -> Result<T, RequestError>,
) -> Result<Option<(T, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_bytes { Err(RequestError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooLarge),
        Err(_) => return Err(RequestError::Malformed("not an HTTP/1.x request head")),
    };
    if n > max_bytes {
        return Err(RequestError::TooLarge);
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(RequestError::Malformed("missing method or target"));
    };
    let hosts: Vec<&[u8]> =
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value).collect();
    judge(method, path, &hosts).map(|t| Some((t, n)))
}

/// Whether a header (lowercase name) is hop-by-hop and must not be forwarded: `connection`,
/// `keep-alive`, `te`, `trailer`, `transfer-encoding`, `upgrade` and every `proxy-*` header.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade")
        || name.starts_with("proxy-")
}

/// Removes hop-by-hop headers, including the ones named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    let hop: Vec<http::HeaderName> = headers.keys().filter(|k| is_hop_by_hop(k.as_str())).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        Host::Name(s.to_owned())
    }

    #[test]
    fn absolute_form() {
        let t = classify("GET", "http://Example.com./a?b=1", &[b"example.com"]);
        assert_eq!(t, Ok(Target::Absolute { host: name("example.com"), port: 80, path: "/a?b=1".into() }));
        let t = classify("GET", "http://example.com:8080?q", &[b"EXAMPLE.com:8080"]);
        assert_eq!(t, Ok(Target::Absolute { host: name("example.com"), port: 8080, path: "/?q".into() }));
        assert_eq!(
            classify("GET", "HTTP://example.com", &[]),
            Ok(Target::Absolute { host: name("example.com"), port: 80, path: "/".into() })
        );
        assert!(classify("GET", "http://example.com/", &[b"example.com:80"]).is_ok());
    }

    #[test]
    fn refusals() {
        assert_eq!(classify("GET", "/index.html", &[b"example.com"]), Err(RequestError::OriginForm));
        assert!(matches!(classify("GET", "https://example.com/", &[]), Err(RequestError::Scheme { .. })));
        assert!(matches!(
            classify("GET", "http://example.com/", &[b"evil.test"]),
            Err(RequestError::HostMismatch { .. })
        ));
        assert!(matches!(
            classify("GET", "http://example.com/", &[b"example.com:81"]),
            Err(RequestError::HostMismatch { .. })
        ));
        assert!(matches!(
            classify("GET", "http://example.com/", &[b"example.com", b"example.com"]),
            Err(RequestError::HostMismatch { .. })
        ));
        assert!(matches!(classify("GET", "http://ex_ample.com/", &[]), Err(RequestError::Host(_))));
        assert!(matches!(classify("GET", "http://user@example.com/", &[]), Err(RequestError::Host(_))));
        assert!(matches!(classify("GET", "http://example.com/#x", &[]), Err(RequestError::Target { .. })));
        assert!(matches!(classify("CONNECT", "example.com", &[]), Err(RequestError::Host(_))));
        assert_eq!(
            classify("CONNECT", "example.com:443", &[]),
            Ok(Target::Connect { host: name("example.com"), port: 443 })
        );
    }

    #[test]
    fn raw_heads() {
        let head = b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\nbody";
        let (t, n) = parse_request_head(head, 1024).expect("parses").expect("complete");
        assert_eq!(n, head.len() - 4);
        assert!(matches!(t, Target::Absolute { port: 80, .. }));
        assert_eq!(parse_request_head(b"GET http://a.example/ HTTP/1.1\r\nHo", 1024), Ok(None));
        assert_eq!(parse_request_head(&[b'a'; 64], 16), Err(RequestError::TooLarge));
        assert!(matches!(parse_request_head(b"\x00\x01 x\r\n\r\n", 1024), Err(RequestError::Malformed(_))));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let head = format!("GET http://a.example/ HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_request_head(head.as_bytes(), 1 << 20), Err(RequestError::TooLarge));
    }

    #[test]
    fn tunneled_requests_name_the_tunnel() {
        let h = name("t.example");
        let ok = |m: &str, target: &str, hosts: &[&[u8]], port: u16| classify_tunneled(m, target, hosts, &h, port);
        assert_eq!(ok("GET", "/a?b", &[b"t.example"], 80), Ok("/a?b".to_owned()));
        assert_eq!(ok("GET", "/", &[b"T.Example.:8080"], 8080), Ok("/".to_owned()));
        assert_eq!(ok("GET", "/", &[], 80), Ok("/".to_owned()), "HTTP/1.0 without Host");
        assert_eq!(ok("OPTIONS", "*", &[b"t.example"], 80), Ok("*".to_owned()));
        assert_eq!(ok("GET", "http://t.example:8080/x", &[b"t.example:8080"], 8080), Ok("/x".to_owned()));
        for (m, target, hosts, port) in [
            ("GET", "/", &[&b"evil.test"[..]][..], 80),
            ("GET", "/", &[b"t.example"], 8080),
            ("GET", "/", &[b"t.example:81"], 80),
            ("GET", "/", &[b"t.example", b"evil.test"], 80),
            ("GET", "/", &[b"t.example\xff"], 80),
            ("GET", "http://evil.test/", &[b"t.example"], 80),
            ("GET", "http://t.example:81/", &[b"t.example:81"], 80),
            ("GET", "http://t.example/", &[b"evil.test"], 80),
            ("CONNECT", "evil.test:443", &[], 80),
        ] {
            assert!(
                matches!(ok(m, target, hosts, port), Err(RequestError::HostMismatch { .. })),
                "{m} {target} {hosts:?}"
            );
        }
        assert_eq!(ok("CONNECT", "t.example:80", &[], 80), Err(RequestError::NestedConnect));
        assert!(matches!(ok("GET", "https://t.example/", &[], 80), Err(RequestError::Scheme { .. })));
        let head = b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
        assert!(matches!(parse_tunneled_head(head, 1024, &h, 80), Err(RequestError::HostMismatch { .. })));
        let head = b"GET /k HTTP/1.1\r\nHost: t.example\r\n\r\n";
        assert_eq!(parse_tunneled_head(head, 1024, &h, 80), Ok(Some(("/k".to_owned(), head.len()))));
    }

    #[test]
    fn request_line_start() {
        for yes in
            [&b"GET / HTTP/1.1\r\n"[..], b"\r\nPOST http://x/ HTTP/1.0", b"M-SEARCH * HTTP/1.", b"get /%7e HTTP/1.1"]
        {
            assert_eq!(scan_request_line(yes), Some(true), "{:?}", String::from_utf8_lossy(yes));
            let decided = yes.windows(7).position(|w| w == b"HTTP/1.").expect("version") + 7;
            for cut in 0..decided {
                assert_eq!(scan_request_line(&yes[..cut]), None, "{:?} cut {cut}", String::from_utf8_lossy(yes));
            }
        }
        for prefix in [&b""[..], b"\r\n", b"GET", b"GET ", b"GET /", b"GET / ", b"GET / HTTP/"] {
            assert_eq!(scan_request_line(prefix), None, "{:?}", String::from_utf8_lossy(prefix));
        }
        for no in [
            &b"\x16\x03\x01"[..],
            b"SSH-2.0-x\r\n",
            b"GET  / HTTP/1.1",
            b" GET / HTTP/1.1",
            b"GET / HTTP/2.0",
            b"GET /\x00 HTTP/1.1",
            b"GET / FTP/1.1",
            b"\r\n\r\n\r\nGET / HTTP/1.1",
            b"GET\t/ HTTP/1.1",
        ] {
            assert_eq!(scan_request_line(no), Some(false), "{:?}", String::from_utf8_lossy(no));
        }
        assert_eq!(scan_request_line(&[b'A'; 33]), Some(false), "method over 32 characters");
        assert_eq!(scan_request_line(&[b'A'; 32]), None);
    }

    #[test]
    fn hop_by_hop() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ] {
            h.append(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["accept"]);
    }
}
