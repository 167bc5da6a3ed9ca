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
#[cfg(feature = "proxy-protocol")]
use crate::connection::proxy_header;
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
            #[cfg(feature = "proxy-protocol")]
            behind_balancers: tokio::task::JoinSet::new(),
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
    /// While the layer reads PROXY protocol headers, each connection in a
    /// task of its own until its first bytes are read (a balancer's
    /// header, or another peer's first bytes, which must not be a header),
    /// so that a slow one holds up no other accept.
    #[cfg(feature = "proxy-protocol")]
    behind_balancers: tokio::task::JoinSet<Option<AbortableStream>>,
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
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let (stream, peer) = match this.listener.poll_accept(cx) {
                Poll::Ready(Ok(accepted)) => accepted,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => break,
            };
            #[cfg(feature = "proxy-protocol")]
            if this.layer.sends_proxy_header(peer) {
                let (layer, nodelay) = (this.layer.clone(), this.nodelay);
                this.behind_balancers.spawn(async move {
                    let (stream, origin) =
                        proxy_header::read(stream, peer, layer.proxy_header_policy()).await?;
                    let stream = layer.screen_behind_balancer(stream, origin.client)?;
                    if nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    Some(AbortableStream::new(stream).behind_balancer(origin))
                });
                continue;
            }
            // A refused peer is closed here, unseen by tonic.
            let Some(stream) = this.layer.screen_at_accept(stream, peer) else {
                continue;
            };
            if this.nodelay {
                // Fails only for a peer that is already gone.
                let _ = stream.set_nodelay(true);
            }
            // tonic writes its settings before it reads: a header from a
            // peer that is no balancer is looked for first, in a task.
            #[cfg(feature = "proxy-protocol")]
            if this.layer.reads_proxy_headers() {
                let layer = this.layer.clone();
                this.behind_balancers.spawn(async move {
                    let (stream, read) =
                        proxy_header::unforged(stream, peer, layer.proxy_header_policy()).await?;
                    Some(AbortableStream::with_prefix(stream, read))
                });
                continue;
            }
            return Poll::Ready(Some(Ok(AbortableStream::new(stream))));
        }
        #[cfg(feature = "proxy-protocol")]
        loop {
            match this.behind_balancers.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(stream)))) => return Poll::Ready(Some(Ok(stream))),
                // Refused, gone, or a task that panicked.
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Poll::Pending
    }
}

/// tonic puts this [`ConnectionInfo`] into every request, where the layer
/// finds the handle that aborts the connection.
impl Connected for AbortableStream {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        #[cfg(feature = "proxy-protocol")]
        if let Some(origin) = self.origin() {
            let info = ConnectionInfo::new(origin.client, self.handle().clone())
                .with_balancer_addr(origin.balancer);
            return match self.get_ref().local_addr() {
                Ok(local) => info.with_local_addr(local),
                Err(_) => info,
            };
        }
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
    #[cfg(feature = "proxy-protocol")]
    use crate::connection::proxy_header;
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
                #[cfg(feature = "proxy-protocol")]
                let behind = this.incoming.layer.sends_proxy_header(peer);
                #[cfg(not(feature = "proxy-protocol"))]
                let behind = false;
                let stream = if behind {
                    stream
                } else {
                    // A refused peer is closed here, unseen by tonic.
                    let Some(stream) = this.incoming.layer.screen_at_accept(stream, peer) else {
                        continue;
                    };
                    stream
                };
                let (gate, acceptor) = (this.gate.clone(), this.acceptor.clone());
                let limit = this
                    .incoming
                    .layer
                    .header_timeout()
                    .unwrap_or(Duration::from_secs(10));
                let close_mode = this.incoming.layer.close_mode();
                let nodelay = this.incoming.nodelay;
                let local = stream.local_addr().ok();
                #[cfg(feature = "proxy-protocol")]
                let layer = this.incoming.layer.clone();
                this.handshakes.spawn(async move {
                    let started = tokio::time::Instant::now();
                    // Behind a balancer, its header first, then the client
                    // it names is screened and judged by the gate.
                    let (stream, peer, balancer) = if behind {
                        #[cfg(feature = "proxy-protocol")]
                        {
                            let (stream, origin) =
                                proxy_header::read(stream, peer, layer.proxy_header_policy())
                                    .await?;
                            let stream = layer.screen_behind_balancer(stream, origin.client)?;
                            (stream, origin.client, Some(origin.balancer))
                        }
                        #[cfg(not(feature = "proxy-protocol"))]
                        unreachable!("only the proxy-protocol feature reads a balancer's header")
                    } else {
                        (stream, peer, None)
                    };
                    if nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let admitted = gate.admit_from(stream, peer, balancer.is_some()).await?;
                    let (stream, hello) = admitted.into_parts();
                    let handle = stream.handle().clone();
                    let left = limit.saturating_sub(started.elapsed());
                    let Some(done) = crate::alarm::within(left, acceptor.accept(stream)).await
                    else {
                        drop_connection(&handle, peer, close_mode, DropReason::HeaderTimeout);
                        return None;
                    };
                    let stream = done.ok()?;
                    let mut info = ConnectionInfo::new(peer, handle);
                    if let Some(local) = local {
                        info = info.with_local_addr(local);
                    }
                    if let Some(balancer) = balancer {
                        info = info.with_balancer_addr(balancer);
                    }
                    info.hello = Some(hello.names());
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
