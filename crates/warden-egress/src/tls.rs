//! A bounded TLS ClientHello reader that extracts the SNI host name.
//!
//! What this module guarantees: [`scan_client_hello`] is a pure function over the bytes a client sent
//! so far; it never reads past its input, never allocates more than the SNI name, and refuses records
//! longer than [`MAX_RECORD_LEN`] and handshakes longer than [`MAX_HELLO_LEN`]. A ClientHello split
//! across TCP reads or across several TLS records is reassembled (the caller appends and calls again).

/// The largest TLS plaintext record (RFC 8446 §5.1).
pub const MAX_RECORD_LEN: usize = 16 * 1024;
/// The largest ClientHello handshake message this reader reassembles.
pub const MAX_HELLO_LEN: usize = 32 * 1024;
/// The most bytes a caller needs to buffer before [`scan_client_hello`] gives a final answer.
pub const MAX_SCAN_BYTES: usize = MAX_HELLO_LEN + (MAX_HELLO_LEN / 1024 + 2) * 5;

/// What the first bytes of a tunnel say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Not enough bytes yet: read more and call again.
    NeedMore,
    /// The stream does not start with a TLS handshake record (not TLS, or not a ClientHello).
    NotTls,
    /// A complete ClientHello; the SNI host name if it has one (raw bytes as sent, not normalized).
    Hello {
        /// The `host_name` entry of the server_name extension.
        sni: Option<String>,
    },
    /// A TLS handshake record that is not a well-formed ClientHello, or is over a size limit.
    Malformed(&'static str),
}

/// Scans the bytes a client sent at the start of a tunnel. See [`Scan`].
pub fn scan_client_hello(buf: &[u8]) -> Scan {
    // Reassemble the handshake message from consecutive handshake records.
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(hdr) = buf.get(pos..pos + 5) else {
            return if pos == 0 && !buf.is_empty() && buf[0] != 0x16 { Scan::NotTls } else { Scan::NeedMore };
        };
        if hdr[0] != 0x16 {
            return if pos == 0 { Scan::NotTls } else { Scan::Malformed("non-handshake record inside a ClientHello") };
        }
        if hdr[1] != 0x03 {
            return if pos == 0 { Scan::NotTls } else { Scan::Malformed("bad record version") };
        }
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if len == 0 {
            return Scan::Malformed("empty handshake record");
        }
        if len > MAX_RECORD_LEN {
            return Scan::Malformed("record longer than 16 KiB");
        }
        let Some(body) = buf.get(pos + 5..pos + 5 + len) else {
            return Scan::NeedMore;
        };
        if hs.len() + body.len() > MAX_HELLO_LEN + 4 {
            return Scan::Malformed("ClientHello longer than 32 KiB");
        }
        hs.extend_from_slice(body);
        pos += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 0x01 {
                return Scan::Malformed("first handshake message is not a ClientHello");
            }
            let msg_len = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if msg_len > MAX_HELLO_LEN {
                return Scan::Malformed("ClientHello longer than 32 KiB");
            }
            if hs.len() >= 4 + msg_len {
                return match parse_hello_body(&hs[4..4 + msg_len]) {
                    Ok(sni) => Scan::Hello { sni },
                    Err(why) => Scan::Malformed(why),
                };
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("truncated ClientHello");
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse_hello_body(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.buf.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut exts = Reader { buf: r.vec16()? };
    let mut sni = None;
    let mut seen_sni = false;
    while !exts.buf.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if ty != 0 {
            continue;
        }
        if seen_sni {
            return Err("two server_name extensions");
        }
        seen_sni = true;
        let mut list = Reader { buf: Reader { buf: data }.vec16()? };
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type != 0 {
                continue;
            }
            if sni.is_some() {
                return Err("two host_name entries in server_name");
            }
            let name = std::str::from_utf8(name).map_err(|_| "server name is not UTF-8")?;
            sni = Some(name.to_owned());
        }
    }
    Ok(sni)
}

/// Builds a minimal ClientHello (one record) with the given SNI, for tests and fuzz seeds.
#[doc(hidden)]
pub fn build_client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut exts = Vec::new();
    // supported_versions (TLS 1.3), to look like a real hello.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if let Some(name) = sni {
        let n = name.as_bytes();
        let entry_len = 3 + n.len();
        exts.extend_from_slice(&[0x00, 0x00]);
        exts.extend_from_slice(&u16::try_from(entry_len + 2).unwrap_or(u16::MAX).to_be_bytes());
        exts.extend_from_slice(&u16::try_from(entry_len).unwrap_or(u16::MAX).to_be_bytes());
        exts.push(0);
        exts.extend_from_slice(&u16::try_from(n.len()).unwrap_or(u16::MAX).to_be_bytes());
        exts.extend_from_slice(n);
    }
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]);
    body.push(32);
    body.extend_from_slice(&[0x17; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&u16::try_from(exts.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![0x01];
    let bl = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
    hs.extend_from_slice(&bl[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap_or(u16::MAX).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-frames a single-record hello into records of at most `chunk` handshake bytes each.
    fn split_records(hello: &[u8], chunk: usize) -> Vec<u8> {
        let hs = &hello[5..];
        let mut out = Vec::new();
        for part in hs.chunks(chunk) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&u16::try_from(part.len()).expect("small").to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn sni_extracted() {
        let h = build_client_hello(Some("Example.COM"));
        assert_eq!(scan_client_hello(&h), Scan::Hello { sni: Some("Example.COM".into()) });
        assert_eq!(scan_client_hello(&build_client_hello(None)), Scan::Hello { sni: None });
    }

    #[test]
    fn split_across_reads_needs_more_until_complete() {
        let h = build_client_hello(Some("example.com"));
        for cut in 0..h.len() {
            assert_eq!(scan_client_hello(&h[..cut]), Scan::NeedMore, "cut at {cut}");
        }
        let mut with_tail = h.clone();
        with_tail.extend_from_slice(b"more application data");
        assert_eq!(scan_client_hello(&with_tail), Scan::Hello { sni: Some("example.com".into()) });
    }

    #[test]
    fn split_across_records() {
        let h = build_client_hello(Some("split.example"));
        for chunk in [1, 3, 7, 50] {
            let r = split_records(&h, chunk);
            assert_eq!(scan_client_hello(&r), Scan::Hello { sni: Some("split.example".into()) }, "chunk {chunk}");
            assert_eq!(scan_client_hello(&r[..r.len() - 1]), Scan::NeedMore, "chunk {chunk}");
        }
    }

    #[test]
    fn not_tls() {
        assert_eq!(scan_client_hello(b"GET / HTTP/1.1\r\n"), Scan::NotTls);
        assert_eq!(scan_client_hello(b"SSH-2.0-OpenSSH\r\n"), Scan::NotTls);
        assert_eq!(scan_client_hello(&[0x16, 0x02, 0, 0, 1, 1]), Scan::NotTls);
        assert_eq!(scan_client_hello(b""), Scan::NeedMore);
        assert_eq!(scan_client_hello(&[0x16]), Scan::NeedMore);
    }

    #[test]
    fn malformed_and_limits() {
        assert!(matches!(scan_client_hello(&[0x16, 0x03, 0x01, 0x40, 0x01]), Scan::Malformed(_)), "record > 16 KiB");
        assert!(matches!(scan_client_hello(&[0x16, 0x03, 0x01, 0, 0]), Scan::Malformed(_)));
        assert!(matches!(scan_client_hello(&[0x16, 0x03, 0x01, 0, 4, 2, 0, 0, 0]), Scan::Malformed(_)), "ServerHello");
        assert!(
            matches!(scan_client_hello(&[0x16, 0x03, 0x01, 0, 4, 1, 0x01, 0, 0]), Scan::Malformed(_)),
            "declared 64 KiB hello"
        );
        // Truncated body: declared message length larger than its content, completed by garbage record type.
        let mut h = build_client_hello(Some("a.example"));
        h[4] -= 1; // record one byte short of the handshake message
        h.truncate(h.len() - 1);
        h.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert!(matches!(scan_client_hello(&h), Scan::Malformed(_)));
        // Two host_name entries in one server_name extension.
        let entry = [&[0u8, 0, 9][..], b"b.example"].concat();
        let mut hello = build_client_hello(None);
        // Rebuild by hand: extensions = server_name with two entries.
        let list = [entry.clone(), entry].concat();
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&u16::try_from(list.len() + 2).expect("small").to_be_bytes());
        ext.extend_from_slice(&u16::try_from(list.len()).expect("small").to_be_bytes());
        ext.extend_from_slice(&list);
        // hello without SNI ends with the 7-byte supported_versions extension; append ours and fix lengths.
        hello.extend_from_slice(&ext);
        let add = ext.len();
        let bump = |h: &mut Vec<u8>, at: usize, width: usize| {
            let mut v = 0usize;
            for i in 0..width {
                v = v << 8 | usize::from(h[at + i]);
            }
            v += add;
            for i in (0..width).rev() {
                h[at + i] = (v & 0xff) as u8;
                v >>= 8;
            }
        };
        bump(&mut hello, 3, 2); // record length
        bump(&mut hello, 6, 3); // handshake length
        let ext_len_at = hello.len() - add - 7 - 2;
        bump(&mut hello, ext_len_at, 2); // extensions length
        assert_eq!(scan_client_hello(&hello), Scan::Malformed("two host_name entries in server_name"));
    }
}
