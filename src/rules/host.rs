//! The Host rules: missing, IP-literal and unknown names.

use std::collections::HashSet;

#[cfg(test)]
use http::HeaderMap;
use http::{Uri, Version};

use super::DropReason;
use crate::error::BuildError;
use crate::parse::ascii::{eq_lowercase, lowercase_into};
use crate::parse::headers::HeaderScan;
use crate::parse::host::{HostField, HostKind, MAX_NAME_LEN, classify, host_field_of};

/// Served names, like nginx `server_name`: exact names, `*.example.com`
/// (any subdomain) and `.example.com` (the apex and any subdomain).
#[derive(Debug, Default)]
pub(crate) struct ServerNames {
    exact: NameSet,
    /// Stored with their leading dot, e.g. `.example.com`.
    suffixes: NameSet,
}

/// Lowercase names. Most services serve a few: those are compared in a list,
/// length first, which costs less than hashing the name; beyond a few, a
/// hash set with a per-process key.
#[derive(Debug, Default)]
struct NameSet {
    few: Vec<Box<[u8]>>,
    many: HashSet<Box<[u8]>, foldhash::quality::RandomState>,
}

impl NameSet {
    const FEW: usize = 8;

    fn is_empty(&self) -> bool {
        self.few.is_empty() && self.many.is_empty()
    }

    fn insert(&mut self, name: Box<[u8]>) {
        if self.contains(&name) {
            return;
        }
        if self.many.is_empty() && self.few.len() < Self::FEW {
            self.few.push(name);
        } else {
            self.many.extend(self.few.drain(..));
            self.many.insert(name);
        }
    }

    /// The names, when there are few enough to compare one by one.
    fn few(&self) -> Option<&[Box<[u8]>]> {
        self.many.is_empty().then_some(&self.few[..])
    }

    fn contains(&self, name: &[u8]) -> bool {
        if self.many.is_empty() {
            self.few.iter().any(|n| **n == *name)
        } else {
            self.many.contains(name)
        }
    }
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
            _ if base.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
            }) =>
            {
                return Err(bad(
                    "a server name takes no port: the Host's port is ignored when comparing, \
                     so give the name alone",
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

    /// Whether `value` is one of a few exact names, case aside. Served
    /// names are checked at build, so such a value is a name too.
    pub(crate) fn is_exact(&self, value: &[u8]) -> bool {
        self.exact.few().is_some_and(|names| {
            // Lengths first, inline: most names differ in length.
            names
                .iter()
                .any(|n| n.len() == value.len() && eq_lowercase(n, value))
        })
    }

    /// `name` comes from [`classify`]: no port, no trailing dot, any case.
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        if let (Some(_), Some(suffixes)) = (self.exact.few(), self.suffixes.few()) {
            // Compared in place, eight bytes at a time, with no copy.
            return self.is_exact(name)
                || suffixes.iter().any(|s| {
                    name.len() > s.len() && eq_lowercase(s, &name[name.len() - s.len()..])
                });
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return false;
        };
        lowercase_into(name, lower);
        let lower = &*lower;
        if self.exact.contains(lower) {
            return true;
        }
        if let Some(suffixes) = self.suffixes.few() {
            return suffixes
                .iter()
                .any(|s| lower.len() > s.len() && lower.ends_with(s));
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
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        version: Version,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(), DropReason> {
        let scan = HeaderScan::new(headers, None);
        self.check_scanned(version, uri, &scan)
    }

    /// [`HostRules::check`] with the `Host` lines from a scan.
    pub(crate) fn check_scanned(
        &self,
        version: Version,
        uri: &Uri,
        scan: &HeaderScan<'_>,
    ) -> Result<(), DropReason> {
        if !self.is_active() {
            return Ok(());
        }
        let catch_all = !self.names.is_empty();
        let field = if scan.host.is_repeated() {
            HostField::Ambiguous
        } else {
            host_field_of(version, uri, scan.host.only())
        };
        let value = match field {
            HostField::Missing if self.drop_missing || catch_all => {
                return Err(DropReason::HostMissing);
            }
            HostField::Missing => return Ok(()),
            HostField::Ambiguous => return Err(DropReason::HostInvalid),
            HostField::Mismatch => return Err(DropReason::HostMismatch),
            HostField::Value(v) => v,
        };
        if self.names.is_exact(value) {
            // The usual request names a served name as it is: that is a
            // name, and served, without reading it a second time.
            return Ok(());
        }
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

impl HostRules {
    /// The Host rules read for the server name of a TLS ClientHello (SNI),
    /// which names no port and may be absent. A client sends no name when
    /// it connects by address, so a missing name is dropped where an
    /// address would be: with a served-names list, or with
    /// `drop_ip_literal`; `drop_missing` alone does not drop it, since the
    /// requests inside still carry a Host for that rule to judge.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    pub(crate) fn check_server_name(&self, name: Option<&[u8]>) -> Result<(), DropReason> {
        let catch_all = !self.names.is_empty();
        let by_address = self.drop_ip_literal || catch_all;
        let Some(name) = name else {
            return if by_address {
                Err(DropReason::TlsSniMissing)
            } else {
                Ok(())
            };
        };
        if self.names.is_exact(name) {
            return Ok(());
        }
        let ipv6 = std::str::from_utf8(name).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        let kind = if ipv6 {
            HostKind::IpLiteral
        } else if name.contains(&b':') {
            // A port, or brackets: no server name carries one.
            HostKind::Invalid
        } else {
            classify(name)
        };
        match kind {
            HostKind::IpLiteral if by_address => Err(DropReason::TlsSniIpLiteral),
            HostKind::IpLiteral => Ok(()),
            HostKind::Invalid if catch_all => Err(DropReason::TlsSniUnknown),
            HostKind::Invalid => Ok(()),
            HostKind::Name(name) if catch_all && !self.names.matches(name) => {
                Err(DropReason::TlsSniUnknown)
            }
            HostKind::Name(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::host::host_field;
    use http::HeaderValue;
    use http::header::HOST;

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
        // Absolute form: HTTP/1.1 still needs a Host, and it must agree.
        assert_eq!(field(V::HTTP_11, &absolute, &[b"evil.com"]), "Mismatch");
        assert_eq!(
            field(V::HTTP_11, &absolute, &[b"Example.COM:81"]),
            "example.com"
        );
        // Another port is another authority.
        assert_eq!(field(V::HTTP_11, &absolute, &[b"example.com"]), "Mismatch");
        assert_eq!(field(V::HTTP_11, &absolute, &[]), "Missing");
        assert_eq!(field(V::HTTP_10, &absolute, &[]), "example.com");
        assert_eq!(field(V::HTTP_11, &absolute, &[b"a", b"b"]), "Ambiguous");
        // HTTP/2: `:authority`, and a Host header must agree with it.
        assert_eq!(field(V::HTTP_2, &h2, &[]), "example.com");
        assert_eq!(field(V::HTTP_2, &h2, &[b"EXAMPLE.com"]), "example.com");
        assert_eq!(field(V::HTTP_2, &h2, &[b"evil.com"]), "Mismatch");
        assert_eq!(field(V::HTTP_2, &origin, &[b"example.com"]), "example.com");
        assert_eq!(field(V::HTTP_2, &origin, &[]), "Missing");
        // One authority spelled two ways is one authority: the default
        // port, an empty port and one trailing dot are left out.
        let port_80: Uri = "http://example.com:80/".parse().unwrap();
        let plain: Uri = "http://example.com/".parse().unwrap();
        let dotted: Uri = "http://example.com./".parse().unwrap();
        let tls_443: Uri = "https://example.com:443/".parse().unwrap();
        let v6: Uri = "http://[::1]:80/".parse().unwrap();
        for (uri, host) in [
            (&port_80, &b"example.com"[..]),
            (&plain, b"example.com:80"),
            (&plain, b"example.com:"),
            (&plain, b"example.com."),
            (&dotted, b"example.com"),
            (&dotted, b"EXAMPLE.com.:80"),
            (&tls_443, b"example.com"),
            (&h2, b"example.com:443"),
            (&v6, b"[::1]"),
        ] {
            assert_ne!(
                field(V::HTTP_11, uri, &[host]),
                "Mismatch",
                "{uri} with Host {}",
                String::from_utf8_lossy(host)
            );
        }
        // Another port, or another name, is still another authority.
        for (uri, host) in [
            (&port_80, &b"example.com:443"[..]),
            (&tls_443, b"example.com:80"),
            (&plain, b"example.com:8080"),
            (&plain, b"example.com.."),
            (&plain, b"example.co"),
            (&v6, b"[::2]"),
            (&v6, b"[::1]:81"),
        ] {
            assert_eq!(
                field(V::HTTP_11, uri, &[host]),
                "Mismatch",
                "{uri} with Host {}",
                String::from_utf8_lossy(host)
            );
        }
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
        // The exact-name shortcut and the full reading agree on case, ports,
        // a trailing dot and near misses.
        for (host, want) in [
            (&b"EXAMPLE.Com"[..], Ok(())),
            (b"example.com.", Ok(())),
            (b"example.com:8080", Ok(())),
            (b"example.com:x", Err(DropReason::HostInvalid)),
            (b"example.co", Err(DropReason::HostUnknown)),
            (b"example.comm", Err(DropReason::HostUnknown)),
            (b"exampl\xc5.com", Err(DropReason::HostInvalid)),
        ] {
            assert_eq!(check(&[host]), want, "{:?}", String::from_utf8_lossy(host));
        }
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

    #[test]
    fn server_names_follow_the_host_rules() {
        let served = HostRules {
            names: names(&["example.com", "*.example.org"]),
            ..HostRules::default()
        };
        assert_eq!(served.check_server_name(Some(b"example.com")), Ok(()));
        assert_eq!(served.check_server_name(Some(b"EXAMPLE.com")), Ok(()));
        assert_eq!(served.check_server_name(Some(b"a.example.org")), Ok(()));
        assert_eq!(
            served.check_server_name(None),
            Err(DropReason::TlsSniMissing)
        );
        for (name, reason) in [
            (&b"example.net"[..], DropReason::TlsSniUnknown),
            (b"example.org", DropReason::TlsSniUnknown),
            (b"192.0.2.1", DropReason::TlsSniIpLiteral),
            (b"2001:db8::1", DropReason::TlsSniIpLiteral),
            (b"example.com:443", DropReason::TlsSniUnknown),
            (b"exa mple.com", DropReason::TlsSniUnknown),
        ] {
            assert_eq!(served.check_server_name(Some(name)), Err(reason));
        }
        // `drop_missing` alone keeps clients that connect by address: their
        // requests carry a Host for it to judge.
        let missing_only = HostRules {
            drop_missing: true,
            ..HostRules::default()
        };
        assert_eq!(missing_only.check_server_name(None), Ok(()));
        assert_eq!(missing_only.check_server_name(Some(b"192.0.2.1")), Ok(()));
        let literal = HostRules {
            drop_ip_literal: true,
            ..HostRules::default()
        };
        assert_eq!(
            literal.check_server_name(None),
            Err(DropReason::TlsSniMissing)
        );
        assert_eq!(
            literal.check_server_name(Some(b"192.0.2.1")),
            Err(DropReason::TlsSniIpLiteral)
        );
        assert_eq!(literal.check_server_name(Some(b"any.example")), Ok(()));
        assert_eq!(HostRules::default().check_server_name(None), Ok(()));
    }
}
