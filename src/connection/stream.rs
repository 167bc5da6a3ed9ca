use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(feature = "axum")]
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{CloseMode, ConnectionHandle};
use crate::audit::{Close, DropEvent, Handling};
use crate::layer::registry::Registration;
#[cfg(feature = "axum")]
use crate::layer::registry::Registry;
use crate::rules::DropReason;

/// Bytes a FIN close reads and discards before the socket is closed: the
/// kernel answers a close with unread data by an RST instead of the FIN the
/// close mode promised. Bounded so a client cannot keep the task busy.
const DRAIN_LIMIT: usize = 256 * 1024;

/// A TCP stream that a [`ConnectionHandle`] can abort.
///
/// After the handle is tripped, reads and writes fail with
/// [`io::ErrorKind::ConnectionAborted`], so not one byte of any response
/// reaches the socket, and dropping the stream closes it with the chosen
/// [`CloseMode`].
#[derive(Debug)]
pub struct AbortableStream {
    stream: TcpStream,
    handle: ConnectionHandle,
    /// Bytes already read from the socket (by a serve loop that judged them
    /// first), handed out before any new read.
    replay: Vec<u8>,
    replayed: usize,
    /// Where the layer finds this stream's handle by its peer address;
    /// held for its `Drop`, which removes the entry.
    registration: Option<Registration>,
    /// The wait for a request head, for a server without a header timeout
    /// of its own.
    head_timer: Option<Box<HeadTimer>>,
}

/// Bounds the wait for each HTTP/1 request head: from accept, and again
/// from each response, the client has `timeout` to finish its head (the
/// blank line after the headers), or the connection is dropped as
/// `header_timeout`. A client that stops reading a response for as long is
/// dropped too, as nginx's `send_timeout` would. HTTP/2, known by its
/// preface, is left alone.
#[derive(Debug)]
struct HeadTimer {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// How the bytes read so far end: 1 after `\n`, 2 after `\n\r`.
    matched: u8,
    /// Waiting for a head; otherwise for the response to one.
    waiting: bool,
    /// How much of the HTTP/2 preface the first bytes matched, while they
    /// still might be one.
    preface_seen: Option<u8>,
    peer: SocketAddr,
    mode: CloseMode,
}

impl HeadTimer {
    /// Follows the bytes read; whether the timer still applies.
    fn read(&mut self, bytes: &[u8]) -> bool {
        // The HTTP/2 preface, however the reads split it.
        const PREFACE: &[u8] = b"PRI * HTTP/2.0";
        if let Some(seen) = self.preface_seen {
            let seen = usize::from(seen);
            let n = bytes.len().min(PREFACE.len() - seen);
            if bytes[..n] != PREFACE[seen..seen + n] {
                self.preface_seen = None;
            } else if seen + n == PREFACE.len() {
                return false;
            } else {
                self.preface_seen = Some((seen + n) as u8);
            }
        }
        // A head ends at a blank line: `\n\n` or `\n\r\n`, which also
        // covers the usual `\r\n\r\n`.
        for &b in bytes {
            self.matched = match (self.matched, b) {
                (1 | 2, b'\n') => {
                    self.waiting = false;
                    0
                }
                (1, b'\r') => 2,
                (_, b'\n') => 1,
                _ => 0,
            };
        }
        true
    }

    /// A response is on its way: the next head has `timeout` from now.
    fn wrote(&mut self) {
        self.waiting = true;
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + self.timeout);
    }
}

impl AbortableStream {
    /// Wraps a stream with a fresh, untripped handle.
    #[must_use]
    pub fn new(stream: TcpStream) -> Self {
        Self::with_prefix(stream, Vec::new())
    }

    /// Wraps a stream whose first bytes were already read: reads return
    /// `prefix` first, then what the socket has.
    pub(crate) fn with_prefix(stream: TcpStream, prefix: Vec<u8>) -> Self {
        Self {
            stream,
            handle: ConnectionHandle::new(),
            replay: prefix,
            replayed: 0,
            registration: None,
            head_timer: None,
        }
    }

    /// Drops the connection, as `header_timeout`, when a request head does
    /// not arrive within `timeout`; see `HeadTimer`.
    #[cfg(feature = "axum")]
    pub(crate) fn with_head_timeout(
        mut self,
        timeout: Duration,
        peer: SocketAddr,
        mode: CloseMode,
    ) -> Self {
        let mut timer = Box::new(HeadTimer {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            matched: 0,
            waiting: true,
            preface_seen: Some(0),
            peer,
            mode,
        });
        // Bytes read before the stream was made count as read.
        self.head_timer = timer.read(&self.replay).then_some(timer);
        self
    }

    /// Whether the head timer ran out; if so, the connection is aborted and
    /// the drop logged, once.
    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.head_timer.as_mut() else {
            return false;
        };
        if !timer.waiting || timer.sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let (peer, mode) = (timer.peer, timer.mode);
        if self.handle.abort(mode) {
            DropEvent {
                rule: DropReason::HeaderTimeout,
                handling: Handling::Drop(Close::Mode(mode)),
                client_ip: Some(peer.ip().to_canonical()),
                peer_addr: Some(peer),
                request: None,
            }
            .emit();
        }
        true
    }

    /// Records the stream in `registry` under `peer` until it is dropped.
    #[cfg(feature = "axum")]
    pub(crate) fn register(&mut self, registry: &Arc<Registry>, peer: SocketAddr) {
        self.registration = Some(registry.register(peer, &self.handle));
    }

    /// The handle that aborts this stream. Put a clone in each request's
    /// extensions (see [`ConnectionInfo`](super::ConnectionInfo)).
    #[must_use]
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// The wrapped stream, e.g. to set `TCP_NODELAY`.
    #[must_use]
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The peer's address.
    ///
    /// # Errors
    /// As [`TcpStream::peer_addr`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection dropped by tower-no-response",
        )
    }
}

impl AsyncRead for AbortableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.handle.is_aborted() || self.head_timed_out(cx) {
            return Poll::Ready(Err(Self::aborted()));
        }
        if let Some(registration) = self.registration.as_mut() {
            registration.bind_to_task();
        }
        if self.replayed < self.replay.len() {
            let this = &mut *self;
            let n = buf.remaining().min(this.replay.len() - this.replayed);
            buf.put_slice(&this.replay[this.replayed..this.replayed + n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(timer)) = (&poll, self.head_timer.as_mut()) {
            if !timer.read(&buf.filled()[before..]) {
                self.head_timer = None;
            }
        }
        if poll.is_pending() {
            // Only a parked reader needs waking; check again so an abort that
            // raced the registration is not missed.
            self.handle.register_reader(cx);
            if self.handle.is_aborted() {
                return Poll::Ready(Err(Self::aborted()));
            }
        }
        poll
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.handle.is_aborted() {
            return Poll::Ready(Err(Self::aborted()));
        }
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write_poll(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.handle.is_aborted() {
            return Poll::Ready(Err(Self::aborted()));
        }
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write_poll(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.handle.is_aborted() {
            return Poll::Ready(Err(Self::aborted()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.handle.is_aborted() {
            // Drop closes the socket the way the close mode says.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl AbortableStream {
    fn after_write_poll(
        &mut self,
        cx: &Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let (Poll::Ready(Ok(n)), Some(timer)) = (&poll, self.head_timer.as_mut()) {
            if *n > 0 {
                timer.wrote();
            }
        }
        if poll.is_pending() {
            self.handle.register_writer(cx);
            if self.handle.is_aborted() {
                return Poll::Ready(Err(Self::aborted()));
            }
        }
        poll
    }
}

impl Drop for AbortableStream {
    fn drop(&mut self) {
        let sock = socket2::SockRef::from(&self.stream);
        match self.handle.close_mode() {
            None => {}
            Some(CloseMode::Reset) => {
                // Errors here mean the peer is already gone; the close still happens.
                let _ = sock.set_linger(Some(std::time::Duration::ZERO));
            }
            // In repair mode the close itself sends nothing.
            Some(CloseMode::Silent) if enter_repair_mode(&self.stream) => {}
            Some(CloseMode::Silent) => {
                // The reset cannot get past the first router.
                let _ = match self.stream.peer_addr() {
                    Ok(SocketAddr::V6(_)) => sock.set_unicast_hops_v6(1),
                    _ => sock.set_ttl_v4(1),
                };
                let _ = sock.set_linger(Some(std::time::Duration::ZERO));
            }
            Some(CloseMode::Fin) => {
                // The close sends the FIN, as long as no unread byte is left:
                // the kernel answers a close over unread data with a reset.
                // No `shutdown` first: it would cost a syscall per drop and
                // change nothing the client sees.
                let mut scratch = [0u8; 4096];
                let mut drained = 0;
                while drained < DRAIN_LIMIT {
                    match self.stream.try_read(&mut scratch) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => drained += n,
                    }
                }
            }
        }
    }
}

/// Puts a socket in `TCP_REPAIR` mode, in which closing it sends nothing.
/// Needs `CAP_NET_ADMIN`; returns whether it worked.
#[cfg(target_os = "linux")]
fn enter_repair_mode<F: std::os::fd::AsFd>(socket: &F) -> bool {
    use nix::sys::socket::{setsockopt, sockopt::TcpRepair};
    setsockopt(socket, TcpRepair, &1).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn enter_repair_mode<F>(_: &F) -> bool {
    false
}

/// Whether [`CloseMode::Silent`] can close without sending anything
/// (`TCP_REPAIR`, Linux with `CAP_NET_ADMIN`), rather than with a reset that
/// dies at the first hop. Worth logging at start-up.
#[must_use]
pub fn silent_close_available() -> bool {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .is_ok_and(|probe| enter_repair_mode(&probe))
}
