//! The client IP: the socket peer, or the real client behind trusted proxies.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use super::ip::IpSet;

/// The client address the rules judged, set as a request extension on every
/// request that passes, so handlers and later layers use the same answer.
///
/// It is the socket peer, unless the peer is a trusted proxy; then it is taken
/// from `X-Forwarded-For` as nginx's `real_ip_recursive on` does. IPv4-mapped
/// IPv6 addresses are stored in their IPv4 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address.
    #[must_use]
    pub const fn ip(self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Walks `X-Forwarded-For` from the right, across all header lines in order,
/// and returns the first address that is not a trusted proxy. If every entry
/// is trusted the leftmost one is the client, as in nginx. An entry that is
/// not an address stops the walk at the last verified hop: nginx does the
/// same, and it never lets a garbage entry name the client.
pub(crate) fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> IpAddr {
    let mut client = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(client) {
        return client;
    }
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// Reads one list entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:80`, with optional surrounding whitespace.
pub(crate) fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    // `[v6]` without a port.
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ip::parse_cidrs;
    use http::HeaderValue;

    fn trusted(list: &[&str]) -> IpSet {
        let mut s = IpSet::default();
        for v in list {
            s.extend(parse_cidrs("trusted_proxy", v).unwrap());
        }
        s
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            resolve(ip("192.0.2.1"), &xff(&["203.0.113.9"]), &t),
            ip("192.0.2.1")
        );
        let none = trusted(&[]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &xff(&["203.0.113.9"]), &none),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        let h = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &t), ip("203.0.113.9"));
        // All trusted: the leftmost is the client.
        let h = xff(&["10.0.0.3, 10.0.0.2"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &t), ip("10.0.0.3"));
        // No header: the peer.
        assert_eq!(resolve(ip("127.0.0.1"), &xff(&[]), &t), ip("127.0.0.1"));
    }

    #[test]
    fn garbage_stops_at_the_last_verified_hop() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        let h = xff(&["203.0.113.9, bogus, 10.0.0.2"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &t), ip("10.0.0.2"));
        let h = xff(&["203.0.113.9,"]);
        assert_eq!(resolve(ip("127.0.0.1"), &h, &t), ip("127.0.0.1"));
    }

    #[test]
    fn entries_with_ports_and_mapped_forms() {
        assert_eq!(parse_entry(b" 1.2.3.4:5678 "), Some(ip("1.2.3.4")));
        assert_eq!(parse_entry(b"[::1]:80"), Some(ip("::1")));
        assert_eq!(parse_entry(b"[::1]"), Some(ip("::1")));
        assert_eq!(parse_entry(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"unknown"), None);
        assert_eq!(parse_entry(b"\xff"), None);
        let t = trusted(&["127.0.0.1"]);
        let h = xff(&["::ffff:198.51.100.9"]);
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), &h, &t), ip("198.51.100.9"));
    }
}
