//! Request/response dumps for debugging, in the format of `codex-responses-api-proxy`:
//! `{seq:06}-{unix_ms}-request.json` (`{method,url,headers:[{name,value}],body}`) and
//! `{seq:06}-{unix_ms}-response.json` (`{status,headers,body}`); `body` is the parsed JSON when the
//! body is JSON, else text.
//!
//! What it guarantees: the values of `authorization`, `proxy-authorization`, the configured auth
//! header, every header whose name contains `cookie`, and every header value marked sensitive are
//! written as `[REDACTED]`; dumped bodies are capped at [`MAX_DUMP_BODY`] bytes (with a
//! `body_note`), and dumping never holds up the stream (files are written when a body is over, off
//! the runtime's worker threads).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName};
use serde_json::{json, Value};

use crate::body::Finish;

/// Largest body copied into a dump.
pub(crate) const MAX_DUMP_BODY: usize = 16 << 20;

/// What replaces a secret header value.
pub(crate) const REDACTED: &str = "[REDACTED]";

pub(crate) struct Dumper {
    dir: PathBuf,
    seq: AtomicU64,
    auth_header: HeaderName,
}

/// The file-name prefix of one exchange.
#[derive(Clone)]
pub(crate) struct Slot {
    dir: PathBuf,
    prefix: String,
}

impl Dumper {
    pub(crate) fn new(dir: PathBuf, auth_header: HeaderName) -> Dumper {
        Dumper { dir, seq: AtomicU64::new(0), auth_header }
    }

    pub(crate) fn slot(&self) -> Slot {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Slot { dir: self.dir.clone(), prefix: format!("{seq:06}-{ms}") }
    }

    fn redacted(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        n == "authorization" || n == "proxy-authorization" || *name == self.auth_header || n.contains("cookie")
    }

    /// Headers as `[{name, value}]`, secrets redacted, non-UTF-8 values lossily decoded.
    pub(crate) fn headers(&self, h: &HeaderMap) -> Value {
        Value::Array(
            h.iter()
                .map(|(name, value)| {
                    let v = if self.redacted(name) || value.is_sensitive() {
                        REDACTED.to_owned()
                    } else {
                        String::from_utf8_lossy(value.as_bytes()).into_owned()
                    };
                    json!({ "name": name.as_str(), "value": v })
                })
                .collect(),
        )
    }
}

fn body_value(body: &[u8], cut: bool, total: u64, complete: bool) -> (Value, Option<String>) {
    let v = if cut {
        Value::String(String::from_utf8_lossy(body).into_owned())
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    let note = match (cut, complete) {
        (true, _) => Some(format!("body cut at {} of {total} bytes", body.len())),
        (false, false) => Some(format!("body incomplete: the stream ended early after {total} bytes")),
        (false, true) => None,
    };
    (v, note)
}

impl Slot {
    pub(crate) fn request(&self, method: &str, url: &str, headers: Value, f: Finish) {
        let (buf, cut) = f.tee.unwrap_or_default();
        let (body, note) = body_value(&buf, cut, f.bytes, f.complete);
        let mut v = json!({ "method": method, "url": url, "headers": headers, "body": body });
        if let Some(n) = note {
            v["body_note"] = Value::String(n);
        }
        self.write("request", v);
    }

    pub(crate) fn response(&self, status: u16, headers: Value, f: Finish) {
        let (buf, cut) = f.tee.unwrap_or_default();
        let (body, note) = body_value(&buf, cut, f.bytes, f.complete);
        let mut v = json!({ "status": status, "headers": headers, "body": body });
        if let Some(n) = note {
            v["body_note"] = Value::String(n);
        }
        self.write("response", v);
    }

    fn write(&self, kind: &'static str, v: Value) {
        let path = self.dir.join(format!("{}-{kind}.json", self.prefix));
        let job = move || write_file(&path, &v);
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }
}

fn write_file(path: &Path, v: &Value) {
    // A failed dump must not fail the request: dumps are a debugging aid.
    if let Ok(mut s) = serde_json::to_vec_pretty(v) {
        s.push(b'\n');
        let _ = std::fs::write(path, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn redacts_secret_headers() {
        let d = Dumper::new(PathBuf::from("/nonexistent"), HeaderName::from_static("x-api-key"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer dummy"));
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        h.insert("x-cookie-jar", HeaderValue::from_static("c"));
        let mut s = HeaderValue::from_static("hidden");
        s.set_sensitive(true);
        h.insert("x-other", s);
        h.insert("accept", HeaderValue::from_static("text/event-stream"));
        let v = d.headers(&h).to_string();
        for secret in ["dummy", "k1", "a=b", "\"c\"", "hidden"] {
            assert!(!v.contains(secret), "{secret} in {v}");
        }
        assert!(v.contains("text/event-stream"));
        assert_eq!(v.matches(REDACTED).count(), 5);
    }

    #[test]
    fn bodies_are_json_or_text() {
        assert_eq!(body_value(br#"{"a":1}"#, false, 7, true), (json!({"a":1}), None));
        assert_eq!(body_value(b"data: x\n\n", false, 9, true).0, json!("data: x\n\n"));
        let (v, note) = body_value(br#"{"a":"#, true, 100, true);
        assert_eq!(v, json!(r#"{"a":"#));
        assert_eq!(note.as_deref(), Some("body cut at 5 of 100 bytes"));
    }
}
