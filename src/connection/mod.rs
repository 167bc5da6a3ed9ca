//! The connection side: the handle that aborts a TCP stream, the stream
//! wrapper that obeys it, and the listener that hands both to `axum::serve`.
//!
//! A tower service cannot close its connection: it can only return a
//! response, and `axum::serve` insists the service never fails. So the layer
//! and the connection share a [`ConnectionHandle`]. The listener wraps each
//! accepted stream in an [`AbortableStream`] and puts the handle, with the
//! peer address, into every request as [`ConnectionInfo`]. When a rule drops a
//! request, the layer trips the handle before any response exists; the stream
//! then refuses every write and closes the socket with the [`CloseMode`].

pub mod ban;
mod handle;
#[cfg(feature = "axum")]
mod listener;
#[cfg(feature = "server")]
pub mod serve;
mod stream;
#[cfg(any(feature = "server", feature = "tonic"))]
pub(crate) mod stream_reset;

use std::net::SocketAddr;

pub use handle::{CloseMode, ConnectionHandle};
#[cfg(feature = "axum")]
pub use listener::NoResponseListener;
pub use stream::{AbortableStream, silent_close_available};
#[cfg(any(feature = "server", feature = "tonic"))]
pub use stream_reset::DropAsError;

/// The peer address and abort handle of the connection a request came on.
///
/// With `axum::serve`, obtain it through
/// `into_make_service_with_connect_info::<ConnectionInfo>()`; handlers then
/// read the peer through `ConnectInfo<ConnectionInfo>`, and, for requests the
/// layer lets through, through `ConnectInfo<SocketAddr>` as before. Other serve
/// loops insert it as a plain request extension.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    peer_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    handle: ConnectionHandle,
    /// Set where a `DropAsError` stands between the layer and hyper
    /// (the crate's serve loop, the gRPC layer), which can reset one HTTP/2
    /// stream without a head; anywhere else a drop closes the connection.
    pub(crate) stream_resets: bool,
}

impl ConnectionInfo {
    /// Pairs a peer address with the handle of its stream.
    #[must_use]
    pub fn new(peer_addr: SocketAddr, handle: ConnectionHandle) -> Self {
        Self {
            peer_addr,
            local_addr: None,
            handle,
            stream_resets: false,
        }
    }

    /// The same connection, with its local address.
    #[must_use]
    pub fn with_local_addr(mut self, local_addr: SocketAddr) -> Self {
        self.local_addr = Some(local_addr);
        self
    }

    #[cfg(any(feature = "server", feature = "tonic"))]
    pub(crate) fn with_stream_resets(&self) -> Self {
        let mut info = self.clone();
        info.stream_resets = true;
        info
    }

    /// The TCP peer. Behind a proxy this is the proxy; see
    /// [`ClientIp`](crate::ClientIp) for the client.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The local address of the connection, where known.
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The handle that aborts the connection.
    #[must_use]
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }
}
