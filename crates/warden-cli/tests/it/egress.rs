//! `--net allowlist`: real clients inside the sandbox reach allowed hosts through warden's
//! egress proxy (which lives in the sandbox's own network namespace) and get a 403 with a reason
//! otherwise. Upstream servers run on the host's loopback; tests reach them by name through
//! `--resolve NAME:127.0.0.1` and the explicit `--allow-private 127.0.0.1/32` override.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Scratch;

const PY: &str = "/usr/bin/python3";

/// A python HTTP(S) file server on 127.0.0.1 (ephemeral port), killed on drop.
struct Upstream {
    child: Child,
    port: u16,
}

impl Upstream {
    /// `python3 -m http.server` serving `dir`.
    fn files(dir: &Path) -> Upstream {
        let mut cmd = Command::new(PY);
        cmd.args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0", "--directory"]).arg(dir);
        Upstream::start(cmd)
    }

    /// An HTTPS server with `cert`/`key`, answering every GET with `body`.
    fn tls(dir: &Path, cert: &Path, key: &Path, body: &str) -> Upstream {
        let script = dir.join("tls_server.py");
        std::fs::write(
            &script,
            format!(
                "import http.server, ssl, sys\n\
                 class H(http.server.BaseHTTPRequestHandler):\n\
                 \x20   def do_GET(self):\n\
                 \x20       b = {body:?}.encode()\n\
                 \x20       self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers()\n\
                 \x20       self.wfile.write(b)\n\
                 \x20   def log_message(self, *a): pass\n\
                 s = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
                 ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain({cert:?}, {key:?})\n\
                 s.socket = ctx.wrap_socket(s.socket, server_side=True)\n\
                 print('Serving HTTPS on 127.0.0.1 port', s.server_address[1], flush=True)\n\
                 s.serve_forever()\n",
                cert = cert.display().to_string(),
                key = key.display().to_string(),
            ),
        )
        .expect("write server");
        let mut cmd = Command::new(PY);
        cmd.arg(&script);
        Upstream::start(cmd)
    }

    fn start(mut cmd: Command) -> Upstream {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start upstream");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).expect("upstream did not start");
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Upstream { child, port }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `warden run --net allowlist` with the rules that reach `test.example:PORT` on the host.
fn allowlisted(s: &Scratch, port: u16, extra: &[&str], argv: &[&str]) -> warden_testkit::Output {
    let rule = format!("test.example:{port}");
    let log = s.root.join("state/audit.jsonl");
    let log = log.to_str().expect("UTF-8 log path");
    let net = ["--net", "allowlist", "--allow-domain", &rule, "--resolve", "test.example:127.0.0.1"];
    s.run(&[&net[..], &["--allow-private", "127.0.0.1/32", "--audit-log", log]].concat(), extra, argv)
}

fn site(s: &Scratch) -> std::path::PathBuf {
    let dir = s.root.join("site");
    std::fs::create_dir_all(&dir).expect("mkdir site");
    std::fs::write(dir.join("index.html"), "hello through the proxy\n").expect("write");
    dir
}

#[test]
fn curl_wget_and_python_reach_an_allowed_host() {
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    let url = format!("http://test.example:{}/index.html", up.port);
    let script = format!(
        "curl -sS {url}; wget -qO- {url}; {PY} -c 'import urllib.request as u; print(u.urlopen(\"{url}\").read().decode(), end=\"\")'"
    );
    allowlisted(&s, up.port, &[], &["sh", "-c", &script])
        .success()
        .stdout_has("hello through the proxy\nhello through the proxy\nhello through the proxy\n");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("\"event\":\"egress.decision\"") && log.contains("\"decision\":\"allow\""), "{log}");
}

#[test]
fn denied_hosts_get_403_with_a_reason_and_a_summary() {
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    let script = "curl -sS -D - http://evil.test/ ; curl -sS http://169.254.169.254/latest/meta-data/; \
                  curl -sS -o /dev/null -w '%{http_code}\\n' http://evil.test/again; exit 0";
    let out = allowlisted(&s, up.port, &[], &["sh", "-c", script]);
    out.success()
        .stdout_has("403")
        // Header names are case-insensitive; hyper writes them in lowercase.
        .stdout_has("x-warden-deny: not-allowlisted")
        .stdout_has("allow it with --allow-cidr 169.254.169.254/32")
        .stdout_has("--allow-domain evil.test")
        .stderr_has("warden: denied 3 connections: evil.test (2), 169.254.169.254 (1)");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("\"reason\":\"not-allowlisted\"") && log.contains("\"reason\":\"ip-literal\""), "{log}");
    assert!(log.contains("\"denied_connections\":3"), "{log}");
}

#[test]
fn direct_connections_bypassing_the_proxy_fail() {
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    // The upstream listens on the host's loopback; the sandbox has its own.
    let script = format!(
        "curl -sS --noproxy '*' --max-time 5 http://127.0.0.1:{p}/index.html; echo rc=$?; \
         exec 3<>/dev/tcp/127.0.0.1/{p} && echo ESCAPED; exit 0",
        p = up.port
    );
    allowlisted(&s, up.port, &[], &["bash", "-c", &script]).success().stdout_has("rc=7").stdout_lacks("ESCAPED");
}

#[test]
fn https_through_connect_with_a_test_ca_and_sni_mismatch_refused() {
    let s = Scratch::temp();
    // In the workdir: the sandbox's /tmp is private, the workdir is bound in.
    let dir = s.ws.join("tls");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let gen = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=test.example", "-addext", "subjectAltName=DNS:test.example", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(gen.status.success(), "openssl: {}", String::from_utf8_lossy(&gen.stderr));
    let up = Upstream::tls(&dir, &cert, &key, "secure hello");
    let url = format!("https://test.example:{}/", up.port);
    allowlisted(&s, up.port, &[], &["curl", "-sS", "--cacert", &cert.display().to_string(), &url])
        .success()
        .stdout_has("secure hello");
    // A client that CONNECTs to the allowed name but says another name in its TLS SNI.
    let py = format!(
        "import socket, ssl\n\
         s = socket.create_connection(('127.0.0.1', 3128))\n\
         s.sendall(b'CONNECT test.example:{p} HTTP/1.1\\r\\nHost: test.example:{p}\\r\\n\\r\\n')\n\
         print(s.recv(200).split(b'\\r\\n')[0].decode())\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         try:\n\
         \x20   t = ctx.wrap_socket(s, server_hostname='evil.test'); print('ESCAPED', t.version())\n\
         except (OSError, ssl.SSLError) as e:\n\
         \x20   print('tunnel closed', type(e).__name__)\n",
        p = up.port
    );
    let file = s.file("ws/sni.py", &py);
    let out = allowlisted(&s, up.port, &[], &[PY, &file.display().to_string()]);
    out.success().stdout_has("200").stdout_has("tunnel closed").stdout_lacks("ESCAPED");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("\"reason\":\"sni-mismatch\""), "{log}");
}

#[test]
fn socks5_and_loopback_servers_inside_work() {
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    let script = format!(
        "curl -sS -x socks5h://127.0.0.1:1080 http://test.example:{p}/index.html; \
         curl -sS -o /dev/null -w 'socks-denied=%{{http_code}}\\n' -x socks5h://127.0.0.1:1080 http://evil.test/; \
         curl -sS -o /dev/null -w 'socks-other-host=%{{http_code}}\\n' -H 'Host: evil.test' \
              -x socks5h://127.0.0.1:1080 http://test.example:{p}/index.html; \
         ({PY} -m http.server --bind 127.0.0.1 8000 >/dev/null 2>&1 &); \
         i=0; while [ $i -lt 50 ] && ! curl -s -o /dev/null http://127.0.0.1:8000/; do sleep 0.1; i=$((i+1)); done; \
         curl -sS -o /dev/null -w 'inside=%{{http_code}}\\n' http://127.0.0.1:8000/; exit 0",
        p = up.port
    );
    allowlisted(&s, up.port, &[], &["sh", "-c", &script])
        .success()
        .stdout_has("hello through the proxy")
        .stdout_has("socks-denied=000")
        .stdout_has("socks-other-host=403")
        .stdout_has("inside=200");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("\"reason\":\"host-mismatch\"") && log.contains("\"protocol\":\"socks5\""), "{log}");
}

/// A python client inside the sandbox that opens CONNECT tunnels to test.example:PORT and
/// prints one line per case.
const TUNNEL_CLIENT: &str = r#"
import socket, sys
port = int(sys.argv[1])
def tunnel():
    s = socket.create_connection(('127.0.0.1', 3128), timeout=15)
    s.sendall(b'CONNECT test.example:%d HTTP/1.1\r\nHost: test.example:%d\r\n\r\n' % (port, port))
    f = s.makefile('rb')
    assert b' 200 ' in f.readline()
    while f.readline() not in (b'\r\n', b''):
        pass
    return s, f
def response(f):
    status = f.readline().decode().strip()
    headers = {}
    while True:
        line = f.readline()
        if line in (b'\r\n', b''):
            break
        k, v = line.decode().split(':', 1)
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get('content-length', 0)))
    return status.split(' ')[1] if status else 'closed', headers, body.decode()
def until_eof(f):
    try:
        return f.read(4096)
    except OSError:
        return b''
for case, head in [('other-host', 'Host: evil.test'), ('allowed', 'Host: test.example:%d' % port)]:
    s, f = tunnel()
    s.sendall(('GET /index.html HTTP/1.1\r\n%s\r\n\r\n' % head).encode())
    code, headers, body = response(f)
    print(case, code, headers.get('x-warden-deny', '-'), headers.get('connection', '-'), body.strip())
s, f = tunnel()
s.sendall(b'SSH-2.0-OpenSSH_9.6\r\n')
data = until_eof(f)
print('garbage', 'PASSED: %r' % data[:300] if data else 'closed')
"#;

#[test]
fn tunnels_carry_only_tls_or_http_for_their_host_unless_raw() {
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    let client = s.file("ws/tunnel_client.py", TUNNEL_CLIENT);
    let (client, port) = (client.display().to_string(), up.port.to_string());
    let out = allowlisted(&s, up.port, &[], &[PY, &client, &port]);
    out.success()
        .stdout_has("other-host 403 host-mismatch")
        // python's http.server answers HTTP/1.0 and closes: the tunnel's client connection is closed too.
        .stdout_has("allowed 200 - close hello through the proxy")
        .stdout_has("garbage closed");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("\"reason\":\"host-mismatch\"") && log.contains("\"reason\":\"not-tls\""), "{log}");
    // With a raw rule for that host and port, tunnels to it are not inspected (on purpose): the
    // same bytes reach the upstream, which refuses the garbage and serves any Host.
    let raw = format!("test.example:{}", up.port);
    let out = allowlisted(&s, up.port, &["--allow-raw", &raw], &[PY, &client, &port]);
    out.success().stdout_has("other-host 200").stdout_has("garbage PASSED").stdout_has("Bad request");
}

#[test]
fn raw_rules_in_flags_and_config_are_explained_and_checked() {
    let s = Scratch::temp();
    let explain =
        |args: &[&str]| crate::warden().current_dir(&s.ws).args(["explain", "-p", "workspace-net"]).args(args).run();
    explain(&["--allow-raw", "db.internal:5432"])
        .success()
        .stdout_has("allow db.internal:5432 raw TCP")
        .stdout_has("anything else is closed unless a raw rule names that host and port");
    explain(&["--allow-raw", "db.internal"]).code(2).stderr_has("a raw rule names a host and a port");
    let cfg = s.file(
        "warden.toml",
        "[network]\nmode = \"allowlist\"\nallow = [{ domain = \"pg.internal\", port = 6432, raw = true }]\n",
    );
    explain(&["--config", cfg.to_str().expect("utf-8")]).success().stdout_has("allow pg.internal:6432 raw TCP");
    let bad =
        s.file("bad.toml", "[network]\nmode = \"allowlist\"\nallow = [{ domain = \"pg.internal\", raw = true }]\n");
    explain(&["--config", bad.to_str().expect("utf-8")])
        .code(125)
        .stderr_has(&format!("{}:3: key \"allow\" in [network]: a raw entry must name a port", bad.display()));
    // `*` never gets raw, from the command line either (the proxy refuses it when it starts).
    crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--net", "allowlist", "--allow-raw", "*:22", "--", "true"])
        .run()
        .code(125)
        .stderr_has("a raw rule must name a host");
}

#[test]
fn git_clones_over_http_through_the_proxy() {
    let s = Scratch::temp();
    let site = site(&s);
    let repo = site.join("repo.git");
    let git = |args: &[&str], dir: &Path| {
        let out = Command::new("git").args(args).current_dir(dir).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let src = s.root.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    git(&["init", "-q", "-b", "main"], &src);
    std::fs::write(src.join("README"), "cloned through warden\n").expect("write");
    git(&["add", "README"], &src);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], &src);
    git(&["clone", "-q", "--bare", src.to_str().unwrap_or("."), repo.to_str().unwrap_or(".")], &s.root);
    git(&["update-server-info"], &repo);
    let up = Upstream::files(&site);
    let url = format!("http://test.example:{}/repo.git", up.port);
    let start = Instant::now();
    allowlisted(
        &s,
        up.port,
        &["-p", "workspace-net"],
        &["sh", "-c", &format!("git clone -q {url} out && cat out/README")],
    )
    .success()
    .stdout_has("cloned through warden");
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(s.ws.join("out/README").exists(), "the clone lands in the workdir");
}

#[test]
fn rules_without_the_allowlist_and_bad_rules_are_errors() {
    let s = Scratch::temp();
    crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--allow-domain", "pypi.org", "--", "true"])
        .run()
        .code(125)
        .stderr_has("--net allowlist");
    crate::warden()
        .current_dir(&s.ws)
        .args(["run", "--net", "allowlist", "--allow-domain", "exa mple..com", "--", "true"])
        .run()
        .code(125)
        .stderr_has("exa mple..com");
    let out =
        crate::warden().current_dir(&s.ws).args(["explain", "-p", "workspace-net", "--allow-domain", "pypi.org"]).run();
    out.success().stdout_has("allow pypi.org").stdout_has("egress proxy on 127.0.0.1:3128");
}

#[test]
fn standalone_egress_proxy_serves_decides_and_summarises() {
    use std::io::{Read, Write};
    let s = Scratch::temp();
    let up = Upstream::files(&site(&s));
    let rule = format!("test.example:{}", up.port);
    let mut child = warden_testkit::scrubbed_command(crate::warden_path())
        .args(["egress", "--listen", "127.0.0.1:0", "--allow-domain", &rule, "--resolve", "test.example:127.0.0.1"])
        .args(["--allow-private", "127.0.0.1/32", "--audit-log"])
        .arg(s.root.join("state/audit.jsonl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warden egress");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    // Whatever happens below, the proxy does not outlive the test.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let mut first = String::new();
    stderr.read_line(&mut first).expect("read the listening line");
    let addr = first.split_whitespace().find(|w| w.starts_with("127.0.0.1:")).unwrap_or_else(|| panic!("{first}"));
    let get = |target: &str| {
        let mut c = std::net::TcpStream::connect(addr).expect("connect proxy");
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        write!(
            c,
            "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.split('/').nth(2).unwrap_or("")
        )
        .expect("send");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    };
    let ok = get(&format!("http://test.example:{}/index.html", up.port));
    // The status line mirrors the upstream's HTTP version (python answers HTTP/1.0).
    assert!(ok.starts_with("HTTP/1.") && ok.contains(" 200 ") && ok.contains("hello through the proxy"), "{ok}");
    let denied = get("http://evil.test/");
    assert!(denied.starts_with("HTTP/1.1 403") && denied.contains("not-allowlisted"), "{denied}");
    // SIGINT ends it cleanly, with the summary line.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "warden egress did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    assert!(status.success(), "exit {status:?}: {rest}");
    assert!(rest.contains("warden: denied 1 connection: evil.test (1)"), "{rest}");
    let log = std::fs::read_to_string(s.root.join("state/audit.jsonl")).expect("audit");
    assert!(log.contains("egress.start") && log.contains("\"decision\":\"deny\""), "{log}");
}
