//! tonic's connection side: the accept stream for `serve_with_incoming`,
//! whose streams the layer can abort and which tonic gives every request as
//! the [`ConnectionInfo`] the layer finds them by.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tonic::transport::server::Connected;

use crate::NoResponseLayer;
use crate::connection::{AbortableStream, ConnectionInfo};

impl NoResponseLayer {
    /// Accepts from `listener` for tonic's `serve_with_incoming`, with
    /// `TCP_NODELAY` set on every connection. See [`grpc`](crate::grpc).
    #[must_use]
    pub fn incoming(&self, listener: TcpListener) -> NoResponseIncoming {
        NoResponseIncoming {
            listener,
            layer: self.clone(),
            nodelay: true,
        }
    }
}

/// Accepted connections for tonic's `serve_with_incoming`, made by
/// [`NoResponseLayer::incoming`].
pub struct NoResponseIncoming {
    listener: TcpListener,
    /// Screens each peer before tonic sees it: `only_from_peer`, bans.
    layer: NoResponseLayer,
    nodelay: bool,
}

impl NoResponseIncoming {
    /// Sets `TCP_NODELAY` on each accepted connection; on by default, as
    /// with tonic's own `serve`.
    #[must_use]
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.nodelay = on;
        self
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl fmt::Debug for NoResponseIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoResponseIncoming")
            .field("listener", &self.listener)
            .field("tcp_nodelay", &self.nodelay)
            .finish()
    }
}

impl futures_core::Stream for NoResponseIncoming {
    type Item = io::Result<AbortableStream>;

    /// Accept errors are passed on: tonic's server logs them and goes on.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let (stream, peer) = match std::task::ready!(self.listener.poll_accept(cx)) {
                Ok(accepted) => accepted,
                Err(e) => return Poll::Ready(Some(Err(e))),
            };
            // A refused peer is closed here, unseen by tonic.
            let Some(stream) = self.layer.screen_at_accept(stream, peer) else {
                continue;
            };
            if self.nodelay {
                // Fails only for a peer that is already gone.
                let _ = stream.set_nodelay(true);
            }
            return Poll::Ready(Some(Ok(AbortableStream::new(stream))));
        }
    }
}

/// tonic puts this [`ConnectionInfo`] into every request, where the layer
/// finds the handle that aborts the connection.
impl Connected for AbortableStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        // A peer that is already gone reads as 0.0.0.0:0: an address no
        // allow-list lets through.
        let peer = self
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let info = ConnectionInfo::new(peer, self.handle().clone());
        match self.get_ref().local_addr() {
            Ok(local) => info.with_local_addr(local),
            Err(_) => info,
        }
    }
}
