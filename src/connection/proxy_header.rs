//! The PROXY protocol header, read off a connection from a load balancer
//! before anything else, and the guard that refuses one from any other
//! peer.
//!
//! The header's bytes are peeked before they are taken, and only they are
//! taken: what follows them (a ClientHello, a request head) stays on the
//! socket, and the TLS gate, the first-request judging and hyper read the
//! connection as if the client had opened it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{CloseMode, refuse};
use crate::parse::proxy_protocol::{self, Preamble};
use crate::rules::DropReason;

/// Where a connection from a balancer comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// Who the connection is judged as: the client the header names, or
    /// the balancer for a connection of its own (`LOCAL`, `UNKNOWN`).
    pub(crate) client: SocketAddr,
    pub(crate) balancer: SocketAddr,
}

/// Bytes peeked at a time: a version 1 header, or a version 2 header with
/// the TLVs balancers send, in one look; a longer one takes more.
const PEEK: usize = 256;

/// How long a connection's first bytes may take, and how a connection
/// that gets them wrong is closed: the header timeout (10 s when none is
/// set) and the layer's close mode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) limit: Duration,
    pub(crate) mode: CloseMode,
}

/// For a connection from `balancer`, one of the layer's: reads its header
/// within the policy's limit. `None` once the connection is dropped as
/// `proxy_protocol_invalid` (and logged): no header, a broken one, or one
/// not finished in time.
pub(crate) async fn read(
    mut stream: TcpStream,
    balancer: SocketAddr,
    Policy { limit, mode }: Policy,
) -> Option<(TcpStream, Origin)> {
    let client = match crate::alarm::within(limit, client_of(&mut stream)).await {
        Some(Ok(Some(client))) => client,
        // Gone: nothing to refuse.
        Some(Err(_)) => return None,
        Some(Ok(None)) | None => {
            refuse(stream, balancer, mode, DropReason::ProxyProtocolInvalid);
            return None;
        }
    };
    let origin = Origin {
        client: client.unwrap_or(balancer),
        balancer,
    };
    Some((stream, origin))
}

/// The header's client, `Some(None)` when it names none, or `None` when
/// it is not a valid header. Takes the header's bytes and no others.
async fn client_of(stream: &mut TcpStream) -> io::Result<Option<Option<SocketAddr>>> {
    // The header's bytes taken so far, when it spans reads.
    let mut taken = Vec::new();
    let mut peeked = [0u8; PEEK];
    loop {
        let n = stream.peek(&mut peeked).await?;
        if n == 0 {
            return Ok(None);
        }
        let before = taken.len();
        taken.extend_from_slice(&peeked[..n]);
        match proxy_protocol::read(&taken) {
            Preamble::Invalid => return Ok(None),
            Preamble::Read { len, client } => {
                skip(stream, len - before).await?;
                return Ok(Some(client));
            }
            // Every byte peeked is the header's: taken, so that the next
            // peek waits for more instead of finding them again.
            Preamble::Incomplete => skip(stream, n).await?,
        }
    }
}

/// Takes `n` bytes already peeked.
async fn skip(stream: &mut TcpStream, mut n: usize) -> io::Result<()> {
    let mut sink = [0u8; PEEK];
    while n > 0 {
        let read = stream.read(&mut sink[..n.min(PEEK)]).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n -= read;
    }
    Ok(())
}

/// For a connection from `peer`, not a balancer, to a server that writes
/// before it reads (tonic's, which sends its HTTP/2 settings at once): its
/// first bytes, read until they cannot begin a PROXY protocol header, so
/// that a forged one is dropped before the server writes a byte. Returns
/// the stream and the bytes read; `None` once it was dropped (and logged),
/// or sent nothing within the header timeout, or went away.
#[cfg(feature = "tonic")]
pub(crate) async fn unforged(
    mut stream: TcpStream,
    peer: SocketAddr,
    Policy { limit, mode }: Policy,
) -> Option<(TcpStream, Vec<u8>)> {
    let mut guard = ForgedHeader::new();
    let mut read = Vec::new();
    let mut buf = [0u8; PEEK];
    let looked = crate::alarm::within(limit, async {
        loop {
            let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            read.extend_from_slice(&buf[..n]);
            if let Some(forged) = guard.look(&buf[..n]) {
                return Some(forged);
            }
        }
    })
    .await;
    match looked {
        Some(Some(false)) => Some((stream, read)),
        Some(Some(true)) => {
            refuse(stream, peer, mode, DropReason::ProxyProtocolInvalid);
            None
        }
        // Gone, or silent: closed in order, as an unused connection is.
        Some(None) | None => None,
    }
}

/// Watches the first bytes of a connection from a peer that is not a
/// balancer, for a PROXY protocol header it has no right to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForgedHeader {
    /// Bytes seen so far.
    seen: u8,
    /// Whether they still begin version 1's and version 2's signatures.
    text: bool,
    binary: bool,
}

const TEXT: &[u8] = b"PROXY ";
const BINARY: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

impl ForgedHeader {
    pub(crate) fn new() -> Self {
        Self {
            seen: 0,
            text: true,
            binary: true,
        }
    }

    /// Looks at the next bytes: `Some(true)` once they make a signature,
    /// `Some(false)` once they cannot, `None` while they still may.
    pub(crate) fn look(&mut self, bytes: &[u8]) -> Option<bool> {
        for &b in bytes {
            let at = usize::from(self.seen);
            self.text &= TEXT.get(at) == Some(&b);
            self.binary &= BINARY.get(at) == Some(&b);
            self.seen += 1;
            if (self.text && usize::from(self.seen) == TEXT.len())
                || (self.binary && usize::from(self.seen) == BINARY.len())
            {
                return Some(true);
            }
            if !self.text && !self.binary {
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    /// `bytes` written to a loopback connection in pieces cut at `cuts`,
    /// then the write side shut; what the reader made of it, and every byte
    /// it left on the socket.
    fn read_over_a_socket(
        bytes: Vec<u8>,
        cuts: Vec<usize>,
    ) -> (Option<Option<SocketAddr>>, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut cuts: Vec<usize> =
                    cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut from = 0;
                for cut in cuts.into_iter().chain([bytes.len()]) {
                    stream.write_all(&bytes[from..cut]).await.unwrap();
                    from = cut;
                    // Apart, so that the reader meets the pieces one by one.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                stream.shutdown().await.unwrap();
                stream
            });
            let (mut server, _) = listener.accept().await.unwrap();
            let client = client_of(&mut server).await.unwrap_or(None);
            let mut left = Vec::new();
            if client.is_some() {
                server.read_to_end(&mut left).await.unwrap();
            }
            drop(writer.await.unwrap());
            (client, left)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the header arrives, the reader names its client and
        /// takes exactly its bytes: what follows is left for the server.
        #[test]
        fn the_reader_takes_the_header_and_nothing_after_it(
            (header, client) in crate::parse::proxy_protocol::tests::header(),
            after in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let bytes = [&header[..], &after].concat();
            let (read, left) = read_over_a_socket(bytes, cuts);
            prop_assert_eq!(read, Some(client));
            prop_assert_eq!(left, after);
        }

        /// Any bytes, in any pieces: the reader's answer is the parser's
        /// on the whole, and a header cut short by the end of the stream
        /// is no header.
        #[test]
        fn any_bytes_get_the_parsers_answer(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..4),
        ) {
            let expected = match proxy_protocol::read(&bytes) {
                Preamble::Read { client, .. } => Some(client),
                Preamble::Invalid | Preamble::Incomplete => None,
            };
            let (read, _) = read_over_a_socket(bytes, cuts);
            prop_assert_eq!(read, expected);
        }
    }

    fn forged(chunks: &[&[u8]]) -> Option<bool> {
        let mut guard = ForgedHeader::new();
        chunks.iter().find_map(|chunk| guard.look(chunk))
    }

    #[test]
    fn a_signature_is_told_however_the_bytes_split() {
        for line in [&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..], BINARY] {
            for at in 0..=line.len() {
                let (a, b) = line.split_at(at);
                assert_eq!(forged(&[a, b]), Some(true), "{line:?} split at {at}");
            }
        }
    }

    #[test]
    fn requests_are_not_taken_for_one() {
        for request in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROPFIND / HTTP/1.1\r\n",
            b"PROXYFOO / HTTP/1.1\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert_eq!(forged(&[request]), Some(false), "{request:?}");
        }
        // Too few bytes to tell: still watching.
        assert_eq!(forged(&[b"PROX"]), None);
    }
}
