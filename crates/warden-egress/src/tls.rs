//! A bounded TLS ClientHello reader that extracts the SNI host name, reading the record layer the
//! way TLS servers do.
//!
//! What this module guarantees:
//! - [`scan_client_hello`] is a pure function over the bytes a client sent so far; it never reads
//!   past its input, refuses records longer than [`MAX_RECORD_LEN`] and handshakes longer than
//!   [`MAX_HELLO_LEN`], and allocates at most the reassembled handshake;
//! - a stream that starts with a TLS record of any content type (change_cipher_spec 20, alert 21,
//!   handshake 22, application_data 23, heartbeat 24) or with an SSLv2-format ClientHello is read as
//!   TLS: the answer is [`Scan::Hello`] only when handshake records, and nothing else, carry a
//!   well-formed ClientHello; every other shape is [`Scan::Malformed`], never [`Scan::NotTls`];
//! - the legacy record version is not looked at: Go's server accepts any version below `0x1000`
//!   on the first record (`02 01` included) and OpenSSL any `03 xx`, so a version can never turn a
//!   ClientHello into "not TLS";
//! - a ClientHello split across TCP reads or across several handshake records is reassembled (the
//!   caller appends and calls again);
//! - the SNI is strict where servers disagree: one `server_name` extension whose list holds exactly
//!   one entry, of type `host_name`, non-empty (Go takes the `host_name` entry of a longer list,
//!   OpenSSL the first entry); nothing may follow the extensions (Go and OpenSSL refuse that too).
//!
//! Why leading alert and change_cipher_spec records are refused rather than skipped: servers treat
//! them differently (Go drops up to 16 warning alerts before a ClientHello, OpenSSL counts them, a
//! CCS before the hello is an error for most), no real client sends them, and the only use of such
//! a record is to make a middlebox misread the stream. What the proxy forwards is therefore always
//! exactly "handshake records that form a ClientHello, then whatever follows".

/// The largest TLS plaintext record (RFC 8446 §5.1).
pub const MAX_RECORD_LEN: usize = 16 * 1024;
/// The largest ClientHello handshake message this reader reassembles (post-quantum key shares make
/// real ones about 1.8 KB; PSKs and padding add some).
pub const MAX_HELLO_LEN: usize = 32 * 1024;

/// What the first bytes of a tunnel say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Not enough bytes yet: read more and call again.
    NeedMore,
    /// The stream does not start like TLS (its first byte is no TLS content type and it is not an
    /// SSLv2-format ClientHello).
    NotTls,
    /// A complete ClientHello; the SNI host name if it has one (as sent, not normalized).
    Hello {
        /// The `host_name` entry of the server_name extension.
        sni: Option<String>,
    },
    /// TLS, but not a well-formed ClientHello in handshake records, or over a size limit.
    Malformed(&'static str),
}

/// Whether a stream whose first byte is `b` is read as TLS (see the module documentation).
pub fn starts_like_tls(b: u8) -> bool {
    (20..=24).contains(&b) || b & 0x80 != 0
}

/// Scans the bytes a client sent at the start of a tunnel. See [`Scan`].
pub fn scan_client_hello(buf: &[u8]) -> Scan {
    match buf.first() {
        None => return Scan::NeedMore,
        Some(20..=24) => {}
        // SSLv2 framing: a two-byte header with the high bit set, then message type 1 for a
        // ClientHello. OpenSSL still negotiates TLS from one; it has no extensions, so no SNI.
        Some(b) if b & 0x80 != 0 => {
            return match buf.get(2) {
                None => Scan::NeedMore,
                Some(1) => Scan::Malformed("SSLv2-format ClientHello (it cannot carry an SNI)"),
                Some(_) => Scan::NotTls,
            }
        }
        Some(_) => return Scan::NotTls,
    }
    // Reassemble the handshake message from consecutive handshake records.
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(hdr) = buf.get(pos..pos + 5) else {
            return Scan::NeedMore;
        };
        match hdr[0] {
            22 => {}
            20 => return Scan::Malformed("change_cipher_spec record before the ClientHello"),
            21 => return Scan::Malformed("alert record before the ClientHello"),
            23 => return Scan::Malformed("application data before the ClientHello"),
            24 => return Scan::Malformed("heartbeat record before the ClientHello"),
            _ => return Scan::Malformed("non-TLS record inside the ClientHello"),
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
        if hs.len() + body.len() > MAX_HELLO_LEN + 4 + MAX_RECORD_LEN {
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
    if !r.buf.is_empty() {
        return Err("bytes after the extensions");
    }
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
        let mut ext = Reader { buf: data };
        let mut list = Reader { buf: ext.vec16()? };
        if !ext.buf.is_empty() {
            return Err("bytes after the server_name list");
        }
        if list.u8()? != 0 {
            return Err("server_name entry that is not a host_name");
        }
        let name = list.vec16()?;
        if !list.buf.is_empty() {
            return Err("server_name lists more than one name");
        }
        if name.is_empty() {
            return Err("empty server name");
        }
        let name = std::str::from_utf8(name).map_err(|_| "server name is not UTF-8")?;
        sni = Some(name.to_owned());
    }
    Ok(sni)
}

/// Builds a minimal ClientHello (one record) with the given SNI, for tests and fuzz seeds.
#[doc(hidden)]
pub fn build_client_hello(sni: Option<&str>) -> Vec<u8> {
    build_client_hello_padded(sni, 0)
}

/// [`build_client_hello`] with a padding extension of `pad` bytes (a post-quantum key share makes a
/// real ClientHello about 1.8 KB), still in one record if it fits in 16 KiB.
#[doc(hidden)]
pub fn build_client_hello_padded(sni: Option<&str>, pad: usize) -> Vec<u8> {
    let be16 = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
    let mut exts = Vec::new();
    // supported_versions (TLS 1.3), to look like a real hello.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if let Some(name) = sni {
        let n = name.as_bytes();
        let entry_len = 3 + n.len();
        exts.extend_from_slice(&[0x00, 0x00]);
        exts.extend_from_slice(&be16(entry_len + 2));
        exts.extend_from_slice(&be16(entry_len));
        exts.push(0);
        exts.extend_from_slice(&be16(n.len()));
        exts.extend_from_slice(n);
    }
    if pad > 0 {
        exts.extend_from_slice(&[0x00, 0x15]);
        exts.extend_from_slice(&be16(pad));
        exts.resize(exts.len() + pad, 0);
    }
    split_into_records(&client_hello_message(&exts), MAX_RECORD_LEN, [0x03, 0x01])
}

/// A ClientHello handshake message (type, length, body) with the given extensions block contents;
/// for tests and fuzzing.
#[doc(hidden)]
pub fn client_hello_message(exts: &[u8]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]);
    body.push(32);
    body.extend_from_slice(&[0x17; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&u16::try_from(exts.len()).unwrap_or(u16::MAX).to_be_bytes());
    body.extend_from_slice(exts);
    let mut hs = vec![0x01];
    let bl = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
    hs.extend_from_slice(&bl[1..]);
    hs.extend_from_slice(&body);
    hs
}

/// Frames handshake bytes `hs` into handshake records of at most `chunk` bytes each (at least 1),
/// with the legacy record version `version`; for tests and fuzzing.
#[doc(hidden)]
pub fn split_into_records(hs: &[u8], chunk: usize, version: [u8; 2]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hs.len() + hs.len() / chunk.max(1) * 5 + 5);
    for part in hs.chunks(chunk.clamp(1, MAX_RECORD_LEN)) {
        out.extend_from_slice(&[0x16, version[0], version[1]]);
        out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-frames a single-record hello into records of at most `chunk` handshake bytes each.
    fn split_records(hello: &[u8], chunk: usize) -> Vec<u8> {
        split_into_records(&hello[5..], chunk, [0x03, 0x01])
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
        assert_eq!(scan_client_hello(&[0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f]), Scan::NotTls, "postgres");
        assert_eq!(scan_client_hello(&[0x19, 0x03, 0x03, 0, 1, 0]), Scan::NotTls);
        assert_eq!(scan_client_hello(&[0x80, 0x2e, 0x03]), Scan::NotTls, "SSLv2 header, not a hello");
        assert_eq!(scan_client_hello(b""), Scan::NeedMore);
        assert_eq!(scan_client_hello(&[0x16]), Scan::NeedMore);
        assert_eq!(scan_client_hello(&[0x80, 0x2e]), Scan::NeedMore);
    }

    #[test]
    fn any_legacy_record_version_is_read() {
        let hs = client_hello_message(&sni_ext(&[(0, b"odd.example")]));
        for version in [[0x02, 0x01], [0x00, 0x00], [0x03, 0x04], [0x0f, 0xff], [0xfe, 0xfd], [0xff, 0xff]] {
            for chunk in [1, 5, 4096] {
                let r = split_into_records(&hs, chunk, version);
                assert_eq!(scan_client_hello(&r), Scan::Hello { sni: Some("odd.example".into()) }, "{version:?}");
            }
        }
    }

    #[test]
    fn leading_or_interleaved_non_handshake_records_are_malformed() {
        let hello = build_client_hello(Some("evil.test"));
        for (prefix, why) in [
            (&[0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00][..], "alert record before the ClientHello"),
            (&[0x15, 0x02, 0x01, 0x00, 0x02, 0x01, 0x5a][..], "alert record before the ClientHello"),
            (&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01][..], "change_cipher_spec record before the ClientHello"),
            (&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00][..], "application data before the ClientHello"),
            (&[0x18, 0x03, 0x03, 0x00, 0x01, 0x00][..], "heartbeat record before the ClientHello"),
        ] {
            let mut b = prefix.to_vec();
            assert_eq!(scan_client_hello(&b[..1]), Scan::NeedMore);
            b.extend_from_slice(&hello);
            assert_eq!(scan_client_hello(&b), Scan::Malformed(why), "{prefix:?}");
            // Even a first byte alone is TLS, never "not TLS".
            assert!(starts_like_tls(prefix[0]));
        }
        // An alert between two fragments of the hello.
        let r = split_records(&hello, 20);
        let mut b = r[..25].to_vec();
        b.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00]);
        b.extend_from_slice(&r[25..]);
        assert_eq!(scan_client_hello(&b), Scan::Malformed("alert record before the ClientHello"));
        // SSLv2-format ClientHello.
        assert!(matches!(scan_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]), Scan::Malformed(_)));
    }

    /// The handshake bytes of well-formed handshake records.
    fn unframe(mut records: &[u8]) -> Vec<u8> {
        let mut hs = Vec::new();
        while records.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
            hs.extend_from_slice(&records[5..5 + len]);
            records = &records[5 + len..];
        }
        hs
    }

    #[test]
    fn large_hello_across_records_and_reads() {
        // About a post-quantum ClientHello's size, and one near the limit that needs two records.
        for (pad, chunk) in [(1800, 700), (1800, MAX_RECORD_LEN), (30_000, MAX_RECORD_LEN), (30_000, 999)] {
            let hs = unframe(&build_client_hello_padded(Some("pq.example"), pad));
            let framed = split_into_records(&hs, chunk, [0x03, 0x03]);
            assert_eq!(scan_client_hello(&framed), Scan::Hello { sni: Some("pq.example".into()) }, "pad {pad}");
            for cut in [1, 5, 6, chunk.min(framed.len() - 1), framed.len() - 1] {
                assert_eq!(scan_client_hello(&framed[..cut]), Scan::NeedMore, "pad {pad} cut {cut}");
            }
        }
        let over = build_client_hello_padded(Some("pq.example"), MAX_HELLO_LEN);
        assert_eq!(scan_client_hello(&over), Scan::Malformed("ClientHello longer than 32 KiB"));
    }

    /// A server_name extension with the given (type, name) entries, after supported_versions.
    fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, name) in entries {
            list.push(*ty);
            list.extend_from_slice(&u16::try_from(name.len()).expect("small").to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut ext = vec![0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04, 0, 0];
        ext.extend_from_slice(&u16::try_from(list.len() + 2).expect("small").to_be_bytes());
        ext.extend_from_slice(&u16::try_from(list.len()).expect("small").to_be_bytes());
        ext.extend_from_slice(&list);
        ext
    }

    fn framed(exts: &[u8]) -> Vec<u8> {
        split_into_records(&client_hello_message(exts), MAX_RECORD_LEN, [0x03, 0x01])
    }

    #[test]
    fn server_name_must_be_one_host_name() {
        let scan = |entries: &[(u8, &[u8])]| scan_client_hello(&framed(&sni_ext(entries)));
        assert_eq!(scan(&[(0, b"ok.example")]), Scan::Hello { sni: Some("ok.example".into()) });
        assert_eq!(
            scan(&[(0, b"ok.example"), (0, b"evil.test")]),
            Scan::Malformed("server_name lists more than one name")
        );
        assert_eq!(
            scan(&[(0, b"ok.example"), (1, b"evil.test")]),
            Scan::Malformed("server_name lists more than one name")
        );
        assert_eq!(
            scan(&[(1, b"evil.test"), (0, b"ok.example")]),
            Scan::Malformed("server_name entry that is not a host_name")
        );
        assert_eq!(scan(&[(0, b"")]), Scan::Malformed("empty server name"));
        assert_eq!(scan(&[(0, b"\xff.example")]), Scan::Malformed("server name is not UTF-8"));
        let twice = [sni_ext(&[(0, b"ok.example")]), sni_ext(&[(0, b"evil.test")])[7..].to_vec()].concat();
        assert_eq!(scan_client_hello(&framed(&twice)), Scan::Malformed("two server_name extensions"));
        // Bytes after the extensions block, inside the handshake message.
        let mut hs = client_hello_message(&sni_ext(&[(0, b"ok.example")]));
        hs.extend_from_slice(&[0, 0, 0, 9]);
        hs[3] += 4;
        let r = split_into_records(&hs, MAX_RECORD_LEN, [0x03, 0x01]);
        assert_eq!(scan_client_hello(&r), Scan::Malformed("bytes after the extensions"));
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
        // Truncated body: declared message length larger than its content, completed by another record type.
        let mut h = build_client_hello(Some("a.example"));
        h[4] -= 1; // record one byte short of the handshake message
        h.truncate(h.len() - 1);
        h.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert!(matches!(scan_client_hello(&h), Scan::Malformed(_)));
    }
}
