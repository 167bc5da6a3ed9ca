use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(any(feature = "server", feature = "axum"))]
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::exchange::{Clock, Expiry};
#[cfg(any(feature = "server", feature = "axum"))]
use super::exchange::{Exchanges, Timeouts};
use super::{CloseMode, ConnectionHandle};
use crate::DropReason;
use crate::alarm::Alarm;
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
    /// For a peer that is not a balancer, while the layer reads PROXY
    /// protocol headers: its first bytes, watched for one.
    #[cfg(all(
        feature = "proxy-protocol",
        any(feature = "server", feature = "axum", feature = "tonic")
    ))]
    forged: Option<Box<(super::proxy_header::ForgedHeader, SocketAddr, CloseMode)>>,
    /// The client and balancer, for a connection whose PROXY protocol
    /// header named its client.
    #[cfg(all(feature = "proxy-protocol", feature = "tonic"))]
    origin: Option<super::proxy_header::Origin>,
}

/// A connection's timers (see [`exchange`](super::exchange)): the header
/// timeout drops a client that is slow to send a request head, the
/// keep-alive timeout closes an idle connection in order, and the send
/// timeout closes one whose client stopped reading.
#[derive(Debug)]
pub(crate) struct Watch {
    clock: Clock,
    /// Armed no further ahead than the shortest timeout, so that no
    /// deadline that appears later can fall before it: a request on a
    /// busy connection costs no timer reset, only a look when it rings.
    /// Off tokio's timer wheel, whose driver would cost every request
    /// while it holds a timer (see [`alarm`](crate::alarm)).
    alarm: Alarm,
    /// The instant `alarm` is set to.
    armed: Option<Instant>,
    /// Closed in order: every later read is the end of the stream.
    closed: bool,
    /// The `GOAWAY` an HTTP/2 connection closed in order still owes its
    /// client, written by the stream before the end of the stream.
    goaway: Option<[u8; 17]>,
    /// Whether `alarm` will wake the task: it was set for a deadline
    /// that has not run out. A deadline can only appear later than it,
    /// so while it is set a change needs no look.
    registered: bool,
    /// The task the connection is served in. hyper hands an upgraded
    /// connection to its handler, which reads it in a task of its own.
    task: Option<tokio::task::Id>,
    peer: SocketAddr,
    mode: CloseMode,
}

impl Watch {
    /// Timers for a connection accepted at `accepted`, of which `read` was
    /// read already; `None` when no timeout is set.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn new(
        timeouts: Timeouts,
        exchanges: Arc<Exchanges>,
        accepted: Instant,
        read: &[u8],
        (peer, mode): (SocketAddr, CloseMode),
    ) -> Option<Box<Self>> {
        let mut clock = Clock::new(timeouts, exchanges, accepted);
        clock.period()?;
        clock.read(read);
        Some(Box::new(Self {
            clock,
            alarm: Alarm::new(),
            armed: None,
            closed: false,
            goaway: None,
            registered: false,
            task: None,
            peer,
            mode,
        }))
    }

    /// Whether the stream is read or written from another task than the
    /// one that serves it: hyper handed it on with an upgrade.
    fn handed_on(&mut self) -> bool {
        let Some(id) = tokio::task::try_id() else {
            return false;
        };
        match self.task {
            None => {
                self.task = Some(id);
                false
            }
            Some(task) => task != id,
        }
    }

    /// What ran out, if anything; otherwise the timer that applies is
    /// registered with `cx`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<Expiry> {
        if self.closed {
            return Some(Expiry::Idle);
        }
        // Armed and waiting: whatever happened since, every deadline is
        // at or after the alarm's, which wakes this task to look. The task
        // is the one that set it, unless hyper handed the stream
        // on, which a read tells.
        if self.registered && self.alarm.is_set() {
            return None;
        }
        self.registered = false;
        if self.handed_on() {
            self.clock.tunnel();
            return None;
        }
        let (at, expiry) = self.clock.deadline()?;
        loop {
            // Rung, or never set: it ran out at `armed`, the deadline or a
            // look on the way to a later one.
            if self.armed.is_some_and(|armed| armed >= at) {
                return Some(expiry);
            }
            let now = Instant::now();
            let armed = self
                .clock
                .period()
                .and_then(|p| now.checked_add(p))
                .map_or(at, |ahead| ahead.min(at));
            self.armed = Some(armed);
            if !self.alarm.set(armed.into_std(), now.into_std(), cx) {
                self.registered = true;
                return None;
            }
        }
    }

    /// Acts on a timer that ran out, before a read: a head not complete in
    /// time drops the connection (aborting `handle`, logged once); an idle
    /// connection, or a new one on which no request began, reads as closed,
    /// so the server closes it in order, with no drop logged; a client
    /// that stopped reading fails the read. `None` while no timer ran out.
    #[inline]
    pub(crate) fn poll_before_read(
        &mut self,
        cx: &mut Context<'_>,
        handle: &ConnectionHandle,
    ) -> Option<io::Result<()>> {
        // The read of nearly every request: its alarm is set and has not
        // rung, so there is nothing to look at, and no call to pay for.
        if !self.closed && self.registered && self.alarm.is_set() {
            return None;
        }
        self.poll_ran_out(cx, handle)
    }

    #[inline(never)]
    fn poll_ran_out(
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
            Expiry::Send => Some(Err(self.send_timed_out())),
            Expiry::Goaway => {
                tracing::debug!(
                    target: "tower_no_response",
                    peer_addr = %self.peer,
                    "HTTP/2 connection closed: still open a grace period after its GOAWAY"
                );
                Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the grace period after GOAWAY ran out",
                )))
            }
            expiry @ (Expiry::Idle | Expiry::Unused | Expiry::Unfollowed) => {
                if !self.closed {
                    self.closed = true;
                    self.goaway = self.clock.goaway();
                    let why = match expiry {
                        Expiry::Idle => "idle connection closed at the keep-alive timeout",
                        Expiry::Unused => {
                            "connection closed: no request began within the header timeout"
                        }
                        _ => {
                            "connection closed: bytes it could not follow were not answered \
                              within the header timeout"
                        }
                    };
                    tracing::debug!(target: "tower_no_response", peer_addr = %self.peer, "{why}");
                }
                Some(Ok(()))
            }
        }
    }

    /// Before a write that found the client's window full: the send
    /// timeout, if it ran out; otherwise its timer is registered.
    pub(crate) fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.clock.blocked();
        match self.poll_expired(cx) {
            Some(Expiry::Send) => Some(self.send_timed_out()),
            // Another timer that ran out is the reader's to act on; the
            // same task reads, and is woken.
            Some(_) => {
                cx.waker().wake_by_ref();
                None
            }
            None => None,
        }
    }

    /// The send timeout ran out: an orderly close, neither a drop nor a
    /// strike, since a client that loses its signal is innocent.
    fn send_timed_out(&mut self) -> io::Error {
        if !self.closed {
            self.closed = true;
            crate::audit::send_timed_out(self.peer);
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            "send timeout: the client accepted no byte of the response",
        )
    }

    pub(crate) fn read(&mut self, bytes: &[u8]) {
        if self.handed_on() {
            self.clock.tunnel();
        }
        self.clock.read(bytes);
    }

    /// Follows `n` bytes of `bufs` the client accepted. A write can start
    /// a timer (the end of the last HTTP/2 stream, a `GOAWAY`) that no
    /// read would arm, since a server may read before it writes: armed
    /// here, with the writer's waker, and the task woken if it already
    /// ran out.
    pub(crate) fn wrote(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>], n: usize) {
        self.clock.wrote(bufs, n);
        if !self.registered && self.poll_expired(cx).is_some() {
            cx.waker().wake_by_ref();
        }
    }

    /// The `GOAWAY` to send before the end of the stream, once.
    pub(crate) fn take_goaway(&mut self) -> Option<[u8; 17]> {
        self.goaway.take()
    }

    /// Whether a timer may still apply: not once the connection is HTTP/2,
    /// upgraded or a tunnel.
    pub(crate) fn is_timed(&self) -> bool {
        self.clock.is_timed()
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
impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<I> {
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
                if let Some(goaway) = watch.take_goaway() {
                    // Best effort, as on plaintext.
                    let io = Pin::new(&mut this.io);
                    if let Poll::Ready(Ok(_)) = io.poll_write(cx, &goaway) {
                        let _ = Pin::new(&mut this.io).poll_flush(cx);
                    }
                }
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
        watch_write(&mut self.watch, cx, poll, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        watch_write(&mut self.watch, cx, poll, bufs)
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
            #[cfg(all(
                feature = "proxy-protocol",
                any(feature = "server", feature = "axum", feature = "tonic")
            ))]
            forged: None,
            #[cfg(all(feature = "proxy-protocol", feature = "tonic"))]
            origin: None,
        }
    }

    /// The same stream, from the client a balancer's PROXY protocol header
    /// named.
    #[cfg(all(feature = "proxy-protocol", feature = "tonic"))]
    pub(crate) fn behind_balancer(mut self, origin: super::proxy_header::Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The client and balancer, behind one.
    #[cfg(all(feature = "proxy-protocol", feature = "tonic"))]
    pub(crate) fn origin(&self) -> Option<super::proxy_header::Origin> {
        self.origin
    }

    /// Drops the connection, with zero bytes, if it begins with a PROXY
    /// protocol header: `peer` is no balancer of the layer's, and nginx
    /// refuses a header where none is expected.
    #[cfg(all(
        feature = "proxy-protocol",
        any(feature = "server", feature = "axum", feature = "tonic")
    ))]
    pub(crate) fn refusing_proxy_headers(mut self, peer: SocketAddr, mode: CloseMode) -> Self {
        let guard = super::proxy_header::ForgedHeader::new();
        let mut forged = Some(Box::new((guard, peer, mode)));
        // What was read already is looked at now.
        if !self.replay.is_empty() {
            if let Some(done) = forged.as_mut().and_then(|f| f.0.look(&self.replay)) {
                if done {
                    super::drop_connection(
                        &self.handle,
                        peer,
                        mode,
                        DropReason::ProxyProtocolInvalid,
                    );
                }
                forged = None;
            }
        }
        self.forged = forged;
        self
    }

    /// Looks at bytes about to be handed to the server for a forged PROXY
    /// header; an error once the connection is dropped for one.
    #[cfg(all(
        feature = "proxy-protocol",
        any(feature = "server", feature = "axum", feature = "tonic")
    ))]
    fn check_forged(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(forged) = self.forged.as_mut() else {
            return Ok(());
        };
        match forged.0.look(bytes) {
            None => Ok(()),
            Some(false) => {
                self.forged = None;
                Ok(())
            }
            Some(true) => {
                let (_, peer, mode) = *self.forged.take().expect("looked at");
                super::drop_connection(&self.handle, peer, mode, DropReason::ProxyProtocolInvalid);
                Err(Self::aborted())
            }
        }
    }

    /// Puts the connection under its timers (see `Watch`), which learn
    /// of its exchanges from `exchanges`; the bytes already read count as
    /// read.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn with_timers(
        mut self,
        timeouts: Timeouts,
        exchanges: Arc<Exchanges>,
        accepted: Instant,
        peer: SocketAddr,
        mode: CloseMode,
    ) -> Self {
        self.watch = Watch::new(timeouts, exchanges, accepted, &self.replay, (peer, mode));
        self
    }

    /// Records the stream in `registry` under `peer` until it is dropped,
    /// with the exchanges the layer reports to its timers.
    #[cfg(feature = "axum")]
    pub(crate) fn register(
        &mut self,
        registry: &Arc<Registry>,
        peer: SocketAddr,
        exchanges: Arc<Exchanges>,
    ) {
        self.registration = Some(registry.register(peer, &self.handle, exchanges));
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
                if let Some(goaway) = watch.take_goaway() {
                    // Best effort, between two of hyper's frames: a client
                    // that cannot take 17 bytes now learns of the close
                    // from the FIN alone.
                    let _ = this.stream.try_write(&goaway);
                }
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
        #[cfg(all(
            feature = "proxy-protocol",
            any(feature = "server", feature = "axum", feature = "tonic")
        ))]
        if let Poll::Ready(Ok(())) = &poll {
            let this = &mut *self;
            this.check_forged(&buf.filled()[before..])?;
        }
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
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = watch_write(&mut self.watch, cx, poll, bufs);
        if poll.is_pending() {
            self.handle.register_writer(cx);
            if self.handle.is_aborted() {
                return Poll::Ready(Err(Self::aborted()));
            }
        }
        poll
    }
}

/// Follows a write's outcome on the connection's timers: the bytes the
/// client accepted, or, for a write that waits on the client, the send
/// timeout, which fails it once it runs out.
fn watch_write(
    watch: &mut Option<Box<Watch>>,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<usize>>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let Some(watch) = watch.as_mut() else {
        return poll;
    };
    match &poll {
        Poll::Ready(Ok(n)) => watch.wrote(cx, bufs, *n),
        Poll::Pending => {
            if let Some(e) = watch.poll_blocked(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Err(_)) => {}
    }
    poll
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
