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

use std::net::SocketAddr;

pub use handle::{CloseMode, ConnectionHandle};
#[cfg(feature = "axum")]
pub use listener::NoResponseListener;
pub use stream::{AbortableStream, silent_close_available};

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
    /// Set by the crate's serve loop, which can reset one HTTP/2 stream;
    /// anywhere else a drop has to close the connection.
    pub(crate) http2_stream_drops: bool,
}

impl ConnectionInfo {
    /// Pairs a peer address with the handle of its stream.
    #[must_use]
    pub fn new(peer_addr: SocketAddr, handle: ConnectionHandle) -> Self {
        Self {
            peer_addr,
            local_addr: None,
            handle,
            http2_stream_drops: false,
        }
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

/// Accepted connections as a stream of [`AbortableStream`]s, for tonic's
/// `Server::serve_with_incoming` (feature `tonic`).
///
/// ```no_run
/// # async fn run(health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) -> Result<(), Box<dyn std::error::Error>> {
/// use tower_no_response::NoResponseLayer;
/// use tower_no_response::connection::AbortableIncoming;
///
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
/// tonic::transport::Server::builder()
///     .layer(NoResponseLayer::builder().deny_user_agent("masscan").build()?)
///     .add_service(health)
///     .serve_with_incoming(AbortableIncoming::new(listener))
///     .await?;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tonic")]
#[derive(Debug)]
pub struct AbortableIncoming {
    listener: tokio::net::TcpListener,
}

#[cfg(feature = "tonic")]
impl AbortableIncoming {
    /// Accepts from `listener`.
    #[must_use]
    pub fn new(listener: tokio::net::TcpListener) -> Self {
        Self { listener }
    }
}

#[cfg(feature = "tonic")]
impl futures_core::Stream for AbortableIncoming {
    type Item = std::io::Result<AbortableStream>;

    /// Accept errors are passed on: tonic's server logs them and goes on.
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|accepted| Some(accepted.map(|(stream, _)| AbortableStream::new(stream))))
    }
}

/// tonic's `Server::serve_with_incoming` takes any stream of IO resources
/// that say who they are connected to. An [`AbortableStream`] says so with a
/// [`ConnectionInfo`], which the layer finds in every request; the layer
/// then adds tonic's own `TcpConnectInfo`, so `Request::remote_addr()` keeps
/// working. gRPC is HTTP/2: a dropped call resets only its own stream, and
/// the other calls on the channel carry on.
#[cfg(feature = "tonic")]
impl tonic::transport::server::Connected for AbortableStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        // A peer that is already gone reads as 0.0.0.0:0: an address no
        // allow-list lets through.
        let peer = self
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut info = ConnectionInfo::new(peer, self.handle().clone());
        info.local_addr = self.get_ref().local_addr().ok();
        info.http2_stream_drops = true;
        info
    }
}
