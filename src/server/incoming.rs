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

/// tonic over TLS, behind the TLS gate (features `tonic` and `rustls`).
#[cfg(feature = "rustls")]
mod tls {
    use std::fmt;
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::task::JoinSet;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::server::TlsStream;
    use tonic::transport::server::Connected;

    use super::NoResponseIncoming;
    use crate::connection::{AbortableStream, ConnectionInfo, drop_connection};
    use crate::rules::DropReason;
    use crate::tls::TlsGate;

    impl NoResponseIncoming {
        /// The same accept stream over TLS: each connection's ClientHello
        /// is judged by `gate` (see [`tls`](crate::tls)), then the
        /// handshake runs with `config`, which should offer ALPN `h2`.
        /// Handshakes run in their own tasks, so a slow client never holds
        /// up the others; one not finished within the header timeout (10 s
        /// when none is set) is dropped as `header_timeout`. With the
        /// layer's gRPC half, each call carries the client's
        /// [`ClientHello`](crate::tls::ClientHello) as an extension.
        #[must_use]
        pub fn tls(self, config: Arc<ServerConfig>, gate: TlsGate) -> NoResponseTlsIncoming {
            NoResponseTlsIncoming {
                incoming: self,
                acceptor: TlsAcceptor::from(config),
                gate,
                handshakes: JoinSet::new(),
            }
        }
    }

    /// Accepted TLS connections for tonic's `serve_with_incoming`, made by
    /// [`NoResponseIncoming::tls`].
    pub struct NoResponseTlsIncoming {
        incoming: NoResponseIncoming,
        acceptor: TlsAcceptor,
        gate: TlsGate,
        handshakes: JoinSet<Option<TlsConnection>>,
    }

    impl fmt::Debug for NoResponseTlsIncoming {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("NoResponseTlsIncoming")
                .field("incoming", &self.incoming)
                .field("gate", &self.gate)
                .field("handshakes", &self.handshakes.len())
                .finish_non_exhaustive()
        }
    }

    /// One TLS connection for tonic: its stream and the [`ConnectionInfo`]
    /// tonic puts in each request.
    pub struct TlsConnection {
        stream: TlsStream<AbortableStream>,
        info: ConnectionInfo,
    }

    impl fmt::Debug for TlsConnection {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("TlsConnection")
                .field("info", &self.info)
                .finish_non_exhaustive()
        }
    }

    impl futures_core::Stream for NoResponseTlsIncoming {
        type Item = io::Result<TlsConnection>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            // Takes every connection waiting, each into its own task.
            loop {
                let (stream, peer) = match this.incoming.listener.poll_accept(cx) {
                    Poll::Ready(Ok(accepted)) => accepted,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => break,
                };
                let Some(stream) = this.incoming.layer.screen_at_accept(stream, peer) else {
                    continue;
                };
                if this.incoming.nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let (gate, acceptor) = (this.gate.clone(), this.acceptor.clone());
                let limit = this
                    .incoming
                    .layer
                    .header_timeout()
                    .unwrap_or(Duration::from_secs(10));
                let close_mode = this.incoming.layer.close_mode();
                let local = stream.local_addr().ok();
                this.handshakes.spawn(async move {
                    let started = tokio::time::Instant::now();
                    let (stream, hello) = gate.admit(stream, peer).await?.into_parts();
                    let handle = stream.handle().clone();
                    let left = limit.saturating_sub(started.elapsed());
                    let Ok(done) = tokio::time::timeout(left, acceptor.accept(stream)).await else {
                        drop_connection(&handle, peer, close_mode, DropReason::HeaderTimeout);
                        return None;
                    };
                    let stream = done.ok()?;
                    let mut info = ConnectionInfo::new(peer, handle);
                    if let Some(local) = local {
                        info = info.with_local_addr(local);
                    }
                    info.attachment = Some(crate::connection::Attachment(Arc::new(hello)));
                    Some(TlsConnection { stream, info })
                });
            }
            loop {
                match this.handshakes.poll_join_next(cx) {
                    Poll::Ready(Some(Ok(Some(connection)))) => {
                        return Poll::Ready(Some(Ok(connection)));
                    }
                    // Refused, gone, or a failed handshake: rustls's to
                    // answer, and not tonic's concern.
                    Poll::Ready(Some(_)) => {}
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            }
        }
    }

    /// tonic puts this [`ConnectionInfo`] into every request.
    impl Connected for TlsConnection {
        type ConnectInfo = ConnectionInfo;

        fn connect_info(&self) -> ConnectionInfo {
            self.info.clone()
        }
    }

    impl AsyncRead for TlsConnection {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for TlsConnection {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }
}

#[cfg(feature = "rustls")]
pub use tls::{NoResponseTlsIncoming, TlsConnection};
