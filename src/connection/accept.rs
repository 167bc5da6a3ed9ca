//! How a connection side closes a connection it refuses or drops itself,
//! and logs it, once.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

#[cfg(any(feature = "rustls", feature = "proxy-protocol"))]
use super::ConnectionHandle;
use super::{CloseMode, close_as};
use crate::DropReason;
use crate::audit::{Close, DropEvent, Handling};

/// A just-accepted socket, read without waiting and closed by a connection
/// side that refuses it: the runtime's stream, or (on Linux, in the serve
/// loop and the layer's listener) a bare socket not yet registered with
/// the runtime, so that a drop at accept costs neither a registration nor
/// its removal.
pub(crate) trait Accepted: Sized {
    /// Reads what has arrived, without waiting.
    #[cfg_attr(not(any(feature = "server", feature = "axum")), allow(dead_code))]
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Closes the socket the way `mode` says.
    fn close(self, mode: CloseMode);
}

impl Accepted for TcpStream {
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }

    fn close(self, mode: CloseMode) {
        close_as(socket2::SockRef::from(&self), mode, |buf| {
            self.try_read(buf)
        });
    }
}

/// A socket accepted non-blocking, outside the runtime.
#[cfg(all(any(feature = "server", feature = "axum"), target_os = "linux"))]
impl Accepted for std::net::TcpStream {
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self, buf)
    }

    fn close(self, mode: CloseMode) {
        close_as(socket2::SockRef::from(&self), mode, |buf| {
            self.read_now(buf)
        });
    }
}

/// Accepts from `listener` outside the runtime: `accept4` with the flags
/// the runtime's own accept uses, so reads never wait and the socket can
/// be registered as it is, if it is kept.
#[cfg(all(any(feature = "server", feature = "axum"), target_os = "linux"))]
pub(crate) fn accept_bare<L: std::os::fd::AsFd>(
    listener: &L,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (socket, addr) =
        socket2::SockRef::from(listener).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a peer with no IP address"))?;
    Ok((socket.into(), peer))
}

/// Closes a connection before reading from it, and logs it as a 444.
pub(crate) fn refuse<S: Accepted>(
    stream: S,
    peer: SocketAddr,
    mode: CloseMode,
    reason: DropReason,
) {
    stream.close(mode);
    log_drop(peer, mode, reason);
}

/// Aborts a connection the loop itself drops and logs it, once: a handle
/// already tripped by the layer has had its event.
#[cfg(any(feature = "rustls", feature = "proxy-protocol"))]
pub(crate) fn drop_connection(
    handle: &ConnectionHandle,
    peer: SocketAddr,
    mode: CloseMode,
    reason: DropReason,
) {
    if handle.abort(mode) {
        log_drop(peer, mode, reason);
    }
}

fn log_drop(peer: SocketAddr, mode: CloseMode, reason: DropReason) {
    DropEvent {
        rule: reason,
        handling: Handling::Drop(Close::Mode(mode)),
        client_ip: Some(peer.ip().to_canonical()),
        peer_addr: Some(peer),
        request: None,
        hello: None,
    }
    .emit();
}
