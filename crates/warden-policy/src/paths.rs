//! Path helpers and the default secret masks.
//!
//! Guarantees: [`normalize`] is purely lexical and never touches the filesystem;
//! [`Canonicalizer::mask_variants`] returns, for an existing path, both its lexical absolute form and its
//! canonical target when they differ, so that a mask on one cannot be bypassed through the other
//! (a symlinked `~/.ssh`, a symlinked home directory). Nothing here creates or modifies files.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Secret locations masked in every profile but `trusted`, relative to each home directory.
pub const DEFAULT_MASKS: &[&str] = &[
    ".ssh",
    ".aws",
    ".gnupg",
    ".config/gcloud",
    ".kube",
    ".docker/config.json",
    // Docker Desktop's daemon sockets: a read-only mount does not stop connect(), a mask does.
    ".docker/run",
    ".docker/desktop",
    ".netrc",
    ".codex/auth.json",
    ".config/codex/auth.json",
    ".git-credentials",
    ".azure",
    ".config/gh",
    ".password-store",
    ".pypirc",
    ".npmrc",
    ".local/share/keyrings",
    ".config/warden",
    ".local/state/warden",
];

/// Lexically normalizes `p`: drops `.` components and resolves `..` against the preceding
/// component (`..` at the root stays at the root). Does not follow symlinks.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = match out.components().next_back() {
                    Some(Component::Normal(_)) => out.pop(),
                    Some(Component::RootDir) | Some(Component::Prefix(_)) => true,
                    _ => false,
                };
                if !popped {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `p` made absolute against `base` (if relative) and lexically normalized.
pub fn absolutize(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        normalize(p)
    } else {
        normalize(&base.join(p))
    }
}

/// Expands a path from a config file: `~` and `~/...` against `home`, relative paths against
/// `base` (the config file's directory). The result is absolute and lexically normalized.
pub(crate) fn expand_config_path(raw: &str, base: &Path, home: Option<&Path>) -> Result<PathBuf, String> {
    if raw.is_empty() {
        return Err("empty path".to_owned());
    }
    if raw == "~" || raw.starts_with("~/") {
        let home =
            home.ok_or_else(|| format!("cannot expand \"{raw}\": the home directory is unknown (HOME is not set)"))?;
        let rest = raw.trim_start_matches('~').trim_start_matches('/');
        return Ok(absolutize(home, Path::new(rest)));
    }
    if raw.starts_with('~') {
        return Err(format!("cannot expand \"{raw}\": only \"~\" and \"~/\" are supported, not ~user"));
    }
    Ok(absolutize(base, Path::new(raw)))
}

/// The home directories of other users that the default masks also cover: `/root` and every
/// directory in `/home`. Unreadable locations are skipped.
pub fn system_homes() -> Vec<PathBuf> {
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(entries) = fs::read_dir("/home") {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        found.sort();
        homes.extend(found);
    }
    homes
}

/// Canonicalizes the paths of one policy resolution, remembering each directory it resolved, so
/// that many paths in one directory cost one `lstat` each instead of a `readlink` per component
/// (100 `--deny-read` files in one directory: about 1,000 system calls fewer). Meant to live for
/// one resolution only: symlinks may change between two.
#[derive(Debug, Default)]
pub struct Canonicalizer {
    dirs: std::collections::HashMap<PathBuf, PathBuf>,
}

impl Canonicalizer {
    /// `fs::canonicalize(p)` for an existing `p`, given its `lstat` result: when `p` is absolute,
    /// without `.` or `..`, and not itself a symlink, its canonical form is its directory's
    /// (looked up once) joined with its name.
    fn canonicalize(&mut self, p: &Path, meta: &fs::Metadata) -> std::io::Result<PathBuf> {
        let plain = p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else { return fs::canonicalize(p) };
        if !plain || meta.file_type().is_symlink() {
            return fs::canonicalize(p);
        }
        if let Some(real) = self.dirs.get(dir) {
            return Ok(real.join(name));
        }
        let real = fs::canonicalize(dir)?;
        let out = real.join(name);
        self.dirs.insert(dir.to_owned(), real);
        Ok(out)
    }

    /// The paths to mask for `p` (absolute): nothing if it does not exist (following symlinks);
    /// otherwise its lexical form, plus its canonical form if that differs.
    pub fn mask_variants(&mut self, p: &Path) -> Vec<PathBuf> {
        let lexical = normalize(p);
        // Most candidates do not exist: one lstat answers that, where realpath costs a readlink
        // per component (this runs for every default mask under every home on each start).
        let Ok(meta) = fs::symlink_metadata(&lexical) else { return Vec::new() };
        match self.canonicalize(&lexical, &meta) {
            Ok(canonical) if canonical != lexical => vec![lexical, canonical],
            Ok(_) => vec![lexical],
            Err(_) => Vec::new(),
        }
    }

    /// [`DEFAULT_MASKS`] under each of `homes`, plus each of `extra` (absolute), expanded with
    /// [`Canonicalizer::mask_variants`]; deduplicated and sorted.
    pub fn default_masks(&mut self, homes: &[PathBuf], extra: &[PathBuf]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut seen: Vec<&PathBuf> = Vec::new();
        for home in homes {
            if seen.contains(&home) {
                continue;
            }
            seen.push(home);
            for rel in DEFAULT_MASKS {
                out.extend(self.mask_variants(&home.join(rel)));
            }
        }
        for p in extra {
            out.extend(self.mask_variants(p));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Whether `p` is `root` or beneath it (component-wise, both expected canonical).
pub fn is_within(p: &Path, root: &Path) -> bool {
    p.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
        assert_eq!(normalize(Path::new("a/../..")), PathBuf::from(".."));
        assert_eq!(normalize(Path::new("./")), PathBuf::from("."));
        assert_eq!(absolutize(Path::new("/w"), Path::new("x/../y")), PathBuf::from("/w/y"));
        assert_eq!(absolutize(Path::new("/w"), Path::new("/abs")), PathBuf::from("/abs"));
    }

    #[test]
    fn config_path_expansion() {
        let home = Path::new("/home/u");
        let base = Path::new("/etc/warden");
        assert_eq!(expand_config_path("~/.cache", base, Some(home)), Ok(PathBuf::from("/home/u/.cache")));
        assert_eq!(expand_config_path("~", base, Some(home)), Ok(PathBuf::from("/home/u")));
        assert_eq!(expand_config_path("data/../out", base, Some(home)), Ok(PathBuf::from("/etc/warden/out")));
        assert_eq!(expand_config_path("/abs", base, None), Ok(PathBuf::from("/abs")));
        assert!(expand_config_path("~/x", base, None).expect_err("no home").contains("home directory is unknown"));
        assert!(expand_config_path("~bob/x", base, Some(home)).is_err());
        assert!(expand_config_path("", base, Some(home)).is_err());
    }

    #[test]
    fn masks_follow_symlinks_both_ways() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(tmp.path()).expect("canon");
        let home = root.join("home");
        let real_ssh = root.join("elsewhere/ssh-keys");
        fs::create_dir_all(&real_ssh).expect("mkdir");
        fs::create_dir_all(home.join(".config/gh")).expect("mkdir");
        fs::create_dir_all(home.join(".docker")).expect("mkdir");
        fs::write(home.join(".netrc"), "machine x").expect("write");
        symlink(&real_ssh, home.join(".ssh")).expect("symlink");
        // A dangling link is not a secret and is skipped.
        symlink(root.join("missing"), home.join(".aws")).expect("symlink");
        // A symlinked home directory: masks must cover both spellings.
        let linked_home = root.join("linked-home");
        symlink(&home, &linked_home).expect("symlink");

        let masks = Canonicalizer::default().default_masks(std::slice::from_ref(&home), &[]);
        let mut want = vec![home.join(".config/gh"), home.join(".netrc"), home.join(".ssh"), real_ssh.clone()];
        want.sort();
        assert_eq!(masks, want);

        let masks = Canonicalizer::default().default_masks(&[linked_home.clone(), home.clone()], &[]);
        assert!(masks.contains(&linked_home.join(".ssh")));
        assert!(masks.contains(&linked_home.join(".netrc")));
        assert!(masks.contains(&home.join(".netrc")));
        assert!(masks.contains(&real_ssh));
        assert_eq!(masks.iter().filter(|p| **p == real_ssh).count(), 1, "dedup");
        let mut sorted = masks.clone();
        sorted.sort();
        assert_eq!(masks, sorted);
    }

    #[test]
    fn the_canonicalizer_resolves_like_realpath() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(tmp.path()).expect("canon");
        let real = root.join("real");
        fs::create_dir(&real).expect("mkdir");
        for f in ["a", "b", "target"] {
            fs::write(real.join(f), b"").expect("write");
        }
        std::os::unix::fs::symlink(&real, root.join("link")).expect("symlink");
        std::os::unix::fs::symlink(real.join("target"), real.join("file-link")).expect("symlink");
        let mut canon = Canonicalizer::default();
        for p in ["real/a", "real/b", "link/a", "link/b", "real/file-link", "link/file-link", "link", "real"] {
            let p = root.join(p);
            let expected = fs::canonicalize(&p).expect("realpath");
            let meta = fs::symlink_metadata(&p).expect("lstat");
            assert_eq!(canon.canonicalize(&p, &meta).expect("canonicalize"), expected, "{}", p.display());
        }
        // Through the symlinked directory, both forms are masked.
        assert_eq!(canon.mask_variants(&root.join("link/a")), vec![root.join("link/a"), real.join("a")]);
        assert_eq!(canon.mask_variants(&root.join("real/missing")), Vec::<PathBuf>::new());
    }
}
