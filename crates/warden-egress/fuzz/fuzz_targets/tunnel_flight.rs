//! A tunnel's first flight, judged for the host `allowed.test`: raw input, and the input shaped
//! into the TLS forms servers accept (any legacy record version, leading alert and
//! change_cipher_spec records, a ClientHello in records of any size, SNI lists of one or two
//! entries), optionally with one byte flipped.
//!
//! Checked on every input: the verdict never changes once given (a longer flight keeps it), and
//! when it passes a flight as TLS, two models of real servers — Go's record layer and SNI parser
//! (skips warning alerts, any version below 0x1000, the host_name entry of a list) and OpenSSL's
//! (the first entry of the list) — see that same name or refuse the handshake; never another name
//! and never none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_egress::rules::Host;
use warden_egress::tls::{client_hello_message, split_into_records};
use warden_egress::tunnel::{judge, Judgement};

const HOST: &str = "allowed.test";
const NAMES: [&[u8]; 6] =
    [b"allowed.test", b"ALLOWED.test.", b"evil.test", b"allowed.test.evil.test", b"allowed.test..", b""];

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(flight) = shaped(data) {
        check(&flight);
    }
});

fn check(flight: &[u8]) {
    let host = Host::Name(HOST.to_owned());
    let verdict = judge(flight, &host);
    for cut in [1, flight.len() / 3, flight.len() / 2, flight.len().saturating_sub(1)] {
        if cut == 0 || cut >= flight.len() {
            continue;
        }
        let early = judge(&flight[..cut], &host);
        if early != Judgement::NeedMore {
            assert_eq!(early, verdict, "the verdict changed between {cut} and {} bytes", flight.len());
        }
    }
    if verdict == Judgement::Tls {
        for (model, sni) in [("go", go_sni(flight)), ("openssl", openssl_sni(flight))] {
            match sni {
                Err(()) => {}
                Ok(Some(name)) => {
                    let name = name.strip_suffix(b".").unwrap_or(&name);
                    assert!(name.eq_ignore_ascii_case(HOST.as_bytes()), "{model} server sees {name:?}");
                }
                Ok(None) => panic!("{model} server sees no SNI in a flight judged TLS"),
            }
        }
    }
}

/// Builds a TLS-shaped flight from the input: 4 control bytes, then the name's bytes.
fn shaped(data: &[u8]) -> Option<Vec<u8>> {
    let (ctl, rest) = (data.get(..4)?, data.get(4..)?);
    let name: &[u8] = match usize::from(ctl[0] & 0x07) {
        i if i < NAMES.len() => NAMES[i],
        _ => &rest[..rest.len().min(64)],
    };
    // The server_name list: the name, optionally with a second entry (type 0 or 1) before or after.
    let mut entries: Vec<(u8, &[u8])> = vec![(0, name)];
    match ctl[0] >> 3 & 0x03 {
        1 => entries.push((0, b"evil.test")),
        2 => entries.insert(0, (1, b"evil.test")),
        3 => entries.push((1, b"evil.test")),
        _ => {}
    }
    let mut list = Vec::new();
    for (ty, n) in &entries {
        list.push(*ty);
        list.extend_from_slice(&u16::try_from(n.len()).ok()?.to_be_bytes());
        list.extend_from_slice(n);
    }
    let mut exts = vec![0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04];
    if ctl[0] & 0x20 == 0 {
        exts.extend_from_slice(&[0, 0]);
        exts.extend_from_slice(&u16::try_from(list.len() + 2).ok()?.to_be_bytes());
        exts.extend_from_slice(&u16::try_from(list.len()).ok()?.to_be_bytes());
        exts.extend_from_slice(&list);
    }
    let hs = client_hello_message(&exts);
    let mut flight = match ctl[0] >> 6 {
        1 => vec![0x15, ctl[1], ctl[2], 0x00, 0x02, 0x01, 0x00], // warning alert
        2 => vec![0x15, ctl[1], ctl[2], 0x00, 0x02, 0x02, 0x28], // fatal alert
        3 => vec![0x14, ctl[1], ctl[2], 0x00, 0x01, 0x01],       // change_cipher_spec
        _ => Vec::new(),
    };
    let chunk = 1 + usize::from(ctl[3]) * 7;
    flight.extend_from_slice(&split_into_records(&hs, chunk, [ctl[1], ctl[2]]));
    // One flipped byte, when the name came from the dictionary and input is left over.
    if usize::from(ctl[0] & 0x07) < NAMES.len() && rest.len() >= 3 {
        let at = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % flight.len();
        flight[at] ^= rest[2];
    }
    Some(flight)
}

/// The SNI a Go (crypto/tls) server reads, or `Err` where it refuses the handshake.
fn go_sni(buf: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut hs = Vec::new();
    let (mut pos, mut useless) = (0, 0);
    loop {
        let hdr = buf.get(pos..pos + 5).ok_or(())?;
        let (typ, vers, len) =
            (hdr[0], u16::from_be_bytes([hdr[1], hdr[2]]), usize::from(u16::from_be_bytes([hdr[3], hdr[4]])));
        // Before the version is negotiated: only alerts and handshakes, versions below 0x1000.
        if (typ != 21 && typ != 22) || vers >= 0x1000 || len > 16384 + 2048 {
            return Err(());
        }
        let body = buf.get(pos + 5..pos + 5 + len).ok_or(())?;
        pos += 5 + len;
        if typ == 21 {
            // Warning alerts (not close_notify) are dropped, up to 16 useless records.
            if body.len() != 2 || body[0] != 1 || body[1] == 0 {
                return Err(());
            }
            useless += 1;
            if useless > 16 {
                return Err(());
            }
            continue;
        }
        if body.is_empty() {
            return Err(());
        }
        hs.extend_from_slice(body);
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Err(());
            }
            let n = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if hs.len() >= 4 + n {
                let names = server_names(&hs[4..4 + n])?;
                let mut sni = None;
                for (ty, name) in names {
                    if name.is_empty() {
                        return Err(());
                    }
                    if ty != 0 {
                        continue;
                    }
                    if sni.is_some() || name.ends_with(b".") {
                        return Err(());
                    }
                    sni = Some(name);
                }
                return Ok(sni);
            }
        }
    }
}

/// The SNI an OpenSSL server reads: records of version 3.x only, the first entry of the list.
fn openssl_sni(buf: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut hs = Vec::new();
    let mut pos = 0;
    loop {
        let hdr = buf.get(pos..pos + 5).ok_or(())?;
        let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if hdr[0] != 22 || hdr[1] != 3 || len == 0 || len > 16384 {
            return Err(());
        }
        hs.extend_from_slice(buf.get(pos + 5..pos + 5 + len).ok_or(())?);
        pos += 5 + len;
        if hs.len() >= 4 {
            let n = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if hs.len() >= 4 + n {
                if hs[0] != 1 {
                    return Err(());
                }
                return match server_names(&hs[4..4 + n])?.first() {
                    None => Ok(None),
                    Some((0, name)) if !name.is_empty() => Ok(Some(name.clone())),
                    Some(_) => Err(()),
                };
            }
        }
    }
}

/// The (type, name) entries of the server_name extension of a ClientHello body (none without one).
fn server_names(body: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, ()> {
    let mut r = body;
    let mut take = |n: usize| -> Result<&[u8], ()> {
        let (a, b) = (r.get(..n).ok_or(())?, r.get(n..).ok_or(())?);
        r = b;
        Ok(a)
    };
    take(34)?; // version, random
    let sid = usize::from(take(1)?[0]);
    take(sid)?;
    let cs = take(2)?;
    take(usize::from(u16::from_be_bytes([cs[0], cs[1]])))?;
    let cm = usize::from(take(1)?[0]);
    take(cm)?;
    let Ok(el) = take(2) else { return Ok(Vec::new()) };
    let mut exts = take(usize::from(u16::from_be_bytes([el[0], el[1]])))?;
    let mut out = Vec::new();
    while exts.len() >= 4 {
        let ty = u16::from_be_bytes([exts[0], exts[1]]);
        let len = usize::from(u16::from_be_bytes([exts[2], exts[3]]));
        let data = exts.get(4..4 + len).ok_or(())?;
        exts = &exts[4 + len..];
        if ty != 0 {
            continue;
        }
        let list_len = usize::from(u16::from_be_bytes([*data.first().ok_or(())?, *data.get(1).ok_or(())?]));
        let mut list = data.get(2..2 + list_len).ok_or(())?;
        while !list.is_empty() {
            let ty = list[0];
            let n = usize::from(u16::from_be_bytes([*list.get(1).ok_or(())?, *list.get(2).ok_or(())?]));
            out.push((ty, list.get(3..3 + n).ok_or(())?.to_vec()));
            list = &list[3 + n..];
        }
    }
    Ok(out)
}
