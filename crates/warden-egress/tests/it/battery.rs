//! The SSRF and bypass battery: every case asserts the status, the `X-Warden-Deny` reason, the
//! decision reported to the sink, and that the upstream saw nothing.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_egress::{Limits, RuleSpec, RulesConfig};

use crate::support::*;

/// Sends an absolute-form GET for `target` with a matching Host header; asserts a denial.
async fn assert_denied(p: &Proxy, up: &Upstream, target: &str, host_header: &str, status: u16, reason: &str) {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: battery\r\n\r\n");
    let r = request(p.http, &raw).await;
    assert_eq!(r.status, status, "{target}: {r:?}");
    assert_eq!(r.header("x-warden-deny"), Some(reason), "{target}: {r:?}");
    assert!(r.body.starts_with("warden: "), "{target}: body {:?}", r.body);
    let d = p.sink.last();
    assert!(!d.allowed, "{target}: {d:?}");
    assert_eq!(d.reason, Some(reason), "{target}: {d:?}");
    up.assert_untouched(target);
}

/// `test.example` allowed on `port`, loopback allowed, and `test.example` plus `also_pinned`
/// resolved to 127.0.0.1 (the upstream).
fn test_example_only(port: u16, also_pinned: &[&str]) -> RulesConfig {
    let mut resolve = vec!["test.example:127.0.0.1".to_owned()];
    resolve.extend(also_pinned.iter().map(|h| format!("{h}:127.0.0.1")));
    RulesConfig {
        allow: vec![allow("test.example")],
        allow_private: strings(&["127.0.0.0/8"]),
        allow_ports: vec![port],
        resolve,
        ..RulesConfig::default()
    }
}

#[tokio::test]
async fn ip_literals_in_every_form_are_denied() {
    let up = Upstream::start(true).await;
    // allow_private covers loopback: only the ip-literal rule stands between the client and 127.0.0.1.
    let p = start_proxy(RulesConfig {
        allow: vec![allow("*")],
        allow_ports: vec![up.port()],
        allow_private: strings(&["127.0.0.0/8", "::1/128"]),
        ..RulesConfig::default()
    })
    .await;
    let port = up.port();
    for form in [
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "0x7f000001",
        "017700000001",
        "127.0.0.1.",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "[::127.0.0.1]",
        "169.254.169.254",
    ] {
        let authority = format!("{form}:{port}");
        assert_denied(&p, &up, &format!("http://{authority}/"), &authority, 403, "ip-literal").await;
        let d = p.sink.last();
        assert!(d.host.parse::<std::net::IpAddr>().is_ok(), "{form} reported as {:?}", d.host);
    }
    let r = request(p.http, &format!("GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")).await;
    assert!(r.body.contains("--allow-cidr 127.0.0.1/32"), "hint: {}", r.body);
    // Invalid numeric forms are not names either.
    assert_denied(&p, &up, &format!("http://1.2.3.256:{port}/"), &format!("1.2.3.256:{port}"), 403, "invalid-name")
        .await;
}

#[tokio::test]
async fn allowed_names_pinned_to_forbidden_addresses_are_denied() {
    let up = Upstream::start(true).await;
    let pins = [
        ("lo", "127.0.0.1"),
        ("ten", "10.0.0.1"),
        ("meta", "169.254.169.254"),
        ("cgnat", "100.64.0.1"),
        ("lo6", "[::1]"),
        ("meta6", "[fd00:ec2::254]"),
        ("mapped", "[::ffff:127.0.0.1]"),
        ("nat64", "[64:ff9b::7f00:1]"),
        ("sixtofour", "[2002:7f00:1::]"),
        ("teredo", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"),
        ("bench", "198.18.0.1"),
        ("zero", "0.0.0.0"),
    ];
    let p = start_proxy(RulesConfig {
        allow: vec![allow("*.pin.example")],
        allow_ports: vec![up.port()],
        resolve: pins.iter().map(|(n, ip)| format!("{n}.pin.example:{ip}")).collect(),
        ..RulesConfig::default()
    })
    .await;
    for (name, ip) in pins {
        let authority = format!("{name}.pin.example:{}", up.port());
        assert_denied(&p, &up, &format!("http://{authority}/"), &authority, 403, "private-address").await;
        let r = request(p.http, &format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n")).await;
        let bare = ip.trim_start_matches('[').trim_end_matches(']');
        let shown: std::net::IpAddr = bare.parse().expect("pin ip");
        assert!(
            r.body.contains("resolves only to private addresses")
                && r.body.contains(&format!("--allow-private {shown}/")),
            "{name}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn host_header_mismatch_is_refused() {
    let up = Upstream::start(true).await;
    let p = start_proxy(test_example_only(up.port(), &[])).await;
    let target = format!("http://test.example:{}/", up.port());
    assert_denied(&p, &up, &target, "evil.test", 400, "host-mismatch").await;
    assert_denied(&p, &up, &target, "test.example", 400, "host-mismatch").await; // port differs (80)
    assert_denied(&p, &up, &target, &format!("test.example:{}\r\nHost: evil.test", up.port()), 400, "host-mismatch")
        .await;
}

#[tokio::test]
async fn second_request_on_keep_alive_connection_is_judged_on_its_own() {
    let up = Upstream::start(true).await;
    let p = start_proxy(test_example_only(up.port(), &["evil.test"])).await;
    let port = up.port();
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    let raw = format!("GET http://test.example:{port}/one HTTP/1.1\r\nHost: test.example:{port}\r\n\r\n");
    s.write_all(raw.as_bytes()).await.expect("write");
    let first = read_response(&mut s).await;
    let raw = format!("GET http://evil.test:{port}/two HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n");
    s.write_all(raw.as_bytes()).await.expect("write");
    assert_eq!(first.status, 200, "{first:?}");
    let second = read_response(&mut s).await;
    assert_eq!(second.status, 403, "{second:?}");
    assert_eq!(second.header("x-warden-deny"), Some("not-allowlisted"));
    assert!(second.body.contains("allow it with --allow-domain evil.test"), "{}", second.body);
    let got = String::from_utf8(up.received()).expect("utf8");
    assert!(got.contains("/one") && !got.contains("/two") && !got.contains("evil"), "{got}");
    assert_eq!(up.conn_count(), 1);
}

/// Starts a proxy on a port known before the rules are built, so the rules can name it.
async fn start_on_known_port(rules: impl FnOnce(u16) -> RulesConfig) -> (std::net::SocketAddr, std::sync::Arc<Sink>) {
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = std_l.local_addr().expect("addr");
    std_l.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(std_l).expect("tokio listener");
    let sink = std::sync::Arc::new(Sink::default());
    let cfg = warden_egress::EgressConfig { rules: rules(addr.port()), limits: Limits::default() };
    let (eg, _) = warden_egress::Egress::new(cfg, sink.clone()).expect("config");
    tokio::spawn(async move { eg.serve_http(listener).await });
    (addr, sink)
}

#[tokio::test]
async fn connect_to_the_proxy_itself_is_caught_by_the_guard() {
    let (proxy, sink) = start_on_known_port(|port| RulesConfig {
        allow: vec![allow(&format!("self.example:{port}"))],
        allow_cidr: strings(&["127.0.0.0/8"]),
        allow_ports: vec![port],
        resolve: strings(&["self.example:127.0.0.1"]),
        ..RulesConfig::default()
    })
    .await;
    let port = proxy.port();
    for target in [format!("127.0.0.1:{port}"), format!("self.example:{port}"), format!("localhost:{port}")] {
        let r = request(proxy, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert_eq!(r.status, 403, "{target}: {r:?}");
        let want = if target.starts_with("localhost") { "not-allowlisted" } else { "private-address" };
        assert_eq!(r.header("x-warden-deny"), Some(want), "{target}: {r:?}");
        assert_eq!(sink.last().reason, Some(want));
    }
}

#[tokio::test]
async fn connect_to_own_port_with_all_overrides_is_proxy_loop() {
    let (proxy, sink) = start_on_known_port(|port| RulesConfig {
        allow: vec![allow(&format!("self.example:{port}"))],
        allow_cidr: strings(&["127.0.0.0/8"]),
        allow_private: strings(&["127.0.0.0/8"]),
        allow_ports: vec![port],
        resolve: strings(&["self.example:127.0.0.1"]),
        ..RulesConfig::default()
    })
    .await;
    let port = proxy.port();
    for target in [format!("127.0.0.1:{port}"), format!("self.example:{port}"), format!("[::ffff:127.0.0.1]:{port}")] {
        let r = request(proxy, &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")).await;
        assert_eq!(r.status, 403, "{target}: {r:?}");
        assert_eq!(r.header("x-warden-deny"), Some("proxy-loop"), "{target}: {r:?}");
        assert_eq!(sink.last().reason, Some("proxy-loop"));
    }
}

#[tokio::test]
async fn connect_with_mismatched_sni_closes_before_any_byte_reaches_upstream() {
    let up = Upstream::start(false).await;
    let p = start_proxy(RulesConfig {
        allow: vec![allow(&format!("tunnel.example:{}", up.port()))],
        allow_private: strings(&["127.0.0.0/8"]),
        resolve: strings(&["tunnel.example:127.0.0.1"]),
        ..RulesConfig::default()
    })
    .await;
    for (sni, split) in [("evil.test", false), ("evil.test", true), ("tunnel.example.evil.test", false)] {
        let mut s = TcpStream::connect(p.http).await.expect("connect");
        let req = format!("CONNECT tunnel.example:{0} HTTP/1.1\r\nHost: tunnel.example:{0}\r\n\r\n", up.port());
        s.write_all(req.as_bytes()).await.expect("write");
        assert_eq!(read_response(&mut s).await.status, 200);
        let hello = warden_egress::tls::build_client_hello(Some(sni));
        if split {
            s.write_all(&hello[..3]).await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            s.write_all(&hello[3..]).await.expect("write");
        } else {
            s.write_all(&hello).await.expect("write");
        }
        assert_closed(&mut s).await;
        let d = p.sink.last();
        assert_eq!((d.allowed, d.reason, d.protocol), (false, Some("sni-mismatch"), "connect"), "{d:?}");
    }
    // The upstream was connected to (the check needs the tunnel open) but received nothing.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(up.received().is_empty(), "upstream got {:?}", up.received());
}

#[tokio::test]
async fn trailing_dot_case_wildcard_apex_expiry_port_and_deny() {
    let up = Upstream::start(true).await;
    let port = up.port();
    let p = start_proxy(RulesConfig {
        allow: vec![
            allow("*.wild.example"),
            allow("apex.example"),
            allow("*"),
            RuleSpec { pattern: "old.example".into(), expires: Some("2001-01-01".into()), raw: false },
        ],
        deny: strings(&["*.blocked.example", "secret.apex.example", "old.example"]),
        allow_private: strings(&[]),
        resolve: strings(&["a.wild.example:10.0.0.7"]),
        ..RulesConfig::default()
    })
    .await;
    let _ = port;
    // `*` is present, so to test "not-allowlisted" and "expired-rule" we use a second proxy below.
    assert_denied(&p, &up, "http://x.BLOCKED.example./", "x.blocked.example", 403, "denied-domain").await;
    assert_denied(&p, &up, "http://secret.apex.example:22/", "secret.apex.example:22", 403, "denied-domain").await;
    assert_denied(&p, &up, "http://apex.example:22/", "apex.example:22", 403, "port").await;
    assert_denied(&p, &up, "http://A.Wild.Example./", "a.wild.example", 403, "private-address").await;

    let p = start_proxy(RulesConfig {
        allow: vec![
            allow("*.wild.example"),
            allow("apex.example"),
            RuleSpec { pattern: "old.example".into(), expires: Some("2001-01-01".into()), raw: false },
        ],
        ..RulesConfig::default()
    })
    .await;
    assert_denied(&p, &up, "http://wild.example/", "wild.example", 403, "not-allowlisted").await;
    assert_denied(&p, &up, "http://www.apex.example/", "www.apex.example", 403, "not-allowlisted").await;
    assert_denied(&p, &up, "http://apex.example.evil.test/", "apex.example.evil.test", 403, "not-allowlisted").await;
    assert_denied(&p, &up, "http://evilwild.example/", "evilwild.example", 403, "not-allowlisted").await;
    assert_denied(&p, &up, "http://old.example/", "old.example", 403, "expired-rule").await;
    assert_denied(&p, &up, "http://apex.example..//", "apex.example..", 403, "invalid-name").await;
    assert_denied(&p, &up, "http://exa_mple.apex.example/", "exa_mple.apex.example", 403, "invalid-name").await;
    let r = request(p.http, "GET http://apex.example:22/ HTTP/1.1\r\nHost: apex.example:22\r\n\r\n").await;
    assert_eq!(r.header("x-warden-deny"), Some("port"));
    assert!(r.body.contains("--allow-port 22 or a rule such as apex.example:22"), "{}", r.body);
}

#[tokio::test]
async fn trailing_dot_and_case_reach_the_allowed_host() {
    let up = Upstream::start(true).await;
    let port = up.port();
    let p = start_proxy(test_example_only(port, &[])).await;
    let r = request(p.http, &format!("GET http://TEST.example.:{port}/ HTTP/1.1\r\nHost: test.EXAMPLE:{port}\r\n\r\n"))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(p.sink.last().host, "test.example");
}

#[tokio::test]
async fn origin_form_and_https_scheme_are_bad_requests() {
    let up = Upstream::start(true).await;
    let p = start_proxy(RulesConfig { allow: vec![allow("*")], ..RulesConfig::default() }).await;
    let r = request(p.http, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not a proxy request"), "{}", r.body);
    let r = request(p.http, "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n").await;
    assert_eq!(r.status, 400);
    up.assert_untouched("origin-form");
}

#[tokio::test]
async fn oversized_header_is_431() {
    let up = Upstream::start(true).await;
    let limits = Limits { max_header_bytes: 4096, ..Limits::default() };
    let p = start_proxy_with(test_example_only(up.port(), &[]), limits).await;
    let big = "a".repeat(6000);
    let authority = format!("test.example:{}", up.port());
    let r = request(p.http, &format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nX-Big: {big}\r\n\r\n"))
        .await;
    assert_eq!(r.status, 431, "{r:?}");
    up.assert_untouched("oversized header");
}

#[tokio::test]
async fn socks5_denials() {
    let up = Upstream::start(false).await;
    let port = up.port();
    let p = start_proxy(RulesConfig {
        allow: vec![allow("ok.example"), allow("lo.example")],
        allow_ports: vec![port],
        resolve: strings(&["lo.example:127.0.0.1", "ok.example:127.0.0.1"]),
        ..RulesConfig::default()
    })
    .await;
    let cases: [(u8, Vec<u8>, &str); 6] = [
        (3, b"evil.test".to_vec(), "not-allowlisted"),
        (3, b"lo.example".to_vec(), "private-address"),
        (3, b"127.1".to_vec(), "ip-literal"),
        (3, b"exa_mple..com".to_vec(), "invalid-name"),
        (1, vec![127, 0, 0, 1], "ip-literal"),
        (4, std::net::Ipv6Addr::LOCALHOST.octets().to_vec(), "ip-literal"),
    ];
    for (atyp, addr, reason) in cases {
        let (_s, code) = socks_connect(p.socks, atyp, &addr, port).await;
        assert_eq!(code, 0x02, "{addr:?}");
        let d = p.sink.last();
        assert_eq!((d.protocol, d.allowed, d.reason), ("socks5", false, Some(reason)), "{addr:?}");
    }
    // Commands other than CONNECT get 0x07.
    let mut s = TcpStream::connect(p.socks).await.expect("connect");
    s.write_all(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await.expect("write");
    let mut r = [0u8; 12];
    tokio::time::timeout(STEP, s.read_exact(&mut r)).await.expect("in time").expect("reply");
    assert_eq!(r[3], 0x07);
    up.assert_untouched("socks5 denials");
}

#[tokio::test]
async fn socks5_tunnel_checks_sni_too() {
    let up = Upstream::start(false).await;
    let p = start_proxy(RulesConfig {
        allow: vec![allow(&format!("ok.example:{}", up.port()))],
        allow_private: strings(&["127.0.0.0/8"]),
        resolve: strings(&["ok.example:127.0.0.1"]),
        ..RulesConfig::default()
    })
    .await;
    let (mut s, code) = socks_connect(p.socks, 3, b"ok.example", up.port()).await;
    assert_eq!(code, 0);
    s.write_all(&warden_egress::tls::build_client_hello(Some("evil.test"))).await.expect("write");
    assert_closed(&mut s).await;
    assert_eq!(p.sink.last().reason, Some("sni-mismatch"));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(up.received().is_empty());
}

#[tokio::test]
async fn pipelined_requests_are_judged_one_by_one() {
    let up = Upstream::start(true).await;
    let p = start_proxy(test_example_only(up.port(), &["evil.test"])).await;
    let port = up.port();
    let mut s = TcpStream::connect(p.http).await.expect("connect");
    let raw = format!(
        "GET http://test.example:{port}/one HTTP/1.1\r\nHost: test.example:{port}\r\n\r\n\
         GET http://evil.test:{port}/two HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"
    );
    s.write_all(raw.as_bytes()).await.expect("write");
    let first = read_response(&mut s).await;
    assert_eq!(first.status, 200, "{first:?}");
    let second = read_response(&mut s).await;
    assert_eq!(second.status, 403, "{second:?}");
    assert_eq!(second.header("x-warden-deny"), Some("not-allowlisted"));
    let got = String::from_utf8(up.received()).expect("utf8");
    assert!(got.contains("/one") && !got.contains("/two") && !got.contains("evil"), "{got}");
}
