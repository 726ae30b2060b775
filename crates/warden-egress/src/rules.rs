//! Host normalization and the allow/deny rule set.
//!
//! What this module guarantees:
//! - [`normalize_host`] turns any host spelling a client can send (mixed case, trailing dot, Unicode,
//!   every `inet_aton` form of an IPv4 address, bracketed IPv6) into one canonical [`Host`], and refuses
//!   names that are not valid DNS host names, so that two spellings of one host can never be judged
//!   differently;
//! - [`RuleSet::check`] is a pure function of the compiled rules, the host and the port: it never
//!   resolves names (names that no rule allows are never looked up by the proxy either).
//!
//! What it trusts: nothing from the network; the rule texts come from the user's configuration and are
//! validated by [`RuleSet::compile`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use crate::{EgressError, RulesConfig};

/// The longest host text (before normalization) that is looked at; longer input is refused.
pub const MAX_HOST_LEN: usize = 1024;

/// Ports allowed to every allow rule that names no port.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// A normalized host: a DNS name in lowercase ASCII (punycode, no trailing dot) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, lowercase ASCII, no trailing dot, labels of letters, digits and hyphens.
    Name(String),
    /// An IP address, however it was spelled.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a host or authority was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The text is not a valid host name or IP address.
    #[error("invalid host {host:?}: {why}")]
    Invalid {
        /// The offending text, cut to 256 characters.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The port is missing where one is required, or not a number in 1..=65535.
    #[error("invalid port in {authority:?}: {why}")]
    Port {
        /// The offending authority, cut to 256 characters.
        authority: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Cuts untrusted text for use in messages: at most 256 characters, control characters replaced by `?`.
pub(crate) fn shown(raw: &str) -> String {
    raw.chars().take(256).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn invalid(raw: &str, why: &'static str) -> HostError {
    HostError::Invalid { host: shown(raw), why }
}

/// Normalizes a host (no port, IPv6 in brackets or bare) as described in the module documentation.
pub fn normalize_host(raw: &str) -> Result<Host, HostError> {
    if raw.is_empty() {
        return Err(invalid(raw, "empty host"));
    }
    if raw.len() > MAX_HOST_LEN {
        return Err(invalid(raw, "longer than 1024 bytes"));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| invalid(raw, "unbalanced '['"))?;
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| invalid(raw, "bad IPv6 address"));
    }
    if raw.contains(':') {
        return raw
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| invalid(raw, "bad IPv6 address"));
    }
    // UTS 46 mapping: lowercases, maps full-width digits and dots, converts to punycode; STD3 rules
    // refuse everything but letters, digits and hyphens in ASCII labels.
    let ascii = Uts46::new()
        .to_ascii(raw.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow, DnsLength::Ignore)
        .map_err(|_| invalid(raw, "not a valid international domain name"))?;
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    if let Some(v4) = parse_ipv4_loose(name) {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    validate_dns_name(raw, name)?;
    Ok(Host::Name(name.to_owned()))
}

fn validate_dns_name(raw: &str, name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(invalid(raw, "empty host"));
    }
    if name.len() > 253 {
        return Err(invalid(raw, "longer than 253 characters"));
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid(raw, "empty label"));
        }
        if label.len() > 63 {
            return Err(invalid(raw, "label longer than 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid(raw, "characters other than letters, digits, hyphens and dots"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(raw, "label starts or ends with a hyphen"));
        }
        last = label;
    }
    // As in the WHATWG URL parser: a name whose last label is a number is an IPv4 address or nothing.
    if looks_numeric(last) {
        return Err(invalid(raw, "numeric last label but not an IPv4 address"));
    }
    Ok(())
}

fn looks_numeric(label: &str) -> bool {
    let hex = label.strip_prefix("0x").or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// Parses an IPv4 address the way `inet_aton(3)` does: one to four parts separated by dots, each
/// decimal, octal (leading `0`) or hexadecimal (`0x`); the last part fills the remaining bytes
/// (`127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1`). Returns `None` for anything else.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let mut parts = [0u64; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 {
            return None;
        }
        parts[n] = parse_ipv4_part(part)?;
        n += 1;
    }
    let mut value: u64 = 0;
    for (i, &p) in parts[..n - 1].iter().enumerate() {
        if p > 255 {
            return None;
        }
        value |= p << (8 * (3 - i));
    }
    let last = parts[n - 1];
    let room = 8 * (5 - n as u32); // bits left for the last part
    if room < 64 && last >> room != 0 {
        return None;
    }
    value |= last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_part(part: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (h, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        // "0x" alone is zero for inet_aton and WHATWG alike; "" is not a number.
        return if radix == 16 { Some(0) } else { None };
    }
    let mut v: u64 = 0;
    for c in digits.chars() {
        let d = u64::from(c.to_digit(radix)?);
        v = v.checked_mul(u64::from(radix))?.checked_add(d)?;
        if v > u64::from(u32::MAX) {
            return None;
        }
    }
    Some(v)
}

/// Splits an authority (`host`, `host:port`, `[v6]:port`) and normalizes the host. Without a port,
/// `default_port` is used; `None` makes the port mandatory (CONNECT). User info (`user@host`) is refused.
pub fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<(Host, u16), HostError> {
    let port_err = |why| HostError::Port { authority: shown(authority), why };
    if authority.contains('@') {
        return Err(invalid(authority, "user info in authority"));
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or_else(|| invalid(authority, "unbalanced '['"))?;
        let rest = &authority[end + 1..];
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or_else(|| invalid(authority, "garbage after ']'"))?),
        };
        (&authority[..=end], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err(invalid(authority, "IPv6 address without brackets")),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => parse_port(p).ok_or_else(|| port_err("not a number in 1..=65535"))?,
        None => default_port.ok_or_else(|| port_err("port missing"))?,
    };
    Ok((normalize_host(host)?, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX` (strict address syntax; host bits must be zero).
    pub fn parse(s: &str) -> Result<Cidr, &'static str> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let a = a.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(a);
        let addr: IpAddr = a.parse().map_err(|_| "not an IP address")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("prefix is not a number");
                }
                p.parse::<u8>().map_err(|_| "prefix is not a number")?
            }
        };
        if prefix > max {
            return Err("prefix longer than the address");
        }
        let c = Cidr { addr, prefix };
        if c.network_bits(addr) != to_bits(addr) {
            return Err("host bits set (write the network address)");
        }
        Ok(c)
    }

    fn network_bits(&self, ip: IpAddr) -> u128 {
        let bits = to_bits(ip);
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        if host_bits >= 128 {
            0
        } else {
            bits >> host_bits << host_bits
        }
    }

    /// Whether `ip` is in the network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is also tested as
    /// its IPv4 address, because connecting to it reaches that IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let direct = |ip: IpAddr| ip.is_ipv4() == self.addr.is_ipv4() && self.network_bits(ip) == to_bits(self.addr);
        direct(ip)
            || match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| direct(IpAddr::V4(v4))),
                IpAddr::V4(_) => false,
            }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A calendar day (UTC), for rule expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    days: i64, // since 1970-01-01
}

impl Date {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = &s[r];
            t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok()).flatten()
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date { days: era * 146_097 + doe - 719_468 })
    }

    /// Today in UTC, from the system clock.
    pub fn today_utc() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Date { days: secs / 86_400 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `example.com`: that name only.
    Exact(String),
    /// `*.example.com` stored as `example.com`: strict subdomains only.
    Suffix(String),
    /// `*`: any host name (public addresses only, by the guard).
    Any,
}

impl Pattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(n) => name == n,
            Pattern::Suffix(s) => {
                name.len() > s.len() + 1
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.'
            }
            Pattern::Any => true,
        }
    }
}

fn parse_pattern(text: &str) -> Result<Pattern, String> {
    if text == "*" {
        return Ok(Pattern::Any);
    }
    let (wild, rest) = match text.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if rest.contains('*') {
        return Err("'*' is allowed only alone or as the whole first label (*.example.com)".into());
    }
    match normalize_host(rest) {
        Ok(Host::Name(n)) => Ok(if wild { Pattern::Suffix(n) } else { Pattern::Exact(n) }),
        Ok(Host::Ip(ip)) => Err(format!("{ip} is an IP address; use allow_cidr (--allow-cidr) for addresses")),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Clone)]
struct AllowRule {
    text: String,
    pattern: Pattern,
    port: Option<u16>,
    expires: Option<(Date, String)>,
    expired: bool,
    /// Tunnels to a matching host and port are not inspected (see [`crate::tunnel`]).
    raw: bool,
}

#[derive(Debug, Clone)]
struct DenyRule {
    text: String,
    pattern: Pattern,
}

/// The outcome of [`RuleSet::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the rule whose text is given (for an IP literal: the `allow_cidr` entry). The SSRF
    /// guard still applies to the addresses.
    Allow {
        /// The rule's text (`HOST:PORT (raw)` for a raw rule).
        rule: String,
        /// Whether a raw rule allows it: a tunnel to it carries any protocol, uninspected.
        raw: bool,
    },
    /// Refused before any resolution.
    Deny {
        /// The kebab-case reason (`not-allowlisted`, `denied-domain`, `ip-literal`, `port`, `expired-rule`).
        reason: &'static str,
        /// The rule involved, if any.
        rule: Option<String>,
    },
}

/// A compiled, validated set of rules.
#[derive(Debug, Clone)]
pub struct RuleSet {
    allow: Vec<AllowRule>,
    deny: Vec<DenyRule>,
    ports: Vec<u16>,
    allow_cidr: Vec<(String, Cidr)>,
    allow_private: Vec<(String, Cidr)>,
    resolve: Vec<(String, String, IpAddr)>,
}

/// A startup warning produced while compiling rules.
pub(crate) type Warnings = Vec<String>;

impl RuleSet {
    /// Validates and compiles `cfg`, judging expiry against `today`. Returns the rule set and the
    /// startup warnings (one per expired allow entry).
    pub fn compile(cfg: &RulesConfig, today: Date) -> Result<(RuleSet, Vec<String>), EgressError> {
        let mut warnings: Warnings = Vec::new();
        let mut allow = Vec::with_capacity(cfg.allow.len());
        for spec in &cfg.allow {
            let entry = spec.pattern.trim();
            let bad = |reason: String| EgressError::AllowRule { entry: shown(&spec.pattern), reason };
            let (pat_text, port) = match entry.rsplit_once(':') {
                Some((p, port)) => (p, Some(parse_port(port).ok_or_else(|| bad(format!("bad port {port:?}")))?)),
                None => (entry, None),
            };
            let pattern = parse_pattern(pat_text).map_err(bad)?;
            if spec.raw {
                if port.is_none() {
                    return Err(bad("a raw rule must name a port, such as db.internal:5432".into()));
                }
                if pattern == Pattern::Any {
                    return Err(bad(
                        "a raw rule must name a host, not * (raw TCP to any host skips every name check)".into()
                    ));
                }
            }
            let expires = match &spec.expires {
                None => None,
                Some(e) => Some((
                    Date::parse(e).ok_or_else(|| EgressError::Expires { entry: shown(entry), value: shown(e) })?,
                    e.clone(),
                )),
            };
            let expired = expires.as_ref().is_some_and(|(d, _)| today > *d);
            if let (true, Some((_, e))) = (expired, &expires) {
                warnings.push(format!(
                    "allow rule {entry} expired on {e} and is ignored; renew its expiry date or remove it"
                ));
            }
            let text = if spec.raw { format!("{entry} (raw)") } else { entry.to_owned() };
            allow.push(AllowRule { text, pattern, port, expires, expired, raw: spec.raw });
        }
        let mut deny = Vec::with_capacity(cfg.deny.len());
        for entry in &cfg.deny {
            let e = entry.trim();
            let pattern = parse_pattern(e).map_err(|reason| EgressError::DenyRule { entry: shown(entry), reason })?;
            deny.push(DenyRule { text: e.to_owned(), pattern });
        }
        let mut ports = DEFAULT_PORTS.to_vec();
        for &p in &cfg.allow_ports {
            if p == 0 {
                return Err(EgressError::Port { value: p });
            }
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let cidrs = |list: &[String], kind: &'static str| -> Result<Vec<(String, Cidr)>, EgressError> {
            list.iter()
                .map(|e| {
                    Cidr::parse(e.trim()).map(|c| (e.trim().to_owned(), c)).map_err(|reason| EgressError::Cidr {
                        kind,
                        entry: shown(e),
                        reason,
                    })
                })
                .collect()
        };
        let allow_cidr = cidrs(&cfg.allow_cidr, "allow_cidr")?;
        let allow_private = cidrs(&cfg.allow_private, "allow_private")?;
        let mut resolve = Vec::with_capacity(cfg.resolve.len());
        for e in &cfg.resolve {
            let bad = |reason: &'static str| EgressError::Resolve { entry: shown(e), reason };
            let (name, ip) = e.trim().split_once(':').ok_or_else(|| bad("missing ':'"))?;
            let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
            let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address after the name"))?;
            let name = match normalize_host(name) {
                Ok(Host::Name(n)) => n,
                Ok(Host::Ip(_)) => return Err(bad("the name is an IP address")),
                Err(_) => return Err(bad("invalid host name")),
            };
            resolve.push((e.trim().to_owned(), name, ip));
        }
        Ok((RuleSet { allow, deny, ports, allow_cidr, allow_private, resolve }, warnings))
    }

    /// Judges `host:port` by the rules alone (no resolution, no SSRF guard).
    pub fn check(&self, host: &Host, port: u16) -> Verdict {
        let name = match host {
            Host::Ip(ip) => return self.check_ip(*ip, port),
            Host::Name(n) => n.as_str(),
        };
        if let Some(d) = self.deny.iter().find(|d| d.pattern.matches(name)) {
            return Verdict::Deny { reason: "denied-domain", rule: Some(d.text.clone()) };
        }
        let port_ok = |r: &AllowRule| match r.port {
            Some(p) => p == port,
            None => self.ports.contains(&port),
        };
        let mut host_match: Option<&AllowRule> = None;
        let mut expired_match: Option<&AllowRule> = None;
        let mut allowed: Option<&AllowRule> = None;
        for r in self.allow.iter().filter(|r| r.pattern.matches(name)) {
            if r.expired {
                if port_ok(r) && expired_match.is_none() {
                    expired_match = Some(r);
                }
            } else if port_ok(r) {
                // A raw rule says so on purpose: it wins over a plain one for the same host and port.
                if r.raw {
                    return Verdict::Allow { rule: r.text.clone(), raw: true };
                }
                allowed = allowed.or(Some(r));
            }
            host_match = host_match.or(Some(r));
        }
        if let Some(r) = allowed {
            return Verdict::Allow { rule: r.text.clone(), raw: false };
        }
        if let Some(r) = expired_match {
            return Verdict::Deny { reason: "expired-rule", rule: Some(r.text.clone()) };
        }
        if let Some(r) = host_match {
            return Verdict::Deny { reason: "port", rule: Some(r.text.clone()) };
        }
        Verdict::Deny { reason: "not-allowlisted", rule: None }
    }

    fn check_ip(&self, ip: IpAddr, port: u16) -> Verdict {
        match self.allow_cidr.iter().find(|(_, c)| c.contains(ip)) {
            None => Verdict::Deny { reason: "ip-literal", rule: None },
            Some((text, _)) if !self.ports.contains(&port) => {
                Verdict::Deny { reason: "port", rule: Some(text.clone()) }
            }
            Some((text, _)) => Verdict::Allow { rule: text.clone(), raw: false },
        }
    }

    /// The `allow_private` entry covering `ip`, if any.
    pub fn private_override(&self, ip: IpAddr) -> Option<&str> {
        self.allow_private.iter().find(|(_, c)| c.contains(ip)).map(|(t, _)| t.as_str())
    }

    /// The pinned addresses for `name` (from `resolve`), in configuration order.
    pub fn pinned(&self, name: &str) -> Vec<IpAddr> {
        self.resolve.iter().filter(|(_, n, _)| n == name).map(|(_, _, ip)| *ip).collect()
    }

    /// The rules as (text, kind) rows for `warden explain`; kinds are `allow`, `allow-raw`, `deny`,
    /// `port`, `allow-cidr`, `allow-private` and `resolve`.
    pub fn table(&self) -> Vec<(String, String)> {
        let mut t = Vec::new();
        for r in &self.allow {
            let text = match (&r.expires, r.expired) {
                (Some((_, e)), true) => format!("{} (expired {e}, ignored)", r.text),
                (Some((_, e)), false) => format!("{} (expires {e})", r.text),
                (None, _) => r.text.clone(),
            };
            t.push((text, if r.raw { "allow-raw" } else { "allow" }.to_owned()));
        }
        t.extend(self.deny.iter().map(|d| (d.text.clone(), "deny".to_owned())));
        t.extend(self.ports.iter().map(|p| (p.to_string(), "port".to_owned())));
        t.extend(self.allow_cidr.iter().map(|(e, _)| (e.clone(), "allow-cidr".to_owned())));
        t.extend(self.allow_private.iter().map(|(e, _)| (e.clone(), "allow-private".to_owned())));
        t.extend(self.resolve.iter().map(|(e, _, _)| (e.clone(), "resolve".to_owned())));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSpec;

    fn v4(s: &str) -> Host {
        Host::Ip(IpAddr::V4(s.parse().expect("test address")))
    }

    #[test]
    fn inet_aton_forms() {
        let cases = [
            ("127.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0X7F.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("169.254.43518", "169.254.169.254"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("4294967295", "255.255.255.255"),
            ("10.0.0.010", "10.0.0.8"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_ipv4_loose(input), Some(want.parse().expect("want")), "{input}");
        }
        for bad in [
            "",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "4294967296",
            "08.0.0.1",
            "0x1g",
            "1..2",
            "1.2.3.",
            ".1",
            "a.b",
            "1.16777216",
            "1.2.65536",
            "99999999999999999999",
            "-1",
            "+1",
            " 1",
        ] {
            assert_eq!(parse_ipv4_loose(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn normalize_ip_literals() {
        for s in ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.0.0.1.", "１２７.０.０.１"] {
            assert_eq!(normalize_host(s), Ok(v4("127.0.0.1")), "{s}");
        }
        assert_eq!(normalize_host("[::1]"), Ok(Host::Ip("::1".parse().expect("v6"))));
        assert_eq!(normalize_host("::1"), Ok(Host::Ip("::1".parse().expect("v6"))));
        assert_eq!(normalize_host("[::ffff:127.0.0.1]"), Ok(Host::Ip("::ffff:127.0.0.1".parse().expect("v6"))));
        assert!(normalize_host("[::1").is_err());
        assert!(normalize_host("[fe80::1%eth0]").is_err());
        assert!(normalize_host("[127.0.0.1]").is_err());
    }

    #[test]
    fn normalize_names() {
        let name = |s: &str| Host::Name(s.to_owned());
        assert_eq!(normalize_host("Example.COM"), Ok(name("example.com")));
        assert_eq!(normalize_host("example.com."), Ok(name("example.com")));
        assert_eq!(normalize_host("bücher.example"), Ok(name("xn--bcher-kva.example")));
        assert_eq!(normalize_host("BÜCHER.example."), Ok(name("xn--bcher-kva.example")));
        assert_eq!(normalize_host("xn--bcher-kva.example"), Ok(name("xn--bcher-kva.example")));
        assert_eq!(normalize_host("r3---sn-abc.googlevideo.com"), Ok(name("r3---sn-abc.googlevideo.com")));
        assert_eq!(normalize_host("localhost"), Ok(name("localhost")));
        let label63 = "a".repeat(63);
        assert!(normalize_host(&format!("{label63}.com")).is_ok());
        for bad in [
            "exa_mple..com",
            "exa_mple.com",
            "example..com",
            "example.com..",
            ".example.com",
            "-example.com",
            "example-.com",
            "exa mple.com",
            "exa%2fmple.com",
            "example.com/",
            "a@b.com",
            "1.2.3.4.5",
            "1.2.3.256",
            "foo.0x1f",
            "foo.123",
            "xn--a.example",
            "",
            ".",
            "\u{0}.com",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_host(&format!("{}.com", "a".repeat(64))).is_err(), "overlong label");
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(long.len() > 253);
        assert!(normalize_host(&long).is_err(), "overlong name");
        assert!(normalize_host(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn authorities() {
        let name = |s: &str| Host::Name(s.to_owned());
        assert_eq!(parse_authority("Example.com:8080", None), Ok((name("example.com"), 8080)));
        assert_eq!(parse_authority("example.com", Some(80)), Ok((name("example.com"), 80)));
        assert_eq!(parse_authority("[::1]:443", None), Ok((Host::Ip("::1".parse().expect("v6")), 443)));
        assert_eq!(parse_authority("[::1]", Some(80)), Ok((Host::Ip("::1".parse().expect("v6")), 80)));
        assert!(parse_authority("example.com", None).is_err());
        for bad in
            ["example.com:0", "example.com:65536", "example.com:", "example.com:+1", "::1:80", "[::1]x", "u@h:80"]
        {
            assert!(parse_authority(bad, Some(80)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.0".parse().expect("ip")));
        assert!(!c.contains("::a01:203".parse().expect("ip")), "IPv4-compatible is not mapped");
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        let v6 = Cidr::parse("[fd00::]/8").expect("cidr");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!(Cidr::parse("::/0").expect("cidr").contains("2001:db8::1".parse().expect("ip")));
        assert_eq!(Cidr::parse("127.0.0.1").map(|c| c.to_string()), Ok("127.0.0.1/32".to_owned()));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/", "127.1/32", "x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(Date::parse("1970-01-01"), Some(Date { days: 0 }));
        assert_eq!(Date::parse("2000-03-01"), Some(Date { days: 11_017 }));
        assert_eq!(Date::parse("2024-02-29").map(|d| d.days), Some(19_782));
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "26-01-01x", "2026-01-32", "+026-01-01"] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert!(Date::today_utc() > Date::parse("2024-01-01").expect("date"));
    }

    fn spec(p: &str) -> RuleSpec {
        RuleSpec { pattern: p.to_owned(), expires: None, raw: false }
    }

    fn compile(allow: &[RuleSpec], deny: &[&str], ports: &[u16]) -> RuleSet {
        let cfg = RulesConfig {
            allow: allow.to_vec(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            allow_ports: ports.to_vec(),
            allow_cidr: vec!["203.0.113.0/24".into()],
            ..RulesConfig::default()
        };
        RuleSet::compile(&cfg, Date::parse("2026-06-15").expect("date")).expect("rules compile").0
    }

    fn name(s: &str) -> Host {
        normalize_host(s).expect("valid test host")
    }

    fn reason(v: Verdict) -> &'static str {
        match v {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny { reason, .. } => reason,
        }
    }

    #[test]
    fn apex_wildcard_and_any() {
        let r = compile(&[spec("example.com"), spec("*.pkg.dev")], &[], &[]);
        assert_eq!(reason(r.check(&name("example.com"), 443)), "allow");
        assert_eq!(reason(r.check(&name("EXAMPLE.com."), 80)), "allow");
        assert_eq!(reason(r.check(&name("www.example.com"), 443)), "not-allowlisted");
        assert_eq!(reason(r.check(&name("a.pkg.dev"), 443)), "allow");
        assert_eq!(reason(r.check(&name("a.b.pkg.dev"), 443)), "allow");
        assert_eq!(reason(r.check(&name("pkg.dev"), 443)), "not-allowlisted");
        assert_eq!(reason(r.check(&name("evilpkg.dev"), 443)), "not-allowlisted");
        assert_eq!(reason(r.check(&name("pkg.dev.evil.test"), 443)), "not-allowlisted");
        let any = compile(&[spec("*")], &["*.evil.test"], &[]);
        assert_eq!(reason(any.check(&name("anything.example"), 443)), "allow");
        assert_eq!(reason(any.check(&name("x.evil.test"), 443)), "denied-domain");
        assert_eq!(reason(any.check(&name("127.1"), 443)), "ip-literal", "* does not cover IP literals");
    }

    #[test]
    fn idn_rule_matches_punycode_request() {
        let r = compile(&[spec("bücher.example")], &[], &[]);
        assert_eq!(reason(r.check(&name("xn--bcher-kva.example"), 443)), "allow");
        assert_eq!(reason(r.check(&name("BÜCHER.example"), 443)), "allow");
    }

    #[test]
    fn deny_wins() {
        let r = compile(&[spec("*.example.com"), spec("example.com")], &["secret.example.com", "Example.com."], &[]);
        assert_eq!(reason(r.check(&name("secret.example.com"), 443)), "denied-domain");
        assert_eq!(reason(r.check(&name("example.com"), 443)), "denied-domain");
        assert_eq!(reason(r.check(&name("ok.example.com"), 443)), "allow");
        assert_eq!(reason(r.check(&name("a.secret.example.com"), 443)), "allow", "deny is exact like allow");
    }

    #[test]
    fn ports() {
        let r = compile(&[spec("example.com"), spec("alt.example:8443")], &[], &[]);
        assert_eq!(reason(r.check(&name("example.com"), 22)), "port");
        assert_eq!(reason(r.check(&name("example.com"), 8443)), "port");
        assert_eq!(reason(r.check(&name("alt.example"), 8443)), "allow");
        assert_eq!(reason(r.check(&name("alt.example"), 443)), "port", "a rule with a port allows that port only");
        let r = compile(&[spec("example.com")], &[], &[8080]);
        assert_eq!(reason(r.check(&name("example.com"), 8080)), "allow");
        assert_eq!(reason(r.check(&v4("203.0.113.7"), 8080)), "allow");
        assert_eq!(reason(r.check(&v4("203.0.113.7"), 22)), "port");
        assert_eq!(reason(r.check(&v4("198.51.100.7"), 443)), "ip-literal");
    }

    #[test]
    fn raw_rules_name_a_host_and_port() {
        let raw = |p: &str| RuleSpec { pattern: p.to_owned(), expires: None, raw: true };
        let r =
            compile(&[spec("db.internal"), raw("db.internal:5432"), raw("*.pg.example:6432")], &["x.pg.example"], &[]);
        let verdict = |h: &str, port| r.check(&name(h), port);
        assert_eq!(verdict("db.internal", 5432), Verdict::Allow { rule: "db.internal:5432 (raw)".into(), raw: true });
        assert_eq!(verdict("db.internal", 443), Verdict::Allow { rule: "db.internal".into(), raw: false });
        assert_eq!(verdict("a.pg.example", 6432), Verdict::Allow { rule: "*.pg.example:6432 (raw)".into(), raw: true });
        assert_eq!(reason(verdict("a.pg.example", 5432)), "port");
        assert_eq!(reason(verdict("x.pg.example", 6432)), "denied-domain", "deny wins over raw too");
        assert_eq!(reason(verdict("other.internal", 5432)), "not-allowlisted");
        assert!(r.table().contains(&("db.internal:5432 (raw)".into(), "allow-raw".into())));
        let today = Date::parse("2026-01-01").expect("date");
        for (bad, why) in
            [("db.internal", "must name a port"), ("*:5432", "must name a host"), ("10.0.0.5:5432", "allow_cidr")]
        {
            let cfg = RulesConfig { allow: vec![raw(bad)], ..Default::default() };
            let e = RuleSet::compile(&cfg, today).expect_err(bad).to_string();
            assert!(e.contains(bad) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn expiry_with_injected_date() {
        let cfg = RulesConfig {
            allow: vec![
                RuleSpec { pattern: "old.example".into(), expires: Some("2026-06-14".into()), raw: false },
                RuleSpec { pattern: "today.example".into(), expires: Some("2026-06-15".into()), raw: false },
                RuleSpec { pattern: "both.example".into(), expires: Some("2020-01-01".into()), raw: false },
                spec("both.example"),
            ],
            ..RulesConfig::default()
        };
        let (r, warnings) = RuleSet::compile(&cfg, Date::parse("2026-06-15").expect("date")).expect("compile");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("old.example") && warnings[0].contains("2026-06-14"));
        assert_eq!(reason(r.check(&name("old.example"), 443)), "expired-rule");
        assert_eq!(reason(r.check(&name("old.example"), 22)), "port");
        assert_eq!(reason(r.check(&name("today.example"), 443)), "allow", "the expiry day itself is still valid");
        assert_eq!(reason(r.check(&name("both.example"), 443)), "allow");
        let (r, w) = RuleSet::compile(&cfg, Date::parse("2026-06-16").expect("date")).expect("compile");
        assert_eq!(w.len(), 3);
        assert_eq!(reason(r.check(&name("today.example"), 443)), "expired-rule");
        assert!(r.table().iter().any(|(t, k)| t == "old.example (expired 2026-06-14, ignored)" && k == "allow"));
    }

    #[test]
    fn compile_errors_name_the_entry() {
        let today = Date::parse("2026-01-01").expect("date");
        let err = |cfg: RulesConfig| RuleSet::compile(&cfg, today).expect_err("must fail").to_string();
        let e = err(RulesConfig { allow: vec![spec("exa_mple.com")], ..Default::default() });
        assert!(e.contains("exa_mple.com") && e.contains("*.example.com"), "{e}");
        let e = err(RulesConfig { allow: vec![spec("10.0.0.1")], ..Default::default() });
        assert!(e.contains("allow_cidr"), "{e}");
        let e = err(RulesConfig { allow: vec![spec("foo.*.com")], ..Default::default() });
        assert!(e.contains("foo.*.com"), "{e}");
        let e = err(RulesConfig { allow: vec![spec("example.com:0")], ..Default::default() });
        assert!(e.contains("example.com:0"), "{e}");
        let e = err(RulesConfig {
            allow: vec![RuleSpec { pattern: "a.example".into(), expires: Some("2026-02-30".into()), raw: false }],
            ..Default::default()
        });
        assert!(e.contains("2026-02-30") && e.contains("YYYY-MM-DD"), "{e}");
        let e = err(RulesConfig { deny: vec!["bad..name".into()], ..Default::default() });
        assert!(e.contains("bad..name"), "{e}");
        let e = err(RulesConfig { allow_private: vec!["10.0.0.1/8".into()], ..Default::default() });
        assert!(e.contains("allow_private") && e.contains("10.0.0.1/8"), "{e}");
        let e = err(RulesConfig { resolve: vec!["test.example".into()], ..Default::default() });
        assert!(e.contains("NAME:IP"), "{e}");
        let e = err(RulesConfig { allow_ports: vec![0], ..Default::default() });
        assert!(e.contains('0'), "{e}");
    }

    #[test]
    fn resolve_pins() {
        let cfg = RulesConfig {
            resolve: vec!["Test.Example.:127.0.0.1".into(), "test.example:[::1]".into(), "v6.example:::2".into()],
            ..Default::default()
        };
        let (r, _) = RuleSet::compile(&cfg, Date::today_utc()).expect("compile");
        assert_eq!(
            r.pinned("test.example"),
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip"), "::1".parse().expect("ip")]
        );
        assert_eq!(r.pinned("v6.example"), vec!["::2".parse::<IpAddr>().expect("ip")]);
        assert!(r.pinned("other.example").is_empty());
    }
}
