//! The client IP: the socket peer, or the real client behind trusted proxies,
//! with the semantics of nginx's realip module.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[cfg(test)]
use http::HeaderMap;
use http::{HeaderName, HeaderValue};

use super::ip::IpSet;
use crate::error::BuildError;
use crate::parse::addr::ipv4;
use crate::parse::forwarded::{for_each_forwarded_for, parse_entry};
use crate::parse::headers::HeaderScan;

/// The client address the rules judged, set as a request extension on every
/// request that passes, so handlers and later layers use the same answer.
///
/// It is the socket peer, unless the peer is a trusted proxy; then it comes
/// from the [`RealIpHeader`]. IPv4-mapped IPv6 addresses are stored in their
/// IPv4 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// How many leading bits of an IPv6 address name one client. An IPv4
/// address is a client by itself; an IPv6 one by its prefix (a /64 is one
/// host's or one customer's network), so that a host cannot pass for many
/// by rotating through its own subnet. Rate limits, bans and the serve
/// loop's per-client cap all key clients this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv6Prefix {
    mask: u128,
}

impl Ipv6Prefix {
    /// The first `len` bits; 128 and over keep the whole address.
    pub(crate) const fn new(len: u8) -> Self {
        let mask = match len {
            0 => 0,
            128.. => u128::MAX,
            len => u128::MAX << (128 - len as u32),
        };
        Self { mask }
    }

    /// `ip` as the client it counts as: an IPv4 address as it is, an IPv6
    /// address cut to the prefix.
    pub(crate) fn client(self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(v6.to_bits() & self.mask)),
        }
    }
}

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

/// The header a trusted proxy puts the client address in, as nginx's
/// `real_ip_header`.
///
/// `X-Forwarded-For` and `Forwarded` are lists that every proxy appends to;
/// the others hold one address, which the proxy sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RealIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`. The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"`.
    /// Only the `for=` parameter is read.
    Forwarded,
    /// `X-Real-IP: client`, as nginx's own `proxy_set_header X-Real-IP`.
    XRealIp,
    /// `CF-Connecting-IP: client`, set by Cloudflare.
    CfConnectingIp,
    /// Any other header holding one address, such as `True-Client-IP`.
    Custom(HeaderName),
}

// Looked up by `HeaderName` rather than `&str`, which `http` would parse
// and validate again on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");

impl RealIpHeader {
    /// The header's name.
    #[must_use]
    pub fn name(&self) -> HeaderName {
        match self {
            Self::XForwardedFor => X_FORWARDED_FOR,
            Self::Forwarded => http::header::FORWARDED,
            Self::XRealIp => X_REAL_IP,
            Self::CfConnectingIp => CF_CONNECTING_IP,
            Self::Custom(name) => name.clone(),
        }
    }
}

impl FromStr for RealIpHeader {
    type Err = BuildError;

    /// Parses a header name: the known ones in any case, anything else as
    /// [`RealIpHeader::Custom`].
    fn from_str(name: &str) -> Result<Self, BuildError> {
        let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
            BuildError::RealIpHeader {
                value: name.to_owned(),
            }
        })?;
        Ok(match header.as_str() {
            "x-forwarded-for" => Self::XForwardedFor,
            "forwarded" => Self::Forwarded,
            "x-real-ip" => Self::XRealIp,
            "cf-connecting-ip" => Self::CfConnectingIp,
            _ => Self::Custom(header),
        })
    }
}

/// Cloudflare's published edge ranges (<https://www.cloudflare.com/ips/>), as
/// copied into this crate on 2026-11-26. Pass them to
/// [`trusted_proxies`](crate::NoResponseLayerBuilder::trusted_proxies) with
/// [`RealIpHeader::CfConnectingIp`], or use
/// [`trust_cloudflare`](crate::NoResponseLayerBuilder::trust_cloudflare).
/// Cloudflare changes the list rarely; when it does, pass the current one with
/// [`trusted_proxy_list`](crate::NoResponseLayerBuilder::trusted_proxy_list).
pub const CLOUDFLARE_RANGES: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

/// The compiled real-IP settings.
#[derive(Debug, Default)]
pub(crate) struct RealIp {
    pub(crate) trusted: IpSet,
    pub(crate) header: RealIpHeader,
    pub(crate) recursive: bool,
}

/// The names as statics, so that a scan can borrow them for as long as the
/// request.
static X_FORWARDED_FOR_NAME: HeaderName = X_FORWARDED_FOR;
static FORWARDED_NAME: HeaderName = http::header::FORWARDED;
static X_REAL_IP_NAME: HeaderName = X_REAL_IP;
static CF_CONNECTING_IP_NAME: HeaderName = CF_CONNECTING_IP;

impl RealIp {
    /// The header to collect while scanning a request: none when no proxy
    /// is trusted, since then no header is read.
    pub(crate) fn header_name(&self) -> Option<&HeaderName> {
        if self.trusted.is_empty() {
            return None;
        }
        Some(match &self.header {
            RealIpHeader::XForwardedFor => &X_FORWARDED_FOR_NAME,
            RealIpHeader::Forwarded => &FORWARDED_NAME,
            RealIpHeader::XRealIp => &X_REAL_IP_NAME,
            RealIpHeader::CfConnectingIp => &CF_CONNECTING_IP_NAME,
            RealIpHeader::Custom(name) => name,
        })
    }

    /// [`RealIp::resolve_scanned`] over a header map.
    #[cfg(test)]
    pub(crate) fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.resolve_scanned(peer, &HeaderScan::new(headers, self.header_name()))
    }

    /// The client address for a request from `peer`, whose headers `scan`
    /// collected with [`RealIp::header_name`]. Headers are only read when
    /// the peer is trusted, and a value that is not an address never names
    /// the client.
    pub(crate) fn resolve_scanned(&self, peer: IpAddr, scan: &HeaderScan<'_>) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !self.trusted.contains(peer) {
            return peer;
        }
        // A value that holds one address, or is not one: the peer stays the
        // client.
        let single = |value: &HeaderValue| {
            parse_entry(value.as_bytes().trim_ascii()).map_or(peer, |ip| ip.to_canonical())
        };
        let mut walk = Walk::new(self);
        match &self.header {
            RealIpHeader::XForwardedFor => {
                // One line of one entry, the common case behind one proxy:
                // whatever the trust and recursion, the walk answers with
                // that entry, so it is read directly.
                if let Some(value) = scan.real_ip.only() {
                    // A bare IPv4 address holds no comma: no need to look.
                    if let Some(v4) = ipv4(value.as_bytes().trim_ascii()) {
                        return IpAddr::V4(v4);
                    }
                    if !value.as_bytes().contains(&b',') {
                        return single(value);
                    }
                }
                for line in scan.real_ips() {
                    for entry in line.as_bytes().split(|&b| b == b',') {
                        let entry = entry.trim_ascii();
                        // nginx skips empty list members; they name no one.
                        if !entry.is_empty() {
                            walk.push(parse_entry(entry));
                        }
                    }
                }
            }
            RealIpHeader::Forwarded => {
                for line in scan.real_ips() {
                    for_each_forwarded_for(line.as_bytes(), |node| walk.push(node));
                }
            }
            // A header that holds one address: two values for it, or one
            // that is not an address, and the peer stays the client.
            RealIpHeader::XRealIp | RealIpHeader::CfConnectingIp | RealIpHeader::Custom(_) => {
                return scan.real_ip.only().map_or(peer, single);
            }
        }
        walk.finish(peer)
    }
}

/// nginx's `real_ip_recursive` walk, done left to right in one pass so that
/// several header lines and quoted `Forwarded` values need no buffer.
///
/// Read from the right, the recursive walk takes the first address that is
/// not trusted; past an entry that is not an address it stops at the last
/// address it verified; with every entry trusted it takes the leftmost. The
/// state below is that answer for the entries seen so far, where `Fallback`
/// means "whatever was verified to the right of them".
struct Walk<'a> {
    trusted: &'a IpSet,
    recursive: bool,
    state: State,
}

#[derive(Clone, Copy)]
enum State {
    Empty,
    Fallback,
    Client(IpAddr),
}

impl<'a> Walk<'a> {
    fn new(config: &'a RealIp) -> Self {
        Self {
            trusted: &config.trusted,
            recursive: config.recursive,
            state: State::Empty,
        }
    }

    fn push(&mut self, entry: Option<IpAddr>) {
        let entry = entry.map(|ip| ip.to_canonical());
        self.state = match (entry, self.state) {
            (None, _) => State::Fallback,
            // Without recursion only the rightmost entry counts.
            (Some(ip), _) if !self.recursive => State::Client(ip),
            (Some(ip), _) if !self.trusted.contains(ip) => State::Client(ip),
            (Some(_), found @ State::Client(_)) => found,
            (Some(ip), State::Empty | State::Fallback) => State::Client(ip),
        };
    }

    fn finish(self, peer: IpAddr) -> IpAddr {
        match self.state {
            State::Client(ip) => ip,
            State::Empty | State::Fallback => peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ip::parse_cidrs;

    fn real_ip(header: RealIpHeader, recursive: bool, trusted: &[&str]) -> RealIp {
        let mut set = IpSet::default();
        for v in trusted {
            set.extend(parse_cidrs("trusted_proxy", v).unwrap());
        }
        RealIp {
            trusted: set,
            header,
            recursive,
        }
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(l).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "127.0.0.1";

    fn xff(recursive: bool) -> RealIp {
        real_ip(
            RealIpHeader::XForwardedFor,
            recursive,
            &["10.0.0.0/8", PROXY],
        )
    }

    fn via_xff(config: &RealIp, lines: &[&str]) -> IpAddr {
        config.resolve(ip(PROXY), &headers("x-forwarded-for", lines))
    }

    /// A single entry is read directly; the same entry with an empty
    /// member after it (which the walk skips) goes through the walk, and
    /// both must name the same client.
    #[test]
    fn one_entry_reads_as_the_walk_would() {
        for config in [xff(true), xff(false)] {
            for value in [
                "203.0.113.9",
                " 203.0.113.9 ",
                "10.0.0.7",
                "127.0.0.1",
                "203.0.113.9:4711",
                "2001:db8::1",
                "[2001:db8::1]:443",
                "::ffff:203.0.113.9",
                "unknown",
                "_hidden",
                "999.1.1.1",
                "",
                "  ",
            ] {
                assert_eq!(
                    via_xff(&config, &[value]),
                    via_xff(&config, &[&format!("{value},")]),
                    "{value:?}"
                );
            }
        }
        assert_eq!(via_xff(&xff(true), &["203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(via_xff(&xff(true), &["unknown"]), ip(PROXY));
        assert_eq!(
            via_xff(&xff(true), &["::ffff:203.0.113.9"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let c = xff(true);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(c.resolve(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        let none = real_ip(RealIpHeader::XForwardedFor, true, &[]);
        assert_eq!(none.resolve(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn recursive_walks_right_to_left_past_trusted_hops() {
        let c = xff(true);
        assert_eq!(
            via_xff(&c, &["1.1.1.1, 203.0.113.9", "10.0.0.2"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            via_xff(&c, &["10.0.0.3, 10.0.0.2"]),
            ip("10.0.0.3"),
            "all trusted: leftmost"
        );
        assert_eq!(via_xff(&c, &[]), ip(PROXY));
        assert_eq!(
            via_xff(&c, &["203.0.113.9:4711, [2001:db8::1]:80"]),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn non_recursive_takes_the_rightmost_entry() {
        let c = xff(false);
        assert_eq!(via_xff(&c, &["203.0.113.9, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(
            via_xff(&c, &["203.0.113.9", "198.51.100.1"]),
            ip("198.51.100.1")
        );
        assert_eq!(via_xff(&c, &["203.0.113.9, bogus"]), ip(PROXY));
    }

    #[test]
    fn garbage_never_names_the_client() {
        let c = xff(true);
        assert_eq!(
            via_xff(&c, &["203.0.113.9, bogus, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(via_xff(&c, &["203.0.113.9, 10.0.0.2, bogus"]), ip(PROXY));
        assert_eq!(via_xff(&c, &["unknown"]), ip(PROXY));
        // Empty members are skipped, as nginx does.
        assert_eq!(via_xff(&c, &["203.0.113.9,, ,"]), ip("203.0.113.9"));
        assert_eq!(via_xff(&c, &[""]), ip(PROXY));
        assert_eq!(via_xff(&c, &["[198.51.100.7]"]), ip(PROXY));
        assert_eq!(via_xff(&c, &["[198.51.100.7]:80"]), ip(PROXY));
    }

    #[test]
    fn mapped_addresses_are_canonical() {
        let c = xff(true);
        assert_eq!(
            c.resolve(
                ip("::ffff:127.0.0.1"),
                &headers("x-forwarded-for", &["::ffff:198.51.100.9"])
            ),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn single_value_headers() {
        for (header, name) in [
            (RealIpHeader::XRealIp, "x-real-ip"),
            (RealIpHeader::CfConnectingIp, "cf-connecting-ip"),
            ("True-Client-IP".parse().unwrap(), "true-client-ip"),
        ] {
            let c = real_ip(header, true, &[PROXY]);
            let resolve = |lines: &[&str]| c.resolve(ip(PROXY), &headers(name, lines));
            assert_eq!(resolve(&["203.0.113.9"]), ip("203.0.113.9"));
            assert_eq!(resolve(&[" [2001:db8::7]:443 "]), ip("2001:db8::7"));
            assert_eq!(
                resolve(&["203.0.113.9", "198.51.100.1"]),
                ip(PROXY),
                "two values"
            );
            assert_eq!(resolve(&["203.0.113.9, 198.51.100.1"]), ip(PROXY), "a list");
            assert_eq!(resolve(&[]), ip(PROXY));
            // Other headers are not read.
            let h = headers("x-forwarded-for", &["203.0.113.9"]);
            assert_eq!(c.resolve(ip(PROXY), &h), ip(PROXY));
        }
    }

    fn fwd(lines: &[&str]) -> IpAddr {
        real_ip(RealIpHeader::Forwarded, true, &["10.0.0.0/8", PROXY])
            .resolve(ip(PROXY), &headers("forwarded", lines))
    }

    #[test]
    fn forwarded_for_values() {
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            ip("192.0.2.60")
        );
        assert_eq!(
            fwd(&["For=\"[2001:db8:cafe::17]:4711\""]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(fwd(&["for=\"192.0.2.60:8080\""]), ip("192.0.2.60"));
        assert_eq!(fwd(&["for=\"[2001:db8::1]\""]), ip("2001:db8::1"));
        assert_eq!(fwd(&["proto=https; for = 192.0.2.61"]), ip("192.0.2.61"));
        assert_eq!(
            fwd(&[
                "for=192.0.2.43, for=198.51.100.17;by=10.0.0.1",
                "for=10.0.0.2"
            ]),
            ip("198.51.100.17")
        );
        assert_eq!(fwd(&["for=\"192.0.2.60:_hidden\""]), ip("192.0.2.60"));
    }

    #[test]
    fn forwarded_nodes_that_are_not_addresses() {
        assert_eq!(fwd(&["for=unknown"]), ip(PROXY));
        assert_eq!(fwd(&["for=_hidden"]), ip(PROXY));
        assert_eq!(
            fwd(&["for=192.0.2.43, for=unknown, for=10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(fwd(&["proto=https"]), ip(PROXY), "no for=");
        assert_eq!(
            fwd(&["for=192.0.2.1;for=192.0.2.2"]),
            ip(PROXY),
            "repeated for="
        );
        assert_eq!(
            fwd(&["for=2001:db8::1"]),
            ip(PROXY),
            "IPv6 must be bracketed"
        );
        assert_eq!(fwd(&["for=\"192.0.2.1"]), ip(PROXY), "unterminated quote");
        assert_eq!(fwd(&["for"]), ip(PROXY));
        assert_eq!(fwd(&["for=\"[::1]:99999\""]), ip(PROXY));
    }

    #[test]
    fn forwarded_quotes_protect_separators() {
        // A comma inside quotes must not start an element naming 192.0.2.2.
        assert_eq!(fwd(&["for=\"192.0.2.1, for=192.0.2.2\""]), ip(PROXY));
        assert_eq!(
            fwd(&["for=192.0.2.9;ext=\"a,b;c\\\"d\", for=10.0.0.5"]),
            ip("192.0.2.9")
        );
        // Empty elements are skipped.
        assert_eq!(fwd(&[", ,for=192.0.2.9,,"]), ip("192.0.2.9"));
    }

    #[test]
    fn header_names_parse() {
        assert_eq!(
            "X-Forwarded-For".parse::<RealIpHeader>().unwrap(),
            RealIpHeader::XForwardedFor
        );
        assert_eq!(
            "forwarded".parse::<RealIpHeader>().unwrap(),
            RealIpHeader::Forwarded
        );
        assert_eq!(
            "X-REAL-IP".parse::<RealIpHeader>().unwrap(),
            RealIpHeader::XRealIp
        );
        assert_eq!(
            "CF-Connecting-IP".parse::<RealIpHeader>().unwrap(),
            RealIpHeader::CfConnectingIp
        );
        let err = "bad header".parse::<RealIpHeader>().unwrap_err();
        assert!(err.to_string().contains("\"bad header\""), "{err}");
    }

    #[test]
    fn cloudflare_ranges_parse() {
        for range in CLOUDFLARE_RANGES {
            parse_cidrs("trusted_proxy", range).unwrap();
        }
    }
}
