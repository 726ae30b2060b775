//! Thin, safe wrappers over the Linux system calls that warden's enforcement needs.
//!
//! Every `unsafe` block of the crate lives here. Each wrapper takes owned or borrowed Rust
//! values, checks the return value, and turns failures into [`Errno`]. Nothing here decides
//! policy: callers in `init` and `launch` decide what to call and in which order.
//!
//! Calls whose soundness depends on the state of the whole process take a proof of it: a
//! [`SingleThreaded`] token to clone or fork, a [`FreshChild`] token (the child side of such a
//! clone, which leaves only through exec or `_exit`) to duplicate over, close or adopt
//! descriptors that other Rust values may own. The module is private to the crate.

use std::ffi::{CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::plan::WinSize;

/// An `errno` value with its name, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Errno(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

/// Result of a wrapped system call.
pub type SysResult<T> = Result<T, Errno>;

fn check(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn cstring(path: &Path) -> SysResult<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful system call that creates a new file
    // descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

// ---------------------------------------------------------------------------------------------
// Namespaces and identity
// ---------------------------------------------------------------------------------------------

/// Proof that this process has exactly one thread: a fork-like clone of it copies a process in
/// which no other thread can hold a lock (allocator, stdio, environment), so the child may run
/// ordinary Rust code.
///
/// Made by [`SingleThreaded::check`] (which counts `/proc/self/task`) right before a clone, or
/// handed to the child of one ([`FreshChild::single_threaded`]); consumed by [`clone_process`].
/// Neither `Send` nor `Clone`, and its holders start no thread before using it.
pub struct SingleThreaded {
    _not_send: PhantomData<*mut ()>,
}

impl SingleThreaded {
    /// The proof, or the number of threads there are.
    pub fn check() -> Result<SingleThreaded, usize> {
        let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
        if threads == 1 {
            Ok(SingleThreaded { _not_send: PhantomData })
        } else {
            Err(threads)
        }
    }
}

/// The child side of a fork-like clone: a copy of a single-threaded process that leaves only
/// through `execve` or [`exit_now`], never by returning into the frames it was copied with. Every
/// descriptor those frames own is therefore never used or closed by them again, which is what
/// lets its holder rearrange descriptors ([`dup2`], [`close_from`], [`take_fd`]).
pub struct FreshChild {
    _not_send: PhantomData<*mut ()>,
}

impl FreshChild {
    /// This process is single-threaded (a clone copies only the calling thread).
    pub fn single_threaded(&self) -> SingleThreaded {
        SingleThreaded { _not_send: PhantomData }
    }
}

/// Which side of [`clone_process`] we are on.
pub enum Forked {
    /// The parent, with the child's pid.
    Parent(libc::pid_t),
    /// The child. Callers end it with `execve` or [`exit_now`] (see [`FreshChild`]).
    Child(FreshChild),
}

/// A raw `clone(2)` without `CLONE_VM` (like `fork`), into the new namespaces of
/// `namespace_flags` (0: a plain fork). No `atfork` handlers run.
///
/// The child's libc thread descriptor keeps the parent's cached thread id (as after bwrap's raw
/// clone); warden's children never `pthread_kill` themselves.
pub fn clone_process(_proof: SingleThreaded, namespace_flags: libc::c_int) -> SysResult<Forked> {
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a private copy of the
    // address space and continues on its copy of this stack, exactly as with fork(2). `_proof`
    // shows the process is single-threaded, so no lock in that copy is held by a thread that does
    // not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (namespace_flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match check(ret)? {
        0 => Ok(Forked::Child(FreshChild { _not_send: PhantomData })),
        pid => Ok(Forked::Parent(pid as libc::pid_t)),
    }
}

/// `sethostname(2)`.
pub fn sethostname(name: &str) -> SysResult<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    check_int(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// `getuid(2)`.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail and has no memory effects.
    unsafe { libc::getuid() }
}

/// `getgid(2)`.
pub fn getgid() -> u32 {
    // SAFETY: getgid cannot fail and has no memory effects.
    unsafe { libc::getgid() }
}

/// `getpid(2)`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no memory effects.
    unsafe { libc::getpid() }
}

/// `getppid(2)`.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail and has no memory effects.
    unsafe { libc::getppid() }
}

/// `prctl(2)` with integer arguments.
pub fn prctl(option: libc::c_int, a2: libc::c_ulong, a3: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: every option warden uses takes integer arguments only (no pointers).
    check_int(unsafe { libc::prctl(option, a2, a3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// `setrlimit(2)` with soft = hard = `value`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> SysResult<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    check_int(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// `capset(2)` to all-zero effective, permitted and inheritable sets.
pub fn clear_capability_sets() -> SysResult<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: header and data have the kernel's v3 layout (two data elements) and outlive the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Files and mounts
// ---------------------------------------------------------------------------------------------

/// `open(2)` a path with `O_PATH | O_CLOEXEC` (and `O_DIRECTORY` if asked), following symlinks.
pub fn open_path(path: &Path, directory: bool) -> SysResult<OwnedFd> {
    let c = cstring(path)?;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::open(c.as_ptr(), flags) }).map(|fd| owned(fd as libc::c_long))
}

/// How `openat2` may resolve a path.
#[derive(Debug, Clone, Copy)]
pub enum Resolve {
    /// No symlink may appear in any component (`RESOLVE_NO_SYMLINKS`), nor a magic link.
    NoSymlinks,
    /// Symlinks are resolved as if `dirfd` were `/` (`RESOLVE_IN_ROOT`).
    InRoot,
}

/// `openat2(2)` with `O_PATH | O_CLOEXEC` relative to `dirfd`.
pub fn openat2_path(dirfd: &OwnedFd, rel: &Path, resolve: Resolve) -> SysResult<OwnedFd> {
    let c = cstring(rel)?;
    let mut how: libc::open_how = open_how_zeroed();
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = match resolve {
        Resolve::NoSymlinks => libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        Resolve::InRoot => libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` and `how` outlive the call and `how` has the size we pass.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    check(ret).map(owned)
}

fn open_how_zeroed() -> libc::open_how {
    // SAFETY: open_how is a plain struct of integers; all-zero is its documented default.
    unsafe { std::mem::zeroed() }
}

/// `fstat(2)`.
pub fn fstat(fd: &OwnedFd) -> SysResult<libc::stat> {
    // SAFETY: stat is plain data; zeroed is a valid value that fstat overwrites.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the duration of the call.
    check_int(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Classic `mount(2)`; `source`, `fstype` and `data` may be absent.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> SysResult<()> {
    let src = source.map(|s| CString::new(s).map_err(|_| Errno(libc::EINVAL))).transpose()?;
    let tgt = cstring(target)?;
    let fst = fstype.map(|s| CString::new(s).map_err(|_| Errno(libc::EINVAL))).transpose()?;
    let dat = data.map(|s| CString::new(s).map_err(|_| Errno(libc::EINVAL))).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fst.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check_int(ret).map(drop)
}

/// `chdir(2)`.
pub fn chdir(path: &Path) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::chdir(c.as_ptr()) }).map(drop)
}

/// `mkdir(2)`; an existing entry is not an error.
pub fn mkdir_if_missing(path: &Path, mode: u32) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    match check_int(unsafe { libc::mkdir(c.as_ptr(), mode) }) {
        Ok(_) => Ok(()),
        Err(Errno(libc::EEXIST)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates an empty regular file with `mode` (existing is not an error).
pub fn create_file(path: &Path, mode: u32) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = check_int(unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, mode) })?;
    drop(owned(fd as libc::c_long));
    Ok(())
}

/// `symlink(2)`.
pub fn symlink(target: &str, link: &Path) -> SysResult<()> {
    let t = CString::new(target).map_err(|_| Errno(libc::EINVAL))?;
    let l = cstring(link)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    check_int(unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) }).map(drop)
}

/// Mount attributes of `mount_setattr(2)` / `fsmount(2)`.
pub mod mount_attr {
    /// Read-only.
    pub const RDONLY: u64 = 0x0000_0001;
    /// No set-user-ID / set-group-ID / file capabilities on exec.
    pub const NOSUID: u64 = 0x0000_0002;
    /// No device files.
    pub const NODEV: u64 = 0x0000_0004;
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x0000_0040;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `open_tree(2)` with `OPEN_TREE_CLONE`: a detached copy of the mount at `fd` (recursive if asked).
pub fn clone_tree(fd: &OwnedFd, recursive: bool) -> SysResult<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: the path is a static empty C string; fd is a valid descriptor we borrow.
    check(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) }).map(owned)
}

/// `mount_setattr(2)` on the mount (tree) at `fd`.
pub fn mount_setattr(fd: &OwnedFd, recursive: bool, set: u64, clear: u64) -> SysResult<()> {
    let attr = MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: `attr` has the kernel's mount_attr layout and outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `move_mount(2)` of the detached mount `from` onto the object at `onto`.
pub fn move_mount(from: &OwnedFd, onto: &OwnedFd) -> SysResult<()> {
    // SAFETY: both descriptors are valid and the paths are static empty C strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            onto.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// A new, detached filesystem instance: `fsopen` + `fsconfig` + `fsmount`.
///
/// `options` are `(key, Some(value))` string options or `(key, None)` flags.
pub fn new_filesystem(fstype: &str, options: &[(&str, Option<&str>)], attrs: u64) -> SysResult<OwnedFd> {
    let ty = CString::new(fstype).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: `ty` is a NUL-terminated string that outlives the call.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, ty.as_ptr(), FSOPEN_CLOEXEC) }).map(owned)?;
    for (key, value) in options {
        let k = CString::new(*key).map_err(|_| Errno(libc::EINVAL))?;
        let v = value.map(|v| CString::new(v).map_err(|_| Errno(libc::EINVAL))).transpose()?;
        let (cmd, vptr) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: key and value are NUL-terminated strings (or null for a flag) that outlive the call.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0) })?;
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes the fs context descriptor and integer flags.
    check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) }).map(owned)
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// Sets the `IFF_UP` flag on the loopback interface of the current network namespace.
pub fn bring_up_loopback() -> SysResult<()> {
    // SAFETY: socket takes integers only.
    let sock = check_int(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
        .map(|fd| owned(fd as libc::c_long))?;
    // SAFETY: ifreq is plain data; all-zero is a valid starting value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for SIOCGIFFLAGS and outlives the call.
    check_int(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: the kernel filled ifru_flags in the previous call; union access of the flags member.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: `req` is a valid ifreq for SIOCSIFFLAGS and outlives the call.
    check_int(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Landlock
// ---------------------------------------------------------------------------------------------

#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct LandlockPathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;

/// The Landlock ABI version of the running kernel, or `None` when Landlock is unavailable.
pub fn landlock_abi() -> Option<u32> {
    // SAFETY: with a null attribute and size 0 and the VERSION flag, the call only returns the ABI.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<LandlockRulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (ret > 0).then_some(ret as u32)
}

/// Creates a Landlock ruleset. Attribute size is chosen by ABI: `scoped` needs ABI 6.
pub fn landlock_create_ruleset(fs: u64, net: u64, scoped: u64, abi: u32) -> SysResult<OwnedFd> {
    let attr = LandlockRulesetAttr { handled_access_fs: fs, handled_access_net: net, scoped };
    let size = if abi >= 6 {
        std::mem::size_of::<LandlockRulesetAttr>()
    } else if abi >= 4 {
        16
    } else {
        8
    };
    // SAFETY: `attr` outlives the call and `size` never exceeds its size.
    check(unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const LandlockRulesetAttr, size, 0u32) })
        .map(owned)
}

/// Adds a path-beneath rule.
pub fn landlock_add_path(ruleset: &OwnedFd, dir: &OwnedFd, access: u64) -> SysResult<()> {
    let attr = LandlockPathBeneathAttr { allowed_access: access, parent_fd: dir.as_raw_fd() };
    // SAFETY: `attr` has the kernel's packed layout and outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const LandlockPathBeneathAttr,
            0u32,
        )
    })
    .map(drop)
}

/// Enforces the ruleset on the calling thread (and its future children).
pub fn landlock_restrict_self(ruleset: &OwnedFd) -> SysResult<()> {
    // SAFETY: takes a descriptor and integer flags.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------------

/// Installs a seccomp-BPF filter on the calling thread. Requires `no_new_privs`.
pub fn seccomp_install(program: &[libc::sock_filter]) -> SysResult<()> {
    let len = u16::try_from(program.len()).map_err(|_| Errno(libc::E2BIG))?;
    let prog = libc::sock_fprog { len, filter: program.as_ptr().cast_mut() };
    // SAFETY: `prog` points into `program`, which outlives the call; the kernel copies it.
    check(unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0u32, &prog as *const libc::sock_fprog)
    })
    .map(drop)
}

// ---------------------------------------------------------------------------------------------
// Processes and signals
// ---------------------------------------------------------------------------------------------

/// How a waited-for process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// `waitpid(2)` with `flags`, retried on `EINTR`: the pid and raw status, `Ok(None)` when
/// `WNOHANG` found nothing.
fn waitpid_raw(pid: libc::pid_t, flags: libc::c_int) -> SysResult<Option<(libc::pid_t, libc::c_int)>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        if ret < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return Ok((ret != 0).then_some((ret, status)));
    }
}

/// How a raw wait status ended a process; `None` for stops and continues.
fn ended(status: libc::c_int) -> Option<WaitStatus> {
    if libc::WIFEXITED(status) {
        Some(WaitStatus::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(WaitStatus::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

/// `waitpid(2)`; `Ok(None)` when `WNOHANG` found nothing.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> SysResult<Option<(libc::pid_t, WaitStatus)>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let Some((pid_found, status)) = waitpid_raw(pid, flags)? else { return Ok(None) };
        if let Some(ws) = ended(status) {
            return Ok(Some((pid_found, ws)));
        }
    }
}

/// What `waitpid(pid, WNOHANG | WUNTRACED)` found for one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEvent {
    /// It stopped with this signal (it is still there).
    Stopped(i32),
    /// It ended (and is reaped).
    Ended(WaitStatus),
}

/// `waitpid(pid, WNOHANG | WUNTRACED)`: `Ok(None)` when `pid` neither stopped nor ended since the
/// last call.
pub fn wait_stop_or_end(pid: libc::pid_t) -> SysResult<Option<ChildEvent>> {
    Ok(waitpid_raw(pid, libc::WNOHANG | libc::WUNTRACED)?.and_then(|(_, status)| {
        if libc::WIFSTOPPED(status) {
            Some(ChildEvent::Stopped(libc::WSTOPSIG(status)))
        } else {
            ended(status).map(ChildEvent::Ended)
        }
    }))
}

/// `kill(2)`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> SysResult<()> {
    // SAFETY: kill takes integers only.
    check_int(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `_exit(2)`: ends the process without running destructors or atexit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// A signal set.
pub struct SigSet(libc::sigset_t);

impl SigSet {
    /// The set holding `signals`.
    pub fn of(signals: &[libc::c_int]) -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &s in signals {
            // SAFETY: `set` is a valid, initialised sigset_t.
            unsafe { libc::sigaddset(&mut set, s) };
        }
        SigSet(set)
    }

    /// Blocks this set for the calling thread.
    pub fn block(&self) -> SysResult<()> {
        // SAFETY: the set is initialised; old mask is not requested.
        check_int(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) }).map(drop)
    }

    /// Unblocks this set for the calling thread; a pending signal of the set is delivered (its
    /// disposition acts) before this returns.
    pub fn unblock(&self) -> SysResult<()> {
        // SAFETY: the set is initialised; old mask is not requested.
        check_int(unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) }).map(drop)
    }

    /// Replaces the thread's mask with the empty set.
    pub fn unblock_all() -> SysResult<()> {
        let empty = SigSet::of(&[]);
        // SAFETY: the set is initialised; old mask is not requested.
        check_int(unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty.0, std::ptr::null_mut()) }).map(drop)
    }

    /// Waits for one signal of the set (which must be blocked); returns `(signo, si_code)`.
    pub fn wait(&self) -> SysResult<(libc::c_int, libc::c_int)> {
        loop {
            // SAFETY: siginfo_t is plain data that sigwaitinfo fills.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: the set is initialised and `info` is a valid out-pointer.
            let ret = unsafe { libc::sigwaitinfo(&self.0, &mut info) };
            if ret < 0 {
                let e = Errno::last();
                if e.0 == libc::EINTR {
                    continue;
                }
                return Err(e);
            }
            return Ok((ret, info.si_code));
        }
    }

    /// Like [`SigSet::wait`], for at most `timeout`: `Ok(None)` when it passed without a signal
    /// of the set (or a signal outside the set interrupted the wait).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> SysResult<Option<(libc::c_int, libc::c_int)>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data that sigtimedwait fills.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set is initialised, `info` is a valid out-pointer and `ts` a valid timespec.
        let ret = unsafe { libc::sigtimedwait(&self.0, &mut info, &ts) };
        if ret < 0 {
            let e = Errno::last();
            return if e.0 == libc::EAGAIN || e.0 == libc::EINTR { Ok(None) } else { Err(e) };
        }
        Ok(Some((ret, info.si_code)))
    }

    /// A `signalfd(2)` for this set (which must be blocked).
    pub fn signalfd(&self) -> SysResult<OwnedFd> {
        // SAFETY: the set is initialised; -1 asks for a new descriptor.
        check_int(unsafe { libc::signalfd(-1, &self.0, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
            .map(|fd| owned(fd as libc::c_long))
    }
}

/// Reads one pending `signalfd_siginfo`: `(signo, code)`, or `None` if nothing is pending.
pub fn read_signalfd(fd: &OwnedFd) -> SysResult<Option<(i32, i32)>> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    if n < 0 {
        let e = Errno::last();
        return if e.0 == libc::EAGAIN { Ok(None) } else { Err(e) };
    }
    if n as usize != size {
        return Ok(None);
    }
    Ok(Some((info.ssi_signo as i32, info.ssi_code)))
}

extern "C" fn noop_handler(_: libc::c_int) {}

/// Installs a no-op handler for `sig` (so a pid-namespace init is not immune to it) and clears
/// `SA_RESTART`.
pub fn install_noop_handler(sig: libc::c_int) -> SysResult<()> {
    // SAFETY: sigaction is plain data; zeroed means empty mask and no flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `sa` is initialised and the handler is a valid extern "C" fn that does nothing.
    check_int(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Sets the disposition of `sig` to `SIG_DFL` or `SIG_IGN`.
pub fn set_signal_default(sig: libc::c_int, ignore: bool) -> SysResult<()> {
    let handler = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: signal with SIG_DFL/SIG_IGN installs no code.
    let ret = unsafe { libc::signal(sig, handler) };
    if ret == libc::SIG_ERR {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: libc::pid_t) -> SysResult<OwnedFd> {
    // SAFETY: takes integers only.
    check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) }).map(owned)
}

/// `close_range(first, ~0, 0)`: closes every descriptor from `first` on, in a fresh child whose
/// copied frames never touch their descriptors again.
pub fn close_from(_child: &FreshChild, first: u32) -> SysResult<()> {
    // SAFETY: closing descriptors has no memory effects. Rust values that own descriptors >= first
    // live only in frames the fresh child never returns to (`_child`), so none is used or closed
    // again after this.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) }).map(drop)
}

/// `dup2(2)` in a fresh child: `new` is replaced atomically, whoever owned it.
pub fn dup2(_child: &FreshChild, old: RawFd, new: RawFd) -> SysResult<()> {
    // SAFETY: dup2 takes integers only. Replacing `new` is sound because any Rust owner of `new`
    // lives in a frame the fresh child never returns to (`_child`).
    check_int(unsafe { libc::dup2(old, new) }).map(drop)
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
fn set_cloexec(fd: RawFd, on: bool) -> SysResult<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl F_SETFD takes an integer argument.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFD, flag) }).map(drop)
}

/// A `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
pub fn seqpacket_pair() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid two-element out-array.
    check_int(unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    Ok((owned(fds[0] as libc::c_long), owned(fds[1] as libc::c_long)))
}

/// A `pipe2(O_CLOEXEC)`: `(read, write)`.
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid two-element out-array.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0] as libc::c_long), owned(fds[1] as libc::c_long)))
}

/// Writes all of `buf` to `fd` with raw `write(2)` (async-signal-safe).
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// One `read(2)` into `buf` (retrying on `EINTR`).
pub fn read(fd: RawFd, buf: &mut [u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is a valid writable slice.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return Ok(n as usize);
    }
}

/// `execve(2)`. Returns only on failure.
pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> Errno {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: path, argv and envp are NUL-terminated strings in NULL-terminated arrays, all of
    // which outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    Errno::last()
}

/// `isatty(3)`.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer only.
    unsafe { libc::isatty(fd) == 1 }
}

/// Takes ownership of descriptor `fd` in a fresh child, if it is open (and marks it close-on-exec).
pub fn take_fd(_child: &FreshChild, fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    set_cloexec(fd, true).ok()?;
    // SAFETY: the descriptor is open, and the only other Rust owner it could have lives in a frame
    // the fresh child never returns to (`_child`): this is the one owner from now on.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Peak resident set size of waited-for descendants, in KiB (`getrusage(RUSAGE_CHILDREN)`).
pub fn children_max_rss_kib() -> u64 {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } == 0 {
        ru.ru_maxrss.max(0) as u64
    } else {
        0
    }
}

/// `uname(2)` release string.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data that uname fills.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: the kernel NUL-terminates `release` within the array.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned()
}

/// `mkdir(2)` that reports `EEXIST` (unlike [`mkdir_if_missing`]).
pub fn mkdir_new(path: &Path, mode: u32) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

/// Opens a directory read-only without following a trailing symlink.
pub fn open_dir_nofollow(path: &Path) -> SysResult<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe {
        libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    })
    .map(|fd| owned(fd as libc::c_long))
}

/// `flock(2)`; `exclusive` picks `LOCK_EX` over `LOCK_SH`; never blocks when `nonblocking`.
pub fn flock(fd: &OwnedFd, exclusive: bool, nonblocking: bool) -> SysResult<()> {
    let mut op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    if nonblocking {
        op |= libc::LOCK_NB;
    }
    // SAFETY: flock takes a descriptor and integer flags.
    check_int(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// `fsetxattr(2)` with a small value.
pub fn fsetxattr(fd: &OwnedFd, name: &CStr, value: &[u8]) -> SysResult<()> {
    // SAFETY: name is NUL-terminated; value is a valid slice; both outlive the call.
    check_int(unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// `fgetxattr(2)`: whether the attribute exists.
pub fn fhasxattr(fd: &OwnedFd, name: &CStr) -> bool {
    let mut buf = [0u8; 8];
    // SAFETY: name is NUL-terminated; buf is a valid writable buffer of its length.
    unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) >= 0 }
}

/// `rmdir(2)`.
pub fn rmdir(path: &Path) -> SysResult<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::rmdir(c.as_ptr()) }).map(drop)
}

/// Closes `fds` in a short-lived child instead of here: the last close of a removed file or
/// directory frees its inode, which took 0.07–1 ms each on the test machine's ext4 (`perf
/// trace`), and none of that has to happen before this process goes on. The child
/// holds only `fds` (every other descriptor is closed first, so no pipe or socket outlives us
/// through it), waits until this process has closed its own copies (so that the child's close
/// is the last one), closes them and exits. It is not waited for: the caller exits soon after
/// and the child is reaped by whoever adopts it. When the fork fails, `fds` are closed here.
pub fn close_in_child(fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    let Ok((go_r, go_w)) = pipe() else { return };
    let mut keep: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).chain([go_r.as_raw_fd()]).collect();
    keep.sort_unstable();
    // SAFETY: the child calls only async-signal-safe functions (close_range, read, _exit), on
    // memory allocated before the fork that nothing frees in between, and never returns: fork is
    // sound even if other threads exist.
    match unsafe { libc::fork() } {
        0 => {
            let mut next: u32 = 0;
            for &fd in &keep {
                let fd = fd as u32;
                if fd > next {
                    // SAFETY: close_range takes integers only.
                    unsafe { libc::syscall(libc::SYS_close_range, next, fd - 1, 0u32) };
                }
                next = fd + 1;
            }
            // SAFETY: as above.
            unsafe { libc::syscall(libc::SYS_close_range, next, u32::MAX, 0u32) };
            // EOF (the parent closed its end) or an error both mean go; `read` retries EINTR.
            let _ = read(go_r.as_raw_fd(), &mut [0u8]);
            // SAFETY: closes every descriptor left (the ones to close, and the pipe), then exits
            // without running anything of the parent's.
            unsafe {
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                libc::_exit(0)
            }
        }
        _ => {
            // Parent (or a failed fork: then these closes are the last ones, as without a child).
            drop(fds);
            drop(go_r);
            drop(go_w);
        }
    }
}

/// `prctl(PR_SET_NAME)`: the process name shown in `ps` and `/proc/PID/comm`.
pub fn set_name(name: &CStr) {
    // SAFETY: `name` is NUL-terminated and outlives the call; the kernel copies at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

// ---------------------------------------------------------------------------------------------
// Terminals
// ---------------------------------------------------------------------------------------------

/// `TIOCGWINSZ`.
pub fn get_winsize(fd: RawFd) -> Option<WinSize> {
    // SAFETY: winsize is plain data; zeroed is valid and the ioctl overwrites it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: `ws` is a valid out-pointer for TIOCGWINSZ.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    ok.then_some(WinSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// `TIOCSWINSZ`.
pub fn set_winsize(fd: RawFd, size: WinSize) -> SysResult<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: `ws` is a valid winsize for TIOCSWINSZ.
    check_int(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// Opens a new pseudo-terminal master from `ptmx`, unlocked; returns it and its number.
pub fn open_pty_master(ptmx: &Path) -> SysResult<(OwnedFd, u32)> {
    let c = cstring(ptmx)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let fd = check_int(unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })
        .map(|fd| owned(fd as libc::c_long))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer, which outlives the call.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int through the pointer.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
    Ok((fd, n))
}

/// `setsid(2)`.
pub fn setsid() -> SysResult<()> {
    // SAFETY: setsid takes no arguments.
    check_int(unsafe { libc::setsid() }).map(drop)
}

/// `setpgid(2)`.
pub fn setpgid(pid: libc::pid_t, pgid: libc::pid_t) -> SysResult<()> {
    // SAFETY: setpgid takes integers only.
    check_int(unsafe { libc::setpgid(pid, pgid) }).map(drop)
}

/// `tcsetpgrp(3)`: makes `pgrp` the foreground process group of the terminal at `fd`.
pub fn tcsetpgrp(fd: RawFd, pgrp: libc::pid_t) -> SysResult<()> {
    // SAFETY: tcsetpgrp takes integers only.
    check_int(unsafe { libc::tcsetpgrp(fd, pgrp) }).map(drop)
}

/// Opens the slave of the pty whose master is `master` (`TIOCGPTPEER`: no path lookup, so it is
/// this pty's slave whatever is mounted on `/dev/pts`) and makes it the controlling terminal of
/// the calling session leader (`TIOCSCTTY`), close-on-exec.
pub fn open_controlling_pty_peer(master: &OwnedFd) -> SysResult<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new descriptor.
    let fd = check_int(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })
        .map(|fd| owned(fd as libc::c_long))?;
    // SAFETY: TIOCSCTTY takes an integer argument.
    check_int(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) })?;
    Ok(fd)
}

/// Saved terminal attributes; restored by [`restore_termios`].
pub struct SavedTermios(libc::termios);

impl PartialEq for SavedTermios {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        a.c_iflag == b.c_iflag
            && a.c_oflag == b.c_oflag
            && a.c_cflag == b.c_cflag
            && a.c_lflag == b.c_lflag
            && a.c_line == b.c_line
            && a.c_cc == b.c_cc
            && a.c_ispeed == b.c_ispeed
            && a.c_ospeed == b.c_ospeed
    }
}

/// The attributes of the terminal at `fd` (`tcgetattr`).
pub fn get_termios(fd: RawFd) -> SysResult<SavedTermios> {
    // SAFETY: termios is plain data that tcgetattr fills.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid out-pointer.
    check_int(unsafe { libc::tcgetattr(fd, &mut t) })?;
    Ok(SavedTermios(t))
}

/// Puts the terminal at `fd` in raw mode (like `cfmakeraw`), returning the previous settings.
pub fn make_raw(fd: RawFd) -> SysResult<SavedTermios> {
    let saved = get_termios(fd)?;
    let mut t = saved.0;
    // SAFETY: `t` is a valid termios obtained above.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: `t` is a valid termios.
    check_int(unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &t) })?;
    Ok(saved)
}

/// Restores attributes saved by [`make_raw`] or [`get_termios`].
pub fn restore_termios(fd: RawFd, saved: &SavedTermios) {
    // SAFETY: the termios was obtained from tcgetattr.
    unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &saved.0) };
}

/// Whether this process is in the foreground process group of the terminal at `fd`.
pub fn is_foreground(fd: RawFd) -> bool {
    // SAFETY: tcgetpgrp and getpgrp take integers only.
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: RawFd) -> SysResult<()> {
    // SAFETY: F_GETFL/F_SETFL take integers only.
    let flags = check_int(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// One `write(2)`; returns how much was written (`Ok(0)` on `EAGAIN`).
pub fn write_some(fd: RawFd, buf: &[u8]) -> SysResult<usize> {
    loop {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno(libc::EINTR) => continue,
            Errno(libc::EAGAIN) => return Ok(0),
            e => return Err(e),
        }
    }
}

/// Sends `data` with one descriptor attached (`SCM_RIGHTS`).
pub fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> SysResult<()> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points to `space` bytes, enough for one cmsg carrying one int; the
    // CMSG_* macros stay within it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` and everything it points to outlive the call.
    check(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } as libc::c_long).map(drop)
}

/// Receives one message into `buf`, with at most one attached descriptor.
pub fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> SysResult<(usize, Option<OwnedFd>)> {
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points to valid buffers that outlive the call; MSG_CMSG_CLOEXEC marks any
    // received descriptor close-on-exec.
    let n =
        check(unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) } as libc::c_long)?;
    let mut fd = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null() && (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
            let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
            fd = Some(OwnedFd::from_raw_fd(raw));
        }
    }
    Ok((n as usize, fd))
}

/// Whether every writer of the pipe `read_end` is gone (`POLLHUP` now, without waiting); a
/// failed poll counts as gone.
pub fn peer_closed(read_end: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd { fd: read_end.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    poll(&mut fds, 0).is_err() || fds[0].revents & libc::POLLHUP != 0
}

/// `poll(2)` over `fds`; `EINTR` counts as nothing ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> SysResult<()> {
    // SAFETY: `fds` is a valid array of `len` pollfd structures.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ret < 0 {
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(e);
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Spawning a child of a (possibly multi-threaded) parent
// ---------------------------------------------------------------------------------------------

/// Makes `fd` descriptor `target` (without close-on-exec) in the child `cmd` spawns.
pub fn pass_fd_on_spawn(cmd: &mut std::process::Command, fd: OwnedFd, target: RawFd) {
    use std::os::unix::process::CommandExt;
    let hook = move || {
        let raw = fd.as_raw_fd();
        // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
        // are allowed: dup2 and fcntl are, and nothing here allocates or takes a lock. `raw` is
        // open (owned by this closure, which the Command keeps alive until spawn returns).
        let r = unsafe {
            if raw == target {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            }
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook only calls async-signal-safe functions (see above), as `pre_exec`
    // requires of code that runs in the child of a possibly multi-threaded parent.
    unsafe { cmd.pre_exec(hook) };
}

/// Makes the child `cmd` spawns the leader of a new session whose controlling terminal is its
/// standard input (which must be a terminal).
pub fn controlling_terminal_on_spawn(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let hook = || {
        // SAFETY: runs between fork and exec; setsid and ioctl(TIOCSCTTY) are async-signal-safe
        // system calls on integers only.
        let r = unsafe {
            if libc::setsid() < 0 {
                -1
            } else {
                libc::ioctl(0, libc::TIOCSCTTY, 0)
            }
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook only makes async-signal-safe system calls (see above).
    unsafe { cmd.pre_exec(hook) };
}

/// Opens a terminal without making it the controlling terminal (`O_NOCTTY`), close-on-exec.
pub fn open_tty_noctty(path: &Path) -> SysResult<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })
        .map(|fd| owned(fd as libc::c_long))
}

/// Descriptors [`take_inherited_socket`] has handed out.
static TAKEN_FDS: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());

/// Takes ownership of descriptor `fd` (> 2), inherited at exec: it must be an `AF_UNIX` socket
/// whose peer is this process's parent, and it is handed out at most once per process.
pub fn take_inherited_socket(fd: RawFd) -> io::Result<OwnedFd> {
    let mut taken = TAKEN_FDS.lock().unwrap_or_else(|p| p.into_inner());
    if fd <= 2 || taken.contains(&fd) {
        return Err(io::Error::other(format!("descriptor {fd} is not an unclaimed inherited descriptor")));
    }
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are valid out-pointers of the sizes passed; a closed or non-socket
    // descriptor only makes the call fail.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, (&mut domain as *mut libc::c_int).cast(), &mut len)
    };
    if r < 0 || domain != libc::AF_UNIX {
        return Err(io::Error::other(format!("descriptor {fd} is not a unix socket")));
    }
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid out-pointers of the sizes passed.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len)
    };
    if r < 0 || cred.pid != getppid() {
        return Err(io::Error::other(format!("descriptor {fd} is not a socket shared with the parent process")));
    }
    set_cloexec(fd, true).map_err(|e| io::Error::from_raw_os_error(e.0))?;
    taken.push(fd);
    // SAFETY: the descriptor is open, and no other Rust value owns it: it is a unix socket whose
    // peer is our parent, which this process never creates itself (it was inherited at exec), and
    // the registry above hands each descriptor out once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a new file (`O_CREAT | O_EXCL`, never through a symlink), open for writing.
pub fn create_file_new(path: &Path, mode: u32) -> SysResult<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })
    .map(|fd| owned(fd as libc::c_long))
}

/// Opens an existing regular file read-only without following a symlink at its last component.
pub fn open_file_nofollow(path: &Path) -> SysResult<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    check_int(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })
        .map(|fd| owned(fd as libc::c_long))
}

/// `mkdirat(2)` of `name` in the directory (or detached mount) `dir`, then its mode set exactly
/// (`fchmodat`, so the umask does not apply); returns an `O_PATH` descriptor of it.
pub fn mkdir_in(dir: &OwnedFd, name: &str, mode: u32) -> SysResult<OwnedFd> {
    let c = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated name that outlives the call; `dir` is a valid descriptor.
    check_int(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o700) })?;
    // SAFETY: as above; fchmodat without AT_SYMLINK_NOFOLLOW on a directory we just created.
    check_int(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) })?;
    // SAFETY: as above.
    check_int(unsafe {
        libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
    })
    .map(|fd| owned(fd as libc::c_long))
}

/// Physical memory of the machine, bytes (`sysinfo(2)`).
pub fn total_memory() -> u64 {
    // SAFETY: sysinfo is plain data; zeroed is a valid value that sysinfo overwrites.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    (info.totalram as u64).saturating_mul(u64::from(info.mem_unit.max(1)))
}
