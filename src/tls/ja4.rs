//! The JA4 fingerprint of a ClientHello (FoxIO's JA4, TLS over TCP).

use std::fmt;
use std::str::FromStr;

use ring::digest::{Context, SHA256};

use super::client_hello::is_grease;

/// A client's JA4 fingerprint, such as
/// `t13d1516h2_8daaf6152771_e5627efa2ab1`: the protocol and TLS version,
/// whether a name was asked for, how many cipher suites and extensions,
/// the first ALPN protocol, then a hash of the sorted cipher suites and a
/// hash of the sorted extensions with the signature algorithms. It names a
/// client's TLS stack (a browser's, curl's, a scanner's library), whatever
/// User-Agent it sends.
///
/// Where FoxIO's specification and FoxIO's own tools differ, the crate
/// prints what the tools print, since deny rules are copied from them: SSL
/// 2.0 is `s2` for version `0x0002`, and an ALPN protocol that begins or
/// ends outside ASCII shows `9` for that character.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4([u8; Ja4::LEN]);

impl Ja4 {
    const LEN: usize = 36;

    /// The fingerprint as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The part before the first `_`: protocol, version, SNI, counts, ALPN.
    #[cfg(test)]
    fn a(&self) -> &str {
        &self.as_str()[..10]
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja4({})", self.as_str())
    }
}

/// Why a string is not a JA4 fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidJa4;

impl fmt::Display for InvalidJa4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a JA4 fingerprint: expected ten characters such as t13d1516h2, \
             then two 12-digit lowercase hex hashes, joined by `_`",
        )
    }
}

impl std::error::Error for InvalidJa4 {}

impl FromStr for Ja4 {
    type Err = InvalidJa4;

    fn from_str(s: &str) -> Result<Self, InvalidJa4> {
        let b = s.as_bytes();
        let bytes: [u8; Self::LEN] = b.try_into().map_err(|_| InvalidJa4)?;
        if !valid_a(&bytes[..10]) || bytes[10] != b'_' || bytes[23] != b'_' {
            return Err(InvalidJa4);
        }
        let hex = |part: &[u8]| part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(&bytes[11..23]) || !hex(&bytes[24..]) {
            return Err(InvalidJa4);
        }
        Ok(Self(bytes))
    }
}

/// Whether ten characters can be a JA4's first part.
pub(crate) fn valid_a(a: &[u8]) -> bool {
    a.len() == 10
        && matches!(a[0], b't' | b'q' | b'd')
        && a[1..3].iter().all(u8::is_ascii_alphanumeric)
        && matches!(a[3], b'd' | b'i')
        && a[4..8].iter().all(u8::is_ascii_digit)
        && a[8..10].iter().all(u8::is_ascii_alphanumeric)
}

/// What JA4 is made of, as the parser found it.
pub(crate) struct Ja4Input<I> {
    /// The highest version in `supported_versions`, else the ClientHello's.
    pub(crate) version: u16,
    pub(crate) ciphers: I,
    /// Extension types in the order sent, GREASE included.
    pub(crate) extensions: Vec<u16>,
    pub(crate) signature_algorithms: Option<I>,
    pub(crate) sni: bool,
    /// The first and last byte of the first ALPN protocol.
    pub(crate) first_alpn: Option<(u8, u8)>,
}

impl<I: Iterator<Item = u16> + Clone> Ja4Input<I> {
    pub(crate) fn fingerprint(self) -> Ja4 {
        let mut out = [0u8; Ja4::LEN];
        out[0] = b't';
        out[1..3].copy_from_slice(match self.version {
            0x0304 => b"13",
            0x0303 => b"12",
            0x0302 => b"11",
            0x0301 => b"10",
            0x0300 => b"s3",
            // SSL 2.0's version number, as FoxIO's tools map it.
            0x0002 => b"s2",
            _ => b"00",
        });
        out[3] = if self.sni { b'd' } else { b'i' };
        let mut ciphers: Vec<u16> = self.ciphers.filter(|c| !is_grease(*c)).collect();
        let mut extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| !is_grease(*e))
            .collect();
        two_digits(&mut out[4..6], ciphers.len());
        two_digits(&mut out[6..8], extensions.len());
        out[8..10].copy_from_slice(&alpn_chars(self.first_alpn));
        out[10] = b'_';
        ciphers.sort_unstable();
        hash_into(&mut out[11..23], &ciphers, None);
        out[23] = b'_';
        extensions.retain(|e| !matches!(e, 0x0000 | 0x0010));
        extensions.sort_unstable();
        let signatures: Option<Vec<u16>> = self
            .signature_algorithms
            .map(|s| s.filter(|v| !is_grease(*v)).collect());
        hash_into(
            &mut out[24..],
            &extensions,
            signatures.as_deref().filter(|s| !s.is_empty()),
        );
        Ja4(out)
    }
}

fn two_digits(out: &mut [u8], n: usize) {
    let n = n.min(99);
    out[0] = b'0' + u8::try_from(n / 10).unwrap_or(9);
    out[1] = b'0' + u8::try_from(n % 10).unwrap_or(9);
}

/// The first and last characters of the first ALPN protocol; `00` with
/// none. A byte outside ASCII is `9`, as FoxIO's own tools print it, so
/// that a fingerprint copied from them matches; for an ASCII protocol that
/// does not begin and end with a letter or digit, the first and last
/// characters of its hex form, as the specification says.
fn alpn_chars(alpn: Option<(u8, u8)>) -> [u8; 2] {
    match alpn {
        None => *b"00",
        Some((first, last)) if !first.is_ascii() || !last.is_ascii() => {
            let nine = |b: u8| if b.is_ascii() { b } else { b'9' };
            [nine(first), nine(last)]
        }
        Some((first, last)) if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() => {
            [first, last]
        }
        Some((first, last)) => [HEX[usize::from(first >> 4)], HEX[usize::from(last & 0xf)]],
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first 12 hex digits of the SHA-256 of `list` as comma-separated
/// 4-digit hex, then `_` and `tail` when there is one; twelve zeros for an
/// empty list.
fn hash_into(out: &mut [u8], list: &[u16], tail: Option<&[u16]>) {
    if list.is_empty() {
        out.fill(b'0');
        return;
    }
    let mut context = Context::new(&SHA256);
    hex_csv(&mut context, list);
    if let Some(tail) = tail {
        context.update(b"_");
        hex_csv(&mut context, tail);
    }
    let digest = context.finish();
    for (i, byte) in digest.as_ref().iter().take(out.len() / 2).enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
}

/// `values` as comma-separated 4-digit lowercase hex.
fn hex_csv(context: &mut Context, values: &[u16]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            context.update(b",");
        }
        let b = v.to_be_bytes();
        context.update(&[
            HEX[usize::from(b[0] >> 4)],
            HEX[usize::from(b[0] & 0xf)],
            HEX[usize::from(b[1] >> 4)],
            HEX[usize::from(b[1] & 0xf)],
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::client_hello::ClientHello;
    use super::super::client_hello::tests::{alpn, hello, records, sni};
    use super::*;

    fn hex_list(s: &str) -> Vec<u16> {
        s.split(',')
            .map(|v| u16::from_str_radix(v, 16).unwrap())
            .collect()
    }

    fn u16_vec(values: &[u16], len_bytes: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let n = values.len() * 2;
        if len_bytes == 1 {
            data.push(u8::try_from(n).unwrap());
        } else {
            data.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
        for v in values {
            data.extend_from_slice(&v.to_be_bytes());
        }
        data
    }

    /// The worked example of JA4's specification: its cipher suites,
    /// extensions and signature algorithms in their original order, with
    /// GREASE added where browsers put it, give its fingerprint.
    #[test]
    fn the_specifications_example() {
        let suites = hex_list(
            "2a2a,1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035",
        );
        let order = hex_list(
            "3a3a,001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015",
        );
        let signatures = hex_list("0403,0804,0401,0503,0805,0501,0806,0601");
        let extensions: Vec<(u16, Vec<u8>)> = order
            .iter()
            .map(|&kind| match kind {
                0x0000 => sni(b"example.com"),
                0x0010 => alpn(&[b"h2", b"http/1.1"]),
                0x000d => (kind, u16_vec(&signatures, 2)),
                0x002b => (kind, u16_vec(&[0x5a5a, 0x0304, 0x0303], 1)),
                _ => (kind, Vec::new()),
            })
            .collect();
        let wire = records(&hello(0x0303, &suites, &extensions), 1 << 14);
        let parsed = ClientHello::parse(&wire).unwrap().unwrap();
        assert_eq!(
            parsed.ja4().as_str(),
            "t13d1516h2_8daaf6152771_e5627efa2ab1"
        );
        assert_eq!(parsed.ja4().a(), "t13d1516h2");
    }

    /// A published Chrome 143 fingerprint, post-quantum key share and ECH
    /// included, from its raw (sorted) form.
    #[test]
    fn a_published_browser_fingerprint() {
        let suites =
            hex_list("1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035");
        let signatures = hex_list("0403,0804,0401,0503,0805,0501,0806,0601");
        let extensions: Vec<(u16, Vec<u8>)> = hex_list(
            "002d,0033,0010,fe0d,0017,44cd,0000,000b,000a,002b,ff01,0023,0012,0005,000d,001b",
        )
        .into_iter()
        .map(|kind| match kind {
            0x0000 => sni(b"tls.example"),
            0x0010 => alpn(&[b"h2", b"http/1.1"]),
            0x000d => (kind, u16_vec(&signatures, 2)),
            0x002b => (kind, u16_vec(&[0x0304, 0x0303], 1)),
            _ => (kind, Vec::new()),
        })
        .collect();
        let wire = records(&hello(0x0303, &suites, &extensions), 1 << 14);
        let ja4 = ClientHello::parse(&wire).unwrap().unwrap().ja4();
        assert_eq!(ja4.as_str(), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
    }

    /// The specification's hash of the extensions when a hello has no
    /// signature algorithms, and the parts of `a` for a bare hello.
    #[test]
    fn without_signature_algorithms_alpn_or_name() {
        let extensions: Vec<(u16, Vec<u8>)> =
            hex_list("0005,000a,000b,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01")
                .into_iter()
                .map(|kind| match kind {
                    0x002b => (kind, u16_vec(&[0x0303], 1)),
                    _ => (kind, Vec::new()),
                })
                .collect();
        let mut with_d = extensions.clone();
        with_d.push((0x000d, u16_vec(&[], 2)));
        let wire = records(&hello(0x0303, &[0x1301], &with_d), 1 << 14);
        let ja4 = ClientHello::parse(&wire).unwrap().unwrap().ja4();
        assert_eq!(&ja4.as_str()[24..], "6d807ffa2a79");
        assert_eq!(ja4.a(), "t12i011400");
    }

    /// Versions as FoxIO's tools name them: SSL 2.0 is `0x0002`.
    #[test]
    fn versions_are_named_as_foxio_names_them() {
        let a = |version: u16| {
            let input = Ja4Input {
                version,
                ciphers: [0x1301u16].into_iter(),
                extensions: Vec::new(),
                signature_algorithms: None,
                sni: false,
                first_alpn: None,
            };
            input.fingerprint().a().to_owned()
        };
        assert_eq!(a(0x0304), "t13i010000");
        assert_eq!(a(0x0300), "ts3i010000");
        assert_eq!(a(0x0002), "ts2i010000");
        assert_eq!(a(0x0200), "t00i010000");
        assert_eq!(a(0x0100), "t00i010000");
    }

    #[test]
    fn alpn_that_is_not_alphanumeric_is_shown_in_hex() {
        assert_eq!(alpn_chars(Some((b'h', b'2'))), *b"h2");
        assert_eq!(alpn_chars(Some((b'-', b'*'))), *b"2a");
        assert_eq!(alpn_chars(None), *b"00");
        // Outside ASCII, FoxIO's tools print 9.
        assert_eq!(alpn_chars(Some((0xba, 0xad))), *b"99");
        assert_eq!(alpn_chars(Some((b'x', 0xad))), *b"x9");
    }

    #[test]
    fn parses_its_own_text_and_refuses_others() {
        let fp = "t13d1516h2_8daaf6152771_e5627efa2ab1";
        assert_eq!(fp.parse::<Ja4>().unwrap().as_str(), fp);
        for bad in [
            "",
            "t13d1516h2_8daaf6152771",
            "t13d1516h2_8DAAF6152771_e5627efa2ab1",
            "x13d1516h2_8daaf6152771_e5627efa2ab1",
            "t13d1516h2-8daaf6152771_e5627efa2ab1",
            "t13d1516h2_8daaf6152771_e5627efa2ab1 ",
        ] {
            assert_eq!(bad.parse::<Ja4>(), Err(InvalidJa4), "{bad}");
        }
    }
}
