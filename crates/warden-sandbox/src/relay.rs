//! The parent's side of the sandbox's terminal: copies bytes between warden's own terminal and
//! the master of the pty that PID 1 opened inside the sandbox.
//!
//! Guarantees: warden's terminal is put in raw mode only while warden is in its foreground
//! process group, and warden reads keystrokes only then (a background warden leaves them to the
//! foreground job); keystrokes such as Ctrl-C reach the sandbox's line discipline, which signals
//! the sandbox's foreground job; window size changes follow; output is drained before warden
//! reports the exit status. When the command stops (Ctrl-Z), warden gives the terminal back and
//! stops as a job; `fg` resumes both. The terminal's modes as warden found them (at the start,
//! and whenever warden takes the terminal back in the foreground) are restored on every way out
//! of the relay (drop included) when warden is in the foreground then and they differ: raw mode,
//! or anything else that changed them, never outlives warden. In the background the terminal
//! belongs to the foreground job, whose modes warden leaves alone.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::plan::TtyPlan;
use crate::sys::{self, SavedTermios};

/// Largest chunk copied at once.
const CHUNK: usize = 16 << 10;
/// Most keyboard input held while the sandbox does not read.
const MAX_PENDING: usize = 64 << 10;

/// Which side of the relay has something to do (see [`Relay::poll_fds`]).
pub struct Relay {
    master: OwnedFd,
    /// Warden's standard input, when it is a terminal; read only while `saved` is held.
    host_in: Option<RawFd>,
    host_out: RawFd,
    /// The modes before raw mode, while warden holds its terminal in raw mode (foreground).
    saved: Option<SavedTermios>,
    /// A terminal descriptor of warden's and its modes as warden found them.
    found: Option<(RawFd, SavedTermios)>,
    pending: Vec<u8>,
    master_open: bool,
}

impl Relay {
    /// Starts relaying for `master`, per the plan's idea of which descriptors are terminals.
    pub fn new(master: OwnedFd, tty: &TtyPlan) -> Self {
        let _ = sys::set_nonblocking(master.as_raw_fd());
        let term = [(0, tty.stdin), (1, tty.stdout), (2, tty.stderr)].into_iter().find(|&(_, on)| on).map(|(fd, _)| fd);
        let found = term.and_then(|fd| sys::get_termios(fd).ok().map(|t| (fd, t)));
        let foreground = tty.stdin && sys::is_foreground(0);
        let saved = if foreground { sys::make_raw(0).ok() } else { None };
        let host_out = if tty.stdout { 1 } else { 2 };
        let host_in = tty.stdin.then_some(0);
        Relay { master, host_in, host_out, saved, found, pending: Vec::new(), master_open: true }
    }

    /// The descriptors to poll now.
    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        let mut v = Vec::new();
        if self.master_open {
            let mut events = libc::POLLIN;
            if !self.pending.is_empty() {
                events |= libc::POLLOUT;
            }
            v.push(libc::pollfd { fd: self.master.as_raw_fd(), events, revents: 0 });
        }
        if let Some(fd) = self.host_in.filter(|_| self.saved.is_some()) {
            if self.pending.len() < MAX_PENDING {
                v.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            }
        }
        v
    }

    /// Handles what `poll` reported for the descriptors of [`Relay::poll_fds`].
    pub fn handle(&mut self, ready: &[libc::pollfd]) {
        for p in ready {
            if p.revents == 0 {
                continue;
            }
            if p.fd == self.master.as_raw_fd() {
                if p.revents & libc::POLLOUT != 0 {
                    self.flush_input();
                }
                if p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.copy_output();
                }
            } else if Some(p.fd) == self.host_in {
                let mut buf = [0u8; CHUNK];
                match sys::read(p.fd, &mut buf) {
                    Ok(0) | Err(_) => self.host_in = None,
                    Ok(n) => {
                        self.pending.extend_from_slice(&buf[..n]);
                        self.flush_input();
                    }
                }
            }
        }
    }

    fn flush_input(&mut self) {
        while !self.pending.is_empty() {
            match sys::write_some(self.master.as_raw_fd(), &self.pending) {
                Ok(0) => return,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(_) => {
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// Copies what the sandbox wrote; EOF/EIO (every slave closed) ends the output side.
    fn copy_output(&mut self) {
        let mut buf = [0u8; CHUNK];
        loop {
            match sys::read(self.master.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.master_open = false;
                    return;
                }
                Ok(n) => {
                    if sys::write_all(self.host_out, &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(sys::Errno(libc::EAGAIN)) => return,
                Err(_) => {
                    self.master_open = false;
                    return;
                }
            }
        }
    }

    /// Gives warden's terminal back in the modes warden found it in, before warden stops (job
    /// control). `false` when warden did not hold the terminal in raw mode (not in the
    /// foreground).
    pub fn suspend(&mut self) -> bool {
        let held = self.saved.take().map(|saved| sys::restore_termios(0, &saved)).is_some();
        self.restore_found();
        held
    }

    /// After warden was continued: in the foreground again (not after `bg`), the terminal's
    /// modes as they are now are the ones to give back, and raw mode again; and the window size,
    /// which may have changed meanwhile.
    pub fn resume(&mut self) {
        if let Some((fd, found)) = self.found.as_mut() {
            if self.saved.is_none() && sys::is_foreground(*fd) {
                if let Ok(now) = sys::get_termios(*fd) {
                    *found = now;
                }
            }
        }
        if self.host_in.is_some() && self.saved.is_none() && sys::is_foreground(0) {
            self.saved = sys::make_raw(0).ok();
        }
        self.resize();
    }

    /// Puts back the modes warden found, if they changed and warden is in the foreground.
    fn restore_found(&self) {
        if let Some((fd, found)) = &self.found {
            if sys::is_foreground(*fd) && sys::get_termios(*fd).is_ok_and(|now| now != *found) {
                sys::restore_termios(*fd, found);
            }
        }
    }

    /// Follows a window-size change of warden's terminal.
    pub fn resize(&self) {
        let host = if self.host_in.is_some() { 0 } else { self.host_out };
        if let Some(size) = sys::get_winsize(host) {
            let _ = sys::set_winsize(self.master.as_raw_fd(), size);
        }
    }

    /// Copies the output still buffered in the pty and restores warden's terminal.
    pub fn finish(&mut self) {
        if self.master_open {
            self.copy_output();
        }
        self.suspend();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.suspend();
    }
}
