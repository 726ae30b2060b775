//! The SSRF guard: which addresses the proxy never connects to unless `allow_private` covers them.
//!
//! What this module guarantees: [`forbidden_category`] is `None` only for addresses that are
//! globally routable unicast as far as the IANA special-purpose registries say, and it looks through
//! every IPv6 form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo), so a
//! forbidden IPv4 address cannot be reached by spelling it in IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The metadata address of AWS, GCP, Azure and others.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The IPv6 metadata address of AWS (Nitro).
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// The category of a forbidden address (`loopback`, `private`, `metadata`, ...), or `None` when the
/// address is public. For IPv6 forms that embed an IPv4 address, the category of the embedded address.
pub fn forbidden_category(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_category(v4),
        IpAddr::V6(v6) => v6_category(v6),
    }
}

fn in4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v4_category(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "metadata"),
        ([0, 0, 0, 0], 32, "unspecified"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([0, 0, 0, 0], 8, "this-network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "cgnat"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "ietf-protocol"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4-relay"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    TABLE.iter().find(|(net, p, _)| in4(ip, *net, *p)).map(|(_, _, c)| *c)
}

fn in6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == net & mask
}

fn low32(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32)
}

fn v6_category(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    if ip == METADATA_V6 {
        return Some("metadata");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that embed an IPv4 address: judge the embedded address. These are checked before the
    // IPv6 ranges because an embedded public address is as reachable as the address itself.
    // ::ffff:0:0/96 (mapped), ::ffff:0:0:0/96 (SIIT translated), ::/96 (compatible, deprecated).
    if in6(ip, 0xffff_0000_0000, 96) || in6(ip, 0xffff_0000_0000_0000, 96) {
        return v4_category(low32(ip));
    }
    // ::/96 (IPv4-compatible, deprecated by RFC 4291): never a real destination.
    if in6(ip, 0, 96) {
        return v4_category(low32(ip)).or(Some("ipv4-compatible"));
    }
    // 64:ff9b::/96, NAT64 well-known prefix.
    if in6(ip, 0x0064_ff9b << 96, 96) {
        return v4_category(low32(ip));
    }
    // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): never global.
    if in6(ip, (0x0064_ff9b_0001_u128) << 80, 48) {
        return Some("nat64-local");
    }
    // 2002::/16, 6to4: the IPv4 address is in bits 16..48.
    if in6(ip, 0x2002 << 112, 16) {
        let v4 = Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32);
        return v4_category(v4);
    }
    // 2001::/32, Teredo: server IPv4 in bits 32..64, client IPv4 obfuscated (inverted) in the low 32.
    if in6(ip, 0x2001 << 112, 32) {
        let server = Ipv4Addr::from(((bits >> 64) & 0xffff_ffff) as u32);
        let client = Ipv4Addr::from(!((bits & 0xffff_ffff) as u32));
        return v4_category(client).or_else(|| v4_category(server));
    }
    const TABLE: &[(u128, u32, &str)] = &[
        (0x0100 << 112, 64, "discard"),
        (0x2001_0db8 << 96, 32, "documentation"),
        (0x2001_0002 << 96, 48, "benchmarking"),
        (0xfc00 << 112, 7, "unique-local"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local"),
        (0xff00 << 112, 8, "multicast"),
    ];
    TABLE.iter().find(|(net, p, _)| in6(ip, *net, *p)).map(|(_, _, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(s: &str) -> Option<&'static str> {
        forbidden_category(s.parse().expect("test address"))
    }

    #[test]
    fn ipv4_ranges() {
        let cases = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.0.1", "link-local"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.255", "cgnat"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.255", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network"),
            ("192.0.0.8", "ietf-protocol"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.1", "documentation"),
        ];
        for (ip, want) in cases {
            assert_eq!(cat(ip), Some(want), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "169.253.0.1",
            "11.0.0.1",
            "192.0.1.1",
        ] {
            assert_eq!(cat(ip), None, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fd00:ec2::254", "metadata"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("100::1", "discard"),
            ("64:ff9b:1::1", "nat64-local"),
        ];
        for (ip, want) in cases {
            assert_eq!(cat(ip), Some(want), "{ip}");
        }
        for ip in ["2606:4700::1111", "2a00:1450:4001::200e", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"] {
            assert_eq!(cat(ip), None, "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_forms() {
        let cases = [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:0:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::8.8.8.8", "ipv4-compatible"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("64:ff9b::10.0.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "metadata"),
            ("2002:c0a8:101::", "private"),
            ("2002:6440:1::", "cgnat"),
            // Teredo: server 65.54.227.120, client 127.0.0.1 obfuscated as !0x7f000001 = 0x80fffffe.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
            // client 169.254.169.254 → !0xa9fea9fe = 0x56015601
            ("2001:0:4136:e378:8000:63bf:5601:5601", "metadata"),
            // public client 8.8.8.8 (!0x08080808 = 0xf7f7f7f7) but private server 10.0.0.1
            ("2001:0:a00:1:8000:63bf:f7f7:f7f7", "private"),
        ];
        for (ip, want) in cases {
            assert_eq!(cat(ip), Some(want), "{ip}");
        }
        assert_eq!(cat("2001:0:4136:e378:8000:63bf:f7f7:f7f7"), None, "public Teredo");
    }
}
