//! The gate as an axum-server acceptor (feature `axum-server`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum_server::accept::Accept;
use http::Request;
use tokio::net::TcpStream;
use tower_service::Service;

use super::{ClientHello, TlsGate};
use crate::connection::{AbortableStream, ConnectionInfo};

impl TlsGate {
    /// This gate as an acceptor for axum-server, to run before its rustls
    /// handshake:
    ///
    /// ```no_run
    /// use std::net::SocketAddr;
    /// use std::sync::Arc;
    ///
    /// use axum::Router;
    /// use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
    /// use tower_no_response::NoResponseLayer;
    ///
    /// # async fn run(app: Router, config: Arc<tokio_rustls::rustls::ServerConfig>) -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = NoResponseLayer::builder().server_names(["example.com"]).build()?;
    /// let gate = layer.tls_gate().build()?;
    /// let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(config)).acceptor(gate.acceptor());
    /// axum_server::bind("0.0.0.0:443".parse::<SocketAddr>()?)
    ///     .acceptor(acceptor)
    ///     .serve(app.layer(layer).into_make_service_with_connect_info::<SocketAddr>())
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A refused client is closed and logged by the gate, and axum-server
    /// sees an accept error for it; one let through reaches the rustls
    /// handshake with its ClientHello replayed, and each of its requests
    /// carries the [`ClientHello`] and the [`ConnectionInfo`] whose handle
    /// the layer aborts it by.
    #[must_use]
    pub fn acceptor(&self) -> GateAcceptor {
        GateAcceptor { gate: self.clone() }
    }
}

/// [`TlsGate::acceptor`]'s acceptor for axum-server.
#[derive(Debug, Clone)]
pub struct GateAcceptor {
    gate: TlsGate,
}

impl<S: Send + 'static> Accept<TcpStream, S> for GateAcceptor {
    type Stream = AbortableStream;
    type Service = WithClientHello<S>;
    type Future =
        Pin<Box<dyn Future<Output = io::Result<(AbortableStream, WithClientHello<S>)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let gate = self.gate.clone();
        Box::pin(async move {
            let peer = stream.peer_addr()?;
            let local = stream.local_addr().ok();
            let Some(admitted) = gate.admit(stream, peer).await else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "refused at the ClientHello",
                ));
            };
            let (stream, hello) = admitted.into_parts();
            let mut info = ConnectionInfo::new(peer, stream.handle().clone());
            if let Some(local) = local {
                info = info.with_local_addr(local);
            }
            info.hello = Some(hello.names());
            Ok((
                stream,
                WithClientHello {
                    inner: service,
                    hello,
                    info,
                },
            ))
        })
    }
}

/// A connection's service under [`GateAcceptor`]: puts the ClientHello and
/// the [`ConnectionInfo`] in each request.
#[derive(Debug, Clone)]
pub struct WithClientHello<S> {
    inner: S,
    hello: ClientHello,
    info: ConnectionInfo,
}

impl<S, B> Service<Request<B>> for WithClientHello<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        request.extensions_mut().insert(self.hello.clone());
        request.extensions_mut().insert(self.info.clone());
        self.inner.call(request)
    }
}
