//! No other name through an allowed tunnel: the first flight of CONNECT and SOCKS5 tunnels (TLS
//! shapes, plain HTTP with another Host, garbage, silence), raw rules, and a real curl over SOCKS5.
//! Every denial asserts the reason recorded and that the upstream received nothing of it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_egress::tls::{build_client_hello, split_into_records};
use warden_egress::{Limits, RulesConfig};

use crate::support::*;

/// `tunnel.example` allowed on the upstream's port and `raw.example` allowed raw on it, both
/// pinned to 127.0.0.1; `evil.test` is pinned too but not allowed.
fn rules(port: u16) -> RulesConfig {
    RulesConfig {
        allow: vec![allow(&format!("tunnel.example:{port}")), allow_raw(&format!("raw.example:{port}"))],
        allow_private: strings(&["127.0.0.0/8"]),
        resolve: strings(&["tunnel.example:127.0.0.1", "raw.example:127.0.0.1", "evil.test:127.0.0.1"]),
        ..RulesConfig::default()
    }
}

/// Waits a little for stray bytes, then asserts the upstream received none.
async fn assert_nothing_received(up: &Upstream, case: &str) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(up.received().is_empty(), "{case}: upstream received {:?}", String::from_utf8_lossy(&up.received()));
}

fn assert_denied_tunnel(p: &Proxy, protocol: &str, reason: &str, case: &str) -> warden_egress::Decision {
    let d = p.sink.last();
    assert_eq!((d.protocol, d.allowed, d.reason), (protocol, false, Some(reason)), "{case}: {d:?}");
    d
}

/// Writes `bytes` in the given pieces, pausing so that each is its own TCP segment.
async fn write_in_pieces(s: &mut TcpStream, bytes: &[u8], cuts: &[usize]) {
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        s.write_all(&bytes[at..cut]).await.expect("write");
        s.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(15)).await;
        at = cut;
    }
}

async fn echoed(s: &mut TcpStream, sent: &[u8]) -> Vec<u8> {
    let mut echo = vec![0u8; sent.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut echo)).await.expect("echo in time").expect("echo");
    echo
}

#[tokio::test]
async fn plaintext_http_in_a_connect_tunnel_must_name_the_tunnel_host() {
    let up = Upstream::start(true).await;
    let p = start_proxy(rules(up.port())).await;
    let authority = format!("tunnel.example:{}", up.port());
    // The first request names another host: origin-form with Host, and absolute-form.
    for (case, raw) in [
        ("Host", "GET /evil HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_owned()),
        ("absolute-form", format!("GET http://evil.test:{}/evil HTTP/1.1\r\nHost: evil.test\r\n\r\n", up.port())),
        ("two Host headers", format!("GET /evil HTTP/1.1\r\nHost: {authority}\r\nHost: evil.test\r\n\r\n")),
        ("nested CONNECT", "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n".to_owned()),
    ] {
        let mut s = connect_tunnel(p.http, &authority).await;
        s.write_all(raw.as_bytes()).await.expect("write");
        let r = read_response(&mut s).await;
        assert_eq!((r.status, r.header("x-warden-deny")), (403, Some("host-mismatch")), "{case}: {r:?}");
        assert!(r.body.contains("this tunnel goes to tunnel.example"), "{case}: {}", r.body);
        let d = assert_denied_tunnel(&p, "connect", "host-mismatch", case);
        assert_eq!(d.host, "tunnel.example");
        assert!(d.rule.as_deref().is_some_and(|r| r.contains("evil.test")), "{case}: {d:?}");
    }
    assert_nothing_received(&up, "first request for evil.test").await;

    // An allowed request (with a body), then a keep-alive one for another host, then an allowed one.
    let mut s = connect_tunnel(p.http, &authority).await;
    let one = format!("POST /one HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 4\r\n\r\nbody");
    s.write_all(one.as_bytes()).await.expect("write");
    let r = read_response(&mut s).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello"), "{r:?}");
    assert_eq!(r.header("x-hop"), None, "hop-by-hop headers are stripped inside a tunnel too");
    s.write_all(b"GET /two HTTP/1.1\r\nHost: evil.test\r\n\r\n").await.expect("write");
    let r = read_response(&mut s).await;
    assert_eq!((r.status, r.header("x-warden-deny")), (403, Some("host-mismatch")), "{r:?}");
    assert_denied_tunnel(&p, "connect", "host-mismatch", "keep-alive request");
    s.write_all(format!("GET /three HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes()).await.expect("write");
    assert_eq!(read_response(&mut s).await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = String::from_utf8(up.received()).expect("utf8");
    assert!(got.starts_with("POST /one HTTP/1.1\r\n") && got.contains("\r\n\r\nbody"), "{got}");
    assert!(got.contains("GET /three ") && !got.contains("/two") && !got.contains("evil"), "{got}");
    assert_eq!(up.conn_count(), 5, "one upstream connection per tunnel");
}

#[tokio::test]
async fn curl_over_socks5h_to_an_http_url_works_and_another_host_header_is_denied() {
    let up = Upstream::start(true).await;
    let p = start_proxy(rules(up.port())).await;
    let proxy = format!("socks5h://{}", p.socks);
    let url = format!("http://tunnel.example:{}/curl", up.port());
    let curl = |extra: &'static [&'static str]| {
        let (proxy, url) = (proxy.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .args(["-sS", "-D", "-", "--max-time", "10", "-x", &proxy])
                .args(extra)
                .arg(&url)
                .output()
                .expect("run curl")
        })
    };
    let ok = curl(&[]).await.expect("join");
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success() && out.contains(" 200 ") && out.ends_with("hello"), "{out} {ok:?}");
    let bad = curl(&["-H", "Host: evil.test"]).await.expect("join");
    let out = String::from_utf8_lossy(&bad.stdout).to_ascii_lowercase();
    assert!(out.contains(" 403 ") && out.contains("x-warden-deny: host-mismatch"), "{out} {bad:?}");
    assert_denied_tunnel(&p, "socks5", "host-mismatch", "curl -H 'Host: evil.test'");
    let got = String::from_utf8(up.received()).expect("utf8");
    assert_eq!(got.matches("GET /curl ").count(), 1, "{got}");
    assert!(!got.contains("evil"), "{got}");
}

#[tokio::test]
async fn client_hello_split_across_segments_and_records() {
    let up = Upstream::start(false).await;
    let p = start_proxy(rules(up.port())).await;
    let authority = format!("tunnel.example:{}", up.port());
    for (sni, records, cuts) in [
        ("tunnel.example", 0, &[1usize, 3, 6, 40][..]),
        ("tunnel.example", 7, &[2, 5, 11, 60, 100][..]),
        ("tunnel.example", 1, &[4, 5, 6][..]),
    ] {
        let hello = build_client_hello(Some(sni));
        let hello = if records == 0 { hello } else { split_into_records(&hello[5..], records, [0x03, 0x01]) };
        let mut s = connect_tunnel(p.http, &authority).await;
        write_in_pieces(&mut s, &hello, cuts).await;
        assert_eq!(echoed(&mut s, &hello).await, hello, "records of {records}");
    }
    let forwarded = up.received().len();
    for (records, cuts) in [(0, &[1usize, 3, 6, 40][..]), (7, &[2, 5, 11, 60, 100][..]), (1, &[4, 5, 6][..])] {
        let hello = build_client_hello(Some("evil.test"));
        let hello = if records == 0 { hello } else { split_into_records(&hello[5..], records, [0x03, 0x01]) };
        let mut s = connect_tunnel(p.http, &authority).await;
        write_in_pieces(&mut s, &hello, cuts).await;
        assert_closed(&mut s).await;
        let d = assert_denied_tunnel(&p, "connect", "sni-mismatch", "split evil.test");
        assert_eq!(d.rule.as_deref(), Some("SNI \"evil.test\""));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.received().len(), forwarded, "nothing of the evil.test hellos reached the upstream");
}

#[tokio::test]
async fn tls_shapes_that_hide_the_name_are_closed() {
    let up = Upstream::start(false).await;
    let p = start_proxy(rules(up.port())).await;
    let authority = format!("tunnel.example:{}", up.port());
    let evil = build_client_hello(Some("evil.test"));
    let alert = [0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
    let ccs = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no SNI", build_client_hello(None), "ClientHello without SNI"),
        ("leading alert", [&alert[..], &evil].concat(), "alert record before the ClientHello"),
        (
            "leading alert, allowed SNI",
            [&alert[..], &build_client_hello(Some("tunnel.example"))].concat(),
            "alert record before the ClientHello",
        ),
        ("leading change_cipher_spec", [&ccs[..], &evil].concat(), "change_cipher_spec record before the ClientHello"),
        ("legacy version 02 01", split_into_records(&evil[5..], 16_384, [0x02, 0x01]), "SNI \"evil.test\""),
        ("02 01 in small records", split_into_records(&evil[5..], 10, [0x02, 0x01]), "SNI \"evil.test\""),
        ("SSLv2 hello", vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15, 0, 0, 0, 0x10], "SSLv2-format ClientHello"),
    ];
    for (case, bytes, seen) in cases {
        let mut s = connect_tunnel(p.http, &authority).await;
        write_in_pieces(&mut s, &bytes, &[1, 5]).await;
        assert_closed(&mut s).await;
        let d = assert_denied_tunnel(&p, "connect", "sni-mismatch", case);
        assert!(d.rule.as_deref().is_some_and(|r| r.starts_with(seen)), "{case}: {d:?}");
    }
    assert_nothing_received(&up, "hidden names").await;
    // The odd version is read, not refused: with the tunnel's own name it passes.
    let ok = split_into_records(&build_client_hello(Some("tunnel.example"))[5..], 10, [0x02, 0x01]);
    let mut s = connect_tunnel(p.http, &authority).await;
    s.write_all(&ok).await.expect("write");
    assert_eq!(echoed(&mut s, &ok).await, ok);
}

#[tokio::test]
async fn socks5_tunnels_obey_the_same_rules() {
    let up = Upstream::start(false).await;
    let p = start_proxy(rules(up.port())).await;
    for (case, bytes, reason) in [
        (
            "SNI evil.test",
            split_into_records(&build_client_hello(Some("evil.test"))[5..], 33, [0x03, 0x03]),
            "sni-mismatch",
        ),
        ("no SNI", build_client_hello(None), "sni-mismatch"),
        ("garbage", b"\x00\x01garbage".to_vec(), "not-tls"),
    ] {
        let (mut s, code) = socks_connect(p.socks, 3, b"tunnel.example", up.port()).await;
        assert_eq!(code, 0, "{case}");
        write_in_pieces(&mut s, &bytes, &[2]).await;
        assert_closed(&mut s).await;
        assert_denied_tunnel(&p, "socks5", reason, case);
    }
    assert_nothing_received(&up, "socks5").await;
    let (mut s, code) = socks_connect(p.socks, 3, b"raw.example", up.port()).await;
    assert_eq!(code, 0);
    s.write_all(b"\x00\x01garbage").await.expect("write");
    assert_eq!(echoed(&mut s, b"\x00\x01garbage").await, b"\x00\x01garbage");
}

#[tokio::test]
async fn garbage_is_not_tls_unless_a_raw_rule_names_that_host_and_port() {
    let up = Upstream::start(false).await;
    let other = Upstream::start(false).await;
    let mut cfg = rules(up.port());
    // raw.example is raw on `up`'s port only; on `other`'s port it is a plain allow rule.
    cfg.allow.push(allow(&format!("raw.example:{}", other.port())));
    let p = start_proxy(cfg).await;
    for (authority, first) in [
        (format!("tunnel.example:{}", up.port()), &b"SSH-2.0-OpenSSH_9.6\r\n"[..]),
        (format!("tunnel.example:{}", up.port()), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
        (format!("raw.example:{}", other.port()), b"SSH-2.0-OpenSSH_9.6\r\n"),
    ] {
        let mut s = connect_tunnel(p.http, &authority).await;
        s.write_all(first).await.expect("write");
        assert_closed(&mut s).await;
        let d = assert_denied_tunnel(&p, "connect", "not-tls", &authority);
        assert_eq!(d.rule.as_deref(), Some("first bytes are neither TLS nor an HTTP/1.x request"));
    }
    assert_nothing_received(&up, "not-tls").await;
    assert_nothing_received(&other, "not-tls, raw on another port").await;
    let mut s = connect_tunnel(p.http, &format!("raw.example:{}", up.port())).await;
    for _ in 0..3 {
        s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.expect("write");
        assert_eq!(echoed(&mut s, b"SSH-2.0-OpenSSH_9.6\r\n").await, b"SSH-2.0-OpenSSH_9.6\r\n");
    }
    // A raw tunnel is not inspected at all: even a ClientHello for another name passes (on purpose).
    let evil = build_client_hello(Some("evil.test"));
    s.write_all(&evil).await.expect("write");
    assert_eq!(echoed(&mut s, &evil).await, evil);
}

/// An upstream that speaks first (like SMTP, SSH or MySQL servers): greets, then echoes.
async fn greeting_upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                if s.write_all(b"220 ready\r\n").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                for _ in 0..100 {
                    match tokio::time::timeout(STEP, s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn server_first_protocols_need_a_raw_rule_and_silence_is_capped() {
    let port = greeting_upstream().await;
    let cap = Duration::from_millis(400);
    let p = start_proxy_with(rules(port), Limits { first_flight_timeout: cap, ..Limits::default() }).await;
    // Raw: the greeting arrives before the client says anything, and nothing closes the tunnel.
    let mut s = connect_tunnel(p.http, &format!("raw.example:{port}")).await;
    let mut greeting = [0u8; 11];
    tokio::time::timeout(STEP, s.read_exact(&mut greeting)).await.expect("greeting in time").expect("greeting");
    assert_eq!(&greeting, b"220 ready\r\n");
    tokio::time::sleep(cap * 2).await;
    s.write_all(b"EHLO x\r\n").await.expect("write");
    assert_eq!(echoed(&mut s, b"EHLO x\r\n").await, b"EHLO x\r\n");
    // Not raw: the upstream's greeting is held back, and a client that says nothing is closed at the cap.
    let started = Instant::now();
    let mut s = connect_tunnel(p.http, &format!("tunnel.example:{port}")).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(STEP, s.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "the tunnel passed {:?}", String::from_utf8_lossy(&buf[..n]));
    let waited = started.elapsed();
    assert!(waited >= cap - Duration::from_millis(50) && waited < cap + Duration::from_secs(3), "{waited:?}");
    let d = assert_denied_tunnel(&p, "connect", "not-tls", "silent client");
    assert!(d.rule.as_deref().is_some_and(|r| r.starts_with("the client sent nothing")), "{d:?}");
    // A client that trickles a ClientHello one byte at a time runs into the same cap.
    let hello = build_client_hello(Some("tunnel.example"));
    let mut s = connect_tunnel(p.http, &format!("tunnel.example:{port}")).await;
    let started = Instant::now();
    for b in hello.iter().take(40) {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_closed(&mut s).await;
    assert!(started.elapsed() < cap + Duration::from_secs(3));
    let d = assert_denied_tunnel(&p, "connect", "sni-mismatch", "trickling client");
    assert!(d.rule.as_deref().is_some_and(|r| r.starts_with("incomplete ClientHello")), "{d:?}");
}

/// An upstream that echoes everything until the client's EOF, then sends `bye` and closes; it
/// reports what each connection ended with (`"eof"` after the client's half-close, or the error)
/// on `ended`.
async fn echo_then_bye_upstream() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let copied = tokio::time::timeout(STEP * 4, tokio::io::copy(&mut r, &mut w)).await;
                let end = match copied {
                    Ok(Ok(_)) => match w.write_all(b"bye").await {
                        Ok(()) => "eof".to_owned(),
                        Err(e) => format!("writing bye: {e}"),
                    },
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "still open".to_owned(),
                };
                let _ = tx.send(end).await;
            });
        }
    });
    (port, rx)
}

/// Writes `data` into `s` while reading its echo back, then half-closes and reads the rest to EOF.
async fn round_trip(s: TcpStream, data: Vec<u8>) -> Vec<u8> {
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.expect("write through the tunnel");
        w.shutdown().await.expect("half-close");
        w
    });
    let mut back = Vec::new();
    tokio::time::timeout(STEP * 4, r.read_to_end(&mut back)).await.expect("echo and EOF in time").expect("read");
    drop(writer.await.expect("writer"));
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_tunnels_carry_bulk_data_and_pass_half_closes_on() {
    let (port, mut ended) = echo_then_bye_upstream().await;
    let p = start_proxy(rules(port)).await;
    // 8 MiB in both directions at once (more than the pipe and the socket buffers hold), through a
    // raw CONNECT tunnel, a raw SOCKS5 tunnel and a judged TLS tunnel (ClientHello first).
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let hello = build_client_hello(Some("tunnel.example"));
    let mut tls_data = hello.clone();
    tls_data.extend_from_slice(&data);
    for (case, s, sent) in [
        ("connect raw", connect_tunnel(p.http, &format!("raw.example:{port}")).await, &data),
        ("socks5 raw", socks_connect(p.socks, 3, b"raw.example", port).await.0, &data),
        ("connect tls", connect_tunnel(p.http, &format!("tunnel.example:{port}")).await, &tls_data),
    ] {
        let back = round_trip(s, sent.clone()).await;
        assert_eq!(back.len(), sent.len() + 3, "{case}");
        assert!(back[..sent.len()] == sent[..], "{case}: the echo differs");
        assert_eq!(&back[sent.len()..], b"bye", "{case}: the upstream's last bytes after the half-close");
        let end = tokio::time::timeout(STEP, ended.recv()).await.expect("upstream done").expect("report");
        assert_eq!(end, "eof", "{case}");
    }
}

#[tokio::test]
async fn idle_tunnels_are_closed_and_a_failed_side_ends_the_other() {
    let (port, mut ended) = echo_then_bye_upstream().await;
    let idle = Duration::from_millis(300);
    let p = start_proxy_with(rules(port), Limits { idle_timeout: idle, ..Limits::default() }).await;
    // Traffic, then silence in both directions: the proxy closes both sides.
    let mut s = connect_tunnel(p.http, &format!("raw.example:{port}")).await;
    s.write_all(b"ping").await.expect("write");
    assert_eq!(echoed(&mut s, b"ping").await, b"ping");
    assert_closed(&mut s).await;
    let end = tokio::time::timeout(STEP, ended.recv()).await.expect("upstream closed in time").expect("report");
    assert_ne!(end, "still open");
    // A client that resets its connection: the upstream side is closed too, long before the idle
    // timeout of a default proxy.
    let p = start_proxy(rules(port)).await;
    let (mut s, code) = socks_connect(p.socks, 3, b"raw.example", port).await;
    assert_eq!(code, 0);
    s.write_all(b"ping").await.expect("write");
    assert_eq!(echoed(&mut s, b"ping").await, b"ping");
    let linger = nix::sys::socket::sockopt::Linger;
    nix::sys::socket::setsockopt(&s, linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 }).expect("SO_LINGER 0");
    drop(s);
    let end = tokio::time::timeout(STEP, ended.recv()).await.expect("upstream closed in time").expect("report");
    assert_ne!(end, "still open");
}
