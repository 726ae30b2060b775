//! The seccomp layer, tested through real syscalls (x86_64 numbers): each denied call returns
//! -1 with `EPERM`; nested namespaces, mounts, chroot and pivot_root fail; TIOCSTI is refused
//! even through the high-bits bypass.

use std::time::Duration;

use crate::{assert_denied, Scratch, ESCAPED, PY};

/// Python that calls `syscall(nr, args...)` and prints `ret=R errno=E`. `BUF` in `args` is the
/// address of a zeroed 4 KiB buffer. A child of a successful clone exits at once.
fn syscall_py(nr: u64, args: &str) -> String {
    format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         buf = ctypes.create_string_buffer(4096)\n\
         BUF = ctypes.addressof(buf)\n\
         args = [ctypes.c_ulong(a & 0xffffffffffffffff) for a in [{args}]]\n\
         ctypes.set_errno(0)\n\
         r = libc.syscall(ctypes.c_long({nr}), *args)\n\
         e = ctypes.get_errno()\n\
         if r == 0 and {nr} == 56:\n\
         \x20   os._exit(0)\n\
         print(f'ret={{r}} errno={{e}}')\n"
    )
}

#[track_caller]
fn assert_eperm(nr: u64, args: &str) {
    let s = Scratch::temp();
    let out = s.py("offline", &syscall_py(nr, args));
    out.success().stdout_has("ret=-1 errno=1\n");
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use super::assert_eperm;

    #[test]
    fn io_uring_setup_is_denied() {
        assert_eperm(425, "1, BUF");
    }

    #[test]
    fn bpf_is_denied() {
        // BPF_PROG_LOAD with an empty attr.
        assert_eperm(321, "5, BUF, 128");
    }

    #[test]
    fn perf_event_open_is_denied() {
        assert_eperm(298, "BUF, 0, -1, -1, 0");
    }

    #[test]
    fn userfaultfd_is_denied() {
        assert_eperm(323, "0");
    }

    #[test]
    fn keyctl_is_denied() {
        // KEYCTL_GET_KEYRING_ID (0) of the session keyring (-3).
        assert_eperm(250, "0, -3, 0");
    }

    #[test]
    fn add_key_is_denied() {
        assert_eperm(248, "BUF, BUF, 0, 0, -4");
    }

    #[test]
    fn personality_addr_no_randomize_is_denied() {
        assert_eperm(135, "0x0040000");
    }

    #[test]
    fn personality_read_implies_exec_is_denied() {
        assert_eperm(135, "0x0400000");
    }

    #[test]
    fn ptrace_traceme_is_denied() {
        assert_eperm(101, "0, 0, 0, 0");
    }

    #[test]
    fn x32_abi_syscall_is_denied() {
        // getpid (39) through the x32 bit must not slip past the per-number rules.
        assert_eperm(0x4000_0000 + 39, "");
    }

    #[test]
    fn clone_with_new_user_namespace_is_denied() {
        // CLONE_NEWUSER | SIGCHLD
        assert_eperm(56, "0x10000000 | 17, 0, 0, 0, 0");
    }

    #[test]
    fn clone_with_new_net_namespace_is_denied() {
        // CLONE_NEWNET | SIGCHLD
        assert_eperm(56, "0x40000000 | 17, 0, 0, 0, 0");
    }

    #[test]
    fn unshare_syscall_is_denied() {
        // CLONE_NEWUSER
        assert_eperm(272, "0x10000000");
    }

    #[test]
    fn setns_is_denied() {
        // setns on an fd of our own net namespace (fd 0 is enough to reach the filter).
        assert_eperm(308, "0, 0");
    }

    #[test]
    fn open_by_handle_at_is_denied() {
        assert_eperm(304, "-100, BUF, 0");
    }

    #[test]
    fn mount_syscall_is_denied() {
        assert_eperm(165, "0, BUF, 0, 0, 0");
    }
}

#[test]
fn clone3_reports_enosys_and_fork_still_works() {
    let s = Scratch::temp();
    // clone3 (435) always ENOSYS (38) so that libc falls back to clone; then a plain fork works.
    let code = syscall_py(435, "BUF, 88")
        + "pid = os.fork()\nif pid == 0:\n    os._exit(7)\nprint('child', os.waitpid(pid, 0)[1] >> 8)\n";
    let out = s.py("offline", &code);
    out.success().stdout_has("ret=-1 errno=38\n").stdout_has("child 7\n");
}

// --- nested namespaces, mounts, chroot ---------------------------------------------------------

#[test]
fn nested_user_namespace_is_denied() {
    let s = Scratch::temp();
    let out = s.sh("offline", &format!("unshare -U true && echo {ESCAPED}; unshare -Ur id && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted"]);
}

#[test]
fn nested_mount_namespace_is_denied() {
    let s = Scratch::temp();
    let out = s.sh("workspace-write", &format!("unshare -m true && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted"]);
}

#[test]
fn nested_net_namespace_is_denied() {
    let s = Scratch::temp();
    let out = s.sh("offline", &format!("unshare -n true && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted"]);
}

#[test]
fn mount_tmpfs_is_denied() {
    let s = Scratch::temp();
    let out = s.sh(
        "workspace-write",
        &format!(
            "mkdir -p m && mount -t tmpfs none m && echo {ESCAPED}; mount -t tmpfs none /mnt && echo {ESCAPED}; exit 0"
        ),
    );
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["permission denied", "Operation not permitted", "must be superuser"]);
}

#[test]
fn chroot_is_denied() {
    let s = Scratch::temp();
    let out = s.sh("offline", &format!("chroot / true && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted"]);
}

#[test]
fn pivot_root_is_denied() {
    let s = Scratch::temp();
    let out = s.sh("workspace-write", &format!("mkdir -p old && pivot_root . old && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted"]);
}

#[test]
fn allow_nested_userns_permits_unshare_user() {
    let s = Scratch::temp();
    // Control for the tests above: the opt-in really lets an inner sandbox create a user namespace,
    // while a mount namespace without one still needs capabilities the command does not have.
    let out = s.sh_with(
        "offline",
        &["--allow-nested-userns"],
        "unshare -U true && echo USERNS-OK; unshare -m true && echo MOUNTNS-OK; exit 0",
    );
    out.success().stdout_has("USERNS-OK").stdout_lacks("MOUNTNS-OK");
}

// --- TIOCSTI -----------------------------------------------------------------------------------

const TIOCSTI_PY: &str = r#"import ctypes, fcntl, os
print('tty=%s' % os.isatty(0))
try:
    fcntl.ioctl(0, 0x5412, b'x'); print('plain=ok')
except OSError as e:
    print('plain errno=%d' % e.errno)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
c = ctypes.c_char(b'x')
ctypes.set_errno(0)
r = libc.syscall(ctypes.c_long(16), ctypes.c_long(0), ctypes.c_ulong(0xffffffff00005412), ctypes.byref(c))
print('high ret=%d errno=%d' % (r, ctypes.get_errno()))
"#;

/// Whether `script` is there; outside CI its absence skips the test, in CI it fails it.
fn have_script() -> bool {
    if crate::have("/usr/bin/script") {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must run the TIOCSTI tests: `script` (util-linux) is missing");
    eprintln!("note: skipped, `script` (util-linux) is not installed");
    false
}

/// warden runs on the test's pty (the user's terminal in real life): injecting into it is denied.
#[test]
fn tiocsti_on_the_outer_terminal_is_denied() {
    if !have_script() {
        return;
    }
    let s = Scratch::temp();
    let py = s.file("ws/tiocsti.py", TIOCSTI_PY);
    let inner = format!("{} run -C {} -- {PY} {}", crate::warden_path().display(), s.ws.display(), py.display());
    let mut cmd = crate::scrubbed_command("script");
    cmd.args(["-qec", &inner, "/dev/null"]).current_dir(&s.ws);
    let out = crate::run_bounded(cmd, Duration::from_secs(60));
    out.success()
        .stdout_has("tty=True")
        .stdout_has("plain errno=1")
        .stdout_has("high ret=-1 errno=1")
        .stdout_lacks("plain=ok");
}

/// The same from a pty allocated inside the sandbox.
#[test]
fn tiocsti_on_an_inner_pty_is_denied() {
    if !have_script() {
        return;
    }
    let s = Scratch::temp();
    let py = s.file("ws/tiocsti.py", TIOCSTI_PY);
    let out = s.sh("offline", &format!("script -qec '{PY} {}' /dev/null", py.display()));
    out.success()
        .stdout_has("tty=True")
        .stdout_has("plain errno=1")
        .stdout_has("high ret=-1 errno=1")
        .stdout_lacks("plain=ok");
}
