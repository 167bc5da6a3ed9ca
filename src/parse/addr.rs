//! Ports and bracketed IPv6 addresses, the one implementation the Host and
//! forwarding-header parsers share.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A port of digits that fits in 16 bits. Callers decide whether an empty
/// port, or another form, is allowed where they are.
pub(crate) fn numeric_port(port: &[u8]) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
}

/// A dotted-quad IPv4 address, from bytes, exactly as std's parser reads
/// one: four decimal octets of at most 255, no leading zeros, nothing else.
/// Written out because std parses only `&str`, and the UTF-8 check and its
/// general parser cost more than the address, read on every request behind
/// a proxy.
pub(crate) fn ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let digit = |b: u8| u16::from(b - b'0');
    let mut octets = [0u8; 4];
    let mut rest = bytes;
    for (i, octet) in octets.iter_mut().enumerate() {
        // An octet is read whole by its shape: a leading zero (`01`) is
        // not one, as std refuses it.
        let (value, tail) = match rest {
            [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9', tail @ ..] => {
                (digit(*a) * 100 + digit(*b) * 10 + digit(*c), tail)
            }
            [a @ b'1'..=b'9', b @ b'0'..=b'9', tail @ ..] => (digit(*a) * 10 + digit(*b), tail),
            [a @ b'0'..=b'9', tail @ ..] => (digit(*a), tail),
            _ => return None,
        };
        *octet = u8::try_from(value).ok()?;
        rest = match (i, tail) {
            (3, []) => tail,
            (0..=2, [b'.', after @ ..]) => after,
            _ => return None,
        };
    }
    Some(Ipv4Addr::from(octets))
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

#[cfg(test)]
mod ipv4_tests {
    use super::*;

    /// Agrees with std on every string of up to 7 characters over the bytes
    /// that matter, and on a spread of longer ones.
    #[test]
    fn reads_exactly_what_std_reads() {
        let mut cases = crate::parse::every_string(b"0129.a: ", 7);
        for text in [
            "192.0.2.1",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3.04",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.-4",
            "999.1.1.1",
            "10.0.0.255",
            "255.255.255.256",
            "1.2.3.4.",
            ".1.2.3.4",
            "1.2.3.",
            "0.0.0.00",
            "100.200.250.199",
            "1.2.3.4:80",
            "2001:db8::1",
            "١.٢.٣.٤",
        ] {
            cases.push(text.as_bytes().to_vec());
        }
        for case in &cases {
            let std = std::str::from_utf8(case)
                .ok()
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            assert_eq!(ipv4(case), std, "{:?}", String::from_utf8_lossy(case));
        }
    }
}
