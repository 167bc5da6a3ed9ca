//! Accepting outside the runtime. On Linux the serve loop accepts each
//! connection as a bare non-blocking socket and judges what is known at
//! accept (the peer, and with `TCP_DEFER_ACCEPT` the whole first request)
//! before the socket is registered with the runtime: a connection dropped
//! there is closed without ever being added to the reactor or removed from
//! it, which is most of what a drop would otherwise cost beyond nginx's
//! accept, read and close. A connection that is kept is registered then, as
//! the runtime's own accept would have done. The accept itself is shared
//! with the layer's listener, in `server::backlog`.

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
pub(super) struct BareListener(crate::server::backlog::Backlog);

#[cfg(target_os = "linux")]
impl BareListener {
    pub(super) fn new(listener: tokio::net::TcpListener) -> io::Result<Self> {
        // `into_std` leaves the listener non-blocking.
        crate::server::backlog::Backlog::new(listener.into_std()?).map(Self)
    }

    async fn try_accept(&self) -> io::Result<(Socket, SocketAddr)> {
        self.0.accept().await
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
