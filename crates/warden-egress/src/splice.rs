//! Zero-copy tunnels: `splice(2)` from one TCP socket into a pipe and from the pipe into the other
//! socket, so tunneled bytes never enter user space (a copying proxy moves every byte twice more
//! than the client and server do, which halves loopback throughput).
//!
//! Both directions of a tunnel share one idle clock: a tunnel ends when neither direction moved a
//! byte for the idle timeout.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per `splice` call (and the pipe's capacity).
const CHUNK: usize = 1 << 20;

/// The idle clock of one tunnel.
pub(crate) struct IdleClock {
    start: Instant,
    last_ms: AtomicU64,
    idle: Duration,
}

impl IdleClock {
    pub(crate) fn new(idle: Duration) -> Self {
        IdleClock { start: Instant::now(), last_ms: AtomicU64::new(0), idle }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Waits for `ready` unless the whole tunnel has been idle for the timeout.
    async fn wait<F: std::future::Future<Output = io::Result<()>>>(
        &self,
        mut ready: impl FnMut() -> F,
    ) -> io::Result<()> {
        loop {
            match tokio::time::timeout(self.idle, ready()).await {
                Ok(r) => return r,
                Err(_) => {
                    let since =
                        (self.start.elapsed().as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed));
                    if since >= self.idle.as_millis() as u64 {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "tunnel idle"));
                    }
                }
            }
        }
    }
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Moves bytes from `from` to `to` until `from` reaches EOF, then shuts `to` down for writing.
pub(crate) async fn pump(from: &TcpStream, to: &TcpStream, clock: &IdleClock) -> io::Result<()> {
    let (pipe_r, pipe_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(nix_err)?;
    // A larger pipe means fewer wake-ups; the default (64 KiB) is fine if the kernel refuses.
    let _ = nix::fcntl::fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let n = loop {
            clock.wait(|| from.readable()).await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), None, pipe_w.as_fd(), None, CHUNK, flags).map_err(nix_err)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return shutdown_write(to);
        }
        let mut left = n;
        while left > 0 {
            clock.wait(|| to.writable()).await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags).map_err(nix_err)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        clock.touch();
    }
}

/// Reads what is available from `s` into `buf` (at most up to `cap` bytes in all); `false` at EOF.
pub(crate) async fn read_more(s: &TcpStream, buf: &mut Vec<u8>, cap: usize, clock: &IdleClock) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let room = cap.saturating_sub(buf.len()).min(chunk.len());
    if room == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "message too long"));
    }
    loop {
        clock.wait(|| s.readable()).await?;
        match s.try_read(&mut chunk[..room]) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n > 0);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data` to `s`.
pub(crate) async fn write_all(s: &TcpStream, mut data: &[u8], clock: &IdleClock) -> io::Result<()> {
    while !data.is_empty() {
        clock.wait(|| s.writable()).await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Half-closes `s` for writing (the peer sees EOF).
pub(crate) fn shutdown_write(s: &TcpStream) -> io::Result<()> {
    nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Write).map_err(nix_err)
}
