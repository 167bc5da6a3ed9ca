//! The ClientHello, read from the TLS records a client sends first.
//!
//! A small parser of our own rather than a general TLS parser: the gate
//! needs five fields of one message (the server name, ALPN, and the lists
//! JA4 is made of), must never allocate for what it skips, and must judge
//! bytes no TLS library has seen yet. It reads with bounds checks only (no
//! index can panic), is fuzzed (`fuzz/fuzz_targets/client_hello.rs`), and
//! refuses anything rustls would refuse before its first answer: a record
//! that is not a handshake, a first message that is not a ClientHello, a
//! length that does not add up.

use std::fmt;
use std::sync::Arc;

use super::ja4::{Ja4, Ja4Input};

/// The largest ClientHello read: rustls refuses a handshake message longer
/// than this, so nothing longer can be a handshake it would finish.
pub(crate) const MAX_CLIENT_HELLO: usize = 0xffff;

/// TLS's largest plaintext record.
const MAX_RECORD: usize = 1 << 14;

const HANDSHAKE_RECORD: u8 = 22;
const CLIENT_HELLO: u8 = 1;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// What a client offered in its ClientHello: the name it asked for, its
/// ALPN protocols, and its [`Ja4`] fingerprint. Handed to the application as
/// a request extension on every request of a connection the gate let
/// through; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientHello(Arc<Parts>);

#[derive(PartialEq, Eq)]
struct Parts {
    server_name: Option<Box<[u8]>>,
    alpn: Vec<Box<[u8]>>,
    ja4: Ja4,
}

impl ClientHello {
    /// Reads the ClientHello from the first bytes a client sent: TLS
    /// records, the message possibly split across several of them.
    /// `Ok(None)` when the bytes end before the message does.
    ///
    /// # Errors
    /// When the bytes cannot begin a TLS handshake that rustls would go on
    /// with: not a handshake record (plain HTTP, an SSLv2-style hello,
    /// garbage), a first message other than a ClientHello, a record or
    /// message longer than TLS allows, or lengths that do not add up.
    ///
    /// ```
    /// use tower_no_response::tls::ClientHello;
    ///
    /// assert!(ClientHello::parse(b"GET / HTTP/1.1\r\n").is_err());
    /// assert!(matches!(ClientHello::parse(&[22, 3, 1]), Ok(None)));
    /// ```
    pub fn parse(wire: &[u8]) -> Result<Option<Self>, InvalidClientHello> {
        match message(wire)? {
            Some(Message::Whole(body)) => parse_body(body).map(Some),
            Some(Message::Joined(body)) => parse_body(&body).map(Some),
            None => Ok(None),
        }
    }

    /// The server name the client asked for (SNI), as it sent it; `None`
    /// when it sent none, as clients do when they connect by address.
    #[must_use]
    pub fn server_name(&self) -> Option<&[u8]> {
        self.0.server_name.as_deref()
    }

    /// The ALPN protocols the client offered, in its order (`h2`,
    /// `http/1.1`).
    pub fn alpn_protocols(&self) -> impl Iterator<Item = &[u8]> {
        self.0.alpn.iter().map(|p| &**p)
    }

    /// What the 444 event names of this ClientHello.
    pub(crate) fn names(&self) -> std::sync::Arc<crate::audit::HelloNames> {
        std::sync::Arc::new(crate::audit::HelloNames {
            server_name: self.server_name().map(Box::from),
            ja4: self.ja4().as_str().into(),
        })
    }

    /// The client's JA4 fingerprint.
    #[must_use]
    pub fn ja4(&self) -> Ja4 {
        self.0.ja4
    }
}

impl fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.server_name.as_deref().map(String::from_utf8_lossy);
        let alpn: Vec<_> = self
            .0
            .alpn
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect();
        f.debug_struct("ClientHello")
            .field("server_name", &name)
            .field("alpn", &alpn)
            .field("ja4", &self.0.ja4)
            .finish()
    }
}

/// Why some bytes are not the start of a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidClientHello {
    reason: &'static str,
}

impl InvalidClientHello {
    const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// What was wrong, for a log line.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidClientHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a TLS ClientHello: {}", self.reason)
    }
}

impl std::error::Error for InvalidClientHello {}

/// The handshake message, borrowed when one record holds it whole (the
/// usual case), joined from its records otherwise.
enum Message<'a> {
    Whole(&'a [u8]),
    Joined(Vec<u8>),
}

/// The first handshake message's body, once every record it spans has
/// arrived.
fn message(wire: &[u8]) -> Result<Option<Message<'_>>, InvalidClientHello> {
    let mut joined: Option<Vec<u8>> = None;
    let mut rest = wire;
    loop {
        let Some(header) = rest.get(..5) else {
            return Ok(None);
        };
        if header[0] != HANDSHAKE_RECORD {
            return Err(InvalidClientHello::new("not a handshake record"));
        }
        if header[1] != 3 {
            return Err(InvalidClientHello::new("record version is not TLS"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Err(InvalidClientHello::new("record length out of range"));
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            // A record not whole yet: its header is checked, so the length
            // is bounded; wait for the rest.
            return Ok(None);
        };
        rest = &rest[5 + len..];
        let bytes: &[u8] = match &mut joined {
            None => fragment,
            Some(buf) => {
                buf.extend_from_slice(fragment);
                buf
            }
        };
        if let Some(head) = bytes.get(..4) {
            if head[0] != CLIENT_HELLO {
                return Err(InvalidClientHello::new(
                    "first message is not a ClientHello",
                ));
            }
            let body_len =
                usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
            if body_len > MAX_CLIENT_HELLO {
                return Err(InvalidClientHello::new("ClientHello too long"));
            }
            if bytes.len() >= 4 + body_len {
                return Ok(Some(match joined {
                    None => Message::Whole(&fragment[4..4 + body_len]),
                    Some(mut buf) => {
                        buf.truncate(4 + body_len);
                        buf.drain(..4);
                        Message::Joined(buf)
                    }
                }));
            }
        }
        if joined.is_none() {
            joined = Some(fragment.to_vec());
        }
    }
}

/// A cursor over a message, every read bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InvalidClientHello> {
        if n > self.0.len() {
            return Err(InvalidClientHello::new("length past the end"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, InvalidClientHello> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, InvalidClientHello> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<Reader<'a>, InvalidClientHello> {
        let n = self.u8()?;
        Ok(Reader(self.take(usize::from(n))?))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<Reader<'a>, InvalidClientHello> {
        let n = self.u16()?;
        Ok(Reader(self.take(usize::from(n))?))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The remaining bytes as big-endian `u16`s.
    fn u16s(self) -> Result<impl Iterator<Item = u16> + Clone + 'a, InvalidClientHello> {
        if self.0.len() % 2 != 0 {
            return Err(InvalidClientHello::new("odd length for a list of u16"));
        }
        Ok(self
            .0
            .chunks_exact(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]])))
    }
}

fn parse_body(body: &[u8]) -> Result<ClientHello, InvalidClientHello> {
    let mut r = Reader(body);
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    let session_id = r.vec8()?;
    if session_id.0.len() > 32 {
        return Err(InvalidClientHello::new("session id longer than 32 bytes"));
    }
    let suites = r.vec16()?;
    if suites.is_empty() {
        return Err(InvalidClientHello::new("no cipher suites"));
    }
    let suites = suites.u16s()?;
    if r.vec8()?.is_empty() {
        return Err(InvalidClientHello::new("no compression methods"));
    }
    let mut input = Ja4Input {
        version: legacy_version,
        ciphers: suites,
        extensions: Vec::new(),
        signature_algorithms: None,
        sni: false,
        first_alpn: None,
    };
    let mut server_name = None;
    let mut alpn: Vec<Box<[u8]>> = Vec::new();
    // TLS 1.2 allows a ClientHello with no extensions at all.
    if !r.is_empty() {
        let mut extensions = r.vec16()?;
        if !r.is_empty() {
            return Err(InvalidClientHello::new("bytes after the extensions"));
        }
        while !extensions.is_empty() {
            let kind = extensions.u16()?;
            let mut data = extensions.vec16()?;
            // rustls refuses a ClientHello that repeats an extension with
            // an alert: refused here first, without one.
            if input.extensions.contains(&kind) {
                return Err(InvalidClientHello::new("an extension sent twice"));
            }
            input.extensions.push(kind);
            match kind {
                EXT_SERVER_NAME => {
                    input.sni = true;
                    server_name = host_name(data)?;
                }
                EXT_ALPN => {
                    let mut list = data.vec16()?;
                    while !list.is_empty() {
                        let protocol = list.vec8()?;
                        if protocol.is_empty() {
                            return Err(InvalidClientHello::new("empty ALPN protocol"));
                        }
                        alpn.push(Box::from(protocol.0));
                    }
                    input.first_alpn = alpn.first().map(|p| (p[0], p[p.len() - 1]));
                }
                EXT_SIGNATURE_ALGORITHMS => {
                    input.signature_algorithms = Some(data.vec16()?.u16s()?);
                }
                EXT_SUPPORTED_VERSIONS => {
                    let best = data.vec8()?.u16s()?.filter(|v| !is_grease(*v)).max();
                    if let Some(best) = best {
                        input.version = best;
                    }
                }
                _ => {}
            }
        }
    }
    let ja4 = input.fingerprint();
    Ok(ClientHello(Arc::new(Parts {
        server_name,
        alpn,
        ja4,
    })))
}

/// The `host_name` entry of a `server_name` extension.
fn host_name(mut data: Reader<'_>) -> Result<Option<Box<[u8]>>, InvalidClientHello> {
    let mut list = data.vec16()?;
    while !list.is_empty() {
        let kind = list.u8()?;
        let name = list.vec16()?;
        if kind == 0 {
            if name.is_empty() {
                return Err(InvalidClientHello::new("empty server name"));
            }
            return Ok(Some(Box::from(name.0)));
        }
    }
    Ok(None)
}

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal, sent to keep
/// servers tolerant; JA4 leaves them out.
pub(crate) const fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ClientHello with these parts, in one handshake message.
    pub(crate) fn hello(version: u16, suites: &[u16], extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&version.to_be_bytes());
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&u16::try_from(suites.len() * 2).unwrap().to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]);
        let mut ext = Vec::new();
        for (kind, data) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
        let mut message = vec![CLIENT_HELLO];
        message.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        message.extend_from_slice(&body);
        message
    }

    /// `message` in records of at most `size` bytes of payload.
    pub(crate) fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in message.chunks(size) {
            wire.extend_from_slice(&[HANDSHAKE_RECORD, 3, 1]);
            wire.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
            wire.extend_from_slice(chunk);
        }
        wire
    }

    pub(crate) fn sni(name: &[u8]) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        entry.extend_from_slice(name);
        let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (EXT_SERVER_NAME, data)
    }

    pub(crate) fn alpn(protocols: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for p in protocols {
            list.push(u8::try_from(p.len()).unwrap());
            list.extend_from_slice(p);
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        (EXT_ALPN, data)
    }

    #[test]
    fn reads_name_alpn_across_records_and_waits_for_the_rest() {
        let message = hello(
            0x0303,
            &[0x1301, 0x0a0a],
            &[sni(b"www.example.com"), alpn(&[b"h2", b"http/1.1"])],
        );
        for size in [1, 7, 50, message.len()] {
            let wire = records(&message, size);
            let parsed = ClientHello::parse(&wire).unwrap().unwrap();
            assert_eq!(parsed.server_name(), Some(&b"www.example.com"[..]));
            let alpn: Vec<&[u8]> = parsed.alpn_protocols().collect();
            assert_eq!(alpn, [&b"h2"[..], b"http/1.1"]);
            for cut in 0..wire.len() {
                assert_eq!(
                    ClientHello::parse(&wire[..cut]),
                    Ok(None),
                    "size {size} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn refuses_what_is_not_a_handshake() {
        for wire in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            // SSLv2-style hello: the high bit of the first byte set.
            &[0x80, 0x2e, 0x01, 0x00, 0x02][..],
            &[22, 2, 0, 0, 1, 1][..],
            &[22, 3, 1, 0, 0][..],
            &[22, 3, 1, 0x40, 0x01][..],
            // A ServerHello where a ClientHello belongs.
            &[22, 3, 1, 0, 4, 2, 0, 0, 0][..],
            // A message longer than rustls would take.
            &[22, 3, 1, 0, 4, 1, 1, 0, 0][..],
        ] {
            assert!(ClientHello::parse(wire).is_err(), "{wire:?}");
        }
        let mut message = hello(0x0303, &[0x1301], &[]);
        message.extend_from_slice(&[0]);
        let len = message.len() - 4;
        message[1..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes()[1..]);
        assert!(ClientHello::parse(&records(&message, 100)).is_err());
        // An extension twice, which rustls answers with an alert.
        for twice in [0x0017u16, 0x0a0a] {
            let wire = hello(
                0x0303,
                &[0x1301],
                &[(twice, vec![]), (0x000b, vec![1, 0]), (twice, vec![])],
            );
            let refused = ClientHello::parse(&records(&wire, 100));
            assert!(refused.is_err(), "{twice:#06x}: {refused:?}");
        }
        let once = hello(0x0303, &[0x1301], &[(0x0a0a, vec![]), (0x1a1a, vec![])]);
        assert!(matches!(
            ClientHello::parse(&records(&once, 100)),
            Ok(Some(_))
        ));
    }

    #[test]
    fn grease_is_both_bytes_equal_ending_in_a() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x0a0b));
    }
}
