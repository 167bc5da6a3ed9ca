//! The connection side: the handle that aborts a TCP stream, the stream
//! wrapper that obeys it, the listener for `axum::serve` and the crate's
//! own serve loop, all made from the layer.
//!
//! A tower service cannot close its connection: it can only return a
//! response, and `axum::serve` insists the service never fails. So the layer
//! and the connection share a [`ConnectionHandle`]. Each accepted stream is
//! an [`AbortableStream`]. The layer finds its handle either in the request,
//! as [`ConnectionInfo`] (the serve loop and tonic put it there), or, under
//! `axum::serve`, by the peer address in axum's `ConnectInfo<SocketAddr>`,
//! under which the layer's listener recorded it. When a rule drops a request,
//! the layer trips the handle before any response exists; the stream then
//! refuses every write and closes the socket with the [`CloseMode`].

pub mod ban;
mod handle;
#[cfg(feature = "axum")]
mod listener;
pub(crate) mod registry;
#[cfg(feature = "server")]
pub mod serve;
mod stream;
#[cfg(any(feature = "server", feature = "tonic"))]
pub(crate) mod stream_reset;

use std::net::SocketAddr;

pub use handle::{CloseMode, ConnectionHandle};
#[cfg(feature = "axum")]
pub use listener::{AbortableListener, NoResponseListener};
pub use stream::{AbortableStream, silent_close_available};
#[cfg(any(feature = "server", feature = "tonic"))]
pub use stream_reset::DropAsError;

/// The peer address and abort handle of the connection a request came on.
///
/// The crate's serve loop and tonic's server (with the layer's incoming
/// stream) put it in every request as a plain extension; another serve loop
/// may do the same. Under `axum::serve` it is not needed: the layer finds the
/// connection by its peer address.
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

    #[cfg(feature = "server")]
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
