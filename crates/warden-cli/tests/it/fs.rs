//! Filesystem attacks: writes outside the writable roots, symlink and hard-link tricks, the
//! protected `.git`/`.codex`/`.agents` directories, masked secrets.

use std::path::Path;

use crate::{assert_denied, read, Scratch, ESCAPED, WRITE_DENIED};

fn unique(tag: &str) -> String {
    format!("warden-escape-{tag}-{}", std::process::id())
}

// --- writes outside the writable roots ---------------------------------------------------------

/// Writes `target` from inside the sandbox (`profile`): denied, and nothing appeared on the host.
/// (`crate::host_write_target` has shown the same write works outside.)
fn assert_write_denied(profile: &str, target: &Path) {
    let s = Scratch::temp();
    let out = s.sh(profile, &format!("echo pwned > {} && echo {ESCAPED}; exit 0", target.display()));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert!(!target.exists(), "{} appeared on the host", target.display());
}

#[test]
fn write_to_etc_is_denied_offline() {
    assert_write_denied("offline", &crate::host_write_target(Path::new("/etc"), &unique("etc-offline")));
}

#[test]
fn write_to_etc_is_denied_workspace_write() {
    assert_write_denied("workspace-write", &crate::host_write_target(Path::new("/etc"), &unique("etc-ww")));
}

#[test]
fn overwrite_of_existing_etc_file_is_denied() {
    let s = Scratch::temp();
    // /etc/hostname as root; as another user a file of theirs outside the writable roots.
    let target = if crate::is_root() {
        std::path::PathBuf::from("/etc/hostname")
    } else {
        let t = crate::host_write_target(Path::new("/etc"), &unique("existing"));
        std::fs::write(&t, "original\n").expect("write the target");
        t
    };
    let before = read(&target);
    std::fs::OpenOptions::new().append(true).open(&target).expect("positive control: the user may append to it");
    let out = s.sh("workspace-write", &format!("echo pwned >> {} && echo {ESCAPED}; exit 0", target.display()));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&target), before, "{} changed", target.display());
    if !crate::is_root() {
        let _ = std::fs::remove_file(&target);
    }
}

#[test]
fn write_to_usr_is_denied_workspace_write() {
    assert_write_denied("workspace-write", &crate::host_write_target(Path::new("/usr"), &unique("usr")));
    let dir = crate::host_write_target(Path::new("/usr/local"), &unique("usr-dir"));
    let s = Scratch::temp();
    let out = s.sh("workspace-write", &format!("mkdir {} && echo {ESCAPED}; exit 0", dir.display()));
    out.success().stdout_lacks(ESCAPED);
    assert!(!dir.exists());
}

#[test]
fn write_to_usr_is_denied_offline() {
    assert_write_denied("offline", &crate::host_write_target(Path::new("/usr/bin"), &unique("usr-offline")));
}

#[test]
fn write_next_to_the_workdir_is_denied_workspace_write() {
    let s = Scratch::visible();
    let sibling = s.file("sibling.txt", "original\n");
    let out = s.sh(
        "workspace-write",
        &format!(
            "echo pwned > ../sibling.txt && echo {ESCAPED}; echo new > ../created.txt && echo {ESCAPED}; \
             rm -f ../sibling.txt && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&sibling), "original\n");
    assert!(!s.root.join("created.txt").exists());
}

#[test]
fn workdir_write_persists_in_workspace_write() {
    let s = Scratch::temp();
    s.sh("workspace-write", "echo kept > result.txt && mkdir -p sub && echo deep > sub/f").success();
    assert_eq!(read(&s.ws.join("result.txt")), "kept\n");
    assert_eq!(read(&s.ws.join("sub/f")), "deep\n");
}

#[test]
fn workdir_write_is_denied_and_discarded_offline() {
    let s = Scratch::temp();
    let existing = s.file("ws/existing.txt", "original\n");
    let out = s.sh(
        "offline",
        &format!("echo new > result.txt && echo {ESCAPED}; echo more >> existing.txt && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert!(!s.ws.join("result.txt").exists(), "offline wrote into the workdir on the host");
    assert_eq!(read(&existing), "original\n");
}

// --- symlinks and hard links -------------------------------------------------------------------

#[test]
fn symlink_to_outside_file_cannot_be_written_through() {
    let s = Scratch::visible();
    let target = s.file("outside.txt", "host data\n");
    std::os::unix::fs::symlink(&target, s.ws.join("link")).expect("symlink");
    // The target is visible inside (the read proves the attack aims at the real file).
    let out = s.sh(
        "workspace-write",
        &format!("cat link; echo pwned >> link && echo {ESCAPED}; echo pwned > link && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_has("host data").stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&target), "host data\n", "the host file changed through the symlink");
}

#[test]
fn symlink_to_outside_dir_cannot_create_files_there() {
    let s = Scratch::visible();
    let outdir = s.root.join("outdir");
    std::fs::create_dir(&outdir).expect("mkdir");
    std::os::unix::fs::symlink(&outdir, s.ws.join("dirlink")).expect("symlink");
    let out = s.sh(
        "workspace-write",
        &format!("echo pwned > dirlink/new.txt && echo {ESCAPED}; mkdir dirlink/sub && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(std::fs::read_dir(&outdir).expect("readdir").count(), 0, "files appeared outside the workspace");
}

#[test]
fn symlink_created_inside_cannot_reach_outside() {
    let s = Scratch::visible();
    let target = s.file("outside.txt", "host data\n");
    let out = s.sh(
        "workspace-write",
        &format!("ln -s {} mylink && echo pwned > mylink && echo {ESCAPED}; exit 0", target.display()),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&target), "host data\n");
}

#[test]
fn hard_link_of_outside_file_into_workspace_fails() {
    let s = Scratch::visible();
    let target = s.file("outside.txt", "host data\n");
    let out =
        s.sh("workspace-write", &format!("ln {} hl && echo pwned >> hl && echo {ESCAPED}; exit 0", target.display()));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Invalid cross-device link", "Operation not permitted", "Permission denied"]);
    assert_eq!(read(&target), "host data\n", "the outside file changed");
    assert!(!s.ws.join("hl").exists(), "a hard link to the outside file appeared in the workspace");
}

#[test]
fn hard_link_of_etc_file_into_workspace_fails() {
    let s = Scratch::temp();
    let before = read(Path::new("/etc/hostname"));
    let out = s.sh("workspace-write", &format!("ln /etc/hostname hl && echo x >> hl && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Invalid cross-device link", "Operation not permitted", "Permission denied"]);
    assert_eq!(read(Path::new("/etc/hostname")), before);
}

// --- protected directories inside the workdir --------------------------------------------------

fn git_scratch() -> (Scratch, std::path::PathBuf) {
    let s = Scratch::temp();
    let config = s.file("ws/.git/config", "[core]\n\trepositoryformatversion = 0\n");
    std::fs::create_dir_all(s.ws.join(".git/hooks")).expect("mkdir hooks");
    (s, config)
}

#[test]
fn git_dir_cannot_be_renamed_away() {
    let (s, config) = git_scratch();
    let out = s.sh("workspace-write", &format!("mv .git moved && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Device or resource busy", "Read-only file system", "Permission denied"]);
    assert!(config.exists(), ".git/config is gone on the host");
    assert!(!s.ws.join("moved").exists());
}

#[test]
fn git_dir_cannot_be_deleted() {
    let (s, config) = git_scratch();
    let out = s.sh("workspace-write", &format!("rm -rf .git && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&config), "[core]\n\trepositoryformatversion = 0\n");
}

#[test]
fn git_config_cannot_be_written() {
    let (s, config) = git_scratch();
    let out = s.sh(
        "workspace-write",
        &format!("printf '[core]\\n\\tfsmonitor = evil\\n' >> .git/config && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&config), "[core]\n\trepositoryformatversion = 0\n");
}

#[test]
fn git_hook_cannot_be_created() {
    let (s, _config) = git_scratch();
    let out = s.sh(
        "workspace-write",
        &format!("printf '#!/bin/sh\\necho owned\\n' > .git/hooks/pre-commit && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert!(!s.ws.join(".git/hooks/pre-commit").exists(), "a git hook appeared on the host");
}

#[test]
fn git_dir_cannot_be_replaced_by_a_new_one() {
    let (s, config) = git_scratch();
    // Rename the real one aside is refused; so is swapping in a fresh .git via a second name.
    let out = s.sh(
        "workspace-write",
        &format!("mkdir fake && mv fake .git && echo {ESCAPED}; mv -T fake .git && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert!(config.exists());
    assert_eq!(read(&config), "[core]\n\trepositoryformatversion = 0\n");
}

#[test]
fn codex_dir_is_read_only() {
    let s = Scratch::temp();
    let cfg = s.file("ws/.codex/config.toml", "sandbox_mode = \"read-only\"\n");
    let out = s.sh(
        "workspace-write",
        &format!(
            "echo 'sandbox_mode = \"danger-full-access\"' > .codex/config.toml && echo {ESCAPED}; \
             mv .codex c2 && echo {ESCAPED}; rm -rf .codex && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&cfg), "sandbox_mode = \"read-only\"\n");
}

#[test]
fn agents_dir_is_read_only() {
    let s = Scratch::temp();
    let f = s.file("ws/.agents/AGENTS.md", "be careful\n");
    let out = s.sh(
        "workspace-write",
        &format!(
            "echo evil > .agents/AGENTS.md && echo {ESCAPED}; touch .agents/new && echo {ESCAPED}; \
             mv .agents a2 && echo {ESCAPED}; rm -rf .agents && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(&f), "be careful\n");
    assert!(!s.ws.join(".agents/new").exists());
}

#[test]
fn missing_protected_dirs_cannot_be_created() {
    let s = Scratch::temp();
    let out = s.sh(
        "workspace-write",
        &format!(
            "mkdir -p .git/hooks && echo {ESCAPED}; git init -q . && echo {ESCAPED}; \
             mkdir -p .codex && echo x > .codex/config.toml && echo {ESCAPED}; \
             mkdir -p .agents && touch .agents/AGENTS.md && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    for leftover in [".git/hooks", ".git/HEAD", ".git/config", ".codex/config.toml", ".agents/AGENTS.md"] {
        assert!(!s.ws.join(leftover).exists(), "{leftover} appeared on the host");
    }
}

#[test]
fn symlinked_git_dir_fails_closed() {
    let s = Scratch::temp();
    let real = s.root.join("realgit");
    std::fs::create_dir(&real).expect("mkdir");
    std::os::unix::fs::symlink(&real, s.ws.join(".git")).expect("symlink");
    let out = s.sh("workspace-write", &format!("echo {ESCAPED} > .git/config"));
    out.code(125).stderr_has(".git").stdout_lacks(ESCAPED);
    assert!(!real.join("config").exists(), "the command ran and wrote through the symlinked .git");
}

// --- masked secrets ----------------------------------------------------------------------------

/// A fake HOME with an SSH key and AWS credentials, next to the workdir.
fn secret_home() -> (Scratch, std::path::PathBuf) {
    let s = Scratch::visible();
    s.file("home/.ssh/id_rsa", "-----BEGIN FAKE KEY-----\n");
    s.file("home/.aws/credentials", "aws_secret_access_key = FAKESECRET\n");
    let home = s.root.join("home");
    (s, home)
}

fn run_with_home(s: &Scratch, home: &Path, extra: &[&str], script: &str) -> warden_testkit::Output {
    crate::warden()
        .env("HOME", home)
        .current_dir(&s.ws)
        .args(["run", "-p", "workspace-write", "-C"])
        .args([&s.ws])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .run()
}

#[test]
fn masked_ssh_key_cannot_be_read_directly() {
    let (s, home) = secret_home();
    let out = run_with_home(
        &s,
        &home,
        &[],
        &format!("cat {}/.ssh/id_rsa; ls {}/.ssh; exit 0", home.display(), home.display()),
    );
    out.success().stdout_lacks("FAKE KEY");
    assert_denied(&out, &["Permission denied"]);
    // Control: the key is really there on the host.
    assert!(read(&home.join(".ssh/id_rsa")).contains("FAKE KEY"));
}

#[test]
fn masked_aws_credentials_cannot_be_read_directly() {
    let (s, home) = secret_home();
    let out = run_with_home(&s, &home, &[], &format!("cat {}/.aws/credentials; exit 0", home.display()));
    out.success().stdout_lacks("FAKESECRET");
    assert_denied(&out, &["Permission denied"]);
}

#[test]
fn masked_secret_cannot_be_read_through_a_workspace_symlink() {
    let (s, home) = secret_home();
    std::os::unix::fs::symlink(home.join(".ssh/id_rsa"), s.ws.join("key")).expect("symlink");
    std::os::unix::fs::symlink(home.join(".aws"), s.ws.join("awsdir")).expect("symlink");
    let out = run_with_home(&s, &home, &[], "cat key; cat awsdir/credentials; exit 0");
    out.success().stdout_lacks("FAKE KEY").stdout_lacks("FAKESECRET");
    assert_denied(&out, &["Permission denied"]);
}

#[test]
fn masked_secret_cannot_be_read_through_proc_self_root() {
    let (s, home) = secret_home();
    let out = run_with_home(
        &s,
        &home,
        &[],
        &format!("cat /proc/self/root{0}/.ssh/id_rsa; cat /proc/1/root{0}/.ssh/id_rsa; exit 0", home.display()),
    );
    out.success().stdout_lacks("FAKE KEY");
    assert_denied(&out, &["Permission denied"]);
}

#[test]
fn mask_cannot_be_unmounted() {
    let (s, home) = secret_home();
    let out =
        run_with_home(&s, &home, &[], &format!("umount -l {0}/.ssh; cat {0}/.ssh/id_rsa; exit 0", home.display()));
    out.success().stdout_lacks("FAKE KEY");
    assert_denied(&out, &["Permission denied", "Operation not permitted", "must be superuser"]);
}

#[test]
fn deny_read_masks_a_workspace_file() {
    let s = Scratch::temp();
    s.file("ws/.env", "DATABASE_URL=postgres://secret\n");
    let denied = s.ws.join(".env");
    let out = s.sh_with(
        "workspace-write",
        &["--deny-read", denied.to_str().expect("utf-8 path")],
        "cat .env; cp .env copy; exit 0",
    );
    out.success().stdout_lacks("postgres://secret");
    assert_denied(&out, &["Permission denied"]);
    assert!(!s.ws.join("copy").exists() || !read(&s.ws.join("copy")).contains("secret"));
}

#[test]
fn deny_read_masks_a_directory_outside() {
    let s = Scratch::visible();
    s.file("private/token.txt", "TOPSECRET\n");
    let dir = s.root.join("private");
    let out = s.sh_with(
        "offline",
        &["--deny-read", dir.to_str().expect("utf-8 path")],
        &format!("cat {0}/token.txt; ls {0}; exit 0", dir.display()),
    );
    out.success().stdout_lacks("TOPSECRET").stdout_lacks("token.txt");
    assert_denied(&out, &["Permission denied"]);
}

// --- kernel interfaces -------------------------------------------------------------------------

#[test]
fn proc_sys_and_sys_are_read_only() {
    let s = Scratch::temp();
    let before = read(Path::new("/proc/sys/kernel/core_pattern"));
    let out = s.sh(
        "workspace-write",
        &format!(
            "echo '|/tmp/evil' > /proc/sys/kernel/core_pattern && echo {ESCAPED}; \
             echo 1 > /proc/sysrq-trigger && echo {ESCAPED}; \
             echo 1 > /sys/kernel/mm/transparent_hugepage/enabled && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, WRITE_DENIED);
    assert_eq!(read(Path::new("/proc/sys/kernel/core_pattern")), before);
}

#[test]
fn device_nodes_cannot_be_created() {
    let s = Scratch::temp();
    let out = s.sh(
        "workspace-write",
        &format!("mknod disk b 8 0 && echo {ESCAPED}; mknod mem c 1 1 && echo {ESCAPED}; exit 0"),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted", "Permission denied"]);
    assert!(!s.ws.join("disk").exists() && !s.ws.join("mem").exists());
}
