use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
#[cfg(feature = "axum")]
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{CloseMode, ConnectionHandle};
use crate::layer::registry::Registration;
#[cfg(feature = "axum")]
use crate::layer::registry::Registry;

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
    _registration: Option<Registration>,
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
            _registration: None,
        }
    }

    /// Records the stream in `registry` under `peer` until it is dropped.
    #[cfg(feature = "axum")]
    pub(crate) fn register(&mut self, registry: &Arc<Registry>, peer: SocketAddr) {
        self._registration = Some(registry.register(peer, &self.handle));
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
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
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
        &self,
        cx: &Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
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
