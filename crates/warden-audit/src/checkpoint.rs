//! Checkpoints: the newest record's `seq` and `hash`, kept somewhere else, so that a later
//! verification proves the log still reaches that record unchanged.
//!
//! The chain alone cannot show that records were cut off its end: the next writer simply continues
//! from the new last record. A checkpoint taken earlier (`warden audit head`) and shipped off the
//! machine closes that gap: [`crate::verify::verify_with_checkpoint`] fails when the log ends
//! before the checkpoint's `seq` or holds a different record there.
//!
//! Format: one JSON line `{"seq":N,"hash":"<64 hex>","mac":"<64 hex>"|null}`. For a keyed log,
//! `mac` is the lowercase hex HMAC-SHA256, under the log's key, of the ASCII bytes
//! `warden-audit-checkpoint-v1:<seq in decimal>:<hash>`; unkeyed logs write `"mac":null`. The
//! message starts with a letter that is no hex digit, so it can never be the input of a chain hash
//! (which starts with 64 hex digits): a checkpoint mac is never a record hash and vice versa.
//!
//! Guarantees: reading is strict (exactly these three fields; `seq` at least 1; lowercase hex) and
//! reads at most [`MAX_CHECKPOINT_BYTES`]; a keyed checkpoint's mac is compared in constant time.
//! What a mac cannot prevent: replaying an older genuine checkpoint of the same log. Keep the newest
//! one where it cannot be rolled back (an append-only store, a log server).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::record::{is_hash_hex, Chain};
use crate::AuditKey;

/// The largest checkpoint file read, in bytes.
pub const MAX_CHECKPOINT_BYTES: u64 = 4096;

/// What the checkpoint mac covers, before `<seq>:<hash>`.
const MAC_DOMAIN: &[u8] = b"warden-audit-checkpoint-v1:";

/// A record's position in the chain, as shipped elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The record's `seq` (at least 1).
    pub seq: u64,
    /// The record's `hash` (64 lowercase hex digits).
    pub hash: String,
    /// Keyed logs: the HMAC-SHA256 over seq and hash (64 lowercase hex digits); `None` for unkeyed.
    pub mac: Option<String>,
}

/// Why a checkpoint file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        /// The checkpoint file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CHECKPOINT_BYTES`].
    #[error("checkpoint {} is larger than {limit} bytes; a checkpoint is one short JSON line", path.display())]
    TooLarge {
        /// The checkpoint file.
        path: PathBuf,
        /// [`MAX_CHECKPOINT_BYTES`].
        limit: u64,
    },
    /// The file is not one JSON object.
    #[error("invalid checkpoint {}: {detail}", path.display())]
    NotAnObject {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A field is missing, unknown, or has the wrong type or shape.
    #[error("invalid checkpoint {}: field {field:?}: {detail}", path.display())]
    Field {
        /// The checkpoint file.
        path: PathBuf,
        /// The field's name.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl Checkpoint {
    /// The checkpoint of the record `seq` with `hash`; with `key`, its mac.
    pub fn new(seq: u64, hash: &str, key: Option<&AuditKey>) -> Checkpoint {
        let chain = Chain::new(key);
        let mac = chain.mac(&[&mac_message(seq, hash)]).map(|m| String::from_utf8_lossy(&m).into_owned());
        Checkpoint { seq, hash: hash.to_owned(), mac }
    }

    /// The one-line JSON form, without a newline: `{"seq":N,"hash":"..","mac":".."|null}`.
    pub fn to_json(&self) -> String {
        let mac = self.mac.as_ref().map_or_else(|| "null".to_owned(), |m| format!("\"{m}\""));
        format!("{{\"seq\":{},\"hash\":\"{}\",\"mac\":{mac}}}", self.seq, self.hash)
    }

    /// Reads and checks the shape of a checkpoint file (not its mac: that needs the key, see
    /// [`Checkpoint::authentic`]). Surrounding whitespace is ignored.
    pub fn read(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let read_err = |source| CheckpointError::Read { path: path.to_owned(), source };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(MAX_CHECKPOINT_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CHECKPOINT_BYTES {
            return Err(CheckpointError::TooLarge { path: path.to_owned(), limit: MAX_CHECKPOINT_BYTES });
        }
        parse(&text, path)
    }

    /// Whether the mac fits the key: with a key, `mac` must be the HMAC over seq and hash; without
    /// one, `mac` must be `null`. The error says which way it failed.
    pub fn authentic(&self, key: Option<&AuditKey>) -> Result<(), String> {
        let chain = Chain::new(key);
        match (&self.mac, chain.keyed()) {
            (None, false) => Ok(()),
            (Some(_), false) => {
                Err("the checkpoint carries a mac, so it belongs to a keyed log: pass its key (--audit-key-file)"
                    .to_owned())
            }
            (None, true) => Err("the checkpoint has no mac, but the log is keyed: it was not made with this \
                                 log's key (forged, or taken from another log)"
                .to_owned()),
            (Some(m), true) if chain.mac_matches(&[&mac_message(self.seq, &self.hash)], m) => Ok(()),
            (Some(_), true) => Err("the checkpoint's mac does not verify under this key: the checkpoint was \
                                    forged or altered, or made with another key"
                .to_owned()),
        }
    }
}

/// `warden-audit-checkpoint-v1:<seq>:<hash>`.
fn mac_message(seq: u64, hash: &str) -> Vec<u8> {
    let mut m = MAC_DOMAIN.to_vec();
    m.extend_from_slice(format!("{seq}:{hash}").as_bytes());
    m
}

fn parse(text: &str, path: &Path) -> Result<Checkpoint, CheckpointError> {
    let field_err = |field: &str, detail: &str| CheckpointError::Field {
        path: path.to_owned(),
        field: field.to_owned(),
        detail: detail.to_owned(),
    };
    let value: Value = serde_json::from_str(text.trim())
        .map_err(|e| CheckpointError::NotAnObject { path: path.to_owned(), detail: format!("not JSON: {e}") })?;
    let Value::Object(mut map) = value else {
        return Err(CheckpointError::NotAnObject {
            path: path.to_owned(),
            detail: "not a JSON object (expected {\"seq\":N,\"hash\":\"..\",\"mac\":..})".to_owned(),
        });
    };
    let seq = match map.remove("seq") {
        None => return Err(field_err("seq", "missing")),
        Some(v) => {
            v.as_u64().filter(|&s| s >= 1).ok_or_else(|| field_err("seq", "expected an integer of at least 1"))?
        }
    };
    let hex = |field: &str, v: Value| match v {
        Value::String(s) if is_hash_hex(s.as_bytes()) => Ok(s),
        _ => Err(field_err(field, "expected a string of 64 lowercase hex digits")),
    };
    let hash = hex("hash", map.remove("hash").ok_or_else(|| field_err("hash", "missing"))?)?;
    let mac = match map.remove("mac") {
        None => return Err(field_err("mac", "missing (it is null for an unkeyed log)")),
        Some(Value::Null) => None,
        Some(v) => Some(hex("mac", v).map_err(|_| field_err("mac", "expected null or 64 lowercase hex digits"))?),
    };
    if let Some(extra) = map.keys().next() {
        return Err(field_err(extra, "unknown field (a checkpoint holds seq, hash and mac)"));
    }
    Ok(Checkpoint { seq, hash, mac })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e51bdd966701d4d1ee775a2717f3493e7065ad6e87ceaa43ee7ff66437751408";

    fn key() -> AuditKey {
        AuditKey::from_bytes(b"test-vector-key-0123456789").expect("key")
    }

    fn err(text: &str) -> String {
        parse(text, Path::new("/cp")).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn round_trips_through_json() {
        let cp = Checkpoint::new(7, HASH, None);
        assert_eq!(cp.to_json(), format!("{{\"seq\":7,\"hash\":\"{HASH}\",\"mac\":null}}"));
        assert_eq!(parse(&cp.to_json(), Path::new("/cp")).ok(), Some(cp.clone()));
        let keyed = Checkpoint::new(7, HASH, Some(&key()));
        assert_eq!(parse(&format!("  {}\n", keyed.to_json()), Path::new("/cp")).ok(), Some(keyed));
    }

    #[test]
    fn the_mac_is_the_documented_hmac() {
        // hmac.new(b"test-vector-key-0123456789",
        //          b"warden-audit-checkpoint-v1:1:" + HASH.encode(), "sha256").hexdigest()
        let cp = Checkpoint::new(1, HASH, Some(&key()));
        assert_eq!(cp.mac.as_deref(), Some("ace0fc844927702b6e97aee3b05bcf147bd6458314222efa62e618308f2d1e9d"));
    }

    #[test]
    fn authentic_needs_the_mac_that_fits_the_key() {
        let plain = Checkpoint::new(3, HASH, None);
        let keyed = Checkpoint::new(3, HASH, Some(&key()));
        assert_eq!(plain.authentic(None), Ok(()));
        assert_eq!(keyed.authentic(Some(&key())), Ok(()));
        assert!(keyed.authentic(None).is_err_and(|e| e.contains("pass its key")));
        assert!(plain.authentic(Some(&key())).is_err_and(|e| e.contains("has no mac")));
        let other = AuditKey::from_bytes(b"test-vector-key-0123456780").expect("key");
        assert!(keyed.authentic(Some(&other)).is_err_and(|e| e.contains("does not verify")));
        // The mac covers both seq and hash.
        let moved = Checkpoint { seq: 4, ..keyed.clone() };
        assert!(moved.authentic(Some(&key())).is_err());
        let rehashed = Checkpoint { hash: HASH.replace('e', "f"), ..keyed };
        assert!(rehashed.authentic(Some(&key())).is_err());
    }

    #[test]
    fn malformed_checkpoints_name_the_field() {
        let h = HASH;
        assert!(err("").contains("not JSON"), "{}", err(""));
        assert!(err("[1]").contains("not a JSON object"));
        assert_eq!(
            err(&format!("{{\"hash\":\"{h}\",\"mac\":null}}")),
            "invalid checkpoint /cp: field \"seq\": missing"
        );
        for seq in ["0", "-1", "1.5", "\"3\""] {
            let e = err(&format!("{{\"seq\":{seq},\"hash\":\"{h}\",\"mac\":null}}"));
            assert!(e.contains("field \"seq\": expected an integer of at least 1"), "{seq}: {e}");
        }
        let e = err("{\"seq\":1,\"hash\":\"ABC\",\"mac\":null}");
        assert!(e.contains("field \"hash\": expected a string of 64 lowercase hex digits"), "{e}");
        let e = err(&format!("{{\"seq\":1,\"hash\":\"{}\",\"mac\":null}}", h.to_uppercase()));
        assert!(e.contains("field \"hash\""), "{e}");
        assert!(err(&format!("{{\"seq\":1,\"hash\":\"{h}\"}}")).contains("field \"mac\": missing"));
        let e = err(&format!("{{\"seq\":1,\"hash\":\"{h}\",\"mac\":7}}"));
        assert!(e.contains("field \"mac\": expected null or 64 lowercase hex digits"), "{e}");
        let e = err(&format!("{{\"seq\":1,\"hash\":\"{h}\",\"mac\":null,\"note\":1}}"));
        assert!(e.contains("field \"note\": unknown field"), "{e}");
    }

    #[test]
    fn reading_is_capped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("cp.json");
        std::fs::write(&p, format!("{}\n", Checkpoint::new(2, HASH, None).to_json())).expect("write");
        assert_eq!(Checkpoint::read(&p).ok().map(|c| c.seq), Some(2));
        std::fs::write(&p, " ".repeat(5000)).expect("write");
        assert!(matches!(Checkpoint::read(&p), Err(CheckpointError::TooLarge { .. })));
        let missing = Checkpoint::read(&dir.path().join("nope")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.starts_with("cannot read checkpoint "), "{missing}");
    }
}
