//! Protected paths that do not exist yet: `.git`, `.codex`, `.agents` at the top of a writable
//! root, and what git reads configuration or hooks from in a repository (`hooks/`, `info/`,
//! `config.worktree`, `commondir`, included config files, `core.hooksPath`).
//!
//! A read-only bind mount needs something to mount on, and Landlock cannot deny one name beneath
//! a writable directory. So before the run, warden creates each missing protected path as its
//! [`Placeholder`] — an empty directory, or a file with neutral content (an empty config; `.` for
//! `commondir`, which names the gitdir itself) — marked with the extended attribute
//! `user.warden.placeholder` (where the filesystem supports it), and the sandbox mounts it
//! read-only like an existing one: the command cannot create the path, write into it, remove or
//! rename it.
//!
//! Every run that uses a placeholder holds a shared `flock` on it; after the run, the placeholder
//! is removed only if it is still marked, still as warden made it (an empty directory, or the
//! same content), and no other run holds it (an exclusive non-blocking `flock` succeeds). A
//! placeholder left by a killed warden is reused and removed by the next run.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::plan::Placeholder;
use crate::sys;

const MARKER: &std::ffi::CStr = c"user.warden.placeholder";

/// Whether `dir` is a directory placeholder of a warden run (this one's or another's that is
/// still running): a directory (not followed if a symlink) carrying the marker.
pub fn is_placeholder_dir(dir: &std::path::Path) -> bool {
    sys::open_dir_nofollow(dir).is_ok_and(|fd| sys::fhasxattr(&fd, MARKER))
}

/// Placeholders this run holds.
#[derive(Debug, Default)]
pub struct Placeholders {
    held: Vec<(PathBuf, Placeholder, OwnedFd)>,
}

fn open_existing(path: &std::path::Path, kind: &Placeholder) -> sys::SysResult<OwnedFd> {
    match kind {
        Placeholder::File { .. } => sys::open_file_nofollow(path),
        _ => sys::open_dir_nofollow(path),
    }
}

impl Placeholders {
    /// Ensures a placeholder for each missing path. A path that cannot be created because the
    /// directory is not writable for us (or does not exist) needs none: the sandbox cannot create
    /// it either.
    pub fn ensure(paths: &[(PathBuf, Placeholder)]) -> Result<Self, String> {
        let mut me = Placeholders::default();
        for (path, kind) in paths {
            if *kind == Placeholder::None {
                continue;
            }
            match std::fs::symlink_metadata(path) {
                Ok(_) => {
                    // Exists: if it is a placeholder (ours or another run's), hold it.
                    if let Ok(fd) = open_existing(path, kind) {
                        if sys::fhasxattr(&fd, MARKER) && sys::flock(&fd, false, false).is_ok() {
                            me.held.push((path.clone(), kind.clone(), fd));
                        }
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
            }
            let created = match kind {
                Placeholder::File { content } => sys::create_file_new(path, 0o644).and_then(|fd| {
                    sys::write_all(std::os::fd::AsRawFd::as_raw_fd(&fd), content.as_bytes())?;
                    Ok(fd)
                }),
                _ => sys::mkdir_new(path, 0o755).and_then(|()| sys::open_dir_nofollow(path)),
            };
            let fd = match created {
                Ok(fd) => fd,
                Err(sys::Errno(libc::EEXIST)) => continue,
                Err(sys::Errno(libc::EACCES | libc::EROFS | libc::EPERM | libc::ENOENT)) => continue,
                Err(e) => return Err(format!("cannot create the placeholder {}: {e}", path.display())),
            };
            // Without xattr support the placeholder is unmarked and simply stays (empty).
            let _ = sys::fsetxattr(&fd, MARKER, b"1");
            sys::flock(&fd, false, false).map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
            me.held.push((path.clone(), kind.clone(), fd));
        }
        Ok(me)
    }
}

/// Whether placeholders are released by a child process (see [`release_in_a_child`]).
static RELEASE_IN_A_CHILD: AtomicBool = AtomicBool::new(false);

/// For a process that exits right after its run (`warden run`): the placeholders it removed are
/// closed by a short-lived child ([`sys::close_in_child`]), so that the run's end does not wait
/// for the file system to free them. The names are gone from the host before the run returns
/// either way; only the freeing of the inodes happens later. Off by default: a long-lived caller
/// would collect the children as zombies.
pub fn release_in_a_child(enabled: bool) {
    RELEASE_IN_A_CHILD.store(enabled, Ordering::Relaxed);
}

impl Drop for Placeholders {
    fn drop(&mut self) {
        let mut removed = Vec::new();
        for (path, kind, fd) in self.held.drain(..) {
            if !(sys::flock(&fd, true, true).is_ok() && sys::fhasxattr(&fd, MARKER)) {
                continue;
            }
            match kind {
                // Only as warden made it: never delete content.
                Placeholder::File { content } => {
                    let same = std::fs::read(&path).is_ok_and(|now| now == content.as_bytes());
                    let still_ours =
                        std::fs::symlink_metadata(&path).ok().zip(sys::fstat(&fd).ok()).is_some_and(|(m, st)| {
                            use std::os::unix::fs::MetadataExt;
                            m.ino() == st.st_ino && m.dev() == st.st_dev
                        });
                    if same && still_ours && std::fs::remove_file(&path).is_ok() {
                        removed.push(fd);
                    }
                }
                // rmdir(2) itself refuses a directory that is not empty.
                _ => {
                    if sys::rmdir(&path).is_ok() {
                        removed.push(fd);
                    }
                }
            }
        }
        if RELEASE_IN_A_CHILD.load(Ordering::Relaxed) {
            sys::close_in_child(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &std::path::Path) -> Vec<(PathBuf, Placeholder)> {
        vec![(p.to_path_buf(), Placeholder::Dir)]
    }

    #[test]
    fn placeholder_is_created_marked_and_removed_when_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".git");
        {
            let held = Placeholders::ensure(&dir(&p)).expect("ensure");
            assert!(p.is_dir());
            assert_eq!(held.held.len(), 1);
        }
        assert!(!p.exists(), "an unused empty placeholder is removed");
    }

    #[test]
    fn released_in_a_child_the_placeholder_is_gone_before_drop_returns() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".git");
        let file = d.path().join("HEAD");
        let kinds = vec![(p.clone(), Placeholder::Dir), (file.clone(), Placeholder::File { content: String::new() })];
        // Other tests may run meanwhile: either way of releasing is correct for them.
        release_in_a_child(true);
        let held = Placeholders::ensure(&kinds).expect("ensure");
        assert!(p.is_dir() && file.is_file());
        drop(held);
        release_in_a_child(false);
        assert!(!p.exists() && !file.exists(), "the names are removed by this process, not by the child");
        drop(d);
    }

    #[test]
    fn a_second_holder_keeps_the_placeholder_alive() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".codex");
        let first = Placeholders::ensure(&dir(&p)).expect("first");
        let second = Placeholders::ensure(&dir(&p)).expect("second");
        if second.held.is_empty() {
            // The filesystem has no user xattrs: placeholders cannot be recognised. Outside CI
            // that skips the test; in CI it must run.
            assert!(std::env::var_os("CI").is_none(), "no user xattrs where the test runs: {}", d.path().display());
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
            let _held = Placeholders::ensure(&dir(&p)).expect("ensure");
            std::fs::write(p.join("file"), "x").expect("write");
        }
        assert!(p.join("file").exists(), "never delete content");
    }

    #[test]
    fn an_existing_real_directory_is_left_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join(".git");
        std::fs::create_dir(&p).expect("mkdir");
        drop(Placeholders::ensure(&dir(&p)).expect("ensure"));
        assert!(p.is_dir());
    }

    #[test]
    fn file_placeholders_hold_their_content_and_go_only_unchanged() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("commondir");
        let kind = Placeholder::File { content: ".\n".into() };
        {
            let held = Placeholders::ensure(&[(p.clone(), kind.clone())]).expect("ensure");
            assert_eq!(std::fs::read_to_string(&p).expect("read"), ".\n");
            if held.held.is_empty() || !sys::fhasxattr(&held.held[0].2, MARKER) {
                // No user xattrs here: skipped outside CI; in CI it must run.
                assert!(std::env::var_os("CI").is_none(), "no user xattrs where the test runs: {}", d.path().display());
                return;
            }
        }
        assert!(!p.exists(), "an unchanged file placeholder is removed");
        let q = d.path().join("config.worktree");
        {
            let _held =
                Placeholders::ensure(&[(q.clone(), Placeholder::File { content: String::new() })]).expect("ensure");
            std::fs::write(&q, "[core]\n").expect("write");
        }
        assert!(q.exists(), "a file that got content is kept");
        // An existing file is never touched.
        let r = d.path().join("config");
        std::fs::write(&r, "real").expect("write");
        drop(Placeholders::ensure(&[(r.clone(), Placeholder::File { content: String::new() })]).expect("ensure"));
        assert_eq!(std::fs::read_to_string(&r).expect("read"), "real");
    }
}
