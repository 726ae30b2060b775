//! Client keys: `name:key` lines (or `PROXY_API_KEY` as the key named `default`), checked in
//! constant time, each with a concurrency and a rate limit.
//!
//! Guarantees:
//! - a presented key is compared with every configured key, always all of them, through
//!   SHA-256 digests compared without early exit, so the time taken does not depend on which
//!   key matched or how much of one did;
//! - keys are never logged: records and messages carry the key's *name*;
//! - a key file over 1 MiB, a line without `name:`, a duplicate name, an empty key or one with
//!   spaces or control characters is refused with the line number (never the key);
//! - on a non-loopback address every key has at least [`MIN_REMOTE_KEY_LEN`] characters.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The shortest key accepted on a non-loopback address.
pub const MIN_REMOTE_KEY_LEN: usize = 32;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 1 << 20;

struct Key {
    name: String,
    digest: [u8; 32],
    len: usize,
    in_flight: AtomicUsize,
    /// Starts within the current minute window: (window start, count).
    window: Mutex<(Instant, u32)>,
}

/// The configured client keys and their limits.
pub struct ClientKeys {
    keys: Vec<Key>,
    concurrency: usize,
    rate_per_minute: u32,
}

impl std::fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("ClientKeys").field("names", &names).finish_non_exhaustive()
    }
}

/// Why a request may not start under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The key has as many requests in flight as it may.
    Concurrency(usize),
    /// The key started as many requests this minute as it may; retry after this many seconds.
    Rate(u32, u64),
}

/// A request running under a key: releases its place when dropped.
pub struct KeyLease {
    keys: Arc<ClientKeys>,
    index: usize,
}

impl KeyLease {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.keys.keys[self.index].name
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        self.keys.keys[self.index].in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equal without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 512 && k.chars().all(|c| c.is_ascii_graphic())
}

impl ClientKeys {
    /// Keys from `(name, key)` pairs (checked like the lines of a file).
    pub fn new(pairs: Vec<(String, String)>, concurrency: usize, rate_per_minute: u32) -> Result<ClientKeys, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (name, key) in pairs {
            if !valid_name(&name) {
                return Err(format!("client key name {name:?}: use 1-64 of [A-Za-z0-9_.-]"));
            }
            if !valid_key(&key) {
                return Err(format!("client key {name:?}: a key is 1-512 printable ASCII characters without spaces"));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(format!("client key name {name:?} is given twice"));
            }
            keys.push(Key {
                digest: digest(key.as_bytes()),
                len: key.len(),
                name,
                in_flight: AtomicUsize::new(0),
                window: Mutex::new((Instant::now(), 0)),
            });
        }
        Ok(ClientKeys { keys, concurrency: concurrency.max(1), rate_per_minute })
    }

    /// Parses a keys file: `name:key` per line, `#` comments and blank lines skipped.
    pub fn parse(src: &str, file: &Path) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for (i, line) in src.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, key)) = line.split_once(':') else {
                return Err(format!("{}:{}: expected name:key", file.display(), i + 1));
            };
            let (name, key) = (name.trim(), key.trim());
            if !valid_name(name) {
                return Err(format!("{}:{}: the name {name:?}: use 1-64 of [A-Za-z0-9_.-]", file.display(), i + 1));
            }
            if !valid_key(key) {
                return Err(format!(
                    "{}:{}: the key of {name:?} must be 1-512 printable ASCII characters without spaces",
                    file.display(),
                    i + 1
                ));
            }
            out.push((name.to_owned(), key.to_owned()));
        }
        Ok(out)
    }

    /// Reads a keys file (at most 1 MiB).
    pub fn read_file(file: &Path) -> Result<Vec<(String, String)>, String> {
        use std::io::Read;
        let f = std::fs::File::open(file).map_err(|e| format!("--api-key-file {}: {e}", file.display()))?;
        let mut src = String::new();
        f.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut src)
            .map_err(|e| format!("--api-key-file {}: {e}", file.display()))?;
        if src.len() as u64 > MAX_KEY_FILE {
            return Err(format!("--api-key-file {}: over {MAX_KEY_FILE} bytes", file.display()));
        }
        ClientKeys::parse(&src, file)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The names of keys shorter than `min`.
    pub fn shorter_than(&self, min: usize) -> Vec<&str> {
        self.keys.iter().filter(|k| k.len < min).map(|k| k.name.as_str()).collect()
    }

    /// The index of the key `presented` is, compared with every key in constant time.
    fn find(&self, presented: &[u8]) -> Option<usize> {
        let d = digest(presented);
        let mut found = None;
        for (i, k) in self.keys.iter().enumerate() {
            if same(&k.digest, &d) && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    /// Checks a bearer key and takes a place under its limits.
    pub fn admit(self: &Arc<Self>, presented: &[u8]) -> Result<KeyLease, Option<Limited>> {
        let index = self.find(presented).ok_or(None)?;
        let k = &self.keys[index];
        if self.rate_per_minute > 0 {
            let mut w = k.window.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now.duration_since(w.0) >= Duration::from_secs(60) {
                *w = (now, 0);
            }
            if w.1 >= self.rate_per_minute {
                let retry = 60u64.saturating_sub(now.duration_since(w.0).as_secs()).max(1);
                return Err(Some(Limited::Rate(self.rate_per_minute, retry)));
            }
            w.1 += 1;
        }
        let per = self.concurrency;
        if k.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < per).then_some(n + 1)).is_err() {
            return Err(Some(Limited::Concurrency(per)));
        }
        Ok(KeyLease { keys: self.clone(), index })
    }

    /// Names and requests in flight, for metrics.
    pub fn in_flight(&self) -> HashMap<String, usize> {
        self.keys.iter().map(|k| (k.name.clone(), k.in_flight.load(Ordering::SeqCst))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(concurrency: usize, rate: u32) -> Arc<ClientKeys> {
        Arc::new(
            ClientKeys::new(vec![("a".into(), "key-a".into()), ("b".into(), "key-b".into())], concurrency, rate)
                .expect("keys"),
        )
    }

    #[test]
    fn the_right_key_is_found_and_others_are_refused() {
        let k = keys(4, 0);
        assert_eq!(k.admit(b"key-b").ok().map(|l| l.name().to_owned()), Some("b".into()));
        assert!(matches!(k.admit(b"key-c"), Err(None)));
        assert!(matches!(k.admit(b"key-"), Err(None)));
        assert!(matches!(k.admit(b""), Err(None)));
    }

    #[test]
    fn concurrency_and_rate_are_limited_per_key() {
        let k = keys(2, 0);
        let l1 = k.admit(b"key-a").expect("1");
        let _l2 = k.admit(b"key-a").expect("2");
        assert!(matches!(k.admit(b"key-a"), Err(Some(Limited::Concurrency(2)))));
        assert!(k.admit(b"key-b").is_ok(), "another key has its own limit");
        drop(l1);
        assert!(k.admit(b"key-a").is_ok(), "a place frees when a request ends");
        let r = keys(10, 3);
        for _ in 0..3 {
            drop(r.admit(b"key-a").expect("within the rate"));
        }
        assert!(matches!(r.admit(b"key-a"), Err(Some(Limited::Rate(3, _)))));
    }

    #[test]
    fn files_are_parsed_strictly_without_echoing_keys() {
        let f = Path::new("keys.txt");
        let ok = ClientKeys::parse("# comment\n\nalice: sk-alice-0123\nbob:sk-bob\n", f).expect("parse");
        assert_eq!(ok, vec![("alice".into(), "sk-alice-0123".into()), ("bob".into(), "sk-bob".into())]);
        let e = ClientKeys::parse("just-a-key-secret\n", f).expect_err("no name");
        assert!(e.contains("keys.txt:1") && !e.contains("secret"), "{e}");
        let e = ClientKeys::parse("a:has space secret\n", f).expect_err("space");
        assert!(e.contains("keys.txt:1") && !e.contains("secret"), "{e}");
        assert!(ClientKeys::new(vec![("a".into(), "x".into()), ("a".into(), "y".into())], 1, 0).is_err());
    }
}
