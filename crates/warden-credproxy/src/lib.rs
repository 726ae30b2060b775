//! warden's credential-injecting proxy: the agent talks to a local URL with a dummy key, the proxy
//! forwards the few allowed requests to one upstream with the real key injected.
//!
//! The contract is the one of Codex's `codex-responses-api-proxy`, so its users can switch:
//! - only the configured routes (`METHOD` + exact path, no query string; default `POST /v1/responses`)
//!   are forwarded, everything else gets `403`;
//! - every request header is forwarded except hop-by-hop headers, `Host` (set to the upstream's
//!   authority), `Authorization` and the configured auth header: the client's own values never reach
//!   the upstream; the auth header is set to `Bearer <key>` (or the bare key with [`AuthScheme::None`]);
//! - the request goes to the configured upstream URL (its path, not the client's);
//! - the response status and headers are mirrored minus hop-by-hop headers, and both bodies stream
//!   frame by frame without buffering (SSE events reach the client as the upstream sends them; the
//!   upstream connection is driven by the task serving the client, so what arrives together is
//!   written on together);
//! - request bodies over [`CredConfig::max_body_bytes`] get `413`; an unreachable upstream `502`, a
//!   silent one `504`, both with a JSON error body;
//! - every request is reported to a [`RequestSink`] (method, path, status, byte counts, duration:
//!   never a header value).
//!
//! Where the key lives: in one [`LockedSecret`] (mlocked, `MADV_DONTDUMP`, zeroized on drop) holding
//! the whole header value. Each forwarded request gets an `http::HeaderValue` marked sensitive whose
//! bytes *are* that locked memory (a zero-copy `Bytes` owning an `Arc` of the secret), dropped with the
//! request. The copies this crate cannot control are hyper's write buffer for the request head and,
//! for `https` upstreams, rustls' record buffers: ordinary heap memory, reused and not zeroized.
//!
//! What it trusts: the upstream URL it is configured with, and (for `https`) the webpki root store.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod dump;
mod proxy;
mod resolve;
mod secret;
#[allow(unsafe_code)]
mod sys;
mod upstream;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use proxy::CredProxy;
pub use secret::{
    core_limit, harden_process, is_dumpable, key_from_str, read_key_exact, read_key_from_fd, scrub_env_var,
    LockedSecret, MAX_KEY_LEN,
};

/// Errors of the credential proxy. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredError {
    /// The key is empty (after trimming the line end).
    #[error("the API key is empty")]
    Empty,
    /// The key is longer than `max` bytes.
    #[error("the API key is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// The key has a byte outside `[A-Za-z0-9_-]`.
    #[error("the API key has a character outside [A-Za-z0-9_-] at byte {position}")]
    BadCharacter {
        /// Byte offset of the first offending character.
        position: usize,
    },
    /// The key is not UTF-8.
    #[error("the API key is not valid UTF-8")]
    NotUtf8,
    /// `read(2)` on the key's file descriptor failed.
    #[error("cannot read the API key: {source}")]
    ReadKey {
        /// The OS error.
        source: std::io::Error,
    },
    /// The secret could not be placed in locked memory (fail closed: it is not kept at all).
    #[error(
        "cannot lock the API key in memory ({step}): {source}; raise RLIMIT_MEMLOCK (`ulimit -l`) or grant \
         CAP_IPC_LOCK"
    )]
    Lock {
        /// The failed call.
        step: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A process-hardening call failed.
    #[error("cannot harden the process: {op}: {source}")]
    Harden {
        /// The failed call.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The upstream URL is unusable.
    #[error("invalid upstream URL {url:?}: {reason}")]
    Upstream {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `METHOD:PATH` route could not be parsed.
    #[error("invalid route {route:?}: {reason}")]
    Route {
        /// The route as written.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `--auth-scheme` value other than `Bearer` or `none`.
    #[error("invalid auth scheme {0:?}: expected Bearer or none")]
    Scheme(String),
    /// The key does not form a valid header value (cannot happen for validated keys).
    #[error("the API key cannot form a valid {header} header value")]
    HeaderValue {
        /// The header name.
        header: String,
    },
    /// A limit of the configuration is out of range.
    #[error("invalid limit {what}: {why}")]
    Limit {
        /// The setting.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The TLS client configuration for the upstream could not be built.
    #[error("cannot set up TLS for the upstream: {0}")]
    Tls(String),
}

/// One allowed request: method and exact path (no query string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: http::Method,
    /// The path, starting with `/`.
    pub path: String,
}

impl FromStr for Route {
    type Err = CredError;

    /// Parses `METHOD:PATH`, e.g. `POST:/v1/responses`.
    fn from_str(s: &str) -> Result<Route, CredError> {
        let bad = |reason| CredError::Route { route: s.to_owned(), reason };
        let (m, path) = s.split_once(':').ok_or_else(|| bad("expected METHOD:PATH"))?;
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad("the method must be letters, e.g. POST"));
        }
        let method = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| bad("invalid method"))?;
        if !path.starts_with('/') {
            return Err(bad("the path must start with /"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("the path must not have a query string or fragment"));
        }
        match path.parse::<http::uri::PathAndQuery>() {
            Ok(pq) if pq.as_str() == path => {}
            _ => return Err(bad("invalid path")),
        }
        Ok(Route { method, path: path.to_owned() })
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.method, self.path)
    }
}

/// How the key is written into the auth header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthScheme {
    /// `Bearer <key>` (OpenAI).
    #[default]
    Bearer,
    /// The bare key (Anthropic's `x-api-key`, Azure's `api-key`).
    None,
}

impl FromStr for AuthScheme {
    type Err = CredError;

    /// `Bearer` (any case) or `none`.
    fn from_str(s: &str) -> Result<AuthScheme, CredError> {
        match s.to_ascii_lowercase().as_str() {
            "bearer" => Ok(AuthScheme::Bearer),
            "none" => Ok(AuthScheme::None),
            _ => Err(CredError::Scheme(s.to_owned())),
        }
    }
}

/// The default upstream.
pub const DEFAULT_UPSTREAM: &str = "https://api.openai.com/v1/responses";

/// Configuration of a [`CredProxy`].
#[derive(Debug, Clone)]
pub struct CredConfig {
    /// Where allowed requests go (scheme, authority and path); default [`DEFAULT_UPSTREAM`].
    pub upstream: http::Uri,
    /// Allowed routes; default `[POST:/v1/responses]`.
    pub routes: Vec<Route>,
    /// The header that carries the key; default `authorization`.
    pub auth_header: http::HeaderName,
    /// How the key is written; default [`AuthScheme::Bearer`].
    pub auth_scheme: AuthScheme,
    /// Upstream TCP connect timeout; default 10 s. Exceeded: `504`. (A TLS handshake that stalls
    /// after the connect falls under `idle_timeout`.)
    pub connect_timeout: Duration,
    /// Longest silence of the upstream (waiting for the response head, or between body frames) and of
    /// the client (between request body frames); default 300 s. Exceeded before the head: `504`.
    pub idle_timeout: Duration,
    /// Request body cap in bytes; default 32 MiB. Exceeded: `413`.
    pub max_body_bytes: u64,
    /// When set, every forwarded request and its response are written there as JSON (secrets redacted).
    pub dump_dir: Option<PathBuf>,
    /// Whether `GET /shutdown` stops [`CredProxy::serve`] (which then returns `Ok`).
    pub http_shutdown: bool,
    /// Client connections served at once; default 256. A connection over the cap gets a `503` with
    /// a JSON error body (a few at a time; beyond that it is closed unanswered).
    pub max_connections: usize,
}

impl Default for CredConfig {
    fn default() -> CredConfig {
        CredConfig {
            upstream: http::Uri::from_static(DEFAULT_UPSTREAM),
            routes: vec![Route { method: http::Method::POST, path: "/v1/responses".to_owned() }],
            auth_header: http::header::AUTHORIZATION,
            auth_scheme: AuthScheme::Bearer,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_body_bytes: 32 << 20,
            dump_dir: None,
            http_shutdown: false,
            max_connections: 256,
        }
    }
}

/// What is reported for every request: never a header value, never a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request method.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The status sent to the client.
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From the request head to the end of the response body (or to the client going away).
    pub duration_ms: u64,
}

/// Receives one [`RequestRecord`] per request, when its response is over.
pub trait RequestSink: Send + Sync + 'static {
    /// Called once per request, from a runtime worker: keep it short and non-blocking.
    fn request(&self, r: &RequestRecord);
}

/// A sink that drops every record.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl RequestSink for NullSink {
    fn request(&self, _: &RequestRecord) {}
}

/// Writes `{"port":PORT,"pid":PID}` and a newline to `path` (created or truncated), like the
/// `--server-info` file of `codex-responses-api-proxy`.
pub fn write_server_info(path: &Path, port: u16) -> std::io::Result<()> {
    let line = format!("{}\n", serde_json::json!({ "port": port, "pid": std::process::id() }));
    std::fs::write(path, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let r: Route = "POST:/v1/responses".parse().expect("route");
        assert_eq!(r, Route { method: http::Method::POST, path: "/v1/responses".into() });
        assert_eq!(r.to_string(), "POST:/v1/responses");
        let r: Route = "get:/v1/models".parse().expect("lowercase method");
        assert_eq!(r.method, http::Method::GET);
        for bad in ["/v1/responses", "POST:", "POST:v1", "POST:/a?b=1", "PO ST:/a", ":/a", "POST:/a b", "POST:/a#x"] {
            assert!(bad.parse::<Route>().is_err(), "{bad}");
        }
    }

    #[test]
    fn schemes_parse() {
        assert_eq!("Bearer".parse::<AuthScheme>().expect("bearer"), AuthScheme::Bearer);
        assert_eq!("none".parse::<AuthScheme>().expect("none"), AuthScheme::None);
        assert!("basic".parse::<AuthScheme>().is_err());
    }

    #[test]
    fn server_info_is_one_json_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("info.json");
        write_server_info(&p, 4242).expect("write");
        let s = std::fs::read_to_string(&p).expect("read");
        assert!(s.ends_with('\n') && s.lines().count() == 1, "{s:?}");
        let v: serde_json::Value = serde_json::from_str(&s).expect("json");
        assert_eq!(v["port"], 4242);
        assert_eq!(v["pid"], std::process::id());
    }
}
