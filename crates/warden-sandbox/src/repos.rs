//! The git repositories inside writable roots, and every path of theirs from which git reads
//! configuration or hooks.
//!
//! Guarantees: the search is bounded ([`RepoScan`]: depth, entries read, skipped names) and says
//! when a bound cut it short; it never follows a symlink and never descends into a gitdir; for
//! each repository it reports the gitdir (a `.git` directory, or the target of a `gitdir:` file,
//! canonical), the gitdirs of its submodules (`modules/*`, nested) and linked worktrees
//! (`worktrees/*`), the files its configs include (`include.path`, `includeIf.*.path`, followed
//! to a bounded depth) and its `core.hooksPath`. What it trusts: nothing in the files it reads
//! (each is size-capped; unparsable lines are skipped).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warden_policy::RepoScan;

/// Config files larger than this are not parsed for includes (git itself reads them; warden
/// then protects what it can find without them, and says so).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// How deep `include.path` chains are followed.
const MAX_INCLUDE_DEPTH: usize = 10;
/// Submodule and worktree gitdirs followed per repository, at most.
const MAX_GITDIRS_PER_REPO: usize = 1024;

/// One repository found in a writable root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// Its `.git` (a directory, or a `gitdir:` pointer file).
    pub dot_git: PathBuf,
    /// Whether `.git` is a pointer file (a submodule or a linked worktree), or a symlink.
    pub pointer: bool,
    /// The gitdir itself (canonical), then those of its submodules and worktrees.
    pub gitdirs: Vec<PathBuf>,
    /// Files the repository's configs include (existing or not), absolute.
    pub includes: Vec<PathBuf>,
    /// `core.hooksPath` directories (existing or not), absolute.
    pub hooks_paths: Vec<PathBuf>,
}

/// What the search found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanReport {
    /// The repositories, in the order found.
    pub repositories: Vec<Repository>,
    /// Directory entries read.
    pub entries: u64,
    /// Why the search stopped early, if it did (repositories past that point are unprotected).
    pub truncated: Option<String>,
}

/// What the walk needs of one directory: its subdirectories (not symlinks), its `.git` entry and
/// whether it has the layout of a bare repository. Cached per directory, keyed on its inode and
/// ctime (see [`ScanCache`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Listing {
    ino: u64,
    ctime: (i64, i64),
    entries: u64,
    subdirs: Vec<String>,
    /// `.git`: `Some(true)` a file or symlink (a pointer), `Some(false)` a directory.
    dot_git: Option<bool>,
    bare: bool,
}

/// Directory listings of an earlier search, so that a directory whose inode and ctime did not
/// change is not read again: `ctime` changes with every entry added, removed or renamed in it,
/// and, unlike `mtime`, cannot be set back by the directory's owner (only by changing the
/// system clock). A listing younger than [`RACY_SECS`] at the time it was taken is not trusted
/// (a change in the same timestamp tick would go unseen).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ScanCache {
    dirs: std::collections::HashMap<PathBuf, Listing>,
    /// Whether anything was read afresh (the cache is worth writing back).
    #[serde(skip)]
    changed: bool,
}

/// Listings taken within this many seconds of their directory's last change are re-read.
const RACY_SECS: i64 = 2;
/// Largest cache file read.
const MAX_CACHE_BYTES: u64 = 64 << 20;

impl ScanCache {
    /// The cache in `file`, or an empty one (missing, unreadable, too large or not parsable).
    pub fn load(file: &Path) -> ScanCache {
        let fresh = ScanCache::default;
        let Ok(meta) = std::fs::metadata(file) else { return fresh() };
        if meta.len() > MAX_CACHE_BYTES {
            return fresh();
        }
        std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(fresh)
    }

    /// Writes the cache to `file` (atomically: a temporary file renamed over it), if it changed.
    pub fn store(&self, file: &Path) {
        if !self.changed {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(self) else { return };
        let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, file).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// The listing of `dir`: cached when its inode and ctime are those cached, read otherwise.
    fn listing(&mut self, dir: &Path, now: i64) -> Option<Listing> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(dir).ok()?;
        let (ino, ctime) = (meta.ino(), (meta.ctime(), meta.ctime_nsec()));
        if let Some(l) = self.dirs.get(dir) {
            if l.ino == ino && l.ctime == ctime {
                return Some(l.clone());
            }
        }
        let mut l = Listing { ino, ctime, entries: 0, subdirs: Vec::new(), dot_git: None, bare: false };
        let (mut head, mut objects, mut refs) = (false, false, false);
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            l.entries += 1;
            let name = entry.file_name();
            let Ok(kind) = entry.file_type() else { continue };
            if name == ".git" {
                l.dot_git = Some(!kind.is_dir());
                continue;
            }
            head |= name == "HEAD" && kind.is_file();
            objects |= name == "objects" && kind.is_dir();
            refs |= name == "refs" && kind.is_dir();
            if let (true, Some(n)) = (kind.is_dir(), name.to_str()) {
                l.subdirs.push(n.to_owned());
            }
        }
        l.bare = head && objects && refs;
        self.changed = true;
        // Changed within the last tick or two: do not keep it, read it again next time.
        if now - ctime.0 > RACY_SECS {
            self.dirs.insert(dir.to_path_buf(), l.clone());
        } else {
            self.dirs.remove(dir);
        }
        Some(l)
    }
}

/// Searches `roots` for repositories (without a cache). `home` expands `~/` in include paths.
#[cfg(test)]
pub fn scan(roots: &[PathBuf], bounds: &RepoScan, home: Option<&Path>) -> ScanReport {
    scan_cached(roots, bounds, home, &mut ScanCache::default())
}

/// Searches `roots` for repositories, with the listings of an earlier search (updated in place).
/// `home` expands `~/` in include paths.
pub fn scan_cached(roots: &[PathBuf], bounds: &RepoScan, home: Option<&Path>, cache: &mut ScanCache) -> ScanReport {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    scan_at(roots, bounds, home, cache, now)
}

fn scan_at(roots: &[PathBuf], bounds: &RepoScan, home: Option<&Path>, cache: &mut ScanCache, now: i64) -> ScanReport {
    let mut report = ScanReport::default();
    let mut deep: Option<PathBuf> = None;
    'roots: for root in roots {
        // Depth-first with an explicit stack: (directory, depth below the root).
        let mut stack = vec![(root.clone(), 0u32)];
        while let Some((dir, depth)) = stack.pop() {
            let Some(listing) = cache.listing(&dir, now) else { continue };
            report.entries += listing.entries;
            if report.entries > bounds.max_entries {
                report.entries = bounds.max_entries + 1;
                report.truncated = Some(format!(
                    "stopped after {} directory entries (repo_scan.max_entries), in {}",
                    bounds.max_entries,
                    dir.display()
                ));
                break 'roots;
            }
            if let Some(pointer) = listing.dot_git {
                // A symlinked `.git` is handled like a pointer file: protected itself, which
                // fails closed when the sandbox is built (warden does not follow it).
                if let Some(repo) = repository(&dir.join(".git"), pointer, home) {
                    report.repositories.push(repo);
                }
            }
            if listing.bare {
                // A bare repository (or a gitdir git would discover on its own): it is the gitdir.
                if let Some(repo) = repository(&dir, false, home) {
                    report.repositories.push(repo);
                }
                continue;
            }
            for name in listing.subdirs.iter().rev() {
                if bounds.skip.iter().any(|s| s == name) {
                    continue;
                }
                let sub = dir.join(name);
                if depth >= bounds.max_depth {
                    deep.get_or_insert(sub);
                    continue;
                }
                stack.push((sub, depth + 1));
            }
        }
    }
    if report.truncated.is_none() {
        if let Some(d) = deep {
            report.truncated = Some(format!(
                "directories deeper than {} levels not searched (repo_scan.max_depth), e.g. {}",
                bounds.max_depth,
                d.display()
            ));
        }
    }
    report
}

/// The repositories in `after` that `before` does not have (by their `.git` or bare gitdir), and
/// the gitdirs of known repositories that are new (a submodule's `modules/x`, a worktree's
/// `worktrees/x`): what a run created.
pub fn created(before: &ScanReport, after: &ScanReport) -> Vec<Created> {
    let mut out = Vec::new();
    for r in &after.repositories {
        match before.repositories.iter().find(|b| b.dot_git == r.dot_git) {
            None => out.push(Created::Repository(r.dot_git.clone())),
            Some(b) => {
                out.extend(r.gitdirs.iter().skip(1).filter(|g| !b.gitdirs.contains(g)).cloned().map(Created::Gitdir))
            }
        }
    }
    out
}

/// What a run created that git would use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Created {
    /// A repository: its `.git` (directory, pointer file or symlink), or a bare gitdir.
    Repository(PathBuf),
    /// A new submodule or worktree gitdir of a repository that existed before.
    Gitdir(PathBuf),
}

/// The repository of `dot_git`, if it is one (a directory, or a file with a `gitdir:` line).
fn repository(dot_git: &Path, pointer: bool, home: Option<&Path>) -> Option<Repository> {
    let is_link = std::fs::symlink_metadata(dot_git).is_ok_and(|m| m.file_type().is_symlink());
    let gitdir = if is_link || !pointer { std::fs::canonicalize(dot_git).ok()? } else { gitdir_target(dot_git)? };
    let mut gitdirs = vec![gitdir.clone()];
    // Submodules (nested ones included) and linked worktrees keep gitdirs of their own.
    let mut i = 0;
    while i < gitdirs.len() && gitdirs.len() < MAX_GITDIRS_PER_REPO {
        for sub in ["modules", "worktrees"] {
            let Ok(entries) = std::fs::read_dir(gitdirs[i].join(sub)) else { continue };
            for e in entries.flatten().take(MAX_GITDIRS_PER_REPO) {
                if e.file_type().is_ok_and(|t| t.is_dir()) && !gitdirs.contains(&e.path()) {
                    gitdirs.push(e.path());
                }
            }
        }
        i += 1;
    }
    let worktree = dot_git.parent().unwrap_or(Path::new("/"));
    let mut includes = Vec::new();
    let mut hooks_paths = Vec::new();
    for g in &gitdirs {
        for name in ["config", "config.worktree"] {
            follow_config(&g.join(name), worktree, home, 0, &mut includes, &mut hooks_paths);
        }
    }
    Some(Repository { dot_git: dot_git.to_path_buf(), pointer, gitdirs, includes, hooks_paths })
}

/// Reads one config file for `include.path` / `includeIf.*.path` and `core.hooksPath`,
/// following includes.
fn follow_config(
    file: &Path,
    worktree: &Path,
    home: Option<&Path>,
    depth: usize,
    includes: &mut Vec<PathBuf>,
    hooks_paths: &mut Vec<PathBuf>,
) {
    if depth > MAX_INCLUDE_DEPTH {
        return;
    }
    let Ok(meta) = std::fs::metadata(file) else { return };
    if !meta.is_file() || meta.len() > MAX_CONFIG_BYTES {
        return;
    }
    let Ok(text) = std::fs::read_to_string(file) else { return };
    let base = file.parent().unwrap_or(Path::new("/"));
    for (section, key, value) in config_entries(&text) {
        let expand = |v: &str, rel_to: &Path| -> Option<PathBuf> {
            let p = match v.strip_prefix("~/") {
                Some(rest) => home?.join(rest),
                None => rel_to.join(v),
            };
            Some(warden_policy::paths::normalize(&p))
        };
        let is_include = (section == "include" || section == "includeif") && key == "path";
        if is_include {
            if let Some(p) = expand(&value, base) {
                if !includes.contains(&p) {
                    includes.push(p.clone());
                    follow_config(&p, worktree, home, depth + 1, includes, hooks_paths);
                }
            }
        } else if section == "core" && key == "hookspath" {
            // Relative hooks paths are relative to where hooks run: the worktree's top.
            if let Some(p) = expand(&value, worktree) {
                if !hooks_paths.contains(&p) {
                    hooks_paths.push(p);
                }
            }
        }
    }
}

/// `(section, key, value)` of each `key = value` line of a git config file: section and key
/// lowercased (a subsection, as in `[includeIf "gitdir:..."]`, is dropped), the value unquoted.
fn config_entries(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(end) = rest.find(']') else { continue };
            let head = rest[..end].trim();
            let name = head.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or("");
            // `[core.hooksPath]`-style dotted sections are not git syntax for keys; `[a.b]` is
            // the old subsection syntax: keep the section part.
            section = name.split('.').next().unwrap_or("").to_ascii_lowercase();
            // A key may follow the header on the same line.
            let after = rest[end + 1..].trim();
            if let Some((k, v)) = after.split_once('=') {
                out.push((section.clone(), k.trim().to_ascii_lowercase(), unquote(v)));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_ascii_lowercase(), unquote(v)));
        }
    }
    out
}

/// A git config value: comments after `#`/`;` outside quotes dropped, quotes removed, the
/// escapes `\"`, `\\`, `\n`, `\t` resolved, surrounding space trimmed.
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = v.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            },
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    out.trim_end().to_owned()
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

    fn bounds() -> RepoScan {
        RepoScan::default()
    }

    #[test]
    fn config_entries_read_includes_and_hooks_paths() {
        let text = "[core]\n\thooksPath = \".githooks\" # local hooks\n[include]\n  path = extra.cfg\n\
                    [includeIf \"gitdir:~/work/\"]\n\tpath = ~/work.cfg\n[user]\n name = a ; b\n";
        let e = config_entries(text);
        assert!(e.contains(&("core".into(), "hookspath".into(), ".githooks".into())), "{e:?}");
        assert!(e.contains(&("include".into(), "path".into(), "extra.cfg".into())), "{e:?}");
        assert!(e.contains(&("includeif".into(), "path".into(), "~/work.cfg".into())), "{e:?}");
        assert!(e.contains(&("user".into(), "name".into(), "a".into())), "{e:?}");
    }

    #[test]
    fn nested_repositories_submodules_worktrees_and_includes_are_found() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(d.path()).expect("canon");
        let git = root.join(".git");
        std::fs::create_dir_all(git.join("modules/sub/modules/inner")).expect("mkdir");
        std::fs::create_dir_all(git.join("worktrees/wt")).expect("mkdir");
        std::fs::write(git.join("config"), "[include]\npath = ../shared.cfg\n[core]\nhooksPath = .husky\n")
            .expect("write");
        std::fs::write(root.join("shared.cfg"), "[include]\npath = deeper.cfg\n").expect("write");
        std::fs::create_dir_all(root.join("vendor/lib/.git")).expect("mkdir");
        std::fs::create_dir_all(root.join("node_modules/dep/.git")).expect("mkdir");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/.git"), "gitdir: ../.git/modules/sub\n").expect("write");
        let r = scan(std::slice::from_ref(&root), &bounds(), None);
        assert!(r.truncated.is_none(), "{r:?}");
        let top = r.repositories.iter().find(|x| x.dot_git == git).expect("the root's repository");
        assert!(!top.pointer);
        for g in [git.clone(), git.join("modules/sub"), git.join("modules/sub/modules/inner"), git.join("worktrees/wt")]
        {
            assert!(top.gitdirs.contains(&g), "{} in {:?}", g.display(), top.gitdirs);
        }
        assert_eq!(top.includes, [root.join("shared.cfg"), root.join("deeper.cfg")]);
        assert_eq!(top.hooks_paths, [root.join(".husky")]);
        assert!(r.repositories.iter().any(|x| x.dot_git == root.join("vendor/lib/.git")));
        let sub = r.repositories.iter().find(|x| x.dot_git == root.join("sub/.git")).expect("submodule");
        assert!(sub.pointer && sub.gitdirs[0] == git.join("modules/sub"));
        assert!(!r.repositories.iter().any(|x| x.dot_git.starts_with(root.join("node_modules"))), "skipped");
    }

    #[test]
    fn bounds_cut_the_search_short_and_say_so() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(d.path()).expect("canon");
        std::fs::create_dir_all(root.join("a/b/c/d/.git")).expect("mkdir");
        let shallow = RepoScan { max_depth: 2, ..bounds() };
        let r = scan(std::slice::from_ref(&root), &shallow, None);
        assert!(r.repositories.is_empty());
        assert!(r.truncated.as_deref().is_some_and(|t| t.contains("max_depth")), "{r:?}");
        for i in 0..20 {
            std::fs::write(root.join(format!("f{i}")), "").expect("write");
        }
        let few = RepoScan { max_entries: 10, ..bounds() };
        let r = scan(std::slice::from_ref(&root), &few, None);
        assert_eq!(r.entries, 11);
        assert!(r.truncated.as_deref().is_some_and(|t| t.contains("max_entries")), "{r:?}");
        let r = scan(std::slice::from_ref(&root), &bounds(), None);
        assert!(r.truncated.is_none() && r.repositories.len() == 1, "{r:?}");
    }

    #[test]
    fn bare_layouts_are_repositories_and_new_ones_are_told_apart() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(d.path()).expect("canon");
        let bare = root.join("mirror.git");
        std::fs::create_dir_all(bare.join("objects")).expect("mkdir");
        std::fs::create_dir_all(bare.join("refs/heads")).expect("mkdir");
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").expect("write");
        let before = scan(std::slice::from_ref(&root), &bounds(), None);
        assert_eq!(before.repositories.len(), 1, "{before:?}");
        assert_eq!(before.repositories[0].gitdirs[0], bare);
        // The run adds a repository at the top and a submodule gitdir to the bare one.
        std::fs::create_dir_all(root.join(".git")).expect("mkdir");
        std::fs::create_dir_all(bare.join("modules/sub")).expect("mkdir");
        let after = scan(std::slice::from_ref(&root), &bounds(), None);
        let mut new = created(&before, &after);
        new.sort();
        assert_eq!(new, [Created::Repository(root.join(".git")), Created::Gitdir(bare.join("modules/sub"))]);
    }

    #[test]
    fn cached_listings_are_used_until_their_directory_changes() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(d.path()).expect("canon");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::create_dir_all(root.join("c/.git")).expect("mkdir");
        // As if the tree were older than the racy window.
        let later =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_secs() as i64 + 10;
        let mut cache = ScanCache::default();
        let first = scan_at(std::slice::from_ref(&root), &bounds(), None, &mut cache, later);
        assert!(cache.changed && first.repositories.len() == 1);
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let file = elsewhere.path().join("cache/scan.json");
        cache.store(&file);
        let mut cache = ScanCache::load(&file);
        let second = scan_at(std::slice::from_ref(&root), &bounds(), None, &mut cache, later);
        assert!(!cache.changed, "nothing was read again");
        assert_eq!(second.repositories, first.repositories);
        assert_eq!(second.entries, first.entries);
        // A repository created below: its parent's ctime changed, so that listing is read again.
        std::fs::create_dir_all(root.join("a/b/.git")).expect("mkdir");
        let third = scan_at(std::slice::from_ref(&root), &bounds(), None, &mut cache, later);
        assert!(third.repositories.iter().any(|r| r.dot_git == root.join("a/b/.git")), "{third:?}");
        // Within the racy window nothing is kept.
        let mut fresh = ScanCache::default();
        scan_cached(std::slice::from_ref(&root), &bounds(), None, &mut fresh);
        assert!(fresh.dirs.is_empty(), "listings of just-changed directories are not trusted");
    }

    #[test]
    fn symlinks_are_not_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(d.path()).expect("canon");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(elsewhere.path().join("x/.git")).expect("mkdir");
        std::os::unix::fs::symlink(elsewhere.path(), root.join("link")).expect("symlink");
        let r = scan(std::slice::from_ref(&root), &bounds(), None);
        assert!(r.repositories.is_empty(), "{r:?}");
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
