//! Processes, signals, privileges, SysV IPC and the UTS namespace.

use std::path::Path;

use crate::{assert_denied, is_root, read, Scratch, ESCAPED, PY};

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

#[test]
fn capabilities_are_dropped_and_no_new_privs_and_seccomp_are_set() {
    let s = Scratch::temp();
    let out = s.sh("offline", "cat /proc/self/status");
    out.success();
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&out.stdout, cap), "0000000000000000", "{cap} (as root: {})", is_root());
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out.stdout, "Seccomp"), "2");
}

#[test]
fn capabilities_are_dropped_in_workspace_write_too() {
    let s = Scratch::temp();
    let out = s.sh("workspace-write", "cat /proc/self/status");
    out.success();
    for cap in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&out.stdout, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out.stdout, "Seccomp"), "2");
}

#[test]
fn setuid_root_binary_grants_no_capability() {
    root_only!();
    let s = Scratch::temp();
    // A setuid-root copy of cat in the (writable) workdir: without nosuid/no_new_privs/securebits,
    // exec would give it a full capability set.
    let suid = s.ws.join("suid-cat");
    std::fs::copy("/usr/bin/cat", &suid).expect("copy cat");
    warden_testkit::set_mode(&suid, 0o4755);
    let out = s.sh("workspace-write", "./suid-cat /proc/self/status");
    out.success();
    assert_eq!(status_field(&out.stdout, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&out.stdout, "CapPrm"), "0000000000000000");
}

#[test]
fn setuid_to_another_user_is_ignored() {
    root_only!();
    let s = Scratch::temp();
    // A copy of `id` owned by nobody with the setuid bit: if it took effect, `id` would report
    // euid=65534.
    let suid = s.ws.join("suid-id");
    std::fs::copy("/usr/bin/id", &suid).expect("copy id");
    let c = std::ffi::CString::new(suid.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::chown(c.as_ptr(), 65534, 65534) };
    assert_eq!(rc, 0, "chown");
    warden_testkit::set_mode(&suid, 0o4755);
    let out = s.sh("workspace-write", "./suid-id");
    out.success().stdout_has("uid=0").stdout_lacks("euid");
}

#[test]
fn host_setuid_binary_keeps_the_callers_uid() {
    non_root_only!();
    if !crate::have("/usr/bin/su") || !crate::have("/usr/bin/script") {
        assert!(std::env::var_os("CI").is_none(), "CI must run this test: /usr/bin/su or script is missing");
        eprintln!("note: skipped, needs /usr/bin/su and script");
        return;
    }
    let s = Scratch::temp();
    // su waits for a password on a pty; meanwhile its /proc status shows the uids it runs with.
    let out = s.sh(
        "offline",
        "sleep 5 | script -qec '/usr/bin/su root -c true' /dev/null >/dev/null 2>&1 & \
         i=0; p=; while [ $i -lt 100 ]; do p=$(pgrep -x su) && break; sleep 0.05; i=$((i+1)); done; \
         grep -E '^(Uid|CapEff)' /proc/$p/status; kill $! 2>/dev/null; exit 0",
    );
    out.success();
    let uid = status_field(&out.stdout, "Uid");
    let me = std::process::Command::new("id").arg("-u").output().expect("id -u");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_owned();
    assert!(uid.split_whitespace().all(|u| u == me), "setuid took effect: Uid {uid:?}, caller {me}\n{}", out.stdout);
    assert_eq!(status_field(&out.stdout, "CapEff"), "0000000000000000");
}

#[test]
fn host_process_cannot_be_signalled() {
    let s = Scratch::temp();
    let me = std::process::id();
    let out = s.sh("offline", &format!("kill -0 {me} && echo {ESCAPED}; kill -9 {me} && echo {ESCAPED}; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["No such process"]);
}

#[test]
fn host_process_cannot_be_ptraced() {
    let s = Scratch::temp();
    let me = std::process::id();
    // PTRACE_ATTACH (16) to this test process, and to PID 1 of the sandbox.
    let code = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.ptrace.restype = ctypes.c_long\n\
         for pid in ({me}, 1):\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   r = libc.ptrace(ctypes.c_long(16), ctypes.c_long(pid), None, None)\n\
         \x20   print('attach', pid, r, ctypes.get_errno())\n"
    );
    let out = s.py("offline", &code);
    out.success().stdout_has(&format!("attach {me} -1 1\n")).stdout_has("attach 1 -1 1\n");
}

#[test]
fn proc_shows_only_sandbox_processes() {
    let s = Scratch::temp();
    let me = std::process::id();
    let out = s.sh("offline", "ls /proc; echo ---; head -1 /proc/1/status");
    // PID 1 is warden's own init, not a host process.
    out.success().stdout_has("Name:\twarden");
    let (list, _) = out.stdout.split_once("---").expect("separator");
    let pids: Vec<u32> = list.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(pids.contains(&1), "no pid 1 in {pids:?}");
    assert!(!pids.contains(&me), "the test's pid {me} is visible: {pids:?}");
    assert!(pids.len() < 16, "too many processes visible: {pids:?}");
}

#[test]
fn host_process_environ_is_unreadable() {
    let s = Scratch::temp();
    let me = std::process::id();
    let out = s.sh("offline", &format!("cat /proc/{me}/environ && echo {ESCAPED}; cat /proc/{me}/cmdline; exit 0"));
    out.success().stdout_lacks(ESCAPED);
    assert_denied(&out, &["No such file or directory"]);
}

#[test]
fn init_environ_holds_no_secrets() {
    let s = Scratch::temp();
    let out = crate::warden()
        .env("OPENAI_API_KEY", "sk-test-init-leak")
        .current_dir(&s.ws)
        .args(["run", "-C"])
        .args([&s.ws])
        .args(["--", "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ; exit 0"])
        .run();
    out.success().stdout_lacks("sk-test-init-leak");
}

/// Creates a SysV message queue and a shm segment on the host; removes them on drop.
struct HostIpc {
    key: libc::key_t,
    msqid: libc::c_int,
    shmid: libc::c_int,
}

impl HostIpc {
    fn new() -> HostIpc {
        let key = 0x5a00_0000 | (std::process::id() as libc::key_t & 0x00ff_ffff);
        // SAFETY: plain syscalls on integers; no memory is passed.
        let msqid = unsafe { libc::msgget(key, libc::IPC_CREAT | 0o600) };
        assert!(msqid >= 0, "msgget: {}", std::io::Error::last_os_error());
        // SAFETY: as above.
        let shmid = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
        assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
        HostIpc { key, msqid, shmid }
    }
}

impl Drop for HostIpc {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer (NULL is allowed).
        unsafe {
            libc::msgctl(self.msqid, libc::IPC_RMID, std::ptr::null_mut());
            libc::shmctl(self.shmid, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

#[test]
fn host_sysv_ipc_is_invisible() {
    let ipc = HostIpc::new();
    let key_hex = format!("0x{:08x}", ipc.key);
    // Control: the host sees both objects.
    let host = std::process::Command::new("ipcs").output().expect("ipcs");
    assert!(String::from_utf8_lossy(&host.stdout).contains(&key_hex), "control: host ipcs lacks {key_hex}");
    let s = Scratch::temp();
    let code = format!(
        "import ctypes\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         print('msgget', libc.msgget({key}, 0), ctypes.get_errno())\n\
         print('shmget', libc.shmget({key}, 0, 0), ctypes.get_errno())\n\
         print('msqid', libc.msgctl({msqid}, 2, None), ctypes.get_errno())\n",
        key = ipc.key,
        msqid = ipc.msqid
    );
    let out = s.py("offline", &code);
    // ENOENT (2) for the key lookups, EINVAL (22) for the host's queue id.
    out.success().stdout_has("msgget -1 2\n").stdout_has("shmget -1 2\n").stdout_has("msqid -1 22\n");
    let out = s.sh("offline", "ipcs");
    out.success().stdout_lacks(&key_hex);
}

#[test]
fn hostname_is_private_and_cannot_change_the_hosts() {
    let before = read(Path::new("/proc/sys/kernel/hostname"));
    let s = Scratch::temp();
    let out = s.sh(
        "offline",
        &format!(
            "hostname; hostname evil-host && echo {ESCAPED}; echo evil-host > /proc/sys/kernel/hostname && echo {ESCAPED}; \
             {PY} -c 'import socket; socket.sethostname(\"evil-host\")' 2>&1 | tail -1; exit 0"
        ),
    );
    out.success().stdout_has("warden\n").stdout_lacks(ESCAPED);
    assert_denied(&out, &["Operation not permitted", "Read-only file system"]);
    assert_eq!(read(Path::new("/proc/sys/kernel/hostname")), before, "the host's hostname changed");
}
