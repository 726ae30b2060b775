//! Integration tests of the egress proxy on loopback: allowed traffic, the SSRF and bypass battery,
//! CONNECT with the SNI check, SOCKS5, limits, and bounded random input to the parsers.

mod battery;
mod parsers;
mod proxying;
mod support;
