//! A server name (spec appendix, "Server Name") split into the host and the optional port that
//! discovery works with: `example.org`, `example.org:8448`, `1.2.3.4:8448`, `[::1]:8448`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::FederationError;

/// The host part of a server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IPv4 literal or a bracketed IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, lower-cased (DNS names compare case-insensitively).
    Name(String),
}

/// A parsed server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerAddress {
    pub(crate) host: Host,
    pub(crate) port: Option<u16>,
}

impl ServerAddress {
    /// Parses a server name by the spec's grammar; anything else is refused, so hostile input
    /// (a well-known answer, an `origin`) never reaches DNS or a URL unchecked.
    pub fn parse(name: &str) -> Result<ServerAddress, FederationError> {
        let invalid = || FederationError::InvalidServerName(name.chars().take(300).collect());
        if name.is_empty() || name.len() > 255 {
            return Err(invalid());
        }
        let (host, port) = split_port(name).ok_or_else(invalid)?;
        let host = parse_host(host).ok_or_else(invalid)?;
        Ok(ServerAddress { host, port })
    }

    /// The host as it appears in a URL or a `Host` header (IPv6 in brackets).
    pub(crate) fn host_text(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// The host, with the port if the name had one: what a `Host` header carries.
    pub(crate) fn host_and_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host_text()),
            None => self.host_text(),
        }
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_and_port())
    }
}

/// Splits `host[:port]`, where an IPv6 host is in brackets.
fn split_port(name: &str) -> Option<(&str, Option<u16>)> {
    let (host, rest) = if name.starts_with('[') {
        let end = name.find(']')?;
        (&name[..=end], &name[end + 1..])
    } else {
        match name.rfind(':') {
            Some(colon) => (&name[..colon], &name[colon..]),
            None => (name, ""),
        }
    };
    if rest.is_empty() {
        return Some((host, None));
    }
    let digits = rest.strip_prefix(':')?;
    let valid =
        !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
    let port = digits.parse::<u16>().ok().filter(|_| valid)?;
    Some((host, Some(port)))
}

fn parse_host(host: &str) -> Option<Host> {
    if let Some(inner) = host.strip_prefix('[') {
        let ip: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
        return Some(Host::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| Host::Name(host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> ServerAddress {
        ServerAddress::parse(name).expect(name)
    }

    #[test]
    fn names_with_and_without_ports() {
        assert_eq!(parse("example.org").host, Host::Name("example.org".into()));
        assert_eq!(parse("example.org").port, None);
        assert_eq!(parse("Example.ORG:8448").port, Some(8448));
        assert_eq!(parse("Example.ORG:8448").host_text(), "example.org");
    }

    #[test]
    fn ip_literals() {
        let v4 = parse("1.2.3.4:5678");
        assert_eq!(v4.host, Host::Ip("1.2.3.4".parse().expect("ip")));
        assert_eq!(v4.host_and_port(), "1.2.3.4:5678");
        let v6 = parse("[::1]");
        assert_eq!(v6.host, Host::Ip("::1".parse().expect("ip")));
        assert_eq!(v6.port, None);
        assert_eq!(
            parse("[2001:db8::1]:443").host_and_port(),
            "[2001:db8::1]:443"
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        for name in [
            "",
            ":8448",
            "example.org:",
            "example.org:99999",
            "example.org:+80",
            "exa mple.org",
            "::1",
            "[::1",
            "[::1]x",
            "[not-ip]:80",
            "example.org/path",
            "user@example.org",
        ] {
            assert!(ServerAddress::parse(name).is_err(), "{name}");
        }
        assert!(ServerAddress::parse(&"a".repeat(300)).is_err());
    }
}
