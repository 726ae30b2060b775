//! Every system call of the crate that needs `unsafe`: locked memory pages, raw `read(2)` and the
//! process-hardening `prctl`/`setrlimit` calls.
//!
//! What this module guarantees: a [`LockedRegion`] is a private anonymous mapping of its own (no other
//! allocation shares its pages, so `munlock` on drop never unlocks someone else's memory), locked into
//! RAM and excluded from core dumps before any secret byte is written into it, and zeroized before it
//! is unlocked and unmapped. What it trusts: the kernel's `mmap`/`mlock`/`madvise` semantics.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A page-aligned, mlocked, `MADV_DONTDUMP` anonymous mapping that zeroizes itself on drop.
pub(crate) struct LockedRegion {
    ptr: NonNull<u8>,
    /// Bytes in use (`<= cap`).
    len: usize,
    /// Mapped bytes, a whole number of pages (at least one).
    cap: usize,
}

// SAFETY: the region is owned exclusively by this value (a private mapping that no other value
// points into); shared access only reads through `&self`, so it may move and be shared across threads
// like a `Box<[u8]>`.
unsafe impl Send for LockedRegion {}
// SAFETY: see `Send`: `&LockedRegion` only gives out `&[u8]`; mutation needs `&mut self`.
unsafe impl Sync for LockedRegion {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions; a failure (-1) is handled below.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        4096
    } else {
        p as usize
    }
}

/// Why a locked region could not be set up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockStep {
    Mmap,
    Mlock,
    Madvise,
}

impl LockedRegion {
    /// Maps `len` bytes (rounded up to whole pages), locks them and marks them `MADV_DONTDUMP`, then
    /// copies `data` in. Fails closed: on any error nothing has been copied and the mapping is gone.
    pub(crate) fn new(data: &[u8]) -> Result<LockedRegion, (LockStep, std::io::Error)> {
        let page = page_size();
        let cap = data.len().max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping: no address hint, no file, no aliasing of any
        // existing Rust object; the result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err((LockStep::Mmap, std::io::Error::last_os_error()));
        }
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            return Err((LockStep::Mmap, std::io::Error::other("mmap returned null")));
        };
        // From here on `region` owns the mapping: its Drop unmaps it on every early return.
        let mut region = LockedRegion { ptr, len: 0, cap };
        // SAFETY: `ptr..ptr+cap` is exactly the mapping created above, owned by `region`.
        if unsafe { libc::mlock(p, cap) } != 0 {
            return Err((LockStep::Mlock, std::io::Error::last_os_error()));
        }
        // SAFETY: same range as above; MADV_DONTDUMP only changes core-dump eligibility.
        if unsafe { libc::madvise(p, cap, libc::MADV_DONTDUMP) } != 0 {
            return Err((LockStep::Madvise, std::io::Error::last_os_error()));
        }
        // Best effort: a child forked from this process (if any) gets zero pages instead of a copy of
        // the secret. Older kernels answer EINVAL; the region is still locked and undumpable.
        // SAFETY: same range; MADV_WIPEONFORK only affects the mapping in future children.
        let _ = unsafe { libc::madvise(p, cap, libc::MADV_WIPEONFORK) };
        // SAFETY: `data.len() <= cap` by construction, the mapping is writable and cannot overlap
        // `data` (it is brand new).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len()) };
        region.len = data.len();
        Ok(region)
    }

    /// The bytes in use.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `cap >= len` initialized (mmap zero-fills, then copied) bytes that
        // live as long as `self`; no `&mut` to them exists while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LockedRegion {
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        for i in 0..self.cap {
            // SAFETY: `i < cap`, inside the mapping we own; volatile so the wipe is not elided as a
            // dead store before munmap.
            unsafe { std::ptr::write_volatile(p.add(i), 0) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the mapping is ours and is no longer referenced (we are in Drop): zeroized above,
        // so unlocking it can no longer page a secret out. munlock on a never-locked range is harmless.
        unsafe {
            libc::munlock(p.cast(), self.cap);
            libc::munmap(p.cast(), self.cap);
        }
    }
}

/// One `read(2)` into `buf`, retried on EINTR. Returns the byte count (0 at EOF).
pub(crate) fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes for the duration of the call;
        // `fd` is borrowed, so it stays open during the call.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dumps, no ptrace attach by same-uid processes, `/proc/PID/*`
/// owned by root.
pub(crate) fn set_not_dumpable() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `prctl(PR_GET_DUMPABLE)`.
pub(crate) fn dumpable() -> std::io::Result<i32> {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments and returns the flag.
    let r = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// Sets both limits of `resource` to `value`.
pub(crate) fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: `lim` is a valid, initialized rlimit that outlives the call.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The soft limit of `resource`.
pub(crate) fn rlimit_cur(resource: libc::__rlimit_resource_t) -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Overwrites the value of environment variable `name` with zero bytes where it lives (so it no
/// longer shows in `/proc/PID/environ`), then removes the variable.
///
/// Must be called while the process is single-threaded (nothing else reads the environment).
pub(crate) fn scrub_env_var(name: &str) {
    let Ok(cname) = std::ffi::CString::new(name) else { return };
    // SAFETY: single-threaded by contract, so no other thread reads or changes the environment
    // while we look at it; getenv returns null or a pointer to the NUL-terminated value inside the
    // process's environment strings, which are writable memory owned by this process, and we write
    // only the `strlen` bytes before the terminator.
    unsafe {
        let value = libc::getenv(cname.as_ptr());
        if !value.is_null() {
            let len = libc::strlen(value);
            std::ptr::write_bytes(value, 0, len);
        }
    }
    std::env::remove_var(name);
}
