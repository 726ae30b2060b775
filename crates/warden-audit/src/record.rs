//! The canonical bytes of a record and the chain hash (see `docs/audit-format.md`).

use std::io::Write as _;

use hmac::{Hmac, Mac as _};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::AuditKey;

/// The largest record, newline included.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;
/// `prev` of the first record ever.
pub(crate) const ZERO_HASH: [u8; 64] = [b'0'; 64];
/// Length of `,"hash":"<64 hex>"}`, the suffix that is not part of the canonical bytes.
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;
/// Length of `,"prev":"<64 hex>"}`, the end of the canonical bytes.
pub(crate) const PREV_SUFFIX_LEN: usize = 9 + 64 + 2;
/// Names the header and trailer use; an event field with one of these names gets a `field_` prefix.
pub(crate) const RESERVED: [&str; 8] = ["v", "k", "seq", "ts", "session", "event", "prev", "hash"];
/// Events under this prefix are written by the log itself (recovery, rotation, pruning), never by
/// [`crate::AuditLog::append`].
pub(crate) const LOG_EVENT_PREFIX: &str = "log.";
/// The record rotation writes before it deletes records: everything up to `pruned_through_seq`,
/// whose hash was `pruned_hash`, is gone (the newest deleted file was `pruned_file`).
pub(crate) const PRUNED_EVENT: &str = "log.pruned";
/// The `seq` of the last deleted record.
pub(crate) const PRUNED_THROUGH_SEQ: &str = "pruned_through_seq";
/// The `hash` of the last deleted record.
pub(crate) const PRUNED_HASH: &str = "pruned_hash";
/// The name (no directory) of the newest file deleted.
pub(crate) const PRUNED_FILE: &str = "pruned_file";

/// How records are chained: plain SHA-256 or HMAC-SHA256 under the audit key.
#[derive(Clone)]
pub(crate) enum Chain {
    Plain,
    /// The MAC already keyed, cloned per record (the key schedule is computed once).
    Keyed(Hmac<Sha256>),
}

impl Chain {
    pub(crate) fn new(key: Option<&AuditKey>) -> Chain {
        match key {
            // HMAC accepts keys of any length; AuditKey guarantees 16..=4096 bytes.
            Some(k) => Hmac::<Sha256>::new_from_slice(k.bytes()).map_or(Chain::Plain, Chain::Keyed),
            None => Chain::Plain,
        }
    }

    pub(crate) fn keyed(&self) -> bool {
        matches!(self, Chain::Keyed(_))
    }

    /// `hash = H(prev_hex || canonical)`, where canonical is given in pieces.
    pub(crate) fn digest(&self, prev: &[u8], canonical: &[&[u8]]) -> [u8; 64] {
        match self {
            Chain::Plain => {
                let mut h = Sha256::new();
                h.update(prev);
                for part in canonical {
                    h.update(part);
                }
                hex32(&h.finalize().into())
            }
            Chain::Keyed(mac) => hex32(&keyed(mac, prev, canonical).finalize().into_bytes().into()),
        }
    }

    /// Keyed chains only: the lowercase hex HMAC-SHA256 of `parts` under the key.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Option<[u8; 64]> {
        match self {
            Chain::Plain => None,
            Chain::Keyed(mac) => Some(hex32(&keyed(mac, b"", parts).finalize().into_bytes().into())),
        }
    }

    /// Keyed chains only: whether `tag_hex` (64 lowercase hex digits) is the HMAC of `parts`,
    /// compared in constant time. `false` for a plain chain.
    pub(crate) fn mac_matches(&self, parts: &[&[u8]], tag_hex: &str) -> bool {
        match (self, unhex32(tag_hex.as_bytes())) {
            (Chain::Keyed(mac), Some(tag)) => keyed(mac, b"", parts).verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

/// The keyed MAC fed with `first` and then `rest`.
fn keyed(mac: &Hmac<Sha256>, first: &[u8], rest: &[&[u8]]) -> Hmac<Sha256> {
    let mut m = mac.clone();
    m.update(first);
    for part in rest {
        m.update(part);
    }
    m
}

/// The 32 bytes that 64 lowercase hex digits stand for.
fn unhex32(s: &[u8]) -> Option<[u8; 32]> {
    if !is_hash_hex(s) {
        return None;
    }
    let nibble = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0]) << 4) | nibble(pair[1]);
    }
    Some(out)
}

/// Lowercase hex of a 32-byte digest.
pub(crate) fn hex32(d: &[u8; 32]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in d.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_hash_hex(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// The fixed part of a record.
pub(crate) struct Header<'a> {
    pub(crate) seq: u64,
    pub(crate) session: &'a str,
    pub(crate) event: &'a str,
}

/// Serializes a record into `buf` (cleared first): the canonical bytes, then the hash trailer and
/// the newline. `fields` must already be redacted, renamed and integer-only; `ts` writes the
/// timestamp. Returns the record's hash.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    chain: &Chain,
    h: &Header<'_>,
    ts: impl FnOnce(&mut Vec<u8>),
    fields: &Map<String, Value>,
    prev: &[u8; 64],
) -> [u8; 64] {
    buf.clear();
    buf.extend_from_slice(if chain.keyed() { b"{\"v\":1,\"k\":1,\"seq\":" } else { b"{\"v\":1,\"seq\":" });
    // Writing into a Vec cannot fail, and neither can serializing a Value (string keys, no floats).
    let _ = write!(buf, "{}", h.seq);
    buf.extend_from_slice(b",\"ts\":\"");
    ts(buf);
    buf.extend_from_slice(b"\",\"session\":");
    let _ = serde_json::to_writer(&mut *buf, h.session);
    buf.extend_from_slice(b",\"event\":");
    let _ = serde_json::to_writer(&mut *buf, h.event);
    for (k, v) in fields {
        buf.push(b',');
        let _ = serde_json::to_writer(&mut *buf, k);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, v);
    }
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.extend_from_slice(b"\"}");
    let hash = chain.digest(prev, &[buf]);
    buf.pop();
    buf.extend_from_slice(b",\"hash\":\"");
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(b"\"}\n");
    hash
}

/// Recomputes the hash of a written line (without its newline) from its own bytes: `prev` and
/// the canonical bytes are both taken from the line. `None` when the line does not end in
/// `,"prev":"<64 hex>","hash":"<64 hex>"}`.
pub(crate) fn recompute(chain: &Chain, line: &[u8]) -> Option<[u8; 64]> {
    let (prev, _) = trailer(line)?;
    let body = &line[..line.len() - HASH_SUFFIX_LEN];
    Some(chain.digest(prev, &[body, b"}"]))
}

/// The `prev` and `hash` hex taken from the fixed-size end of a line.
pub(crate) fn trailer(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = line.len();
    if n < HASH_SUFFIX_LEN + PREV_SUFFIX_LEN {
        return None;
    }
    let hash_part = &line[n - HASH_SUFFIX_LEN..];
    let prev_part = &line[n - HASH_SUFFIX_LEN - PREV_SUFFIX_LEN + 1..n - HASH_SUFFIX_LEN];
    let ok = hash_part.starts_with(b",\"hash\":\"")
        && hash_part.ends_with(b"\"}")
        && prev_part.starts_with(b",\"prev\":\"")
        && prev_part.ends_with(b"\"");
    let prev = &prev_part[9..73];
    let hash = &hash_part[9..73];
    (ok && is_hash_hex(prev) && is_hash_hex(hash)).then_some((prev, hash))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The test vector of `docs/audit-format.md`.
    pub(crate) const VECTOR_LINE: &str = concat!(
        r#"{"v":1,"seq":1,"ts":"2026-11-22T00:59:01.123Z","session":"0123456789abcdef","event":"run.start","#,
        r#""argv":["ls","-la"],"uid":1000,"workdir":"/home/[USER]/src","#,
        r#""prev":"0000000000000000000000000000000000000000000000000000000000000000","#,
        r#""hash":"e51bdd966701d4d1ee775a2717f3493e7065ad6e87ceaa43ee7ff66437751408"}"#
    );

    pub(crate) fn vector_fields() -> Map<String, Value> {
        let v = serde_json::json!({"argv": ["ls", "-la"], "uid": 1000, "workdir": "/home/[USER]/src"});
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn encode_vector(chain: &Chain) -> (String, [u8; 64]) {
        let mut buf = Vec::new();
        let h = Header { seq: 1, session: "0123456789abcdef", event: "run.start" };
        let hash = encode(
            &mut buf,
            chain,
            &h,
            |b| b.extend_from_slice(b"2026-11-22T00:59:01.123Z"),
            &vector_fields(),
            &ZERO_HASH,
        );
        (String::from_utf8(buf).unwrap_or_default(), hash)
    }

    #[test]
    fn encodes_the_documented_test_vector() {
        let (line, hash) = encode_vector(&Chain::Plain);
        // The expected line and hash were computed independently with Python's hashlib:
        // sha256(b"0" * 64 + canonical).hexdigest(); docs/audit-format.md shows the same vector.
        assert_eq!(line, format!("{VECTOR_LINE}\n"));
        assert_eq!(&hash[..], b"e51bdd966701d4d1ee775a2717f3493e7065ad6e87ceaa43ee7ff66437751408");
        assert_eq!(recompute(&Chain::Plain, line.trim_end().as_bytes()), Some(hash));
    }

    #[test]
    fn keyed_records_are_marked_and_use_hmac() {
        let key = AuditKey::from_bytes(b"test-vector-key-0123456789").expect("key");
        let chain = Chain::new(Some(&key));
        let (line, hash) = encode_vector(&chain);
        // hmac.new(key, b"0" * 64 + canonical, "sha256").hexdigest()
        assert_eq!(&hash[..], b"7e30285ef0076bfcad6abd8eda94d95f20ea827fefc34365fb8e7e5add16c3b1");
        assert!(line.starts_with(r#"{"v":1,"k":1,"seq":1,"#), "{line}");
        assert_eq!(recompute(&chain, line.trim_end().as_bytes()), Some(hash));
        assert_ne!(recompute(&Chain::Plain, line.trim_end().as_bytes()), Some(hash));
        let other = AuditKey::from_bytes(b"test-vector-key-0123456780").expect("key");
        assert_ne!(recompute(&Chain::new(Some(&other)), line.trim_end().as_bytes()), Some(hash));
    }

    #[test]
    fn macs_are_keyed_only_and_compared_as_hex() {
        assert_eq!(Chain::Plain.mac(&[b"x"]), None);
        assert!(!Chain::Plain.mac_matches(&[b"x"], &"0".repeat(64)));
        let key = AuditKey::from_bytes(b"test-vector-key-0123456789").expect("key");
        let chain = Chain::new(Some(&key));
        // hmac.new(b"test-vector-key-0123456789", b"abc", "sha256").hexdigest()
        let want = "6867305cda310a664b7a236a914a9110bfe169a785629556357cea2a0f7b6e5e";
        let got = chain.mac(&[b"a", b"bc"]).expect("keyed");
        assert_eq!(std::str::from_utf8(&got).ok(), Some(want));
        assert!(chain.mac_matches(&[b"abc"], want));
        assert!(!chain.mac_matches(&[b"abd"], want));
        assert!(!chain.mac_matches(&[b"abc"], &want.to_uppercase()));
        assert!(!chain.mac_matches(&[b"abc"], &want[..62]));
        assert_eq!(unhex32(b"0f".repeat(32).as_slice()), Some([0x0f; 32]));
    }

    #[test]
    fn trailer_rejects_bad_endings() {
        let (line, _) = encode_vector(&Chain::Plain);
        let line = line.trim_end();
        assert!(trailer(line.as_bytes()).is_some());
        assert!(trailer(&line.as_bytes()[..line.len() - 1]).is_none());
        assert!(trailer(line.replace("\"prev\"", "\"prex\"").as_bytes()).is_none());
        assert!(trailer(line.to_uppercase().as_bytes()).is_none());
        assert!(trailer(b"{}").is_none());
    }
}
