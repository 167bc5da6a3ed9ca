//! tonic's own `Server` behind the layer (feature `tonic`).
//!
//! Both halves come from one [`NoResponseLayer`]:
//!
//! - [`NoResponseLayer::grpc`] is the layer to give `Server::builder().layer`.
//!   A dropped call resets **only its own stream** with `CANCEL`; the other
//!   calls on the connection carry on. The drop reaches tonic as an error it
//!   passes through untouched, so tonic never turns it into a gRPC status
//!   with a head: not one frame of a response is written, on any runtime.
//! - [`NoResponseLayer::incoming`] is the accept stream for
//!   `serve_with_incoming`. It sets `TCP_NODELAY`, as tonic's own `serve`
//!   does (tonic ignores its `tcp_nodelay` setting for an incoming stream),
//!   and gives each request the [`ConnectionInfo`] whose handle aborts it.
//!
//! ```no_run
//! # async fn run(health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) -> Result<(), Box<dyn std::error::Error>> {
//! use tower_no_response::NoResponseLayer;
//!
//! let layer = NoResponseLayer::builder().deny_user_agent("masscan").build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//! tonic::transport::Server::builder()
//!     .layer(layer.grpc())
//!     .add_service(health)
//!     .serve_with_incoming(layer.incoming(listener))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Given the plain layer instead (`.layer(layer)`), a dropped call still
//! leaks nothing, but the whole connection is closed, with every call on it:
//! without the error path, tonic would hand hyper a response, and hyper may
//! flush its head from another thread before the stream is reset.

use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

use crate::connection::{ConnectionInfo, DropAsError};
use crate::error::BoxError;
use crate::layer::{NoResponse, NoResponseBody, NoResponseLayer, ResponseFuture, TimedBody};

impl NoResponseLayer {
    /// This layer, for `tonic::transport::Server::builder().layer(...)`:
    /// dropped calls reset only their own stream. See [`grpc`](crate::grpc).
    #[must_use]
    pub fn grpc(&self) -> NoResponseGrpcLayer {
        NoResponseGrpcLayer {
            layer: self.clone(),
        }
    }
}

/// The layer made by [`NoResponseLayer::grpc`].
#[derive(Clone, Debug)]
pub struct NoResponseGrpcLayer {
    layer: NoResponseLayer,
}

impl<S> Layer<S> for NoResponseGrpcLayer {
    type Service = NoResponseGrpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NoResponseGrpc {
            inner: self.layer.layer(inner),
        }
    }
}

/// The service made by [`NoResponseGrpcLayer`]: [`NoResponse`] whose drops reach
/// tonic as errors that reset the call's stream.
#[derive(Clone, Debug)]
pub struct NoResponseGrpc<S> {
    inner: NoResponse<S>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for NoResponseGrpc<S>
where
    S: Service<Request<TimedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: http_body::Body,
{
    type Response = Response<NoResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = DropAsError<ResponseFuture<S, ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions_mut();
        // The `DropAsError` below may reset this stream alone.
        if let Some(info) = extensions.get_mut::<ConnectionInfo>() {
            info.stream_resets = true;
        }
        // What `tonic::Request::remote_addr()` reads.
        if extensions.get::<TcpConnectInfo>().is_none() {
            if let Some(info) = extensions.get::<ConnectionInfo>() {
                let tcp = TcpConnectInfo {
                    local_addr: info.local_addr(),
                    remote_addr: Some(info.peer_addr()),
                };
                extensions.insert(tcp);
            }
        }
        // The TLS gate's ClientHello, from the TLS incoming stream.
        #[cfg(all(feature = "tonic", feature = "rustls"))]
        if let Some(hello) = extensions
            .get::<ConnectionInfo>()
            .and_then(|info| info.attachment.as_ref())
            .and_then(|a| a.0.downcast_ref::<crate::tls::ClientHello>())
            .cloned()
        {
            extensions.insert(hello);
        }
        DropAsError::new(self.inner.call(request), h2::Reason::CANCEL)
    }
}
