//! A log written to a stream (standard output) instead of a file, for log shippers: the same
//! records, redacted and hash-chained (keyed when a key is given) exactly like the file log's,
//! one JSON line per record with a single `write(2)`, starting at `seq` 1 from the zero hash. So
//! the captured stream, saved as a file, verifies with `warden audit verify`.
//!
//! There is no locking, rotation or recovery: one [`AuditStream`] is the only writer of its
//! stream (a process that forwards every other writer's records through it).

use std::io::Write;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::record::{self, Chain, Header, LOG_EVENT_PREFIX, MAX_RECORD_BYTES, ZERO_HASH};
use crate::redact::redact_str;
use crate::{time, AuditError, AuditKey};

/// What an [`AuditStream`] is called in messages.
pub const STDOUT_NAME: &str = "standard output";

/// A hash-chained log on a stream.
pub struct AuditStream {
    out: Box<dyn Write + Send>,
    chain: Chain,
    session: String,
    seq: u64,
    hash: [u8; 64],
    buf: Vec<u8>,
}

impl AuditStream {
    /// A log on standard output.
    pub fn stdout(key: Option<AuditKey>) -> Result<AuditStream, AuditError> {
        AuditStream::new(Box::new(std::io::stdout()), key)
    }

    /// A log on `out`.
    pub fn new(out: Box<dyn Write + Send>, key: Option<AuditKey>) -> Result<AuditStream, AuditError> {
        Ok(AuditStream {
            out,
            chain: Chain::new(key.as_ref()),
            session: crate::writer::random_session()?,
            seq: 0,
            hash: ZERO_HASH,
            buf: Vec::with_capacity(1024),
        })
    }

    /// This writer's session id.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Appends one record (redacted like [`crate::AuditLog::append`]); its `seq`.
    pub fn append(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, AuditError> {
        let event = redact_str(event);
        if event.starts_with(LOG_EVENT_PREFIX) {
            return Err(AuditError::ReservedEvent { event: event.into_owned() });
        }
        let fields = crate::writer::prepare_fields(fields)?;
        let seq = self.seq + 1;
        let h = Header { seq, session: &self.session, event: &event };
        let hash = record::encode(
            &mut self.buf,
            &self.chain,
            &h,
            |b| time::write_ts(b, SystemTime::now()),
            &fields,
            &self.hash,
        );
        if self.buf.len() > MAX_RECORD_BYTES {
            let size = self.buf.len();
            self.buf.clear();
            return Err(AuditError::RecordTooLarge { event: event.into_owned(), size, limit: MAX_RECORD_BYTES });
        }
        let path = std::path::PathBuf::from(STDOUT_NAME);
        self.out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
            .map_err(|source| AuditError::Write { path, source })?;
        self.seq = seq;
        self.hash = hash;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_captured_stream_verifies_as_a_log_file() {
        let out = Shared::default();
        let mut s = AuditStream::new(Box::new(out.clone()), None).expect("stream");
        for i in 0..3 {
            let mut f = Map::new();
            f.insert("n".into(), Value::from(i));
            f.insert("token".into(), Value::from("sk-abcdefghijklmnopqrstuvwxyz0123456789"));
            assert_eq!(s.append("serve.request", f).expect("append"), i + 1);
        }
        assert!(s.append("log.rotated", Map::new()).is_err(), "the log's own events are reserved");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("captured.jsonl");
        let bytes = out.0.lock().expect("lock").clone();
        assert!(!String::from_utf8_lossy(&bytes).contains("sk-abcdefghij"), "redacted");
        std::fs::write(&file, &bytes).expect("write");
        let v = crate::verify::verify_files(&[file], None).expect("verifies");
        assert_eq!(v.records, 3);
    }
}
