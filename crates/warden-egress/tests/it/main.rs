//! Integration tests of the egress proxy on loopback: allowed traffic, the SSRF and bypass battery,
//! what may travel through tunnels (TLS shapes, plain HTTP, raw rules, the first-flight cap),
//! SOCKS5, limits, and bounded random input to the parsers.

mod battery;
mod parsers;
mod proxying;
mod support;
mod tunnels;
