//! The one system call of this crate that `std` does not wrap. Every `unsafe` block of the crate
//! lives here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;

/// Starts the writeback of `file`'s dirty pages (`sync_file_range(2)` with
/// `SYNC_FILE_RANGE_WRITE` over the whole file) and returns without waiting for it. Unlike
/// `fdatasync` it neither waits for the device nor commits the file's metadata (its new size):
/// the file system's next journal commit does (every 5 s at most on ext4's defaults).
pub(crate) fn start_writeback(file: &File) -> io::Result<()> {
    // SAFETY: sync_file_range takes a descriptor and integers only; `file` keeps the descriptor
    // open for the duration of the call.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
