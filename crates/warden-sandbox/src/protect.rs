//! Protected subpaths (`.git`, `.codex`, `.agents`) that do not exist yet.
//!
//! A read-only bind mount needs something to mount on, and Landlock cannot deny one name beneath
//! a writable directory. So before the run, warden creates each missing protected name as an
//! empty directory marked with the extended attribute `user.warden.placeholder` (where the
//! filesystem supports it), and the sandbox mounts it read-only like an existing one: the
//! command cannot create it, write into it, remove or rename it. git ignores an empty `.git`
//! directory, and so do Codex and agents for `.codex` / `.agents`.
//!
//! Every run that uses a placeholder holds a shared `flock` on it; after the run, the placeholder
//! is removed only if it is still empty, still marked, and no other run holds it (an exclusive
//! non-blocking `flock` succeeds). A placeholder left by a killed warden is reused and removed by
//! the next run.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::sys;

const MARKER: &std::ffi::CStr = c"user.warden.placeholder";

/// Placeholders this run holds.
#[derive(Debug, Default)]
pub struct Placeholders {
    held: Vec<(PathBuf, OwnedFd)>,
}

impl Placeholders {
    /// Ensures a placeholder for each missing path. A path that cannot be created because the
    /// directory is not writable for us needs none: the sandbox cannot create it either.
    pub fn ensure(paths: &[PathBuf]) -> Result<Self, String> {
        let mut me = Placeholders::default();
        for path in paths {
            match std::fs::symlink_metadata(path) {
                Ok(_) => {
                    // Exists: if it is a placeholder (ours or another run's), hold it.
                    if let Ok(fd) = sys::open_dir_nofollow(path) {
                        if sys::fhasxattr(&fd, MARKER) && sys::flock(&fd, false, false).is_ok() {
                            me.held.push((path.clone(), fd));
                        }
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
            }
            match sys::mkdir_new(path, 0o755) {
                Ok(()) => {}
                Err(sys::Errno(libc::EEXIST)) => continue,
                Err(sys::Errno(libc::EACCES | libc::EROFS | libc::EPERM | libc::ENOENT)) => continue,
                Err(e) => return Err(format!("cannot create the placeholder {}: {e}", path.display())),
            }
            let fd = sys::open_dir_nofollow(path)
                .map_err(|e| format!("cannot open the placeholder {}: {e}", path.display()))?;
            // Without xattr support the placeholder is unmarked and simply stays (empty).
            let _ = sys::fsetxattr(&fd, MARKER, b"1");
            sys::flock(&fd, false, false).map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            me.held.push((path.clone(), fd));
        }
        Ok(me)
    }
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        for (path, fd) in self.held.drain(..) {
            // rmdir(2) itself refuses a directory that is not empty.
            if sys::flock(&fd, true, true).is_ok() && sys::fhasxattr(&fd, MARKER) {
                let _ = sys::rmdir(&path);
            }
        }
    }
}

/// The `gitdir:` target of a `.git` pointer file (git worktrees and submodules), canonical.
pub fn gitdir_target(dot_git: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(dot_git).ok()?;
    if !meta.is_file() || meta.len() > 4096 {
        return None;
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    let target = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    let base = dot_git.parent()?;
    std::fs::canonicalize(base.join(target)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_is_created_marked_and_removed_when_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".git");
        {
            let held = Placeholders::ensure(std::slice::from_ref(&p)).expect("ensure");
            assert!(p.is_dir());
            assert_eq!(held.held.len(), 1);
        }
        assert!(!p.exists(), "an unused empty placeholder is removed");
    }

    #[test]
    fn a_second_holder_keeps_the_placeholder_alive() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".codex");
        let first = Placeholders::ensure(std::slice::from_ref(&p)).expect("first");
        let second = Placeholders::ensure(std::slice::from_ref(&p)).expect("second");
        if second.held.is_empty() {
            // The filesystem has no user xattrs: placeholders cannot be recognised; nothing to test.
            return;
        }
        drop(first);
        assert!(p.exists(), "still held by the second run");
        drop(second);
        assert!(!p.exists());
    }

    #[test]
    fn a_placeholder_that_got_content_is_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".agents");
        {
            let _held = Placeholders::ensure(std::slice::from_ref(&p)).expect("ensure");
            std::fs::write(p.join("file"), "x").expect("write");
        }
        assert!(p.join("file").exists(), "never delete content");
    }

    #[test]
    fn an_existing_real_directory_is_left_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".git");
        std::fs::create_dir(&p).expect("mkdir");
        drop(Placeholders::ensure(std::slice::from_ref(&p)).expect("ensure"));
        assert!(p.is_dir());
    }

    #[test]
    fn gitdir_pointer_is_resolved() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real-gitdir");
        std::fs::create_dir(&real).expect("mkdir");
        let w = d.path().join("w");
        std::fs::create_dir(&w).expect("mkdir");
        std::fs::write(w.join(".git"), "gitdir: ../real-gitdir\n").expect("write");
        assert_eq!(gitdir_target(&w.join(".git")), Some(std::fs::canonicalize(&real).expect("canon")));
        assert_eq!(gitdir_target(&real), None);
    }
}
