//! The forwarding headers: list entries of `X-Forwarded-For` and its kin,
//! and RFC 7239 `Forwarded` elements, read without allocating.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::addr::{Bracketed, bracketed, ipv4, numeric_port};

/// Reads one list entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`
/// or `[2001:db8::1]:80`, with optional surrounding whitespace.
pub(crate) fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = trim_blanks(entry);
    // The common case, a bare IPv4 address, without the general parsers.
    if let Some(v4) = ipv4(entry) {
        return Some(IpAddr::V4(v4));
    }
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    // Brackets hold IPv6 only: `[192.0.2.1]` is garbage, not an address.
    match bracketed(s.as_bytes()) {
        Bracketed::V6(v6, None) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// `bytes` without leading or trailing spaces and tabs.
fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The longest `for=` value worth reading: `"[v6]:port"` with a long scope.
const MAX_NODE: usize = 64;

/// Calls `f` once per RFC 7239 forwarded-element, in order, with the
/// address in its `for=` parameter, or `None` when the element has no
/// usable one (`unknown`, an obfuscated `_name`, a repeated `for`, a syntax
/// error). Empty elements are skipped, as RFC 9110 asks of list headers.
/// Commas and semicolons inside quoted strings do not split anything.
pub(crate) fn for_each_forwarded_for(line: &[u8], mut f: impl FnMut(Option<IpAddr>)) {
    let mut rest = line;
    while !rest.is_empty() {
        let (node, any_pair, after) = parse_element(rest);
        if any_pair {
            f(node);
        }
        rest = after;
    }
}

/// Parses one element; returns its `for` address, whether it had any content,
/// and what follows its terminating comma.
fn parse_element(input: &[u8]) -> (Option<IpAddr>, bool, &[u8]) {
    let mut rest = input;
    let mut node: Option<Option<IpAddr>> = None;
    let mut broken = false;
    let mut any = false;
    loop {
        rest = rest.trim_ascii_start();
        match rest.first() {
            None => break,
            Some(b',') => {
                rest = &rest[1..];
                break;
            }
            Some(b';') => {
                rest = &rest[1..];
                continue;
            }
            Some(_) => {}
        }
        any = true;
        let key_len = rest
            .iter()
            .position(|&b| matches!(b, b'=' | b';' | b',' | b' ' | b'\t' | b'"'))
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        rest = rest[key_len..].trim_ascii_start();
        let Some(after_eq) = rest.strip_prefix(b"=") else {
            broken = true;
            rest = skip_to_next_element(rest);
            break;
        };
        rest = after_eq.trim_ascii_start();
        let mut buf = [0u8; MAX_NODE];
        let value = if let Some(quoted) = rest.strip_prefix(b"\"") {
            match unquote(quoted, &mut buf) {
                Some((len, after)) => {
                    rest = after;
                    Some(&buf[..len])
                }
                None => {
                    rest = skip_to_next_element(quoted);
                    broken = true;
                    break;
                }
            }
        } else {
            let len = rest
                .iter()
                .position(|&b| matches!(b, b';' | b',' | b' ' | b'\t' | b'"'))
                .unwrap_or(rest.len());
            let token = &rest[..len];
            rest = &rest[len..];
            Some(token)
        };
        if key.eq_ignore_ascii_case(b"for") {
            if node.is_some() {
                broken = true;
            }
            node = Some(value.and_then(parse_node));
        }
        rest = rest.trim_ascii_start();
        match rest.first() {
            None | Some(b';' | b',') => {}
            Some(_) => {
                broken = true;
                rest = skip_to_next_element(rest);
                break;
            }
        }
    }
    let node = if broken { None } else { node.flatten() };
    (node, any, rest)
}

/// Copies a quoted-string body (after the opening quote) into `buf`,
/// resolving `\` escapes. Returns its length and the input after the
/// closing quote; `None` if it does not close or does not fit.
fn unquote<'a>(input: &'a [u8], buf: &mut [u8; MAX_NODE]) -> Option<(usize, &'a [u8])> {
    let mut len = 0;
    let mut i = 0;
    while i < input.len() {
        let b = match input[i] {
            b'"' => return Some((len, &input[i + 1..])),
            b'\\' => {
                i += 1;
                *input.get(i)?
            }
            b => b,
        };
        *buf.get_mut(len)? = b;
        len += 1;
        i += 1;
    }
    None
}

/// Skips to just after the next comma outside a quoted string.
fn skip_to_next_element(input: &[u8]) -> &[u8] {
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => quoted = !quoted,
            (false, _, b',') => return &input[i + 1..],
            _ => {}
        }
    }
    &[]
}

/// An RFC 7239 node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`. `unknown` and obfuscated `_names` are not addresses.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    // RFC 7239 §6: a port is a number or an obfuscated `_name`.
    let valid_port = |p: &[u8]| {
        numeric_port(p)
            || (p.starts_with(b"_")
                && p.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
    };
    match bracketed(node) {
        Bracketed::V6(v6, port) if port.is_none_or(valid_port) => return Some(IpAddr::V6(v6)),
        Bracketed::V6(..) | Bracketed::Invalid => return None,
        Bracketed::No => {}
    }
    let s = std::str::from_utf8(node).ok()?;
    let (addr, port) = match s.split_once(':') {
        Some((addr, port)) => (addr, Some(port)),
        None => (s, None),
    };
    if port.is_some_and(|p| !valid_port(p.as_bytes())) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}
