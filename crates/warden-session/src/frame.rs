//! The frames of a spawned session's control channel: a 4-byte big-endian length, then that many
//! bytes (one JSON value, or the key).
//!
//! Parent to child: a [`Request::Start`] (the spec), the key frame when the start says one
//! follows, then any number of [`Request::Terminate`] / [`Request::Kill`]. Child to parent: one
//! [`crate::SessionEvent`] per frame. Guarantees: a frame longer than its cap is an error before
//! anything is allocated for it; reads are raw `read(2)` calls (no buffering that could hold a
//! copy of the key).

use std::io::Read;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::SessionSpec;

/// Largest frame either side accepts (a spec with a large environment fits many times over).
pub(crate) const MAX_FRAME: usize = 8 << 20;

/// What the parent asks of the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// The first frame: run this spec. With `key_follows`, the next frame is the key.
    Start {
        /// What to run.
        spec: Box<SessionSpec>,
        /// Whether a key frame follows.
        key_follows: bool,
    },
    /// Send `SIGTERM` to the command (through PID 1).
    Terminate,
    /// Kill the whole sandbox now.
    Kill,
}

/// The length header of a frame of `len` bytes.
pub(crate) fn header(len: usize) -> std::io::Result<[u8; 4]> {
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes exceeds the cap of {MAX_FRAME}")));
    }
    Ok((len as u32).to_be_bytes())
}

/// `value` as one frame.
pub(crate) fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut out = header(body.len())?.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

fn checked_len(h: [u8; 4], max: usize) -> std::io::Result<usize> {
    let len = u32::from_be_bytes(h) as usize;
    if len > max {
        return Err(std::io::Error::other(format!("a frame of {len} bytes exceeds the cap of {max}")));
    }
    Ok(len)
}

/// Reads a frame's length (blocking). `Ok(None)` at a clean end of stream.
pub(crate) fn read_len(r: &mut impl Read, max: usize) -> std::io::Result<Option<usize>> {
    let mut h = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    checked_len(h, max).map(Some)
}

/// Reads one frame (blocking). `Ok(None)` at a clean end of stream.
pub(crate) fn read_blocking(r: &mut impl Read, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let Some(len) = read_len(r, max)? else { return Ok(None) };
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Reads one frame. `Ok(None)` at a clean end of stream.
pub(crate) async fn read_async(r: &mut (impl AsyncRead + Unpin), max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut h = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut h[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = checked_len(h, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let f = encode(&Request::Terminate).expect("encode");
        assert_eq!(&f[..4], &((f.len() - 4) as u32).to_be_bytes());
        let mut r = &f[..];
        let body = read_blocking(&mut r, MAX_FRAME).expect("read").expect("a frame");
        assert!(matches!(serde_json::from_slice::<Request>(&body), Ok(Request::Terminate)));
        assert!(read_blocking(&mut r, MAX_FRAME).expect("eof").is_none(), "clean end of stream");
        let mut huge = &(u32::MAX.to_be_bytes())[..];
        assert!(read_blocking(&mut huge, MAX_FRAME).is_err(), "no allocation for a 4 GiB claim");
        let mut torn = &f[..2];
        assert!(read_blocking(&mut torn, MAX_FRAME).is_err(), "a torn header is an error, not an end");
        assert!(header(MAX_FRAME + 1).is_err());
    }

    #[tokio::test]
    async fn async_reads_match_blocking_ones() {
        let f = encode(&Request::Kill).expect("encode");
        let mut r = &f[..];
        let body = read_async(&mut r, MAX_FRAME).await.expect("read").expect("a frame");
        assert!(matches!(serde_json::from_slice::<Request>(&body), Ok(Request::Kill)));
        assert!(read_async(&mut r, MAX_FRAME).await.expect("eof").is_none());
    }
}
