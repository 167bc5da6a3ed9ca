//! The one bound the serve loop puts on the app it serves.

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use tower_service::Service;

use crate::error::BoxError;

/// An app the serve loop can run: a tower [`Service`] for hyper's requests
/// that is cloned for each connection, whose futures and response bodies
/// move between threads, and whose errors box. Implemented for every such
/// service, an axum `Router` or one wrapped in
/// [`NoResponseLayer`](crate::NoResponseLayer) among them; it names the
/// bound once, so it cannot be implemented by hand.
pub trait ServeLoopService:
    Service<
        Request<Incoming>,
        Response = Response<Self::ResponseBody>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    >
    + Clone
    + Send
    + 'static
    + sealed::Sealed
{
    /// The body of the app's responses.
    type ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> ServeLoopService for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type ResponseBody = B;
}

mod sealed {
    pub trait Sealed {}
    impl<S> Sealed for S {}
}
