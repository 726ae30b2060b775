//! Appending records: locking, tail recovery, rotation and pruning, fsync.
//!
//! Rotation deletes files (`keep`), and says so in the chain before anything is deleted: a
//! `log.pruned` record names the last record deleted (its seq and hash) and the newest file
//! deleted. With `keep >= 1` it is appended to the live file just before that file is rotated, so
//! it survives in the newest rotated file; with `keep = 0` the rotated file itself is what is
//! deleted, and the record is the second one of the new file (after `log.rotated`), which replaces
//! the old file in one `rename`. Either way, a writer killed at any point of a rotation leaves a
//! log whose head still verifies (the one exception, a leftover hard link `path.1` of the live file,
//! is cleaned up by the next rotation).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use crate::read::{numbered, parse_line};
use crate::record::{
    self, Chain, Header, LOG_EVENT_PREFIX, MAX_RECORD_BYTES, PRUNED_EVENT, PRUNED_FILE, PRUNED_HASH,
    PRUNED_THROUGH_SEQ, RESERVED, ZERO_HASH,
};
use crate::redact::{redact_str, redact_value, unique_key};
use crate::{sys, time, AuditConfig, AuditError, Fsync};

/// Batch mode syncs at most this often per writer.
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How far back a last line is looked for: one record plus its newline.
const SEGMENT_CAP: u64 = MAX_RECORD_BYTES as u64 + 1;

/// What a writer knows about the end of the chain, valid while the file has this inode and length.
#[derive(Debug, Clone, Copy)]
struct Tail {
    dev: u64,
    ino: u64,
    len: u64,
    seq: u64,
    hash: [u8; 64],
}

/// An open audit log. Each value has its own file descriptor and session id; several of them,
/// in one process or many, may append to the same file at once.
pub struct AuditLog {
    path: PathBuf,
    fsync: Fsync,
    max_bytes: Option<u64>,
    keep: u32,
    chain: Chain,
    session: String,
    file: File,
    /// `(st_dev, st_ino)` of `file`, to tell whether it is still the file at `path`.
    file_id: (u64, u64),
    /// The chain's end as last seen under the lock.
    tail: Option<Tail>,
    /// The serialized record, reused between appends.
    buf: Vec<u8>,
    last_sync: Instant,
    /// Written but not yet synced (batch mode).
    pending: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("fsync", &self.fsync)
            .field("max_bytes", &self.max_bytes)
            .field("keep", &self.keep)
            .field("keyed", &self.chain.keyed())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

fn open_file(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| AuditError::Open { path: path.to_owned(), source })
}

fn file_id(file: &File, path: &Path) -> Result<(u64, u64), AuditError> {
    let m = file.metadata().map_err(|source| AuditError::Read { path: path.to_owned(), source })?;
    Ok((m.dev(), m.ino()))
}

pub(crate) fn random_session() -> Result<String, AuditError> {
    let mut b = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|source| AuditError::Random { source })?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| AuditError::Sync { path: dir.to_owned(), source })
}

/// The bytes after the last `\n` strictly before `end` and where they start; `None` when no
/// `\n` is found within [`SEGMENT_CAP`] bytes (and the file is longer than that).
fn last_segment(file: &File, end: u64) -> io::Result<Option<(u64, Vec<u8>)>> {
    let mut window: u64 = 4096;
    loop {
        let lo = end.saturating_sub(window);
        let mut buf = vec![0u8; usize::try_from(end - lo).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, lo)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            buf.drain(..=i);
            return Ok(Some((lo + i as u64 + 1, buf)));
        }
        if lo == 0 {
            return Ok(Some((0, buf)));
        }
        if window > SEGMENT_CAP {
            return Ok(None);
        }
        window *= 4;
    }
}

/// The `seq` and `hash` of the last record of `file` (at `path`, for messages), whose byte
/// `len - 1` is its last `\n`.
fn last_record_in(file: &File, len: u64, path: &Path) -> Result<(u64, [u8; 64]), AuditError> {
    let corrupt = |detail: String| AuditError::CorruptTail { path: path.to_owned(), detail };
    let (_, line) = last_segment(file, len - 1)
        .map_err(|source| AuditError::Read { path: path.to_owned(), source })?
        .ok_or_else(|| corrupt("the last line is longer than the record limit".to_owned()))?;
    let rec = parse_line(&line).map_err(corrupt)?;
    let mut hash = [0u8; 64];
    hash.copy_from_slice(rec.hash.as_bytes());
    Ok((rec.seq, hash))
}

/// The `seq` and `hash` of the last record of the (closed) file at `path`; `None` when it is empty.
fn last_record(path: &Path) -> Result<Option<(u64, [u8; 64])>, AuditError> {
    let read_err = |source| AuditError::Read { path: path.to_owned(), source };
    let f = File::open(path).map_err(read_err)?;
    let len = f.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut end = [0u8; 1];
    f.read_exact_at(&mut end, len - 1).map_err(read_err)?;
    if end[0] != b'\n' {
        let detail = "the last line is cut off (no newline)".to_owned();
        return Err(AuditError::CorruptTail { path: path.to_owned(), detail });
    }
    last_record_in(&f, len, path).map(Some)
}

/// The fields of a `log.pruned` record.
fn pruned_fields(file: &str, through: u64, hash: &[u8; 64]) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert(PRUNED_FILE.to_owned(), Value::from(file));
    fields.insert(PRUNED_HASH.to_owned(), Value::from(String::from_utf8_lossy(hash).into_owned()));
    fields.insert(PRUNED_THROUGH_SEQ.to_owned(), Value::from(through));
    fields
}

/// Redacts the fields, renames reserved names to `field_NAME`, and refuses floats.
pub(crate) fn prepare_fields(fields: Map<String, Value>) -> Result<Map<String, Value>, AuditError> {
    fn integers_only(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_i64() || n.is_u64(),
            Value::Array(a) => a.iter().all(integers_only),
            Value::Object(m) => m.values().all(integers_only),
            Value::Null | Value::Bool(_) | Value::String(_) => true,
        }
    }
    let mut out = Map::new();
    for (k, mut v) in fields {
        let k = match redact_str(&k) {
            std::borrow::Cow::Borrowed(_) => k,
            std::borrow::Cow::Owned(new) => new,
        };
        if !integers_only(&v) {
            return Err(AuditError::NonInteger { field: k });
        }
        redact_value(&mut v);
        let k = if RESERVED.contains(&k.as_str()) { format!("field_{k}") } else { k };
        let k = unique_key(&out, k);
        out.insert(k, v);
    }
    Ok(out)
}

impl AuditLog {
    /// Opens (creating it and its directories, mode 0700, if needed; the file with mode 0600) the
    /// log at `cfg.path`. Under the lock, a torn last line is cut off and a `log.recovered` record
    /// notes how many bytes were dropped. Fails when the last complete line is not a valid record.
    pub fn open(cfg: AuditConfig) -> Result<AuditLog, AuditError> {
        let AuditConfig { path, fsync, max_bytes, keep, key } = cfg;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned);
        let mut created = false;
        if let Some(dir) = &parent {
            if !dir.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| AuditError::CreateDir { path: dir.clone(), source })?;
                created = true;
            }
        }
        created |= !path.exists();
        let file = open_file(&path)?;
        let file_id = file_id(&file, &path)?;
        let mut log = AuditLog {
            chain: Chain::new(key.as_ref()),
            session: random_session()?,
            path,
            fsync,
            max_bytes,
            keep,
            file,
            file_id,
            tail: None,
            buf: Vec::with_capacity(1024),
            last_sync: Instant::now(),
            pending: false,
        };
        if created && fsync != Fsync::Never {
            if let Some(dir) = &parent {
                sync_dir(dir)?;
            }
        }
        let meta = log.lock_current()?;
        let res = log.load_tail(&meta);
        let _ = log.file.unlock();
        log.tail = Some(res?);
        Ok(log)
    }

    /// This writer's session id: 16 random hex digits.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The live log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and returns its `seq`. Every string in `event` and `fields` (names and
    /// values, nested) is redacted first; fields named like a header key get a `field_` prefix.
    /// Fails, writing nothing, when the event is one of the log's own (`log.*`), a field holds a
    /// non-integer number or the record exceeds [`crate::MAX_RECORD_BYTES`].
    pub fn append(&mut self, event: &str, fields: Map<String, Value>) -> Result<u64, AuditError> {
        let event = redact_str(event);
        if event.starts_with(LOG_EVENT_PREFIX) {
            return Err(AuditError::ReservedEvent { event: event.into_owned() });
        }
        let fields = prepare_fields(fields)?;
        let mut rotated = false;
        loop {
            let meta = self.lock_current()?;
            let res = self.append_locked(&meta, &event, &fields, &mut rotated);
            // Unlocking a descriptor we hold cannot fail in practice; the record is written either way.
            let _ = self.file.unlock();
            if let Some(seq) = res? {
                return Ok(seq);
            }
        }
    }

    /// Syncs written records to disk now if any are pending (batch mode).
    pub fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending {
            self.file.sync_data().map_err(|source| AuditError::Sync { path: self.path.clone(), source })?;
            self.pending = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Ends a batch without waiting for the disk: in `batch` mode, starts the writeback of pending
    /// records (`sync_file_range`, see [`Fsync::Batch`]) where `flush` would wait for it; where
    /// the file system cannot start one, syncs as `flush` does. Nothing to do in the other modes
    /// (`always` has nothing pending, `never` leaves it to the kernel).
    pub fn start_writeback(&mut self) -> Result<(), AuditError> {
        if self.pending {
            if sys::start_writeback(&self.file).is_err() {
                return self.flush();
            }
            self.pending = false;
        }
        Ok(())
    }

    /// Locks `self.file` and makes sure it is still the file at `self.path` (another writer may have
    /// rotated it); returns its metadata. The caller unlocks.
    fn lock_current(&mut self) -> Result<fs::Metadata, AuditError> {
        for _ in 0..1000 {
            self.file.lock().map_err(|source| AuditError::Lock { path: self.path.clone(), source })?;
            // One stat of the path tells both whether our descriptor is still the live file and,
            // if it is, its length.
            match fs::metadata(&self.path) {
                Ok(m) if (m.dev(), m.ino()) == self.file_id => return Ok(m),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    let _ = self.file.unlock();
                    return Err(AuditError::Read { path: self.path.clone(), source });
                }
            }
            let _ = self.file.unlock();
            self.file = open_file(&self.path)?;
            self.file_id = file_id(&self.file, &self.path)?;
        }
        Err(AuditError::Unstable { path: self.path.clone() })
    }
    /// Under the lock: recover or rotate if needed, else write the record. `Ok(None)` means
    /// "rotated, lock the new file and try again".
    fn append_locked(
        &mut self,
        meta: &fs::Metadata,
        event: &str,
        fields: &Map<String, Value>,
        rotated: &mut bool,
    ) -> Result<Option<u64>, AuditError> {
        let tail = self.load_tail(meta)?;
        self.tail = Some(tail);
        if let Some(max) = self.max_bytes {
            if !*rotated && tail.len >= max && tail.seq > 0 {
                self.rotate(tail)?;
                *rotated = true;
                return Ok(None);
            }
        }
        let tail = self.write_record(tail, event, fields)?;
        self.tail = Some(tail);
        Ok(Some(tail.seq))
    }

    /// The end of the chain, re-read only when the file changed since we last looked. Cuts off a
    /// torn last line (writing `log.recovered`).
    fn load_tail(&mut self, meta: &fs::Metadata) -> Result<Tail, AuditError> {
        let (dev, ino, len) = (meta.dev(), meta.ino(), meta.len());
        if let Some(t) = self.tail {
            if t.dev == dev && t.ino == ino && t.len == len {
                return Ok(t);
            }
        }
        let read_err = |source| AuditError::Read { path: self.path.clone(), source };
        if len == 0 {
            return self.continue_empty(dev, ino);
        }
        let mut last = [0u8; 1];
        self.file.read_exact_at(&mut last, len - 1).map_err(read_err)?;
        if last[0] != b'\n' {
            return self.recover(dev, ino, len);
        }
        self.tail_from_complete(dev, ino, len)
    }

    /// The tail of a file that ends with `\n` at `len - 1`.
    fn tail_from_complete(&self, dev: u64, ino: u64, len: u64) -> Result<Tail, AuditError> {
        let (seq, hash) = last_record_in(&self.file, len, &self.path)?;
        Ok(Tail { dev, ino, len, seq, hash })
    }

    /// An empty live file continues the chain of `path.1` if there is one (a rotation by an
    /// external tool), else the chain this writer last saw, else starts a new chain.
    fn continue_empty(&self, dev: u64, ino: u64) -> Result<Tail, AuditError> {
        let newest_rotated = numbered(&self.path).into_iter().next().filter(|(n, _)| *n == 1).map(|(_, p)| p);
        if let Some((seq, hash)) = newest_rotated.map(|p| last_record(&p)).transpose()?.flatten() {
            return Ok(Tail { dev, ino, len: 0, seq, hash });
        }
        Ok(match self.tail {
            Some(t) => Tail { dev, ino, len: 0, ..t },
            None => Tail { dev, ino, len: 0, seq: 0, hash: ZERO_HASH },
        })
    }

    /// Cuts a torn last line off (the writer died mid-write: any writer alive would hold the lock)
    /// and records how many bytes were dropped. The last complete line must be a valid record.
    /// Should this writer die between the cut and the record, the chain stays valid but the note is
    /// lost (the dropped bytes were never a complete, acknowledged record).
    fn recover(&mut self, dev: u64, ino: u64, len: u64) -> Result<Tail, AuditError> {
        let (cut, _) = last_segment(&self.file, len)
            .map_err(|source| AuditError::Read { path: self.path.clone(), source })?
            .ok_or_else(|| AuditError::CorruptTail {
                path: self.path.clone(),
                detail: "the unterminated last line is longer than the record limit".to_owned(),
            })?;
        // Check what stays before changing anything.
        let tail = if cut == 0 { None } else { Some(self.tail_from_complete(dev, ino, cut)?) };
        self.file.set_len(cut).map_err(|source| AuditError::Truncate { path: self.path.clone(), source })?;
        let tail = match tail {
            Some(t) => t,
            None => self.continue_empty(dev, ino)?,
        };
        let mut fields = Map::new();
        fields.insert("dropped_bytes".to_owned(), Value::from(len - cut));
        self.write_record(tail, "log.recovered", &fields)
    }

    /// Serializes and appends one record after `tail`, with a single `write(2)`.
    fn write_record(&mut self, tail: Tail, event: &str, fields: &Map<String, Value>) -> Result<Tail, AuditError> {
        let seq = tail.seq + 1;
        let h = Header { seq, session: &self.session, event };
        let hash = record::encode(
            &mut self.buf,
            &self.chain,
            &h,
            |b| time::write_ts(b, SystemTime::now()),
            fields,
            &tail.hash,
        );
        if self.buf.len() > MAX_RECORD_BYTES {
            let size = self.buf.len();
            self.buf.clear();
            self.buf.shrink_to(4096);
            return Err(AuditError::RecordTooLarge { event: event.to_owned(), size, limit: MAX_RECORD_BYTES });
        }
        let write_err = |source| AuditError::Write { path: self.path.clone(), source };
        let res = match (&self.file).write(&self.buf) {
            Ok(n) if n == self.buf.len() => Ok(()),
            // A short write to a regular file: finish it while we still hold the lock.
            Ok(n) => (&self.file).write_all(&self.buf[n..]),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            // Undo a partial write so the next record does not follow a torn line.
            let _ = self.file.set_len(tail.len);
            return Err(write_err(e));
        }
        self.after_write()?;
        Ok(Tail { len: tail.len + self.buf.len() as u64, seq, hash, ..tail })
    }

    fn after_write(&mut self) -> Result<(), AuditError> {
        let sync = match self.fsync {
            Fsync::Always => true,
            Fsync::Batch => self.last_sync.elapsed() >= BATCH_INTERVAL,
            Fsync::Never => false,
        };
        if sync {
            self.pending = true;
            self.flush()
        } else {
            self.pending = self.fsync == Fsync::Batch;
            Ok(())
        }
    }

    /// Rotation, under the lock of the live file. Files past `keep` are deleted only after a
    /// `log.pruned` record naming what they end with is in the chain (see the module docs). The new
    /// file is prepared under a temporary name with its first record (`log.rotated`) and then
    /// renamed over `path`, so `path` always exists and is never empty: the old file is first
    /// hard-linked to `path.1`.
    fn rotate(&mut self, tail: Tail) -> Result<(), AuditError> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        // 1. What goes: path.N for N >= keep, and a path.1 that is a leftover second name of the
        //    live file (a rotation died between its link and its rename; deleting it drops nothing).
        let mut doomed = Vec::new();
        let mut boundary = None;
        for (n, p) in numbered(&self.path) {
            let stale_link = n == 1 && fs::metadata(&p).is_ok_and(|m| m.dev() == tail.dev && m.ino() == tail.ino);
            if n >= self.keep && !stale_link && self.keep > 0 && boundary.is_none() {
                // The newest file deleted that holds records ends where the retained chain begins.
                boundary = last_record(&p)?.map(|(seq, hash)| (format!("{name}.{n}"), seq, hash));
            }
            if n >= self.keep || stale_link {
                doomed.push(p);
            }
        }
        let mut tail = tail;
        if let Some((file, through, hash)) = boundary {
            tail = self.write_record(tail, PRUNED_EVENT, &pruned_fields(&file, through, &hash))?;
            self.tail = Some(tail);
        }
        if self.fsync != Fsync::Never {
            self.file.sync_data().map_err(|source| AuditError::Sync { path: self.path.clone(), source })?;
            self.pending = false;
        }
        // 2. The new file, with its first record(s), under a temporary name.
        let tmp = self.path.with_file_name(format!(".{name}.rotate-{}", self.session));
        fs::remove_file(&tmp).or_else(ignore_not_found).map_err(rot("remove", &tmp))?;
        let new = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(rot("create", &tmp))?;
        let new_meta = new.metadata().map_err(rot("stat", &tmp))?;
        let mut fields = Map::new();
        if self.keep > 0 {
            fields.insert("previous_file".to_owned(), Value::from(format!("{name}.1")));
        }
        fields.insert("previous_seq".to_owned(), Value::from(tail.seq));
        let old = std::mem::replace(&mut self.file, new);
        let old_id = std::mem::replace(&mut self.file_id, (new_meta.dev(), new_meta.ino()));
        let start = Tail { dev: new_meta.dev(), ino: new_meta.ino(), len: 0, seq: tail.seq, hash: tail.hash };
        let mut written = self.write_record(start, "log.rotated", &fields);
        if self.keep == 0 {
            // The old file goes as a whole: everything up to its last record.
            let pruned = pruned_fields(&name, tail.seq, &tail.hash);
            written = written.and_then(|t| self.write_record(t, PRUNED_EVENT, &pruned));
        }
        // 3. Delete, shift the rest up by one, keep the old file as path.1, then atomically put
        //    the new one in place.
        let swapped = written.and_then(|t| self.swap_in(&tmp, &name, &doomed).map(|()| t));
        match swapped {
            Ok(new_tail) => {
                if self.fsync != Fsync::Never {
                    sync_dir(&dir)?;
                }
                // Closing the old descriptor releases its lock; others find the new file by inode.
                drop(old);
                self.tail = Some(new_tail);
                Ok(())
            }
            Err(e) => {
                self.file = old;
                self.file_id = old_id;
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Step 3 of [`AuditLog::rotate`]: deletes `doomed`, shifts `path.N` to `path.N+1` below
    /// `keep`, links the live file to `path.1` and renames `tmp` over it. With `keep = 0` only the
    /// rename, and the deletions after it: the new file's `log.pruned` covers them.
    fn swap_in(&self, tmp: &Path, name: &str, doomed: &[PathBuf]) -> Result<(), AuditError> {
        let remove_doomed =
            || doomed.iter().try_for_each(|p| fs::remove_file(p).or_else(ignore_not_found).map_err(rot("remove", p)));
        if self.keep == 0 {
            fs::rename(tmp, &self.path).map_err(rot("rename", tmp))?;
            return remove_doomed();
        }
        let numbered_path = |n: u32| self.path.with_file_name(format!("{name}.{n}"));
        remove_doomed()?;
        for n in (1..self.keep).rev() {
            let from = numbered_path(n);
            if from.exists() {
                let to = numbered_path(n + 1);
                fs::rename(&from, &to).map_err(rot("rename", &from))?;
            }
        }
        let first = numbered_path(1);
        if fs::hard_link(&self.path, &first).is_err() {
            // No hard links here: a brief window in which `path` does not exist.
            fs::rename(&self.path, &first).map_err(rot("rename", &self.path))?;
        }
        fs::rename(tmp, &self.path).map_err(rot("rename", tmp))
    }
}

/// The error of rotation step `op` on `path`.
fn rot(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditError {
    let path = path.to_owned();
    move |source| AuditError::Rotate { op, path, source }
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.start_writeback();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{log_files, read_file};
    use crate::verify::verify_files;
    use std::os::unix::fs::PermissionsExt as _;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn cfg(path: &Path) -> AuditConfig {
        AuditConfig { fsync: Fsync::Never, ..AuditConfig::new(path) }
    }

    /// Appends until the live file holds at least `max` bytes: the next append rotates.
    fn fill(log: &mut AuditLog, max: u64) {
        while fs::metadata(log.path()).map_or(0, |m| m.len()) < max {
            log.append("tick", Map::new()).expect("append");
        }
    }

    /// Opens the log with `max_bytes = 600` and `keep`, fills it and rotates `rotations` times.
    fn rotate_n(path: &Path, keep: u32, rotations: usize) -> AuditLog {
        let mut log = AuditLog::open(AuditConfig { max_bytes: Some(600), keep, ..cfg(path) }).expect("open");
        for _ in 0..rotations {
            fill(&mut log, 600);
            log.append("tick", Map::new()).expect("append");
        }
        fill(&mut log, 600);
        log
    }

    #[test]
    fn creates_private_dirs_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/audit.jsonl");
        let log = AuditLog::open(cfg(&path)).expect("open");
        assert_eq!(log.path(), path);
        assert_eq!(log.session().len(), 16);
        assert!(log.session().bytes().all(|b| b.is_ascii_hexdigit()));
        let mode = |p: &Path| fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let other = AuditLog::open(cfg(&path)).expect("open");
        assert_ne!(log.session(), other.session());
    }

    #[test]
    fn appends_a_chain_with_renamed_and_redacted_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        let fields = map(serde_json::json!({
            "seq": 99, "hash": "x", "k": true, "field_seq": 1,
            "/home/alice/f": {"nested": ["token=qwertyz", "/Users/bob"]},
        }));
        assert_eq!(log.append("run.start", fields).expect("append"), 1);
        assert_eq!(log.append("run.exit", Map::new()).expect("append"), 2);
        drop(log);
        let recs = read_file(&path).expect("read");
        assert_eq!(recs.len(), 2);
        let f = &recs[0].fields;
        assert_eq!(f.get("field_seq_2"), Some(&Value::from(99)));
        assert_eq!(f.get("field_seq"), Some(&Value::from(1)));
        assert_eq!(f.get("field_hash"), Some(&Value::from("x")));
        assert_eq!(f.get("field_k"), Some(&Value::from(true)));
        assert_eq!(
            f.get("/home/[USER]/f"),
            Some(&serde_json::json!({"nested": ["token=[REDACTED]", "/Users/[USER]"]}))
        );
        // The secret has non-hex letters: hashes and session ids are hex and
        // could otherwise contain it by chance.
        assert!(!recs[0].raw.contains("alice") && !recs[0].raw.contains("bob") && !recs[0].raw.contains("qwertyz"));
        assert_eq!(recs[0].prev, "0".repeat(64));
        assert_eq!(recs[1].prev, recs[0].hash);
        assert!(recs[0].raw.starts_with(r#"{"v":1,"seq":1,"ts":""#));
        let v = verify_files(&[path], None).expect("verifies");
        assert_eq!((v.records, v.first_seq, v.last_seq), (2, Some(1), Some(2)));
    }

    #[test]
    fn refuses_floats_and_oversized_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        let err = log.append("e", map(serde_json::json!({"d": [1, 2.5]}))).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("audit field \"d\" holds a non-integer number; audit records store integers only")
        );
        let big = "x".repeat(MAX_RECORD_BYTES);
        let err = log.append("e", map(serde_json::json!({ "big": big }))).err();
        assert!(matches!(err, Some(AuditError::RecordTooLarge { .. })), "{err:?}");
        let just_fits = "x".repeat(MAX_RECORD_BYTES - 400);
        assert_eq!(log.append("e", map(serde_json::json!({ "big": just_fits }))).expect("append"), 1);
        assert_eq!(log.append("e", Map::new()).expect("append after a big record"), 2);
        drop(log);
        assert_eq!(
            fs::metadata(&path).expect("meta").len() as usize,
            read_file(&path).expect("read").iter().map(|r| r.raw.len() + 1).sum::<usize>()
        );
    }

    #[test]
    fn recovers_a_torn_tail_and_counts_dropped_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        for _ in 0..3 {
            log.append("e", Map::new()).expect("append");
        }
        drop(log);
        let before = fs::read(&path).expect("read");
        let torn = b"{\"v\":1,\"seq\":4,\"ts\":\"2026-";
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(torn).expect("write");
        drop(f);
        let mut log = AuditLog::open(cfg(&path)).expect("open recovers");
        let after = fs::read(&path).expect("read");
        assert!(after.starts_with(&before), "earlier records were touched");
        let recs = read_file(&path).expect("read");
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[3].event, "log.recovered");
        assert_eq!(recs[3].seq, 4);
        assert_eq!(recs[3].fields.get("dropped_bytes"), Some(&Value::from(torn.len())));
        assert_eq!(log.append("e", Map::new()).expect("append"), 5);
        drop(log);
        verify_files(std::slice::from_ref(&path), None).expect("verifies");

        // A torn first line: the file is cut to nothing and a new chain starts.
        let p2 = dir.path().join("b.jsonl");
        fs::write(&p2, b"{\"v\":1,").expect("write");
        drop(AuditLog::open(cfg(&p2)).expect("open"));
        let recs = read_file(&p2).expect("read");
        assert_eq!((recs.len(), recs[0].seq, recs[0].event.as_str()), (1, 1, "log.recovered"));
        assert_eq!(recs[0].fields.get("dropped_bytes"), Some(&Value::from(7)));
    }

    #[test]
    fn refuses_to_append_after_an_invalid_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        log.append("e", Map::new()).expect("append");
        drop(log);
        let mut data = fs::read(&path).expect("read");
        data.extend_from_slice(b"{\"not\":\"a record\"}\n");
        fs::write(&path, &data).expect("write");
        let err = AuditLog::open(cfg(&path)).err();
        assert!(matches!(err, Some(AuditError::CorruptTail { .. })), "{err:?}");
        // Torn tail after an invalid line: nothing is cut either.
        data.extend_from_slice(b"{\"v\":");
        fs::write(&path, &data).expect("write");
        assert!(matches!(AuditLog::open(cfg(&path)), Err(AuditError::CorruptTail { .. })));
        assert_eq!(fs::read(&path).expect("read"), data);
    }

    #[test]
    fn rotates_with_keep_two_and_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(AuditConfig { max_bytes: Some(1000), keep: 2, ..cfg(&path) }).expect("open");
        let mut last = 0;
        for i in 0..40 {
            last = log.append("tick", map(serde_json::json!({ "i": i }))).expect("append");
        }
        drop(log);
        let files = log_files(&path);
        let names: Vec<_> =
            files.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]);
        let v = verify_files(&files, None).expect("chain verifies across the kept files");
        assert_eq!(v.last_seq, Some(last));
        assert!(v.first_seq > Some(1), "the oldest file was dropped: {v:?}");
        assert_eq!(v.pruned_through.map(|p| p + 1), v.first_seq, "{v:?}");
        let newest = read_file(&path).expect("read");
        assert_eq!(newest[0].event, "log.rotated");
        assert_eq!(newest[0].fields.get("previous_file"), Some(&Value::from("audit.jsonl.1")));
        let prev_file = read_file(&files[1]).expect("read");
        let prev_last = prev_file.last().expect("records");
        assert_eq!(newest[0].fields.get("previous_seq"), Some(&Value::from(prev_last.seq)));
        assert_eq!(newest[0].prev, prev_last.hash);
        // The file rotated last ends with what that rotation deleted: the end of the file that
        // preceded the oldest one kept.
        assert_eq!(prev_last.event, "log.pruned");
        let oldest = read_file(&files[0]).expect("read");
        assert_eq!(prev_last.fields.get("pruned_file"), Some(&Value::from("audit.jsonl.2")));
        assert_eq!(prev_last.fields.get("pruned_through_seq"), Some(&Value::from(oldest[0].seq - 1)));
        assert_eq!(prev_last.fields.get("pruned_hash"), Some(&Value::from(oldest[0].prev.as_str())));
        assert_eq!(fs::metadata(&files[0]).map(|m| m.permissions().mode() & 0o777).ok(), Some(0o600));
        for f in &files {
            // One record past max_bytes, and the log.pruned record written just before rotation.
            let pruned = read_file(f)
                .expect("read")
                .iter()
                .filter(|r| r.event == "log.pruned")
                .map(|r| r.raw.len() + 1)
                .sum::<usize>();
            let len = fs::metadata(f).expect("meta").len() as usize;
            assert!(len < 1000 + 200 + pruned, "{} too big: {len}", f.display());
        }
    }

    #[test]
    fn keep_zero_prunes_the_rotated_file_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        // A rotated file from an earlier configuration goes too.
        drop(rotate_n(&path, 1, 1));
        assert_eq!(log_files(&path).len(), 2);
        let mut log = AuditLog::open(AuditConfig { max_bytes: Some(600), keep: 0, ..cfg(&path) }).expect("open");
        let last_before = read_file(&path).expect("read").last().expect("records").clone();
        log.append("tick", Map::new()).expect("append");
        drop(log);
        assert_eq!(log_files(&path), std::slice::from_ref(&path), "keep = 0 keeps no rotated file");
        let recs = read_file(&path).expect("read");
        let events: Vec<&str> = recs.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(events, ["log.rotated", "log.pruned", "tick"]);
        assert_eq!(recs[0].fields.get("previous_file"), None);
        let p = &recs[1].fields;
        assert_eq!(p.get("pruned_file"), Some(&Value::from("audit.jsonl")));
        assert_eq!(p.get("pruned_through_seq"), Some(&Value::from(last_before.seq)));
        assert_eq!(p.get("pruned_hash"), Some(&Value::from(last_before.hash.as_str())));
        let v = verify_files(&log_files(&path), None).expect("a pruned head verifies");
        assert_eq!((v.first_seq, v.pruned_through), (Some(last_before.seq + 1), Some(last_before.seq)));
    }

    #[test]
    fn lowering_keep_prunes_through_the_newest_deleted_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        drop(rotate_n(&path, 4, 4));
        assert_eq!(log_files(&path).len(), 5, "{:?}", log_files(&path));
        verify_files(&log_files(&path), None).expect("nothing pruned yet");
        // keep = 1 deletes .4 to .1; the newest of them, .1, ends where the kept chain begins.
        let newest_deleted = read_file(&path.with_file_name("audit.jsonl.1")).expect("read");
        let mut log = AuditLog::open(AuditConfig { max_bytes: Some(600), keep: 1, ..cfg(&path) }).expect("open");
        log.append("tick", Map::new()).expect("append");
        drop(log);
        assert_eq!(log_files(&path).len(), 2);
        let rotated = read_file(&path.with_file_name("audit.jsonl.1")).expect("read");
        let pruned = rotated.last().expect("records");
        assert_eq!(pruned.event, "log.pruned");
        assert_eq!(pruned.fields.get("pruned_file"), Some(&Value::from("audit.jsonl.1")));
        let through = newest_deleted.last().expect("records");
        assert_eq!(pruned.fields.get("pruned_through_seq"), Some(&Value::from(through.seq)));
        assert_eq!(pruned.fields.get("pruned_hash"), Some(&Value::from(through.hash.as_str())));
        let v = verify_files(&log_files(&path), None).expect("verifies");
        assert_eq!(v.pruned_through, Some(through.seq));
    }

    #[test]
    fn a_damaged_file_to_prune_stops_rotation_before_anything_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = rotate_n(&path, 1, 1);
        let rotated = path.with_file_name("audit.jsonl.1");
        let mut data = fs::read(&rotated).expect("read");
        data.extend_from_slice(b"{\"v\":1,\"not\":\"a record\"}\n");
        fs::write(&rotated, &data).expect("write");
        let live = fs::read(&path).expect("read");
        for _ in 0..3 {
            match log.append("tick", Map::new()) {
                Err(AuditError::CorruptTail { path: p, .. }) => assert_eq!(p, rotated),
                other => panic!("rotation went ahead: {other:?}"),
            }
        }
        assert_eq!(fs::read(&rotated).expect("read"), data, "the damaged file is kept as evidence");
        assert_eq!(fs::read(&path).expect("read"), live, "nothing was appended");
    }

    #[test]
    fn log_events_are_reserved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        for event in ["log.pruned", "log.rotated", "log.recovered", "log.anything"] {
            let fields = map(serde_json::json!({"pruned_through_seq": 1, "pruned_hash": "0".repeat(64)}));
            let err = log.append(event, fields).err().map(|e| e.to_string());
            assert_eq!(
                err,
                Some(format!("audit event {event:?} is reserved: log.* records are written by the audit log itself"))
            );
        }
        assert_eq!(log.append("logger.start", Map::new()).expect("not reserved"), 1);
        drop(log);
        assert_eq!(read_file(&path).expect("read").len(), 1);
    }

    #[test]
    fn an_emptied_file_continues_from_path_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        log.append("e", Map::new()).expect("append");
        log.append("e", Map::new()).expect("append");
        drop(log);
        // logrotate-style: move the file away and create an empty one.
        fs::rename(&path, dir.path().join("audit.jsonl.1")).expect("rename");
        fs::write(&path, b"").expect("create");
        let mut log = AuditLog::open(cfg(&path)).expect("open");
        assert_eq!(log.append("e", Map::new()).expect("append"), 3);
        drop(log);
        verify_files(&log_files(&path), None).expect("verifies");
    }

    #[test]
    fn batch_mode_starts_the_writeback_at_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(AuditConfig { fsync: Fsync::Batch, ..AuditConfig::new(&path) }).expect("open");
        log.append("e", Map::new()).expect("append");
        assert!(log.pending);
        log.start_writeback().expect("start writeback");
        assert!(!log.pending);
        log.append("f", Map::new()).expect("append");
        assert!(log.pending, "a record after the writeback is pending again");
        drop(log);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2);
        verify_files(&log_files(&path), None).expect("verifies");
    }

    #[test]
    fn batch_mode_syncs_at_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(AuditConfig { fsync: Fsync::Batch, ..AuditConfig::new(&path) }).expect("open");
        log.append("e", Map::new()).expect("append");
        assert!(log.pending);
        log.flush().expect("flush");
        assert!(!log.pending);
        let mut log = AuditLog::open(AuditConfig { fsync: Fsync::Always, ..AuditConfig::new(&path) }).expect("open");
        log.append("e", Map::new()).expect("append");
        assert!(!log.pending);
    }
}
