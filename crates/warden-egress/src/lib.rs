//! warden's egress proxy: a domain allowlist in front of the network, with an SSRF guard.
//!
//! The proxy speaks HTTP/1.1 (absolute-form requests and CONNECT tunnels, [`Egress::serve_http`]) and
//! SOCKS5 (CONNECT with domain names, IPv4 and IPv6, [`Egress::serve_socks5`]). Every connection
//! attempt is judged on its own (one decision per HTTP request, even on a keep-alive connection) and
//! reported to a [`DecisionSink`].
//!
//! What this crate guarantees, for every protocol:
//! - a host is normalized ([`rules::normalize_host`]) before it is judged, so spellings of one host
//!   (case, trailing dot, Unicode, the many forms of an IPv4 literal) are judged alike;
//! - deny rules win over allow rules; IP literals need an `allow_cidr` entry; ports are 80 and 443
//!   unless a rule or `allow_ports` says otherwise; expired allow entries allow nothing;
//! - names that no rule allows are never resolved; the addresses of allowed names are filtered by the
//!   SSRF guard ([`guard::forbidden_category`]) unless `allow_private` covers them, and the proxy
//!   connects to exactly the address it checked (no second resolution, so no DNS rebinding);
//! - the proxy never connects to its own listening address;
//! - an absolute-form request whose `Host` header names another host is refused (`host-mismatch`);
//! - no other name through an allowed tunnel: a CONNECT or SOCKS5 tunnel forwards no client byte
//!   before its first flight is judged ([`tunnel::judge`]): a TLS ClientHello must name the tunnel's
//!   host (else `sni-mismatch`), a tunnel that starts with an HTTP/1.x request is served as plain
//!   HTTP with every request held to the tunnel's host and port (else `host-mismatch`), anything
//!   else is closed (`not-tls`), as is a first flight not judged within
//!   [`Limits::first_flight_timeout`]; only a `raw` allow rule ([`RuleSpec::raw`]) lets a tunnel to
//!   its host and port carry other protocols, uninspected;
//! - everything read from clients is size-capped (request heads, SOCKS messages, first flights).
//!
//! What it trusts: the rule configuration, the resolver configuration of the host it runs on
//! (`/etc/resolv.conf`, `/etc/hosts`) and the answers of that resolver for allowed names.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod guard;
pub mod request;
pub mod rules;
mod server;
pub mod socks;
mod splice;
pub mod tls;
pub mod tunnel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::rules::{Date, Host, RuleSet, Verdict};

/// One allow entry: a host pattern, an optional expiry day, and whether tunnels to it are raw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSpec {
    /// `example.com`, `*.example.com`, `*`, optionally with `:PORT` (`example.com:8443`).
    pub pattern: String,
    /// `YYYY-MM-DD`: the last day (UTC) on which the entry applies.
    pub expires: Option<String>,
    /// Raw TCP: a CONNECT or SOCKS5 tunnel to a matching host and port may carry any protocol and
    /// is not inspected (no TLS, HTTP or first-flight check; server-first protocols such as SMTP,
    /// SSH or MySQL need this). The pattern must name a host (not `*`) and a port.
    pub raw: bool,
}

/// The rules of the proxy, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesConfig {
    /// Allow entries.
    pub allow: Vec<RuleSpec>,
    /// Deny patterns (`example.com`, `*.example.com`); they win over allow entries.
    pub deny: Vec<String>,
    /// Ports allowed to every allow entry that names no port, besides 80 and 443.
    pub allow_ports: Vec<u16>,
    /// IP addresses or CIDRs that may be used as literal targets (`--allow-cidr`).
    pub allow_cidr: Vec<String>,
    /// CIDRs exempt from the SSRF guard (`--allow-private`), an audited override.
    pub allow_private: Vec<String>,
    /// `NAME:IP` pins, like curl's `--resolve` without the port. IPv6 may be written bracketed
    /// (`test.example:[::1]`) or bare (`test.example:::1`): the name ends at the first colon.
    pub resolve: Vec<String>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent client connections (both listeners together). Connections over the limit are
    /// accepted and answered at once: HTTP 503, SOCKS5 reply 0x01 (up to 64 such answers in flight;
    /// beyond that they are closed unanswered).
    pub max_connections: usize,
    /// Time to resolve and connect to an upstream (HTTP 504 / SOCKS 0x04 when exceeded); also the
    /// time a SOCKS client has to send each handshake message.
    pub connect_timeout: Duration,
    /// A tunnel with no traffic in either direction for this long is closed; also the time to wait for
    /// a request head and for an upstream's response head.
    pub idle_timeout: Duration,
    /// The largest request head (request line and headers). hyper's own buffer cannot go below
    /// 8 KiB; heads over this limit are answered 431.
    pub max_header_bytes: usize,
    /// The time a tunnel's client has, from the tunnel's start, to send a first flight that can be
    /// judged (a whole ClientHello or an HTTP request line); silent or trickling clients are closed
    /// after it (`not-tls`, or `sni-mismatch` for an incomplete ClientHello). Raw tunnels have none.
    pub first_flight_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_header_bytes: 64 * 1024,
            first_flight_timeout: Duration::from_secs(10),
        }
    }
}

/// The full proxy configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressConfig {
    /// The rules.
    pub rules: RulesConfig,
    /// The limits.
    pub limits: Limits,
}

/// A startup warning (for example an expired allow entry that is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// One line for the user.
    pub message: String,
}

/// What the proxy decided about one connection attempt.
///
/// An allowed attempt yields one decision (after the SSRF guard, before connecting; `addr` is the
/// first address that will be tried). A tunnel closed for its first flight yields a second
/// decision, `allowed: false` with reason `sni-mismatch` or `not-tls` (and `rule` saying what was
/// seen); so does each request inside a tunnel that names another host (`host-mismatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `http`, `connect` or `socks5`.
    pub protocol: &'static str,
    /// The normalized host (or the raw text, cut and cleaned, for `invalid-name`).
    pub host: String,
    /// The destination port (0 when unknown).
    pub port: u16,
    /// Whether the connection was allowed.
    pub allowed: bool,
    /// Why it was denied: `not-allowlisted`, `denied-domain`, `private-address`, `ip-literal`, `port`,
    /// `host-mismatch`, `sni-mismatch`, `not-tls`, `expired-rule`, `invalid-name`, `resolve-failed`,
    /// `proxy-loop`.
    pub reason: Option<&'static str>,
    /// The rule that allowed it (`HOST:PORT (raw)` for a raw rule) or that was involved in the
    /// denial; for a denied tunnel, what its first flight or request was.
    pub rule: Option<String>,
    /// The address connected to (allowed) or the forbidden address (private-address).
    pub addr: Option<SocketAddr>,
}

/// Receives every [`Decision`] (the audit log, in warden).
pub trait DecisionSink: Send + Sync + 'static {
    /// Called once per decision, from the proxy's tasks; must not block for long.
    fn decision(&self, d: &Decision);
}

/// A configuration the proxy refuses, naming the entry and the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// An allow entry is invalid.
    #[error(
        "invalid allow rule {entry:?}: {reason}; accepted forms: example.com, *.example.com, * (any public host), \
         each with an optional :PORT such as example.com:8443"
    )]
    AllowRule {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A deny entry is invalid.
    #[error("invalid deny rule {entry:?}: {reason}; accepted forms: example.com, *.example.com")]
    DenyRule {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// An expiry date is invalid.
    #[error("invalid expiry date {value:?} for allow rule {entry:?}; accepted form: YYYY-MM-DD")]
    Expires {
        /// The allow entry.
        entry: String,
        /// The date text.
        value: String,
    },
    /// An `allow_cidr` or `allow_private` entry is invalid.
    #[error("invalid {kind} entry {entry:?}: {reason}; accepted forms: 10.0.0.0/8, 192.0.2.7, fd00::/8, ::1")]
    Cidr {
        /// `allow_cidr` or `allow_private`.
        kind: &'static str,
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `resolve` entry is invalid.
    #[error(
        "invalid resolve entry {entry:?}: {reason}; accepted form: NAME:IP such as test.example:127.0.0.1, \
         test.example:[::1] or test.example:::1"
    )]
    Resolve {
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An `allow_ports` entry is invalid.
    #[error("invalid allowed port {value}: ports are 1..=65535")]
    Port {
        /// The port.
        value: u16,
    },
    /// A limit is invalid.
    #[error("invalid limit {what}: {why}")]
    Limit {
        /// The limit's name.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// How many over-limit connections may be answered (503 / SOCKS 0x01) at once.
const OVERFLOW_ANSWERS: usize = 64;

/// The proxy. Cheap to clone; clones share rules, limits, counters and the connection limit.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("rules", &self.inner.rules).field("limits", &self.inner.limits).finish()
    }
}

struct Inner {
    rules: RuleSet,
    limits: Limits,
    sink: Arc<dyn DecisionSink>,
    resolver: OnceLock<Result<TokioResolver, String>>,
    denied: Mutex<HashMap<String, u64>>,
    listen: Mutex<Vec<SocketAddr>>,
    slots: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    debug: AtomicBool,
    /// Idle upstream HTTP connections, by the checked address they go to.
    pool: server::Pool,
}

/// A denial, with the one-line hint for the client.
#[derive(Debug)]
pub(crate) struct Denial {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// Why an allowed connection could not be made.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout(String),
    Refused(String),
}

/// The checked addresses of an allowed attempt, and whether a raw rule allowed it.
pub(crate) struct Allowed {
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) raw: bool,
}

/// A connection to an allowed upstream.
pub(crate) struct Connected {
    pub(crate) stream: TcpStream,
    pub(crate) addr: SocketAddr,
    pub(crate) raw: bool,
}

pub(crate) enum Outcome {
    Connected(Connected),
    Denied(Denial),
    Failed(Failure),
}

impl Egress {
    /// Validates the configuration and builds the proxy; expiry is judged against today's date (UTC).
    /// Returns startup warnings (expired allow entries).
    pub fn new(cfg: EgressConfig, sink: Arc<dyn DecisionSink>) -> Result<(Egress, Vec<Warning>), EgressError> {
        Egress::new_at(cfg, sink, Date::today_utc())
    }

    /// [`Egress::new`] with an injected "today", for tests.
    pub fn new_at(
        cfg: EgressConfig,
        sink: Arc<dyn DecisionSink>,
        today: Date,
    ) -> Result<(Egress, Vec<Warning>), EgressError> {
        let l = &cfg.limits;
        if l.max_connections == 0 {
            return Err(EgressError::Limit { what: "max_connections", why: "must be at least 1" });
        }
        if l.connect_timeout.is_zero() || l.idle_timeout.is_zero() || l.first_flight_timeout.is_zero() {
            return Err(EgressError::Limit { what: "timeouts", why: "must be longer than zero" });
        }
        if l.max_header_bytes < 1024 {
            return Err(EgressError::Limit { what: "max_header_bytes", why: "must be at least 1024" });
        }
        let (rules, warnings) = RuleSet::compile(&cfg.rules, today)?;
        let inner = Inner {
            rules,
            slots: Arc::new(Semaphore::new(cfg.limits.max_connections.min(Semaphore::MAX_PERMITS))),
            overflow: Arc::new(Semaphore::new(OVERFLOW_ANSWERS)),
            limits: cfg.limits,
            sink,
            resolver: OnceLock::new(),
            denied: Mutex::new(HashMap::new()),
            listen: Mutex::new(Vec::new()),
            debug: AtomicBool::new(false),
            pool: server::Pool::default(),
        };
        let warnings = warnings.into_iter().map(|message| Warning { message }).collect();
        Ok((Egress { inner: Arc::new(inner) }, warnings))
    }

    /// Prints every decision to stderr (one line each) when on.
    pub fn set_debug(&self, on: bool) {
        self.inner.debug.store(on, Ordering::Relaxed);
    }

    /// Serves HTTP/1.1 proxy requests (absolute-form and CONNECT) until accepting fails fatally.
    /// Transient accept errors (out of descriptors, aborted connections) are retried after 50 ms.
    pub async fn serve_http(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        server::serve(self.clone(), listener, server::Proto::Http).await
    }

    /// Serves SOCKS5 CONNECT (no authentication) until accepting fails fatally.
    pub async fn serve_socks5(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        server::serve(self.clone(), listener, server::Proto::Socks5).await
    }

    /// Denied hosts and how often each was denied, most first (then by name).
    pub fn denied_summary(&self) -> Vec<(String, u64)> {
        let map = self.inner.denied.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// The rules as (text, kind) rows: kinds `allow`, `allow-raw`, `deny`, `port`, `allow-cidr`,
    /// `allow-private`, `resolve`.
    pub fn rules_table(&self) -> Vec<(String, String)> {
        self.inner.rules.table()
    }

    /// The compiled rules.
    pub fn rules(&self) -> &RuleSet {
        &self.inner.rules
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) fn register_listener(&self, addr: SocketAddr) {
        self.inner.listen.lock().unwrap_or_else(|e| e.into_inner()).push(addr);
    }

    pub(crate) fn slots(&self) -> (Arc<Semaphore>, Arc<Semaphore>) {
        (self.inner.slots.clone(), self.inner.overflow.clone())
    }

    /// Records a decision: sink, debug line, denied counter.
    pub(crate) fn record(&self, d: Decision) {
        if !d.allowed {
            let mut map = self.inner.denied.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: past 10 000 distinct hosts, new ones are counted under one key.
            let key =
                if map.len() >= 10_000 && !map.contains_key(&d.host) { "(other)".to_owned() } else { d.host.clone() };
            *map.entry(key).or_insert(0) += 1;
        }
        if self.inner.debug.load(Ordering::Relaxed) {
            eprintln!(
                "warden-egress: {} {}:{} {} reason={} rule={} addr={}",
                d.protocol,
                d.host,
                d.port,
                if d.allowed { "allow" } else { "deny" },
                d.reason.unwrap_or("-"),
                d.rule.as_deref().unwrap_or("-"),
                d.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            );
        }
        self.inner.sink.decision(&d);
    }

    /// Records a denial that happened before or outside [`Egress::open`] and returns its hint.
    pub(crate) fn deny(
        &self,
        protocol: &'static str,
        host: String,
        port: u16,
        reason: &'static str,
        message: String,
    ) -> Denial {
        self.record(Decision { protocol, host, port, allowed: false, reason: Some(reason), rule: None, addr: None });
        Denial { reason, message }
    }

    fn is_self(&self, addr: SocketAddr) -> bool {
        let listen = self.inner.listen.lock().unwrap_or_else(|e| e.into_inner());
        listen.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || canonical(l.ip()) == canonical(addr.ip())
                    || (l.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
        })
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let pinned = self.inner.rules.pinned(name);
        if !pinned.is_empty() {
            return Ok(pinned);
        }
        let resolver = self.inner.resolver.get_or_init(|| {
            TokioResolver::builder_tokio().and_then(|b| b.build()).map_err(|e| format!("resolver configuration: {e}"))
        });
        let resolver = resolver.as_ref().map_err(Clone::clone)?;
        // Absolute name: search domains never apply.
        let fqdn = format!("{name}.");
        match tokio::time::timeout(self.inner.limits.connect_timeout, resolver.lookup_ip(fqdn.as_str())).await {
            Err(_) => Err("timed out".to_owned()),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(l)) => {
                let ips: Vec<IpAddr> = l.iter().take(32).collect();
                if ips.is_empty() {
                    Err("no addresses".to_owned())
                } else {
                    Ok(ips)
                }
            }
        }
    }

    /// Judges `host:port`, resolves it if allowed, applies the SSRF guard and connects.
    pub(crate) async fn open(&self, protocol: &'static str, host: &Host, port: u16) -> Outcome {
        match self.decide(protocol, host, port).await {
            Ok(allowed) => self.connect(host, port, &allowed).await,
            Err(denial) => Outcome::Denied(denial),
        }
    }

    /// The rules, resolution and SSRF guard for one attempt (recorded as a decision): the
    /// checked addresses to connect to, or the denial.
    pub(crate) async fn decide(&self, protocol: &'static str, host: &Host, port: u16) -> Result<Allowed, Denial> {
        let shown = host.to_string();
        let deny = |reason: &'static str, rule: Option<String>, addr: Option<SocketAddr>, message: String| {
            self.record(Decision {
                protocol,
                host: shown.clone(),
                port,
                allowed: false,
                reason: Some(reason),
                rule,
                addr,
            });
            Denial { reason, message }
        };
        let (rule, raw) = match self.inner.rules.check(host, port) {
            Verdict::Allow { rule, raw } => (rule, raw),
            Verdict::Deny { reason, rule } => {
                let message = deny_message(reason, &shown, port, rule.as_deref());
                return Err(deny(reason, rule, None, message));
            }
        };
        let candidates = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(n) => match self.lookup(n).await {
                Ok(ips) => ips,
                Err(e) => {
                    let message = format!(
                        "warden: cannot resolve {shown}: {}; pin an address with --resolve {shown}:IP",
                        rules::shown(&e)
                    );
                    return Err(deny("resolve-failed", Some(rule), None, message));
                }
            },
        };
        let mut forbidden = Vec::new();
        let mut looped = None;
        let mut ok = Vec::new();
        for ip in candidates {
            let sa = SocketAddr::new(ip, port);
            if guard::forbidden_category(ip).is_some() && self.inner.rules.private_override(ip).is_none() {
                forbidden.push(ip);
            } else if self.is_self(sa) {
                looped = Some(sa);
            } else {
                ok.push(sa);
            }
        }
        if ok.is_empty() {
            if let Some(sa) = looped {
                let message = format!("warden: {shown}:{port} is this proxy's own listening address ({sa})");
                return Err(deny("proxy-loop", Some(rule), Some(sa), message));
            }
            let first = forbidden.first().map(|ip| SocketAddr::new(*ip, port));
            let message = private_message(host, &forbidden);
            return Err(deny("private-address", Some(rule), first, message));
        }
        self.record(Decision {
            protocol,
            host: shown.clone(),
            port,
            allowed: true,
            reason: None,
            rule: Some(rule),
            addr: ok.first().copied(),
        });
        Ok(Allowed { addrs: ok, raw })
    }

    /// Connects to the first of the checked addresses that answers.
    pub(crate) async fn connect(&self, host: &Host, port: u16, allowed: &Allowed) -> Outcome {
        let shown = host.to_string();
        let attempt = async {
            let mut last = None;
            for sa in &allowed.addrs {
                match TcpStream::connect(sa).await {
                    Ok(s) => return Ok((s, *sa)),
                    Err(e) => last = Some((*sa, e)),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(self.inner.limits.connect_timeout, attempt).await {
            Err(_) => Outcome::Failed(Failure::Timeout(format!(
                "warden: connecting to {shown}:{port} timed out after {} s",
                self.inner.limits.connect_timeout.as_secs_f32()
            ))),
            Ok(Err(last)) => Outcome::Failed(Failure::Refused(match last {
                Some((sa, e)) => format!("warden: cannot connect to {shown}:{port} ({sa}): {e}"),
                None => format!("warden: cannot connect to {shown}:{port}"),
            })),
            Ok(Ok((stream, addr))) => {
                let _ = stream.set_nodelay(true);
                Outcome::Connected(Connected { stream, addr, raw: allowed.raw })
            }
        }
    }

    pub(crate) fn pool(&self) -> &server::Pool {
        &self.inner.pool
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn deny_message(reason: &str, host: &str, port: u16, rule: Option<&str>) -> String {
    match reason {
        "denied-domain" => format!(
            "warden: {host} is denied by the rule {}; remove that deny rule to allow it",
            rule.unwrap_or("?")
        ),
        "ip-literal" => {
            let width = if host.contains(':') { 128 } else { 32 };
            format!("warden: ip literal {host} is not allowed; allow it with --allow-cidr {host}/{width}")
        }
        "port" => format!(
            "warden: port {port} is not allowed for {host}; allow it with --allow-port {port} or a rule such as {host}:{port}"
        ),
        "expired-rule" => format!(
            "warden: {host}:{port} is allowed only by the expired rule {}; renew its expiry date",
            rule.unwrap_or("?")
        ),
        _ => format!("warden: {host}:{port} is not on the allowlist; allow it with --allow-domain {host}"),
    }
}

fn private_message(host: &Host, forbidden: &[IpAddr]) -> String {
    let list: Vec<String> = forbidden.iter().take(4).map(|ip| ip.to_string()).collect();
    let hint = forbidden.first().map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })).unwrap_or_default();
    let cat = forbidden.first().and_then(|ip| guard::forbidden_category(*ip)).unwrap_or("private");
    match host {
        Host::Ip(ip) => format!("warden: {ip} is a {cat} address; allow it with --allow-private {hint}"),
        Host::Name(n) => format!(
            "warden: {n} resolves only to private addresses ({}); allow it with --allow-private {hint}",
            list.join(", ")
        ),
    }
}
