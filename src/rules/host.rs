//! The Host rules: missing, IP-literal and unknown names.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use http::{HeaderMap, HeaderValue, Uri, Version, header::HOST};

use super::DropReason;
use crate::error::BuildError;

/// RFC 1035 caps a name at 253 characters without the trailing dot; anything
/// longer cannot be a served name, so it never needs a lookup buffer.
const MAX_NAME_LEN: usize = 253;

/// What the request says its host is, before any rule looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostField<'a> {
    Missing,
    /// Two Host headers, or an HTTP/2 Host that contradicts `:authority`:
    /// there is no single answer, so the request is malformed.
    Ambiguous,
    Value(&'a [u8]),
}

/// Picks the host as the HTTP RFCs tell an origin server to:
///
/// - more than one Host header makes any request malformed (RFC 9112 §3.2);
/// - HTTP/1.1 requires a Host header, even with an absolute-form target;
/// - the authority of an absolute-form target wins over the Host value
///   (RFC 9112 §3.2.2), and so does HTTP/2's `:authority`, which hyper puts
///   in the URI;
/// - an HTTP/2 Host header naming another authority than `:authority` makes
///   the request malformed (RFC 9113 §8.3.1).
pub(crate) fn host_field<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> HostField<'a> {
    let mut lines = headers.get_all(HOST).iter();
    let header = match (lines.next(), lines.next()) {
        (Some(_), Some(_)) => return HostField::Ambiguous,
        (line, _) => line.map(HeaderValue::as_bytes).filter(|v| !v.is_empty()),
    };
    // `Authority::host` drops userinfo, so `user@evil` cannot pose as a name.
    let authority = uri.authority().filter(|a| !a.host().is_empty());
    match (authority, header) {
        (Some(a), Some(h)) if version >= Version::HTTP_2 => {
            let without_userinfo = a.as_str().rsplit('@').next().unwrap_or_default();
            if without_userinfo.as_bytes().eq_ignore_ascii_case(h) {
                HostField::Value(a.host().as_bytes())
            } else {
                HostField::Ambiguous
            }
        }
        (Some(_), None) if version == Version::HTTP_11 => HostField::Missing,
        (Some(a), _) => HostField::Value(a.host().as_bytes()),
        (None, Some(h)) => HostField::Value(h),
        (None, None) => HostField::Missing,
    }
}

/// A host value, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind<'a> {
    /// A DNS-style name without port or trailing dot, case preserved.
    Name(&'a [u8]),
    IpLiteral,
    Invalid,
}

/// Classifies `host[:port]`. Anything that is not clearly a name is either an
/// IP literal or invalid, never a name, so a parse failure cannot slip past
/// the served-names check.
pub(crate) fn classify(value: &[u8]) -> HostKind<'_> {
    if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return HostKind::Invalid;
        };
        let (inside, after) = (&rest[..close], &rest[close + 1..]);
        let is_v6 = std::str::from_utf8(inside)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .is_some();
        let port_ok = after.is_empty() || after.strip_prefix(b":").is_some_and(valid_port);
        return if is_v6 && port_ok {
            HostKind::IpLiteral
        } else {
            HostKind::Invalid
        };
    }
    let colons = value.iter().filter(|&&b| b == b':').count();
    let name = match colons {
        0 => value,
        1 => {
            let at = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            if !valid_port(&value[at + 1..]) {
                return HostKind::Invalid;
            }
            &value[..at]
        }
        // A bare IPv6 address is not valid in Host, but it is still an
        // address and clients do send it.
        _ => {
            let is_v6 = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<Ipv6Addr>().ok())
                .is_some();
            return if is_v6 {
                HostKind::IpLiteral
            } else {
                HostKind::Invalid
            };
        }
    };
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !is_dns_name(name) {
        return HostKind::Invalid;
    }
    if ends_in_number(name) {
        HostKind::IpLiteral
    } else {
        HostKind::Name(name)
    }
}

/// Letters, digits, `-` and `_` in labels separated by single dots, with no
/// empty label; checked in one pass, since every request pays for it.
fn is_dns_name(name: &[u8]) -> bool {
    let mut after_dot = true;
    for &b in name {
        if b == b'.' {
            if after_dot {
                return false;
            }
            after_dot = true;
        } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            after_dot = false;
        } else {
            return false;
        }
    }
    !after_dot
}

fn valid_port(port: &[u8]) -> bool {
    // An empty port is allowed by RFC 3986 (`example.com:`).
    port.is_empty()
        || (port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port).is_ok_and(|p| p.parse::<u16>().is_ok()))
}

/// The WHATWG URL standard's "ends in a number" test: browsers and curl parse
/// such a host as IPv4, so `2130706433`, `0x7f.1` and `127.1` all reach
/// 127.0.0.1 and must be treated as IP literals, not names.
fn ends_in_number(name: &[u8]) -> bool {
    let last = name.rsplit(|&b| b == b'.').next().unwrap_or(name);
    if !last.is_empty() && last.iter().all(u8::is_ascii_digit) {
        return true;
    }
    matches!(last, [b'0', b'x' | b'X', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit))
}

/// Served names, like nginx `server_name`: exact names, `*.example.com`
/// (any subdomain) and `.example.com` (the apex and any subdomain).
#[derive(Debug, Default)]
pub(crate) struct ServerNames {
    exact: HashSet<Box<[u8]>>,
    /// Stored with their leading dot, e.g. `.example.com`.
    suffixes: HashSet<Box<[u8]>>,
}

impl ServerNames {
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    pub(crate) fn add(&mut self, pattern: &str) -> Result<(), BuildError> {
        let bad = |reason: &'static str| BuildError::ServerName {
            value: pattern.to_owned(),
            reason,
        };
        let lower = pattern.trim().to_ascii_lowercase();
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (base, wildcard, apex) = if let Some(rest) = lower.strip_prefix("*.") {
            (rest, true, false)
        } else if let Some(rest) = lower.strip_prefix('.') {
            (rest, true, true)
        } else {
            (lower, false, true)
        };
        if base.is_empty() {
            return Err(bad("empty name"));
        }
        if base.contains('*') {
            return Err(bad("`*` is only allowed as a leading `*.` label"));
        }
        match classify(base.as_bytes()) {
            HostKind::Name(name) if name.len() == base.len() => {}
            HostKind::IpLiteral => {
                return Err(bad(
                    "an IP address is not a server name; use drop_ip_literal_host",
                ));
            }
            _ => {
                return Err(bad(
                    "not a DNS name (letters, digits, `-`, `_` and non-empty dot-separated labels)",
                ));
            }
        }
        if apex {
            self.exact.insert(base.as_bytes().into());
        }
        if wildcard {
            self.suffixes.insert(format!(".{base}").into_bytes().into());
        }
        Ok(())
    }

    /// `name` comes from [`classify`]: no port, no trailing dot, any case.
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        let mut buf = [0u8; MAX_NAME_LEN];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return false;
        };
        for (dst, src) in lower.iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        let lower = &*lower;
        if self.exact.contains(lower) {
            return true;
        }
        if self.suffixes.is_empty() {
            return false;
        }
        // Every proper suffix that starts at a dot: for `a.b.example.com`
        // that is `.b.example.com`, `.example.com` and `.com`.
        lower
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'.')
            .any(|(i, _)| self.suffixes.contains(&lower[i..]))
    }
}

/// The compiled Host rules.
#[derive(Debug, Default)]
pub(crate) struct HostRules {
    pub(crate) drop_missing: bool,
    pub(crate) drop_ip_literal: bool,
    pub(crate) names: ServerNames,
}

impl HostRules {
    pub(crate) fn is_active(&self) -> bool {
        self.drop_missing || self.drop_ip_literal || !self.names.is_empty()
    }

    /// A served-names list acts like nginx's catch-all `default_server`: a
    /// request without a usable name can never match it, so it is dropped
    /// even when the individual switches are off.
    pub(crate) fn check(
        &self,
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(), DropReason> {
        if !self.is_active() {
            return Ok(());
        }
        let catch_all = !self.names.is_empty();
        let value = match host_field(version, uri, headers) {
            HostField::Missing if self.drop_missing || catch_all => {
                return Err(DropReason::HostMissing);
            }
            HostField::Missing => return Ok(()),
            HostField::Ambiguous => return Err(DropReason::HostInvalid),
            HostField::Value(v) => v,
        };
        match classify(value) {
            HostKind::Invalid => Err(DropReason::HostInvalid),
            HostKind::IpLiteral if self.drop_ip_literal || catch_all => {
                Err(DropReason::HostIpLiteral)
            }
            HostKind::IpLiteral => Ok(()),
            HostKind::Name(name) if catch_all && !self.names.matches(name) => {
                Err(DropReason::HostUnknown)
            }
            HostKind::Name(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn names(patterns: &[&str]) -> ServerNames {
        let mut n = ServerNames::default();
        for p in patterns {
            n.add(p).unwrap();
        }
        n
    }

    #[test]
    fn classify_names_ports_and_literals() {
        assert_eq!(classify(b"example.com"), HostKind::Name(b"example.com"));
        assert_eq!(
            classify(b"Example.COM:8080"),
            HostKind::Name(b"Example.COM")
        );
        assert_eq!(classify(b"example.com."), HostKind::Name(b"example.com"));
        assert_eq!(classify(b"example.com.:80"), HostKind::Name(b"example.com"));
        assert_eq!(classify(b"example.com:"), HostKind::Name(b"example.com"));
        for lit in [
            &b"127.0.0.1"[..],
            b"127.0.0.1:8444",
            b"[::1]",
            b"[::1]:80",
            b"[::ffff:127.0.0.1]",
            b"::1",
            b"2130706433",
            b"0x7f000001",
            b"127.1",
            b"0x7f.0.0.1",
            b"1.2.3.4.",
        ] {
            assert_eq!(classify(lit), HostKind::IpLiteral, "{lit:?}");
        }
        for bad in [
            &b"example.com@evil"[..],
            b"exa mple.com",
            b"example.com:80x",
            b"example.com:123456",
            b"example.com:65536",
            b"[::1",
            b"[nope]",
            b"[::1]x",
            b"a..b",
            b".",
            b":80",
            b"\xff\xfe",
            b"1:2:3",
        ] {
            assert_eq!(classify(bad), HostKind::Invalid, "{bad:?}");
        }
        let long = vec![b'a'; 254];
        assert_eq!(classify(&long), HostKind::Invalid);
    }

    #[test]
    fn served_names_exact_wildcard_and_apex() {
        let n = names(&["example.com", "*.wild.org", ".both.net", "Trailing.Dot."]);
        assert!(n.matches(b"example.com"));
        assert!(n.matches(b"EXAMPLE.com"));
        assert!(!n.matches(b"www.example.com"));
        assert!(!n.matches(b"notexample.com"));
        assert!(n.matches(b"a.wild.org"));
        assert!(n.matches(b"a.b.wild.org"));
        assert!(!n.matches(b"wild.org"));
        assert!(!n.matches(b"evilwild.org"));
        assert!(n.matches(b"both.net"));
        assert!(n.matches(b"x.both.net"));
        assert!(!n.matches(b"xboth.net"));
        assert!(n.matches(b"trailing.dot"));
    }

    #[test]
    fn bad_server_names_are_refused_by_name() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "exa mple.com",
            "10.0.0.1",
            "[::1]",
            "a..b",
        ] {
            let mut n = ServerNames::default();
            let err = n.add(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    fn headers(hosts: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn host_field_follows_the_rfcs() {
        use Version as V;
        let origin: Uri = "/".parse().unwrap();
        let absolute: Uri = "http://user@example.com:81/x".parse().unwrap();
        let h2: Uri = "https://example.com/x".parse().unwrap();
        // Owned, so the header map can be a temporary.
        let field = |v, uri, h: &[&[u8]]| match host_field(v, uri, &headers(h)) {
            HostField::Value(v) => String::from_utf8(v.to_vec()).unwrap(),
            other => format!("{other:?}"),
        };
        assert_eq!(field(V::HTTP_11, &origin, &[]), "Missing");
        assert_eq!(field(V::HTTP_10, &origin, &[]), "Missing");
        assert_eq!(field(V::HTTP_11, &origin, &[b""]), "Missing");
        assert_eq!(field(V::HTTP_11, &origin, &[b"a", b"b"]), "Ambiguous");
        assert_eq!(field(V::HTTP_11, &origin, &[b"a", b"a"]), "Ambiguous");
        // Absolute form: the target wins, but HTTP/1.1 still needs a Host.
        assert_eq!(field(V::HTTP_11, &absolute, &[b"evil.com"]), "example.com");
        assert_eq!(field(V::HTTP_11, &absolute, &[]), "Missing");
        assert_eq!(field(V::HTTP_10, &absolute, &[]), "example.com");
        assert_eq!(field(V::HTTP_11, &absolute, &[b"a", b"b"]), "Ambiguous");
        // HTTP/2: `:authority`, and a Host header must agree with it.
        assert_eq!(field(V::HTTP_2, &h2, &[]), "example.com");
        assert_eq!(field(V::HTTP_2, &h2, &[b"EXAMPLE.com"]), "example.com");
        assert_eq!(field(V::HTTP_2, &h2, &[b"evil.com"]), "Ambiguous");
        assert_eq!(field(V::HTTP_2, &origin, &[b"example.com"]), "example.com");
        assert_eq!(field(V::HTTP_2, &origin, &[]), "Missing");
    }

    #[test]
    fn rules_follow_the_catch_all_model() {
        let rules = HostRules {
            names: names(&["example.com"]),
            ..HostRules::default()
        };
        let uri: Uri = "/".parse().unwrap();
        let v = Version::HTTP_11;
        let check = |h: &[&[u8]]| rules.check(v, &uri, &headers(h));
        assert_eq!(check(&[b"example.com"]), Ok(()));
        assert_eq!(check(&[]), Err(DropReason::HostMissing));
        assert_eq!(check(&[b"127.0.0.1"]), Err(DropReason::HostIpLiteral));
        assert_eq!(check(&[b"evil.com"]), Err(DropReason::HostUnknown));
        assert_eq!(
            check(&[b"example.com", b"example.com"]),
            Err(DropReason::HostInvalid)
        );

        let only_missing = HostRules {
            drop_missing: true,
            ..HostRules::default()
        };
        assert_eq!(
            only_missing.check(v, &uri, &headers(&[])),
            Err(DropReason::HostMissing)
        );
        assert_eq!(only_missing.check(v, &uri, &headers(&[b"1.2.3.4"])), Ok(()));
        assert_eq!(
            only_missing.check(v, &uri, &headers(&[b"any.name"])),
            Ok(())
        );

        let inactive = HostRules::default();
        assert_eq!(inactive.check(v, &uri, &headers(&[b"a", b"b"])), Ok(()));
    }
}
