//! The refs of a gitdir, read without git (loose refs over `packed-refs`, and `HEAD`), for the
//! `git.refs` records of a commit-mode run: what history pointed at before and after, so that a
//! rewritten branch can be found and restored (`git update-ref`).
//!
//! Guarantees: bounded (files read, bytes per file, refs kept per record); never follows a
//! symlink out of `refs/`; what cannot be read is left out, not guessed.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// Refs kept per record (the total is recorded too).
const MAX_REFS: usize = 2000;
/// Loose ref files read per gitdir.
const MAX_LOOSE: usize = 20_000;
/// Bytes of `packed-refs` read.
const MAX_PACKED_BYTES: u64 = 32 << 20;

/// `{"gitdir", "head", "refs": {name: target}, "refs_total"}` for one gitdir.
pub(crate) fn snapshot(gitdir: &Path) -> Value {
    let mut refs = BTreeMap::new();
    if let Ok(meta) = std::fs::metadata(gitdir.join("packed-refs")) {
        if meta.len() <= MAX_PACKED_BYTES {
            if let Ok(text) = std::fs::read_to_string(gitdir.join("packed-refs")) {
                for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('^')) {
                    if let Some((sha, name)) = line.split_once(' ') {
                        refs.insert(name.to_owned(), sha.to_owned());
                    }
                }
            }
        }
    }
    let mut stack = vec![gitdir.join("refs")];
    let mut read = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() && read < MAX_LOOSE {
                read += 1;
                if let (Some(value), Ok(name)) = (small_file(&e.path()), e.path().strip_prefix(gitdir)) {
                    refs.insert(name.display().to_string(), value);
                }
            }
        }
    }
    let total = refs.len();
    let kept: BTreeMap<String, String> = refs.into_iter().take(MAX_REFS).collect();
    json!({
        "gitdir": gitdir,
        "head": small_file(&gitdir.join("HEAD")),
        "refs": kept,
        "refs_total": total,
    })
}

/// A ref file's one line (at most 512 bytes), trimmed.
fn small_file(p: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(p).ok()?;
    if !meta.is_file() || meta.len() > 512 {
        return None;
    }
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_refs_win_over_packed_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let g = d.path();
        std::fs::create_dir_all(g.join("refs/heads/feature")).expect("mkdir");
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").expect("write");
        std::fs::write(
            g.join("packed-refs"),
            "# pack-refs with: peeled\naaaa refs/heads/main\nbbbb refs/tags/v1\n^cccc\n",
        )
        .expect("write");
        std::fs::write(g.join("refs/heads/main"), "dddd\n").expect("write");
        std::fs::write(g.join("refs/heads/feature/x"), "eeee\n").expect("write");
        let v = snapshot(g);
        assert_eq!(v["head"], "ref: refs/heads/main");
        assert_eq!(v["refs"]["refs/heads/main"], "dddd");
        assert_eq!(v["refs"]["refs/tags/v1"], "bbbb");
        assert_eq!(v["refs"]["refs/heads/feature/x"], "eeee");
        assert_eq!(v["refs_total"], 3);
    }
}
