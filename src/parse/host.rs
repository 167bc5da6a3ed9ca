//! The host a request names: which of the Host header and the URI
//! authority counts, and what kind of host it is.

use http::{HeaderMap, HeaderValue, Uri, Version, header::HOST};

use super::addr::{Bracketed, bracketed, ipv6, numeric_port};

/// RFC 1035 caps a name at 253 characters without the trailing dot; anything
/// longer cannot be a served name, so it never needs a lookup buffer.
pub(crate) const MAX_NAME_LEN: usize = 253;

/// What the request says its host is, before any rule looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostField<'a> {
    Missing,
    /// Two Host headers: there is no single answer, so the request is
    /// malformed.
    Ambiguous,
    /// The target's authority (absolute form, or HTTP/2's `:authority`)
    /// and the Host header name different hosts. A handler reading the
    /// Host header would not see the host the rules judged.
    Mismatch,
    Value(&'a [u8]),
}

/// Picks the host as the HTTP RFCs tell an origin server to:
///
/// - more than one Host header makes any request malformed (RFC 9112 §3.2);
/// - HTTP/1.1 requires a Host header, even with an absolute-form target;
/// - the authority of an absolute-form target is the host (RFC 9112
///   §3.2.2), and so is HTTP/2's `:authority`, which hyper puts in the URI;
/// - a Host header naming another authority than the target's is a
///   mismatch: RFC 9113 §8.3.1 makes it malformed on HTTP/2, and on HTTP/1
///   the application would read the Host header while the rules judged the
///   target.
pub(crate) fn host_field<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> HostField<'a> {
    let mut lines = headers.get_all(HOST).iter();
    let header = match (lines.next(), lines.next()) {
        (Some(_), Some(_)) => return HostField::Ambiguous,
        (line, _) => line,
    };
    host_field_of(version, uri, header)
}

/// [`host_field`] with the `Host` line already found: `None` when there
/// is none. A repeated `Host` is for the caller to refuse as ambiguous.
pub(crate) fn host_field_of<'a>(
    version: Version,
    uri: &'a Uri,
    header: Option<&'a HeaderValue>,
) -> HostField<'a> {
    let header = header.map(HeaderValue::as_bytes).filter(|v| !v.is_empty());
    // `Authority::host` drops userinfo, so `user@evil` cannot pose as a name.
    let authority = uri.authority().filter(|a| !a.host().is_empty());
    match (authority, header) {
        (Some(a), Some(h)) => {
            let without_userinfo = a.as_str().rsplit('@').next().unwrap_or_default();
            if same_authority(without_userinfo.as_bytes(), h, default_port(uri)) {
                HostField::Value(a.host().as_bytes())
            } else {
                HostField::Mismatch
            }
        }
        (Some(_), None) if version == Version::HTTP_11 => HostField::Missing,
        (Some(a), None) => HostField::Value(a.host().as_bytes()),
        (None, Some(h)) => HostField::Value(h),
        (None, None) => HostField::Missing,
    }
}

/// The port a URI's scheme implies, which a client may spell or leave out.
fn default_port(uri: &Uri) -> Option<&'static [u8]> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(b"80"),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(b"443"),
        _ => None,
    }
}

/// Whether two spellings of `host[:port]` name one authority: case aside,
/// with one trailing dot and the scheme's default port (or an empty one)
/// left out, as `http://example.com:80/` and `Host: example.com.` are the
/// same server to every client. Anything else is another authority.
fn same_authority(a: &[u8], b: &[u8], default_port: Option<&[u8]>) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (host_a, port_a) = split_port(a, default_port);
    let (host_b, port_b) = split_port(b, default_port);
    port_a == port_b && host_a.eq_ignore_ascii_case(host_b)
}

/// `host[:port]` as its host without one trailing dot, and its port, `None`
/// when it is absent, empty or the default.
fn split_port<'a>(value: &'a [u8], default_port: Option<&[u8]>) -> (&'a [u8], Option<&'a [u8]>) {
    let (host, port) = match bracketed(value) {
        Bracketed::V6(_, port) => {
            let end = value
                .iter()
                .position(|&b| b == b']')
                .map_or(value.len(), |i| i + 1);
            (&value[..end], port)
        }
        _ => match value.iter().position(|&b| b == b':') {
            // More than one colon: a bare IPv6 address, compared whole.
            Some(at) if !value[at + 1..].contains(&b':') => (&value[..at], Some(&value[at + 1..])),
            _ => (value, None),
        },
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let port = port.filter(|p| !p.is_empty() && Some(*p) != default_port);
    (host, port)
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
    match plain_name(value) {
        Some(name) => HostKind::Name(name),
        None => classify_fully(value),
    }
}

/// [`classify`] for every form: brackets, bare IPv6, ports, trailing dots,
/// numeric names.
fn classify_fully(value: &[u8]) -> HostKind<'_> {
    match bracketed(value) {
        // An empty port is allowed by RFC 3986 (`[::1]:`).
        Bracketed::V6(_, port) if port.is_none_or(|p| p.is_empty() || numeric_port(p)) => {
            return HostKind::IpLiteral;
        }
        Bracketed::V6(..) | Bracketed::Invalid => return HostKind::Invalid,
        Bracketed::No => {}
    }
    let colons = value.iter().filter(|&&b| b == b':').count();
    let name = match colons {
        0 => value,
        1 => {
            let at = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            let port = &value[at + 1..];
            // An empty port is allowed by RFC 3986 (`example.com:`).
            if !(port.is_empty() || numeric_port(port)) {
                return HostKind::Invalid;
            }
            &value[..at]
        }
        // A bare IPv6 address is not valid in Host, but it is still an
        // address and clients do send it.
        _ => {
            return if ipv6(value).is_some() {
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

/// The common case in one pass: a DNS name whose last label starts with a
/// letter, without a trailing dot, maybe with `:port`. `None` leaves the
/// value to [`classify`]'s full reading, which gives the same answer for
/// anything this accepts.
fn plain_name(value: &[u8]) -> Option<&[u8]> {
    let mut after_dot = true;
    let mut last_label = 0;
    let mut end = value.len();
    for (i, &b) in value.iter().enumerate() {
        match BYTE_CLASS[usize::from(b)] {
            NAME_BYTE => after_dot = false,
            DOT if !after_dot => {
                after_dot = true;
                last_label = i + 1;
            }
            COLON => {
                end = i;
                break;
            }
            _ => return None,
        }
    }
    let port = value.get(end + 1..).unwrap_or_default();
    let name = &value[..end];
    let port_ok = end == value.len() || port.is_empty() || numeric_port(port);
    let last_is_word = name.get(last_label).is_some_and(u8::is_ascii_alphabetic);
    (port_ok && !after_dot && last_is_word && name.len() <= MAX_NAME_LEN).then_some(name)
}

const OTHER: u8 = 0;
const NAME_BYTE: u8 = 1;
const DOT: u8 = 2;
const COLON: u8 = 3;

/// What each byte is to [`plain_name`]: one table lookup a byte.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            NAME_BYTE
        } else if byte == b'.' {
            DOT
        } else if byte == b':' {
            COLON
        } else {
            OTHER
        };
        b += 1;
    }
    table
};

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

#[cfg(test)]
mod plain_name_tests {
    use super::*;

    /// The one-pass reading never disagrees with the full one: checked on
    /// every string of up to 6 characters over the bytes that matter.
    #[test]
    fn the_fast_path_agrees_with_the_full_reading() {
        let mut accepted = 0;
        for case in crate::parse::every_string(b"aZ0-_.:[]9", 6) {
            if let Some(name) = plain_name(&case) {
                accepted += 1;
                assert_eq!(
                    classify_fully(&case),
                    HostKind::Name(name),
                    "{:?}",
                    String::from_utf8_lossy(&case)
                );
            }
        }
        assert!(accepted > 1000, "the fast path took {accepted}");
    }
}
