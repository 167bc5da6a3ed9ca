//! Accepting outside the runtime. On Linux the serve loop accepts each
//! connection as a bare non-blocking socket and judges what is known at
//! accept (the peer, and with `TCP_DEFER_ACCEPT` the whole first request)
//! before the socket is registered with the runtime: a connection dropped
//! there is closed without ever being added to the reactor or removed from
//! it, which is most of what a drop would otherwise cost beyond nginx's
//! accept, read and close. A connection that is kept is registered then, as
//! the runtime's own accept would have done.
//!
//! # Why `unsafe`
//!
//! The listener's readiness comes from the runtime through `AsyncFd`,
//! whose constructor is `unsafe`: the runtime must be able to trust that
//! the descriptor stays open, and stays the same, while it is registered.
//! It does: the `AsyncFd` owns the `std::net::TcpListener`, whose
//! descriptor closes only when the listener is dropped, after the
//! registration is gone, and whose `as_raw_fd` never changes.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The socket the loop judges at accept.
#[cfg(target_os = "linux")]
pub(super) type Socket = std::net::TcpStream;
#[cfg(not(target_os = "linux"))]
pub(super) type Socket = TcpStream;

/// The loop's listener: readiness from the runtime, accepts of its own.
#[cfg(target_os = "linux")]
pub(super) struct BareListener(tokio::io::unix::AsyncFd<std::net::TcpListener>);

#[cfg(target_os = "linux")]
impl BareListener {
    pub(super) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        use tokio::io::{Interest, unix::AsyncFd};
        // `into_std` leaves the listener non-blocking.
        let listener = listener.into_std()?;
        // SAFETY: the `AsyncFd` takes the listener, and with it the one
        // descriptor it reports, open until the `AsyncFd` drops it (see
        // the module's docs).
        let fd = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
        fd.map(Self).map_err(|e| e.into_parts().1)
    }

    async fn try_accept(&self) -> io::Result<(Socket, SocketAddr)> {
        std::future::poll_fn(|cx| {
            loop {
                // `poll_read_ready` spends the task's budget, as the
                // runtime's own accept does: under a flood of connections
                // dropped at accept the loop still yields, and every other
                // task on its thread runs. (`readable()` spends none.)
                let mut ready = std::task::ready!(self.0.poll_read_ready(cx))?;
                // A would-block clears the readiness, and the loop waits again.
                if let Ok(accepted) =
                    ready.try_io(|listener| crate::connection::accept_bare(listener.get_ref()))
                {
                    return std::task::Poll::Ready(accepted);
                }
            }
        })
        .await
    }
}

/// Elsewhere, the runtime's listener as it is.
#[cfg(not(target_os = "linux"))]
pub(super) struct BareListener(tokio::net::TcpListener);

#[cfg(not(target_os = "linux"))]
impl BareListener {
    pub(super) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        Ok(Self(listener))
    }

    async fn try_accept(&self) -> io::Result<(Socket, SocketAddr)> {
        self.0.accept().await
    }
}

impl BareListener {
    /// Accepts like `axum::serve`: errors that belong to one connection
    /// are skipped; others (such as running out of file descriptors) are
    /// logged and retried after a second, instead of spinning.
    pub(super) async fn accept(&self) -> (Socket, SocketAddr) {
        loop {
            match self.try_accept().await {
                Ok(accepted) => return accepted,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    tracing::error!(target: "tower_no_response", "accept error: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// The socket, registered with the runtime.
#[cfg(target_os = "linux")]
pub(super) fn register(socket: Socket) -> io::Result<TcpStream> {
    TcpStream::from_std(socket)
}

#[cfg(not(target_os = "linux"))]
pub(super) fn register(socket: Socket) -> io::Result<TcpStream> {
    Ok(socket)
}
