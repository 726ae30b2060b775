//! Allowed traffic: absolute-form GET, CONNECT tunnels, SOCKS5, limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_egress::{Limits, RulesConfig};

use crate::support::*;

fn loopback_rules(up: u16) -> RulesConfig {
    RulesConfig {
        allow: vec![allow("test.example"), allow(&format!("tunnel.example:{up}"))],
        allow_ports: vec![up],
        allow_private: strings(&["127.0.0.0/8"]),
        resolve: strings(&["test.example:127.0.0.1", "tunnel.example:127.0.0.1"]),
        ..RulesConfig::default()
    }
}

#[tokio::test]
async fn absolute_form_get_is_forwarded_with_hop_by_hop_headers_stripped() {
    let up = Upstream::start(true).await;
    let p = start_proxy(loopback_rules(up.port())).await;
    let raw = format!(
        "GET http://Test.Example:{port}/path?q=1 HTTP/1.1\r\nHost: test.example:{port}\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\n\
         X-Drop: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Keep: 2\r\n\r\n",
        port = up.port()
    );
    let r = request(p.http, &raw).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "hello");
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("x-hop"), None, "response header listed in Connection must be stripped");
    assert_eq!(r.header("keep-alive"), None);
    let got = String::from_utf8(up.received()).expect("utf8").to_ascii_lowercase();
    assert!(got.starts_with("get /path?q=1 http/1.1\r\n"), "origin-form upstream: {got}");
    assert!(got.contains(&format!("host: test.example:{}\r\n", up.port())), "{got}");
    assert!(got.contains("x-keep: 2\r\n"), "{got}");
    for h in ["proxy-authorization", "proxy-connection", "x-drop", "keep-alive", "te:", "upgrade", "c2vjcmv0"] {
        assert!(!got.contains(h), "{h} leaked upstream: {got}");
    }
    let d = p.sink.last();
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        (d.protocol, d.host.as_str(), d.port, d.rule.as_deref()),
        ("http", "test.example", up.port(), Some("test.example"))
    );
    assert_eq!(d.addr, Some(up.addr));
    assert!(p.egress.denied_summary().is_empty());
}

#[tokio::test]
async fn connect_tunnel_forwards_a_matching_client_hello_and_raw_bytes_only_with_a_raw_rule() {
    // Before issue 9 plain bytes went through any tunnel unchecked; now only a raw rule lets them.
    let up = Upstream::start(false).await;
    let mut rules = loopback_rules(up.port());
    rules.allow.push(allow_raw(&format!("raw.example:{}", up.port())));
    rules.resolve.push("raw.example:127.0.0.1".into());
    let p = start_proxy(rules).await;
    let hello = warden_egress::tls::build_client_hello(Some("TUNNEL.example."));
    for (authority, payload) in [("tunnel.example", hello), ("raw.example", b"plain bytes".to_vec())] {
        let mut s = connect_tunnel(p.http, &format!("{authority}:{}", up.port())).await;
        // Send the payload in two pieces to exercise reassembly.
        let (a, b) = payload.split_at(payload.len() / 2);
        s.write_all(a).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b).await.expect("write");
        let mut echo = vec![0u8; payload.len()];
        tokio::time::timeout(STEP, s.read_exact(&mut echo)).await.expect("echo in time").expect("echo");
        assert_eq!(echo, payload, "{authority}");
    }
    assert_eq!(up.conn_count(), 2);
    let raw = p.sink.all().into_iter().find(|d| d.host == "raw.example").expect("raw decision");
    assert_eq!((raw.allowed, raw.rule), (true, Some(format!("raw.example:{} (raw)", up.port()))));
}

#[tokio::test]
async fn socks5_domain_allowed_data_flows() {
    let up = Upstream::start(false).await;
    let mut rules = loopback_rules(up.port());
    rules.allow.push(allow_raw(&format!("raw.example:{}", up.port())));
    rules.resolve.push("raw.example:127.0.0.1".into());
    let p = start_proxy(rules).await;
    let hello = warden_egress::tls::build_client_hello(Some("tunnel.example"));
    for (name, payload) in [(&b"tunnel.example"[..], hello), (b"raw.example", b"ping".to_vec())] {
        let mut s = TcpStream::connect(p.socks).await.expect("connect");
        // Greeting, request and first bytes pipelined in one write, as socks5h clients may do.
        let mut msg = vec![5, 1, 0, 5, 1, 0, 3, u8::try_from(name.len()).expect("short")];
        msg.extend_from_slice(name);
        msg.extend_from_slice(&up.port().to_be_bytes());
        msg.extend_from_slice(&payload);
        s.write_all(&msg).await.expect("write");
        let mut reply = [0u8; 2 + 10];
        tokio::time::timeout(STEP, s.read_exact(&mut reply)).await.expect("in time").expect("reply");
        assert_eq!(&reply[..2], &[5, 0]);
        assert_eq!(&reply[2..5], &[5, 0, 0], "success reply");
        let mut echo = vec![0u8; payload.len()];
        tokio::time::timeout(STEP, s.read_exact(&mut echo)).await.expect("in time").expect("echo");
        assert_eq!(echo, payload);
        let d = p.sink.last();
        assert!(d.allowed && d.protocol == "socks5", "{d:?}");
    }
}

#[tokio::test]
async fn upstream_refused_is_502_with_body() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let p = start_proxy(loopback_rules(port)).await;
    let r = request(p.http, &format!("GET http://test.example:{port}/ HTTP/1.1\r\nHost: test.example:{port}\r\n\r\n"))
        .await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.starts_with("warden: cannot connect to test.example"), "{}", r.body);
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let up = Upstream::start(true).await;
    let limits = Limits { max_connections: 1, ..Limits::default() };
    let p = start_proxy_with(loopback_rules(up.port()), limits).await;
    // Hold the only slot with an idle connection.
    let _held = TcpStream::connect(p.http).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = request(p.http, "GET http://test.example/ HTTP/1.1\r\nHost: test.example\r\n\r\n").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("too many connections"), "{}", r.body);
    up.assert_untouched("over the limit");
}

#[tokio::test]
async fn rules_table_and_denied_summary() {
    let p = start_proxy(RulesConfig {
        allow: vec![allow("a.example")],
        deny: strings(&["*.evil.example"]),
        ..RulesConfig::default()
    })
    .await;
    let t = p.egress.rules_table();
    assert!(t.contains(&("a.example".into(), "allow".into())), "{t:?}");
    assert!(t.contains(&("*.evil.example".into(), "deny".into())), "{t:?}");
    assert!(t.contains(&("443".into(), "port".into())), "{t:?}");
    for host in ["x.evil.example", "x.evil.example", "other.example"] {
        let r = request(p.http, &format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
        assert_eq!(r.status, 403);
    }
    assert_eq!(p.egress.denied_summary(), vec![("x.evil.example".into(), 2), ("other.example".into(), 1)]);
}

#[tokio::test]
async fn system_resolver_path_uses_hosts_file_and_the_guard() {
    // `localhost` is not pinned: it goes through hickory (which reads /etc/hosts first).
    let up = Upstream::start(true).await;
    let port = up.port();
    let open = start_proxy(RulesConfig {
        allow: vec![allow("localhost")],
        allow_ports: vec![port],
        allow_private: strings(&["127.0.0.0/8", "::1/128"]),
        ..RulesConfig::default()
    })
    .await;
    let r =
        request(open.http, &format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let guarded =
        start_proxy(RulesConfig { allow: vec![allow("localhost")], allow_ports: vec![port], ..RulesConfig::default() })
            .await;
    let r = request(guarded.http, &format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"))
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("x-warden-deny"), Some("private-address"));
    assert_eq!(up.conn_count(), 1, "only the allowed request reached the upstream");
}

#[tokio::test]
async fn upstream_connections_are_reused_but_every_request_is_decided() {
    let up = Upstream::start(true).await;
    let p = start_proxy(loopback_rules(up.port())).await;
    let raw = format!("GET http://test.example:{0}/a HTTP/1.1\r\nHost: test.example:{0}\r\n\r\n", up.port());
    // Three separate client connections, one after the other.
    for _ in 0..3 {
        let r = request(p.http, &raw).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(up.conn_count(), 1, "the idle upstream connection is reused");
    let allowed = p.sink.all().iter().filter(|d| d.allowed && d.protocol == "http").count();
    assert_eq!(allowed, 3, "each request is a decision of its own");
    // A request that the rules deny never reaches the pooled connection.
    let denied = request(p.http, "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n").await;
    assert_eq!(denied.status, 403);
    let got = String::from_utf8(up.received()).expect("utf8");
    assert_eq!(got.matches("GET /a ").count(), 3, "{got}");
    assert!(!got.contains("evil"), "{got}");
}
