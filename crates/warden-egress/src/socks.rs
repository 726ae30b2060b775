//! SOCKS5 (RFC 1928) message parsers: the method greeting and the request.
//!
//! What this module guarantees: the parsers are pure functions over the bytes received so far; they
//! return `Ok(None)` when more bytes are needed, never look past a message's declared length and never
//! accept more than [`MAX_REQUEST_LEN`] bytes for one message. Only the `CONNECT` command and the
//! "no authentication" method are served by the proxy; the parsers report the others so that the
//! proxy can answer them properly.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest SOCKS5 request: 4 header bytes, a 1-byte length, 255 name bytes and a 2-byte port.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// The longest method greeting: version, count and 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;

/// The `CONNECT` command.
pub const CMD_CONNECT: u8 = 0x01;

/// Reply codes (RFC 1928 §6).
pub mod reply {
    /// Succeeded.
    pub const SUCCEEDED: u8 = 0x00;
    /// General SOCKS server failure (also: too many connections).
    pub const GENERAL_FAILURE: u8 = 0x01;
    /// Connection not allowed by ruleset: every policy denial.
    pub const NOT_ALLOWED: u8 = 0x02;
    /// Host unreachable: the name could not be resolved, or no address could be reached in time.
    pub const HOST_UNREACHABLE: u8 = 0x04;
    /// Connection refused by the upstream.
    pub const CONNECTION_REFUSED: u8 = 0x05;
    /// Command not supported (anything but CONNECT).
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    /// Address type not supported.
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// A malformed SOCKS5 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// The first byte is not 5.
    #[error("socks: version byte {0:#04x} is not 5")]
    Version(u8),
    /// The greeting offers zero methods.
    #[error("socks: greeting offers no authentication method")]
    NoMethods,
    /// The reserved byte of a request is not zero.
    #[error("socks: reserved byte {0:#04x} is not zero")]
    Reserved(u8),
    /// The address type is not 1, 3 or 4.
    #[error("socks: unknown address type {0:#04x}")]
    AddressType(u8),
    /// A domain name of length zero.
    #[error("socks: empty domain name")]
    EmptyName,
}

/// The client's method greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Whether method 0x00 (no authentication) is offered.
    pub no_auth: bool,
}

/// The destination of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    /// ATYP 1.
    V4(Ipv4Addr),
    /// ATYP 3: the name bytes as sent (not validated; the proxy normalizes them).
    Domain(Vec<u8>),
    /// ATYP 4.
    V6(Ipv6Addr),
}

/// A SOCKS5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command byte (only [`CMD_CONNECT`] is served).
    pub command: u8,
    /// The destination address.
    pub addr: Addr,
    /// The destination port.
    pub port: u16,
}

/// Parses the greeting. Returns the greeting and the number of bytes it used, or `None` if incomplete.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Greeting, usize)>, SocksError> {
    let Some(&ver) = buf.first() else { return Ok(None) };
    if ver != 5 {
        return Err(SocksError::Version(ver));
    }
    let Some(&n) = buf.get(1) else { return Ok(None) };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let Some(methods) = buf.get(2..2 + usize::from(n)) else { return Ok(None) };
    Ok(Some((Greeting { no_auth: methods.contains(&0) }, 2 + usize::from(n))))
}

/// Parses a request. Returns the request and the number of bytes it used, or `None` if incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, SocksError> {
    let Some(head) = buf.get(..4) else {
        if let Some(&v) = buf.first() {
            if v != 5 {
                return Err(SocksError::Version(v));
            }
        }
        return Ok(None);
    };
    if head[0] != 5 {
        return Err(SocksError::Version(head[0]));
    }
    if head[2] != 0 {
        return Err(SocksError::Reserved(head[2]));
    }
    let (addr, used) = match head[3] {
        1 => {
            let Some(b) = buf.get(4..8) else { return Ok(None) };
            (Addr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), 8)
        }
        3 => {
            let Some(&n) = buf.get(4) else { return Ok(None) };
            if n == 0 {
                return Err(SocksError::EmptyName);
            }
            let end = 5 + usize::from(n);
            let Some(name) = buf.get(5..end) else { return Ok(None) };
            (Addr::Domain(name.to_vec()), end)
        }
        4 => {
            let Some(b) = buf.get(4..20) else { return Ok(None) };
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            (Addr::V6(Ipv6Addr::from(o)), 20)
        }
        t => return Err(SocksError::AddressType(t)),
    };
    let Some(p) = buf.get(used..used + 2) else { return Ok(None) };
    Ok(Some((Request { command: head[1], addr, port: u16::from_be_bytes([p[0], p[1]]) }, used + 2)))
}

/// Encodes a reply with the bound address.
pub fn encode_reply(code: u8, bound: Option<std::net::SocketAddr>) -> Vec<u8> {
    let mut out = vec![5, code, 0];
    match bound {
        Some(std::net::SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(std::net::SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        None => out.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting() {
        assert_eq!(parse_greeting(&[5, 2, 2, 0]), Ok(Some((Greeting { no_auth: true }, 4))));
        assert_eq!(parse_greeting(&[5, 1, 2, 9]), Ok(Some((Greeting { no_auth: false }, 3))));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::Version(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
    }

    #[test]
    fn requests() {
        let mut dom = vec![5, 1, 0, 3, 11];
        dom.extend_from_slice(b"example.com");
        dom.extend_from_slice(&[1, 187, 0xaa]);
        let want = Request { command: 1, addr: Addr::Domain(b"example.com".to_vec()), port: 443 };
        assert_eq!(parse_request(&dom), Ok(Some((want, dom.len() - 1))));
        for cut in 0..dom.len() - 1 {
            assert_eq!(parse_request(&dom[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
            Ok(Some((Request { command: 1, addr: Addr::V4(Ipv4Addr::LOCALHOST), port: 80 }, 10)))
        );
        let mut v6 = vec![5, 2, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 22]);
        assert_eq!(
            parse_request(&v6),
            Ok(Some((Request { command: 2, addr: Addr::V6(Ipv6Addr::LOCALHOST), port: 22 }, 22)))
        );
        assert_eq!(parse_request(&[5, 1, 0, 9, 0]), Err(SocksError::AddressType(9)));
        assert_eq!(parse_request(&[5, 1, 1, 1]), Err(SocksError::Reserved(1)));
        assert_eq!(parse_request(&[4]), Err(SocksError::Version(4)));
        assert_eq!(parse_request(&[5, 1, 0, 3, 0, 0, 80]), Err(SocksError::EmptyName));
    }

    #[test]
    fn replies() {
        assert_eq!(encode_reply(2, None), vec![5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
        let a: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(encode_reply(0, Some(a)), vec![5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);
        let a: std::net::SocketAddr = "[::1]:1".parse().expect("addr");
        assert_eq!(encode_reply(0, Some(a)).len(), 22);
    }
}
