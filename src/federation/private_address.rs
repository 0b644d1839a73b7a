//! Which addresses outbound federation never connects to unless
//! `federation.allow_private_addresses` says so: anything that is not a public unicast
//! address on the internet. Any user can make us connect somewhere (an invite of
//! `@x:10.0.0.1:22`, a notary query naming `localhost:631`), so without this filter the
//! server would scan and poke the owner's home network (router, NAS, printer) on request.
//!
//! [`is_private`] is pure; [`super::client::HttpsClient`] applies it to every address right
//! before connecting (after DNS, on every well-known redirect, for IP literals too), the one
//! place every outbound connection passes.
//!
//! Refused, besides the obvious (loopback, RFC 1918, link-local, CGNAT, unspecified,
//! broadcast, multicast, IPv6 ULA and link-local): the ranges no legitimate homeserver can
//! sit in (IETF protocol assignments 192.0.0/24, the documentation ranges, benchmarking
//! 198.18/15, the reserved 240/4, IPv6 documentation 2001:db8::/32, discard 100::/64,
//! deprecated site-local fec0::/10), and IPv6 forms that carry an IPv4 address a gateway
//! would connect to (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16):
//! those are judged by the IPv4 address inside. Teredo (2001::/32) hides its client address
//! and is left alone: reaching a private host through it needs a public Teredo relay.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an address outbound federation must not connect to.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0/8
        || a == 10 // RFC 1918
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168) // RFC 1918
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_private_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (segments[0] & 0xff00) == 0xff00 // multicast ff00::/8
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (segments[0] == 0x0064 && segments[1] == 0xff9b && segments[2] == 1) // NAT64 local-use
}

/// The IPv4 address an IPv6 address stands for, when a host or gateway would connect to
/// that IPv4 address: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`,
/// deprecated, but `::1` and `::` are judged as themselves), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(text: &str) -> bool {
        is_private(text.parse().expect("an address"))
    }

    #[test]
    fn ipv4_private_ranges_and_their_edges() {
        for (inside, outside) in [
            ("0.0.0.0", "1.0.0.0"),
            ("0.255.255.255", "1.1.1.1"),
            ("10.0.0.0", "9.255.255.255"),
            ("10.255.255.255", "11.0.0.0"),
            ("100.64.0.0", "100.63.255.255"),
            ("100.127.255.255", "100.128.0.0"),
            ("127.0.0.1", "126.255.255.255"),
            ("127.255.255.255", "128.0.0.0"),
            ("169.254.0.0", "169.253.255.255"),
            ("169.254.255.255", "169.255.0.0"),
            ("172.16.0.0", "172.15.255.255"),
            ("172.31.255.255", "172.32.0.0"),
            ("192.0.0.1", "192.0.1.0"),
            ("192.0.2.1", "192.0.3.0"),
            ("192.168.0.0", "192.167.255.255"),
            ("192.168.255.255", "192.169.0.0"),
            ("198.18.0.0", "198.17.255.255"),
            ("198.19.255.255", "198.20.0.0"),
            ("198.51.100.7", "198.51.101.0"),
            ("203.0.113.9", "203.0.114.0"),
            ("224.0.0.1", "223.255.255.255"),
            ("239.255.255.255", "8.8.8.8"),
            ("240.0.0.1", "93.184.216.34"),
            ("255.255.255.255", "223.1.2.3"),
        ] {
            assert!(private(inside), "{inside} is private");
            assert!(!private(outside), "{outside} is public");
        }
    }

    #[test]
    fn ipv6_private_ranges_and_their_edges() {
        for inside in [
            "::",
            "::1",
            "fc00::1",
            "fdff:ffff::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "100::1",
            "64:ff9b:1::1",
        ] {
            assert!(private(inside), "{inside} is private");
        }
        for outside in [
            "::2:0:0:1", // not an embedded IPv4 form
            "fbff::1",
            "fe00::1",
            "2001:db9::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "100:0:0:1::1",
            "2001::1", // Teredo: judged as public
        ] {
            assert!(!private(outside), "{outside} is public");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        for inside in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:192.168.1.1",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::127.0.0.1",
            "::10.0.0.1",
            "::0.0.0.2",
            "64:ff9b::127.0.0.1",
            "64:ff9b::c0a8:101",
            "2002:7f00:1::",
            "2002:c0a8:0101::1",
        ] {
            assert!(private(inside), "{inside} is private");
        }
        for outside in [
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(!private(outside), "{outside} is public");
        }
    }
}
