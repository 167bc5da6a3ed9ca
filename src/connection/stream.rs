use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(feature = "axum")]
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

#[cfg(any(feature = "server", feature = "axum"))]
use super::exchange::Timeouts;
use super::exchange::{Exchanges, Expiry};
use super::{CloseMode, ConnectionHandle};
use crate::DropReason;
use crate::audit::{Close, DropEvent, Handling};
use crate::connection::registry::Registration;
#[cfg(feature = "axum")]
use crate::connection::registry::Registry;

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
    /// The header and keep-alive timeouts, for a server that reads plain
    /// HTTP/1 from this stream.
    watch: Option<Box<Watch>>,
}

/// A connection's timers (see [`exchange`](super::exchange)): the header
/// timeout drops a client that is slow to send a request head, the
/// keep-alive timeout closes an idle connection in order.
#[derive(Debug)]
pub(crate) struct Watch {
    exchanges: Exchanges,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is set to.
    armed: Option<Instant>,
    /// Closed as idle: every later read is the end of the stream.
    closed: bool,
    peer: SocketAddr,
    mode: CloseMode,
}

impl Watch {
    /// Timers for a connection accepted at `accepted`, of which `read` was
    /// read already; `None` when no timeout is set.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn new(
        timeouts: Timeouts,
        accepted: Instant,
        read: &[u8],
        peer: SocketAddr,
        mode: CloseMode,
    ) -> Option<Box<Self>> {
        if timeouts.header.is_none() && timeouts.keepalive.is_none() {
            return None;
        }
        let mut exchanges = Exchanges::new(timeouts, accepted);
        exchanges.read(read);
        Some(Box::new(Self {
            exchanges,
            sleep: Box::pin(tokio::time::sleep_until(accepted)),
            armed: None,
            closed: false,
            peer,
            mode,
        }))
    }

    /// What ran out, if anything; otherwise the timer that applies is
    /// registered with `cx`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expiry> {
        if self.closed {
            return Some(Expiry::Idle);
        }
        let (at, expiry) = self.exchanges.deadline()?;
        if self.armed != Some(at) {
            self.sleep.as_mut().reset(at);
            self.armed = Some(at);
        }
        self.sleep.as_mut().poll(cx).is_ready().then_some(expiry)
    }

    /// Acts on a timer that ran out, before a read: a head not complete in
    /// time drops the connection (aborting `handle`, logged once); an idle
    /// connection, or a new one on which no request began, reads as closed,
    /// so the server closes it in order, with no drop logged. `None` while
    /// no timer ran out.
    pub(crate) fn poll_before_read(
        &mut self,
        cx: &mut Context<'_>,
        handle: &ConnectionHandle,
    ) -> Option<io::Result<()>> {
        match self.poll_expired(cx)? {
            Expiry::Header => {
                if handle.abort(self.mode) {
                    DropEvent {
                        rule: DropReason::HeaderTimeout,
                        handling: Handling::Drop(Close::Mode(self.mode)),
                        client_ip: Some(self.peer.ip().to_canonical()),
                        peer_addr: Some(self.peer),
                        request: None,
                        hello: None,
                    }
                    .emit();
                }
                Some(Err(AbortableStream::aborted()))
            }
            expiry @ (Expiry::Idle | Expiry::Unused) => {
                if !self.closed {
                    self.closed = true;
                    if expiry == Expiry::Idle {
                        tracing::debug!(
                            target: "tower_no_response",
                            peer_addr = %self.peer,
                            "idle connection closed at the keep-alive timeout"
                        );
                    } else {
                        tracing::debug!(
                            target: "tower_no_response",
                            peer_addr = %self.peer,
                            "connection closed: no request began within the header timeout"
                        );
                    }
                }
                Some(Ok(()))
            }
        }
    }

    pub(crate) fn read(&mut self, bytes: &[u8]) {
        self.exchanges.read(bytes);
    }

    /// Follows `n` bytes written from `bufs`, then arms the timer that now
    /// applies with the writer's waker: a response that ends starts the
    /// keep-alive timer while the reader may already be parked, and nothing
    /// else would wake it.
    pub(crate) fn wrote(&mut self, cx: &Context<'_>, bufs: &[io::IoSlice<'_>], mut n: usize) {
        for buf in bufs {
            if n == 0 {
                break;
            }
            let len = buf.len().min(n);
            self.exchanges.wrote(&buf[..len]);
            n -= len;
        }
        if !self.closed
            && self
                .poll_expired(&mut Context::from_waker(cx.waker()))
                .is_some()
        {
            cx.waker().wake_by_ref();
        }
    }

    /// Whether a timer may still apply: not once the connection is HTTP/2,
    /// upgraded or a tunnel.
    pub(crate) fn is_timed(&self) -> bool {
        self.exchanges.is_timed()
    }
}

/// A stream under the connection's timers: for a server that reads HTTP/1
/// through TLS, whose plain bytes the timers must see.
#[cfg(feature = "rustls")]
#[derive(Debug)]
pub(crate) struct Watched<I> {
    io: I,
    watch: Option<Box<Watch>>,
    handle: ConnectionHandle,
    /// Plain bytes read before the server had the stream, read first.
    replay: Vec<u8>,
    replayed: usize,
}

#[cfg(feature = "rustls")]
impl<I> Watched<I> {
    /// `prefix` was read already, and counted by `watch`.
    pub(crate) fn new(
        io: I,
        prefix: Vec<u8>,
        watch: Option<Box<Watch>>,
        handle: ConnectionHandle,
    ) -> Self {
        Self {
            io,
            watch,
            handle,
            replay: prefix,
            replayed: 0,
        }
    }
}

#[cfg(feature = "rustls")]
impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.replayed < this.replay.len() {
            if this.handle.is_aborted() {
                return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            let n = buf.remaining().min(this.replay.len() - this.replayed);
            buf.put_slice(&this.replay[this.replayed..this.replayed + n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                this.replay = Vec::new();
                this.replayed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(watch) = this.watch.as_mut() {
            if let Some(result) = watch.poll_before_read(cx, &this.handle) {
                return Poll::Ready(result);
            }
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(watch)) = (&poll, this.watch.as_mut()) {
            watch.read(&buf.filled()[before..]);
            if !watch.is_timed() {
                this.watch = None;
            }
        }
        poll
    }
}

#[cfg(feature = "rustls")]
impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(watch)) = (&poll, self.watch.as_mut()) {
            watch.wrote(cx, &[io::IoSlice::new(buf)], *n);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(watch)) = (&poll, self.watch.as_mut()) {
            watch.wrote(cx, bufs, *n);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
            watch: None,
        }
    }

    /// Puts the connection under its timers (see `Watch`); the bytes
    /// already read count as read.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn with_timers(
        mut self,
        timeouts: Timeouts,
        accepted: Instant,
        peer: SocketAddr,
        mode: CloseMode,
    ) -> Self {
        self.watch = Watch::new(timeouts, accepted, &self.replay, peer, mode);
        self
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
        if self.handle.is_aborted() {
            return Poll::Ready(Err(Self::aborted()));
        }
        let this = &mut *self;
        if let Some(watch) = this.watch.as_mut() {
            if let Some(result) = watch.poll_before_read(cx, &this.handle) {
                return Poll::Ready(result);
            }
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
        if let (Poll::Ready(Ok(())), Some(watch)) = (&poll, self.watch.as_mut()) {
            watch.read(&buf.filled()[before..]);
            if !watch.is_timed() {
                self.watch = None;
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
        self.after_write_poll(cx, poll, &[io::IoSlice::new(buf)])
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
        self.after_write_poll(cx, poll, bufs)
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
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let (Poll::Ready(Ok(n)), Some(watch)) = (&poll, self.watch.as_mut()) {
            watch.wrote(cx, bufs, *n);
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
        if let Some(mode) = self.handle.close_mode() {
            let stream = &self.stream;
            close_as(socket2::SockRef::from(stream), mode, |buf| {
                stream.try_read(buf)
            });
        }
    }
}

/// Sets `socket` up so that closing it closes the way `mode` says;
/// `try_read` reads without waiting, for the drain before a FIN. Shared by
/// the runtime's streams and the bare sockets a serve loop judges before
/// registering them.
pub(crate) fn close_as(
    sock: socket2::SockRef<'_>,
    mode: CloseMode,
    mut try_read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) {
    match mode {
        CloseMode::Reset => {
            // Errors here mean the peer is already gone; the close still happens.
            let _ = sock.set_linger(Some(std::time::Duration::ZERO));
        }
        // In repair mode the close itself sends nothing.
        CloseMode::Silent if enter_repair_mode(&*sock) => {}
        CloseMode::Silent => {
            // The reset cannot get past the first router.
            let v6 = sock
                .peer_addr()
                .ok()
                .and_then(|addr| addr.as_socket())
                .is_some_and(|addr| addr.is_ipv6());
            let _ = if v6 {
                sock.set_unicast_hops_v6(1)
            } else {
                sock.set_ttl_v4(1)
            };
            let _ = sock.set_linger(Some(std::time::Duration::ZERO));
        }
        CloseMode::Fin => {
            // The close sends the FIN, as long as no unread byte is left:
            // the kernel answers a close over unread data with a reset.
            // No `shutdown` first: it would cost a syscall per drop and
            // change nothing the client sees.
            let mut scratch = [0u8; 4096];
            let mut drained = 0;
            while drained < DRAIN_LIMIT {
                match try_read(&mut scratch) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
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
