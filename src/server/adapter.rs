//! The adapter between hyper and the service: each request gets its
//! connection, and a dropped response becomes the error hyper resets the
//! stream for.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::connection::{ConnectionInfo, DropAsError};
use crate::error::BoxError;

/// Marks each request's connection as one whose HTTP/2 drops are turned
/// into stream resets, and turns every dropped response into a
/// [`RequestDropped`] error. The serve loop's; tonic's is `NoResponseGrpc`.
#[derive(Clone, Debug)]
pub(super) struct StreamResets<S> {
    inner: S,
    reset: h2::Reason,
    /// The connection, put in each request.
    info: ConnectionInfo,
}

impl<S> StreamResets<S> {
    pub(super) fn new(inner: S, reset: h2::Reason, info: ConnectionInfo) -> Self {
        Self { inner, reset, info }
    }
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for StreamResets<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = DropAsError<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions_mut();
        // Middleware outside the layer reads the peer as axum's.
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.info.peer_addr()));
        extensions.insert(self.info.clone());
        DropAsError::new(self.inner.call(request), self.reset)
    }
}
