//! Ports and bracketed IPv6 addresses, the one implementation the Host and
//! forwarding-header parsers share.

use std::net::Ipv6Addr;

/// A port of digits that fits in 16 bits. Callers decide whether an empty
/// port, or another form, is allowed where they are.
pub(crate) fn numeric_port(port: &[u8]) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
}

/// An IPv6 address, from bytes.
pub(crate) fn ipv6(bytes: &[u8]) -> Option<Ipv6Addr> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What a value that may start with `[` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bracketed<'a> {
    /// It does not start with `[`.
    No,
    /// `[` without a `]`, a non-IPv6 address inside, or anything but a
    /// `:port` after the `]`.
    Invalid,
    /// `[v6]`, and the port after `]:` if there is one (maybe empty).
    V6(Ipv6Addr, Option<&'a [u8]>),
}

/// Reads `[v6]` or `[v6]:port`. Brackets hold IPv6 only: `[192.0.2.1]`
/// is not an address.
pub(crate) fn bracketed(value: &[u8]) -> Bracketed<'_> {
    let Some(rest) = value.strip_prefix(b"[") else {
        return Bracketed::No;
    };
    let Some(close) = rest.iter().position(|&b| b == b']') else {
        return Bracketed::Invalid;
    };
    let (inside, after) = (&rest[..close], &rest[close + 1..]);
    let Some(v6) = ipv6(inside) else {
        return Bracketed::Invalid;
    };
    match after {
        [] => Bracketed::V6(v6, None),
        [b':', port @ ..] => Bracketed::V6(v6, Some(port)),
        _ => Bracketed::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        for ok in ["0", "80", "65535", "00080"] {
            assert!(numeric_port(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "65536", "99999", "-1", "8o", "123456", " 80"] {
            assert!(!numeric_port(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn brackets() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(bracketed(b"[2001:db8::1]"), Bracketed::V6(v6, None));
        assert_eq!(
            bracketed(b"[2001:db8::1]:443"),
            Bracketed::V6(v6, Some(&b"443"[..]))
        );
        assert_eq!(
            bracketed(b"[2001:db8::1]:"),
            Bracketed::V6(v6, Some(&b""[..]))
        );
        assert_eq!(bracketed(b"2001:db8::1"), Bracketed::No);
        for bad in ["[192.0.2.1]", "[2001:db8::1", "[2001:db8::1]x", "[]"] {
            assert_eq!(bracketed(bad.as_bytes()), Bracketed::Invalid, "{bad}");
        }
    }
}
