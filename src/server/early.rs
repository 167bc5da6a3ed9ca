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
use crate::connection::AbortableStream;
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
            judgement.client_ip,
            Some(peer),
            Close::Mode(mode),
            true,
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
pub(crate) enum Early {
    /// Dropped by a rule and closed (and logged), or the client is gone.
    Done,
    /// Over to hyper and the layer, with the bytes read so far.
    Undecided(TcpStream, Vec<u8>),
}

/// As much of a request as is judged before hyper: hyper's first read
/// takes no more for most requests, and a longer head is simply left to
/// the layer.
const EARLY_READ: usize = 4096;

/// Reads what the client has sent so far, without waiting, and judges it
/// if it is a whole HTTP/1 request head.
pub(crate) fn judge_now(stream: TcpStream, peer: SocketAddr, layer: &NoResponseLayer) -> Early {
    let mut buf = [0u8; EARLY_READ];
    match stream.try_read(&mut buf) {
        Ok(0) => Early::Done,
        Ok(n) => judge_read(stream, &buf[..n], peer, layer),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Early::Undecided(stream, Vec::new()),
        Err(_) => Early::Done,
    }
}

/// Judges the first bytes a client sent, and closes the stream if a rule
/// drops the request.
fn judge_read(stream: TcpStream, read: &[u8], peer: SocketAddr, layer: &NoResponseLayer) -> Early {
    let Some(head) = request_head(read) else {
        return Early::Undecided(stream, read.to_vec());
    };
    match layer.drop_early(&head, peer) {
        // A read that did not fill the buffer emptied the socket, so the
        // close alone sends the FIN; there is nothing to drain.
        Some(CloseMode::Fin) if read.len() < EARLY_READ => drop(stream),
        Some(mode) => {
            AbortableStream::new(stream).handle().abort(mode);
        }
        None => {
            layer.passed_early();
            return Early::Undecided(stream, read.to_vec());
        }
    }
    Early::Done
}

/// The request head at the start of `bytes`, if it is complete and valid.
fn request_head(bytes: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if !parsed.parse(bytes).ok()?.is_complete() {
        return None;
    }
    let version = match parsed.version? {
        0 => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let mut head = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(version);
    for header in parsed.headers.iter() {
        head = head.header(header.name, header.value);
    }
    head.body(()).ok()
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
        Some(limit) => match tokio::time::timeout(limit, readable).await {
            Ok(ready) => ready,
            Err(_) => {
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
) -> Option<Vec<u8>>
where
    I: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut buf = vec![0u8; EARLY_READ];
    let read = io.read(&mut buf);
    let read = match header_timeout {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(read) => read,
            Err(_) => {
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
    if let Some(head) = request_head(&buf) {
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
