//! `warden audit verify|head|show|tail`.
//!
//! Exit codes: 0 intact; 1 the log (or the checkpoint) does not verify; 125 warden could not do
//! the job (no log, an unreadable key or checkpoint file, a malformed checkpoint, an empty log for
//! `head`). `head` prints only the checkpoint on stdout, every failure on stderr, so that
//! `warden audit head > FILE` never stores a failure as a checkpoint.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use warden_audit::checkpoint::Checkpoint;
use warden_audit::read::Record;
use warden_audit::verify::Verified;
use warden_audit::AuditKey;
use warden_policy::{HostContext, WardenConfig};

use crate::args::{AuditCommand, AuditLogArgs};
use crate::ui::fail;

pub fn audit(cmd: AuditCommand) -> i32 {
    match cmd {
        AuditCommand::Verify { files, checkpoint, log } => verify(files, checkpoint.as_deref(), &log),
        AuditCommand::Head { file, log } => head(file, &log),
        AuditCommand::Show { since, event, session, json, log } => {
            show(since, event.as_deref(), session.as_deref(), json, &log)
        }
        AuditCommand::Tail { follow, lines, json, log } => tail(follow, lines, json, &log),
    }
}

/// The log (and key) the audit subcommands read: flags, else the config's `[audit]`, else the
/// default location.
fn locate(args: &AuditLogArgs) -> Result<(PathBuf, Option<PathBuf>), String> {
    let host = HostContext::from_process().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let config_path = match &args.config {
        Some(p) => Some(host.cwd.join(p)),
        None => warden_policy::resolve::default_config_path(&host).filter(|p| p.exists()),
    };
    let config = match &config_path {
        Some(p) => Some(WardenConfig::load(p, host.home.as_deref()).map_err(|e| e.to_string())?.0),
        None => None,
    };
    let path = args
        .audit_log
        .as_ref()
        .map(|p| host.cwd.join(p))
        .or_else(|| config.as_ref().and_then(|c| c.audit.path.as_ref().map(|p| p.path.clone())))
        .or_else(|| warden_policy::default_audit_path(&host))
        .ok_or("cannot find the audit log: neither XDG_STATE_HOME nor HOME is set; pass --audit-log PATH")?;
    let key = args
        .audit_key_file
        .as_ref()
        .map(|p| host.cwd.join(p))
        .or_else(|| config.as_ref().and_then(|c| c.audit.key_file.as_ref().map(|p| p.path.clone())));
    Ok((path, key))
}

fn load_key(path: Option<&Path>) -> Result<Option<AuditKey>, String> {
    path.map(|p| AuditKey::from_file(p).map_err(|e| e.to_string())).transpose()
}

/// The files of the chain to check (`files`, else the located log and its rotated files) and the
/// key.
fn chain(files: Vec<PathBuf>, args: &AuditLogArgs) -> Result<(Vec<PathBuf>, Option<AuditKey>), String> {
    let (path, key_path) = locate(args)?;
    let files = if files.is_empty() { warden_audit::read::log_files(&path) } else { files };
    if files.is_empty() {
        return Err(format!("no audit log at {}", path.display()));
    }
    Ok((files, load_key(key_path.as_deref())?))
}

fn verify(files: Vec<PathBuf>, checkpoint: Option<&Path>, args: &AuditLogArgs) -> i32 {
    let (files, key) = match chain(files, args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let result = match checkpoint {
        None => warden_audit::verify::verify_files(&files, key.as_ref()),
        Some(origin) => match Checkpoint::read(origin) {
            Ok(cp) => warden_audit::verify::verify_with_checkpoint(&files, key.as_ref(), &cp, origin),
            Err(e) => return fail(e),
        },
    };
    match result {
        Ok(v) => {
            println!("{}", ok_line(&v));
            0
        }
        Err(f) => {
            println!("FAILED: {f}");
            1
        }
    }
}

/// `ok: 9 records in 2 file(s), seq 5..13 (1..4 pruned by rotation), chain intact (HMAC-SHA256),
/// checkpoint seq 12 matches`.
fn ok_line(v: &Verified) -> String {
    let range = match (v.first_seq, v.last_seq) {
        (Some(a), Some(b)) => format!(", seq {a}..{b}"),
        _ => String::new(),
    };
    let pruned = v.pruned_through.map(|p| format!(" (1..{p} pruned by rotation)")).unwrap_or_default();
    let keyed = if v.keyed { " (HMAC-SHA256)" } else { "" };
    let cp = v.checkpoint.map(|s| format!(", checkpoint seq {s} matches")).unwrap_or_default();
    format!("ok: {} records in {} file(s){range}{pruned}, chain intact{keyed}{cp}", v.records, v.files)
}

fn head(file: Option<PathBuf>, args: &AuditLogArgs) -> i32 {
    // FILE names the log as --audit-log would: its rotated files belong to the chain.
    let args = AuditLogArgs { audit_log: file.or_else(|| args.audit_log.clone()), ..args.clone() };
    let (files, key) = match chain(Vec::new(), &args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    match warden_audit::verify::verify_files(&files, key.as_ref()) {
        Err(f) => {
            eprintln!("warden: error: the audit log does not verify, so it gets no checkpoint: FAILED: {f}");
            1
        }
        Ok(Verified { last_seq: Some(seq), last_hash: Some(hash), .. }) => {
            println!("{}", Checkpoint::new(seq, &hash, key.as_ref()).to_json());
            0
        }
        Ok(_) => fail(format!(
            "the audit log {} holds no records: nothing to checkpoint",
            files.last().map(|p| p.display().to_string()).unwrap_or_default()
        )),
    }
}

/// The log the arguments name and every record in it and its rotated files, oldest first.
fn located_records(args: &AuditLogArgs) -> Result<(PathBuf, Vec<Record>), String> {
    let (path, _) = locate(args)?;
    let records = read_all(&path)?;
    Ok((path, records))
}

fn read_all(path: &Path) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for f in warden_audit::read::log_files(path) {
        out.extend(warden_audit::read::read_file(&f).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn show(since: Option<Duration>, event: Option<&str>, session: Option<&str>, json: bool, args: &AuditLogArgs) -> i32 {
    let (_, records) = match located_records(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    // RFC 3339 UTC timestamps of one fixed width compare correctly as strings.
    let cutoff =
        since.map(|d| warden_audit::format_ts(SystemTime::now().checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)));
    let selected: Vec<&Record> = records
        .iter()
        .filter(|r| cutoff.as_ref().is_none_or(|c| r.ts.as_str() >= c.as_str()))
        .filter(|r| event.is_none_or(|g| warden_policy::glob_match(g, &r.event)))
        .filter(|r| session.is_none_or(|s| r.session.starts_with(s)))
        .collect();
    print_records(&selected, json);
    0
}

fn print_records(records: &[&Record], json: bool) {
    if json {
        for r in records {
            println!("{}", r.raw);
        }
        return;
    }
    if records.is_empty() {
        return;
    }
    println!("{:>7}  {:<24}  {:<8}  {:<16}  details", "seq", "time (UTC)", "session", "event");
    for r in records {
        println!("{}", table_row(r));
    }
}

fn table_row(r: &Record) -> String {
    let mut details = r
        .fields
        .iter()
        .filter(|(_, v)| {
            !matches!(v, Value::Array(a) if a.is_empty()) && !matches!(v, Value::String(s) if s.is_empty())
        })
        .map(|(k, v)| format!("{k}={}", compact(v)))
        .collect::<Vec<_>>()
        .join(" ");
    if details.chars().count() > 120 {
        details = details.chars().take(117).collect::<String>() + "...";
    }
    let session: String = r.session.chars().take(8).collect();
    format!("{:>7}  {:<24}  {:<8}  {:<16}  {details}", r.seq, r.ts, session, r.event)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn tail(follow: bool, lines: usize, json: bool, args: &AuditLogArgs) -> i32 {
    let (path, records) = match located_records(args) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let start = records.len().saturating_sub(lines);
    let last: Vec<&Record> = records[start..].iter().collect();
    print_records(&last, json);
    if !follow {
        return 0;
    }
    if let Err(e) = follow_file(&path, json) {
        return fail(format!("following {}: {e}", path.display()));
    }
    0
}

/// Prints records appended to `path` from now on, reopening it after a rotation. Runs until the
/// user interrupts it.
fn follow_file(path: &Path, json: bool) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let open = || -> std::io::Result<(std::io::BufReader<std::fs::File>, u64)> {
        let f = std::fs::File::open(path)?;
        let ino = f.metadata()?.ino();
        let mut r = std::io::BufReader::new(f);
        r.seek(SeekFrom::End(0))?;
        Ok((r, ino))
    };
    let (mut reader, mut ino) = open()?;
    let mut partial = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n > 0 {
            partial.push_str(&line);
            if partial.ends_with('\n') {
                let full = std::mem::take(&mut partial);
                print_line(full.trim_end(), json);
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated: the name now points to a new file; finish with the new one from its start.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.ino() != ino {
                let f = std::fs::File::open(path)?;
                ino = f.metadata()?.ino();
                reader = std::io::BufReader::new(f);
                partial.clear();
            }
        }
    }
}

fn print_line(line: &str, json: bool) {
    if json {
        println!("{line}");
        return;
    }
    match warden_audit::read::parse_line(line.as_bytes()) {
        Ok(r) => println!("{}", table_row(&r)),
        Err(_) => println!("{line}"),
    }
}
