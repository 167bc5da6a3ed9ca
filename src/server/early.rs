//! Judging a connection's first request as it is accepted, before any
//! server sets the connection up: a drop then costs an accept, one read and
//! a close. The crate's serve loop and the layer's listener for
//! `axum::serve` both do it: the listener with what has arrived at accept,
//! the serve loop also once the first bytes arrive.

use std::io;
use std::net::SocketAddr;

use http::Request;
use tokio::net::TcpStream;

use crate::NoResponseLayer;
use crate::audit::Close;
use crate::connection::Accepted;
use crate::connection::CloseMode;
use crate::layer::service::record_drop;
use crate::rules::Action;

impl NoResponseLayer {
    /// Judges a request head read before hyper has the connection; returns
    /// the close mode when a rule drops it, after counting and logging the
    /// drop as the layer would. Leaves to the layer whatever is not an
    /// enforced drop: a pass, a status answer, a match in dry-run (whose
    /// event is the layer's), or the rate limit.
    pub(crate) fn drop_early<B>(
        &self,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<CloseMode> {
        let current = self.shared.current.load();
        let judgement = current.with_bans(current.rules.judge_at_accept(request, peer));
        let stop = judgement.stop()?;
        if stop.action != Action::Drop || !judgement.dry_run.is_empty() {
            return None;
        }
        let mode = current.close_mode;
        record_drop(
            &current,
            request,
            stop.rule,
            (judgement.client_ip, Some(peer)),
            Close::Mode(mode),
            // A first request: no connection it was sent on before closed.
            Some(false),
        );
        Some(mode)
    }

    /// Notes a first request judged at accept and let through, to warn
    /// once when the layer itself keeps judging nothing.
    fn passed_early(&self) {
        self.shared.placement.passed_at_accept();
    }
}

/// What judging a connection's first request before hyper decided.
pub(crate) enum Early<S = TcpStream> {
    /// Dropped by a rule and closed (and logged), or the client is gone.
    Done,
    /// Over to hyper and the layer, with the bytes read so far.
    Undecided(S, Vec<u8>),
}

/// As much of a request as is judged before hyper: hyper's first read
/// takes no more for most requests, and a longer head is simply left to
/// the layer.
const EARLY_READ: usize = 4096;

/// Reads what the client has sent so far, without waiting, and judges it
/// if it is a whole HTTP/1 request head.
pub(crate) fn judge_now<S: Accepted>(
    stream: S,
    peer: SocketAddr,
    layer: &NoResponseLayer,
) -> Early<S> {
    let mut buf = [0u8; EARLY_READ];
    match stream.read_now(&mut buf) {
        Ok(0) => Early::Done,
        Ok(n) => judge_read(stream, &buf[..n], peer, layer),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Early::Undecided(stream, Vec::new()),
        Err(_) => Early::Done,
    }
}

/// Judges the first bytes a client sent, and closes the stream if a rule
/// drops the request.
fn judge_read<S: Accepted>(
    stream: S,
    read: &[u8],
    peer: SocketAddr,
    layer: &NoResponseLayer,
) -> Early<S> {
    let Some(head) = request_head(read) else {
        return Early::Undecided(stream, read.to_vec());
    };
    match layer.drop_early(&head, peer) {
        // A read that did not fill the buffer emptied the socket, so the
        // close alone sends the FIN; there is nothing to drain.
        Some(CloseMode::Fin) if read.len() < EARLY_READ => drop(stream),
        Some(mode) => stream.close(mode),
        None => {
            layer.passed_early();
            return Early::Undecided(stream, read.to_vec());
        }
    }
    Early::Done
}

/// The request head at the start of `bytes`, if it is complete and valid.
/// The head is copied once; the target and every header value are slices
/// of that one copy, not allocations of their own.
fn request_head(bytes: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    let version = match parsed.version? {
        0 => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let shared = bytes::Bytes::copy_from_slice(&bytes[..len]);
    // httparse's slices point into `bytes`: the same range of the copy.
    // (Checked all the same: an empty slice may point anywhere.)
    let part = |slice: &[u8]| {
        let start = (slice.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
        if start <= len && slice.len() <= len - start {
            shared.slice(start..start + slice.len())
        } else {
            bytes::Bytes::copy_from_slice(slice)
        }
    };
    let mut map = http::HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_maybe_shared(part(header.value)).ok()?;
        map.append(name, value);
    }
    let path = parsed.path?.as_bytes();
    let mut head = Request::new(());
    *head.method_mut() = http::Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    *head.uri_mut() = http::Uri::from_maybe_shared(part(path)).ok()?;
    *head.version_mut() = version;
    *head.headers_mut() = map;
    Some(head)
}

/// Waits for the client's first bytes, within the header timeout, and
/// judges them before hyper has the connection.
#[cfg(feature = "server")]
pub(crate) async fn judge_when_read(
    stream: TcpStream,
    layer: &NoResponseLayer,
    peer: SocketAddr,
    header_timeout: Option<std::time::Duration>,
) -> Early {
    let readable = stream.readable();
    let ready = match header_timeout {
        Some(limit) => match crate::alarm::within(limit, readable).await {
            Some(ready) => ready,
            None => {
                // Not one byte in time: closed in order, and no drop, as
                // the stream's timers close a connection no request began
                // on; a browser's unused preconnection looks like this.
                tracing::debug!(
                    target: "tower_no_response",
                    peer_addr = %peer,
                    "connection closed: no request began within the header timeout"
                );
                drop(stream);
                return Early::Done;
            }
        },
        None => readable.await,
    };
    if ready.is_err() {
        return Early::Done;
    }
    judge_now(stream, peer, layer)
}

/// Reads a TLS connection's first plain bytes, within the header timeout,
/// and judges them as [`judge_now`] judges a plaintext connection's: a
/// request a rule drops is closed (and logged) before hyper sees the
/// connection. The bytes read, for hyper, when it is not dropped; `None`
/// when the connection is done: dropped, gone, or silent until the timeout
/// (closed in order and not logged, as a connection no request began on).
#[cfg(feature = "rustls")]
pub(crate) async fn judge_in_tls<I>(
    io: &mut I,
    handle: &crate::connection::ConnectionHandle,
    layer: &NoResponseLayer,
    peer: SocketAddr,
    header_timeout: Option<std::time::Duration>,
    hello: Option<&std::sync::Arc<crate::audit::HelloNames>>,
) -> Option<Vec<u8>>
where
    I: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut buf = vec![0u8; EARLY_READ];
    let read = io.read(&mut buf);
    let read = match header_timeout {
        Some(limit) => match crate::alarm::within(limit, read).await {
            Some(read) => read,
            None => {
                tracing::debug!(
                    target: "tower_no_response",
                    peer_addr = %peer,
                    "connection closed: no request began within the header timeout"
                );
                return None;
            }
        },
        None => read.await,
    };
    let n = match read {
        Ok(0) | Err(_) => return None,
        Ok(n) => n,
    };
    buf.truncate(n);
    if let Some(mut head) = request_head(&buf) {
        // For the 444 event, as every later request carries it.
        if let Some(hello) = hello {
            let mut info = crate::connection::ConnectionInfo::new(peer, handle.clone());
            info.hello = Some(std::sync::Arc::clone(hello));
            head.extensions_mut().insert(info);
        }
        if let Some(mode) = layer.drop_early(&head, peer) {
            // Aborted, the stream under TLS refuses every write: not even a
            // close_notify leaves.
            handle.abort(mode);
            return None;
        }
        layer.passed_early();
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::request_head;

    #[test]
    fn the_head_is_read_whole_from_one_copy() {
        let wire = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\nX-Two: 1\r\n\
                     x-two: 2\r\nUser-Agent: curl/8\r\n\r\nbody";
        let head = request_head(wire).unwrap();
        assert_eq!(head.method(), http::Method::GET);
        assert_eq!(head.uri(), "/a?b=c");
        assert_eq!(head.version(), http::Version::HTTP_11);
        assert_eq!(head.headers()["host"], "example.com");
        assert_eq!(head.headers()["x-empty"], "");
        let two: Vec<_> = head.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert_eq!(head.headers()["user-agent"], "curl/8");
    }

    #[test]
    fn what_is_not_a_whole_valid_head_is_left_to_hyper() {
        for wire in [
            &b"GET / HTTP/1.1\r\nHost: example.com\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: exa\x01mple\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\n\r\n",
            b"",
        ] {
            assert!(request_head(wire).is_none(), "{wire:?}");
        }
    }
}
