//! The PROXY protocol header an L4 load balancer writes before any byte of
//! its client's: where the connection came from, in text (version 1) or
//! binary (version 2).
//!
//! The header comes before anything else on the connection, so reading it
//! is the most exposed parse in the crate. It is `ppp`'s, a maintained
//! parser that borrows from the bytes and allocates nothing, rather than
//! the crate's own: what the crate adds is the policy on top, tested here
//! on random and mutated input split at every point. That policy is
//! strict, as nginx's `proxy_protocol` listener is: a header that does not
//! parse, or carries a datagram's addresses, or a TLV that overruns it, is
//! [`Preamble::Invalid`], never passed over.

use std::net::SocketAddr;

use ppp::{PartialResult, v1, v2};

/// What the first bytes of a connection from a balancer say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Preamble {
    /// A header may still complete with more bytes.
    Incomplete,
    /// No header, or a broken one; more bytes cannot mend it.
    Invalid,
    /// A whole header of `len` bytes. `client` is the source it names, or
    /// `None` where the balancer speaks for itself (`LOCAL`, a health
    /// check) or names no address (`UNKNOWN`, `AF_UNSPEC`, a UNIX socket):
    /// the connection is then the balancer's own.
    Read {
        len: usize,
        client: Option<SocketAddr>,
    },
}

/// The longest header: version 2's sixteen bytes and the most its length
/// field can announce.
#[cfg(test)]
pub(crate) const MAX_LEN: usize = 16 + u16::MAX as usize;

/// Reads the header at the start of `bytes`, which may hold more after it.
pub(crate) fn read(bytes: &[u8]) -> Preamble {
    // Version 2's signature begins with a carriage return, version 1's
    // with `PROXY`.
    match bytes.first() {
        None | Some(b'\r') => binary(bytes),
        Some(_) => text(bytes),
    }
}

/// The most a version 1 header may take, its line end included.
const MAX_TEXT: usize = 107;

/// Version 1. `ppp` is given only a whole line: on a line cut short it can
/// take a field in progress for a bad one (a port of `4` on its way to
/// `443`), so the line's end is found here first.
fn text(bytes: &[u8]) -> Preamble {
    const PREFIX: &[u8] = b"PROXY ";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Preamble::Invalid;
    }
    let line = match bytes.iter().position(|&b| b == b'\r' || b == b'\n') {
        None if bytes.len() >= MAX_TEXT => return Preamble::Invalid,
        None => return Preamble::Incomplete,
        // A line ends with both.
        Some(at) if bytes[at] == b'\n' => return Preamble::Invalid,
        // The byte after the carriage return says whether the line ends.
        Some(at) if at + 1 == bytes.len() => return Preamble::Incomplete,
        Some(at) => &bytes[..at + 2],
    };
    match v1::Header::try_from(line) {
        Ok(header) => Preamble::Read {
            len: header.header.len(),
            client: match header.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            },
        },
        // A whole line that does not parse, whatever `ppp` calls it.
        Err(_) => Preamble::Invalid,
    }
}

/// Version 2, whose length field says where it ends.
fn binary(bytes: &[u8]) -> Preamble {
    let header = match v2::Header::try_from(bytes) {
        Ok(header) => header,
        Err(e) if e.is_incomplete() => return Preamble::Incomplete,
        Err(_) => return Preamble::Invalid,
    };
    if header.protocol == v2::Protocol::Datagram || header.tlvs().any(|tlv| tlv.is_err()) {
        return Preamble::Invalid;
    }
    let client = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
    };
    Preamble::Read {
        len: header.len(),
        client,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(addresses);
        out.extend_from_slice(tlvs);
        out
    }

    fn v4_addresses(src: [u8; 4], sport: u16) -> Vec<u8> {
        let mut out = src.to_vec();
        out.extend_from_slice(&[192, 0, 2, 1]);
        out.extend_from_slice(&sport.to_be_bytes());
        out.extend_from_slice(&443u16.to_be_bytes());
        out
    }

    fn client(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_version_names_its_client() {
        let line = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            read(line),
            Preamble::Read {
                len: 45,
                client: client("198.51.100.7:40000")
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n";
        assert_eq!(
            read(line),
            Preamble::Read {
                len: line.len(),
                client: client("[2001:db8::7]:40000")
            }
        );
        let binary = v2(1, 0x11, &v4_addresses([198, 51, 100, 7], 40000), &[]);
        assert_eq!(
            read(&binary),
            Preamble::Read {
                len: 28,
                client: client("198.51.100.7:40000")
            }
        );
        // TLVs it does not use (an authority, a NOOP) are skipped.
        let tlvs = [&[0x02, 0, 3][..], b"a.b", &[0x04, 0, 0]].concat();
        let binary = v2(1, 0x11, &v4_addresses([198, 51, 100, 7], 1), &tlvs);
        assert!(matches!(
            read(&binary),
            Preamble::Read {
                len: 37,
                client: Some(_)
            }
        ));
    }

    #[test]
    fn the_balancer_speaking_for_itself_names_no_client() {
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            read(unknown),
            Preamble::Read {
                len: 15,
                client: None
            }
        );
        // LOCAL, a health check, whatever addresses it carries.
        let local = v2(0, 0x11, &v4_addresses([198, 51, 100, 7], 1), &[]);
        assert_eq!(
            read(&local),
            Preamble::Read {
                len: 28,
                client: None
            }
        );
        let unspecified = v2(1, 0x00, &[], &[]);
        assert_eq!(
            read(&unspecified),
            Preamble::Read {
                len: 16,
                client: None
            }
        );
    }

    #[test]
    fn what_no_balancer_sends_is_invalid() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01",
            b"PROXY TCP4 198.51.100.7 192.0.2.1 040000 443\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 1 443\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.1 1 443 5\r\n",
            b"PROXY TCP4 198.51.100.7  192.0.2.1 1 443\r\n",
            b"PROXY TCP4 198.51.100.7 192.0.2.1 1 443\n",
            b"proxy TCP4 198.51.100.7 192.0.2.1 1 443\r\n",
        ] {
            assert_eq!(
                read(bytes),
                Preamble::Invalid,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // Version 1 without its end in 107 bytes.
        let long = [&b"PROXY UNKNOWN "[..], &[b'x'; 120]].concat();
        assert_eq!(read(&long), Preamble::Invalid);
        // A datagram's addresses, version 1 and a bad command in version 2,
        // a TLV past the header's end, and too short for its family.
        for bytes in [
            v2(1, 0x12, &v4_addresses([198, 51, 100, 7], 1), &[]),
            {
                let mut b = v2(1, 0x11, &v4_addresses([1, 2, 3, 4], 1), &[]);
                b[12] = 0x11;
                b
            },
            v2(2, 0x11, &v4_addresses([1, 2, 3, 4], 1), &[]),
            v2(1, 0x11, &v4_addresses([1, 2, 3, 4], 1), &[0x02, 0, 9, b'a']),
            v2(1, 0x11, &v4_addresses([1, 2, 3, 4], 1), &[0x04, 0]),
            v2(1, 0x21, &v4_addresses([1, 2, 3, 4], 1), &[]),
        ] {
            assert_eq!(read(&bytes), Preamble::Invalid, "{bytes:?}");
        }
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let tlvs = [&[0x02, 0, 3][..], b"a.b"].concat();
        for header in [
            b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(1, 0x11, &v4_addresses([198, 51, 100, 7], 40000), &tlvs),
        ] {
            for cut in 0..header.len() {
                assert_eq!(
                    read(&header[..cut]),
                    Preamble::Incomplete,
                    "{cut} of {header:?}"
                );
            }
        }
    }

    /// A header in any form the balancers write, whatever follows it.
    pub(crate) fn header() -> impl Strategy<Value = (Vec<u8>, Option<SocketAddr>)> {
        let port = any::<u16>();
        prop_oneof![
            (any::<[u8; 4]>(), port).prop_map(|(ip, port)| {
                let client = SocketAddr::from((ip, port));
                let text = format!("PROXY TCP4 {} 192.0.2.1 {port} 443\r\n", client.ip());
                (text.into_bytes(), Some(client))
            }),
            (any::<[u16; 8]>(), port).prop_map(|(ip, port)| {
                let client = SocketAddr::from((std::net::Ipv6Addr::from(ip), port));
                let text = format!("PROXY TCP6 {} ::1 {port} 443\r\n", client.ip());
                (text.into_bytes(), Some(client))
            }),
            (
                any::<[u8; 4]>(),
                port,
                proptest::collection::vec(
                    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)),
                    0..4
                )
            )
                .prop_map(|(ip, port, tlvs)| {
                    let tlvs: Vec<u8> = tlvs
                        .iter()
                        .flat_map(|(kind, value)| {
                            let len = u16::try_from(value.len()).unwrap().to_be_bytes();
                            [&[*kind][..], &len, value].concat()
                        })
                        .collect();
                    (
                        v2(1, 0x11, &v4_addresses(ip, port), &tlvs),
                        Some(SocketAddr::from((ip, port))),
                    )
                }),
            Just((b"PROXY UNKNOWN\r\n".to_vec(), None)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Split anywhere, a header is incomplete until it is whole, and
        /// then names its client, whatever the client sends after it.
        #[test]
        fn a_header_is_read_whole_wherever_it_is_cut(
            (header, client) in header(),
            after in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            for cut in 0..header.len() {
                prop_assert_eq!(read(&header[..cut]), Preamble::Incomplete);
            }
            let whole = [&header[..], &after].concat();
            prop_assert_eq!(read(&whole), Preamble::Read { len: header.len(), client });
        }

        /// Any bytes: no panic, a length within them, and an answer that
        /// more bytes never change once it is given.
        #[test]
        fn any_bytes_get_one_answer(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                (header(), any::<usize>(), any::<u8>()).prop_map(|((mut h, _), at, b)| {
                    let at = at % h.len();
                    h[at] = b;
                    h
                }),
            ],
        ) {
            let mut answer = Preamble::Incomplete;
            for cut in 0..=bytes.len() {
                let now = read(&bytes[..cut]);
                if answer != Preamble::Incomplete {
                    prop_assert_eq!(now, answer, "changed at {}", cut);
                }
                if let Preamble::Read { len, .. } = now {
                    prop_assert!(len <= cut && len <= MAX_LEN);
                }
                answer = now;
            }
        }
    }
}
