//! Zero-copy tunnels: `splice(2)` from one TCP socket into a pipe and from the pipe into the other
//! socket, so tunneled bytes never enter user space (a copying proxy moves every byte twice more
//! than the client and server do, which halves loopback throughput).
//!
//! Once a tunnel's first flight is judged, each direction runs on a thread of its own with both
//! sockets in blocking mode: a thread blocked in `splice` is woken by the kernel straight from the
//! socket's wait queue, where the reactor path costs an `epoll_wait`, a readiness hand-off to a
//! runtime worker and a `splice` that ends in `EAGAIN` for every wake-up (a TLS upstream writes one
//! 16 KiB record per write, so a tunnel wakes tens of thousands of times per GiB). The threads are
//! bounded by `Limits::max_connections` (two per tunnel, small stacks) and never touch the runtime.
//!
//! Both directions of a tunnel share one idle clock: a tunnel ends when neither direction moved a
//! byte for the idle timeout (each blocking `splice` returns after at most that long, through
//! `SO_RCVTIMEO` / `SO_SNDTIMEO`, and the thread checks the shared clock). A direction that fails
//! shuts both sockets down, which ends the other direction too; so does dropping the tunnel.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::net::TcpStream;

/// Bytes moved per `splice` call (and the pipe's capacity).
const CHUNK: usize = 1 << 20;

/// The stack of a tunnel thread: it only loops over two `splice` calls.
const THREAD_STACK: usize = 64 * 1024;

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

    /// Whether neither direction moved a byte for the idle timeout.
    fn expired(&self) -> bool {
        let since = (self.start.elapsed().as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed));
        since >= self.idle.as_millis() as u64
    }

    /// Waits for `ready` unless the whole tunnel has been idle for the timeout.
    async fn wait<F: std::future::Future<Output = io::Result<()>>>(
        &self,
        mut ready: impl FnMut() -> F,
    ) -> io::Result<()> {
        loop {
            match tokio::time::timeout(self.idle, ready()).await {
                Ok(r) => return r,
                Err(_) if self.expired() => return Err(idle_error()),
                Err(_) => {}
            }
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "tunnel idle")
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Shuts both sockets of a tunnel down when dropped, which ends both of its threads (a blocked
/// `splice` returns at once); the sockets themselves close when the threads drop their handles.
struct ShutdownOnDrop([std::net::TcpStream; 2]);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Moves bytes between `client` and `upstream`, both ways, until each direction has reached EOF
/// (passed on as a half-close), one of them fails, or the tunnel was idle for the clock's timeout.
pub(crate) async fn tunnel(client: TcpStream, upstream: TcpStream, clock: IdleClock) -> io::Result<()> {
    let client = client.into_std()?;
    let upstream = upstream.into_std()?;
    for s in [&client, &upstream] {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(clock.idle))?;
        s.set_write_timeout(Some(clock.idle))?;
    }
    let _guard = ShutdownOnDrop([client.try_clone()?, upstream.try_clone()?]);
    let clock = Arc::new(clock);
    let down = spawn_pump(upstream.try_clone()?, client.try_clone()?, clock.clone())?;
    let up = spawn_pump(client, upstream, clock)?;
    let gone = || io::Error::other("tunnel thread ended without a result");
    let (down, up) = tokio::join!(down, up);
    down.map_err(|_| gone())??;
    up.map_err(|_| gone())??;
    Ok(())
}

/// Runs [`pump`] on a new thread; a failure shuts both sockets down (ending the other direction).
fn spawn_pump(
    from: std::net::TcpStream,
    to: std::net::TcpStream,
    clock: Arc<IdleClock>,
) -> io::Result<tokio::sync::oneshot::Receiver<io::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("warden-tunnel".to_owned()).stack_size(THREAD_STACK).spawn(move || {
        let r = pump(&from, &to, &clock);
        if r.is_err() {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
        let _ = tx.send(r);
    })?;
    Ok(rx)
}

/// Moves bytes from `from` to `to` (both blocking, with the idle timeout as their socket
/// timeouts) until `from` reaches EOF, then shuts `to` down for writing.
fn pump(from: &std::net::TcpStream, to: &std::net::TcpStream, clock: &IdleClock) -> io::Result<()> {
    let (pipe_r, pipe_w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    // A larger pipe means fewer calls; the default (64 KiB) is fine if the kernel refuses.
    let _ = nix::fcntl::fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    // The pipe is empty before every read and holds only what was read, so no call blocks on it.
    let flags = SpliceFFlags::SPLICE_F_MOVE;
    // A timed-out call (EAGAIN, after the idle timeout) ends the tunnel only if the other direction
    // was idle as well.
    let retry = |e: nix::Error| match e {
        nix::Error::EINTR => Ok(()),
        nix::Error::EAGAIN if !clock.expired() => Ok(()),
        nix::Error::EAGAIN => Err(idle_error()),
        e => Err(nix_err(e)),
    };
    loop {
        let n = match splice(from.as_fd(), None, pipe_w.as_fd(), None, CHUNK, flags) {
            Ok(n) => n,
            Err(e) => {
                retry(e)?;
                continue;
            }
        };
        if n == 0 {
            return to.shutdown(Shutdown::Write);
        }
        let mut left = n;
        while left > 0 {
            match splice(pipe_r.as_fd(), None, to.as_fd(), None, left, flags) {
                Ok(m) => left -= m,
                Err(e) => retry(e)?,
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
