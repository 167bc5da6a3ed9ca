use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::DropReason;
use crate::connection::RequestDropped;
use crate::error::BoxError;

pin_project! {
    /// The response body of [`NoResponse`](crate::NoResponse): the inner
    /// service's body; for a dropped request, a body whose first poll fails;
    /// for a rule that answers with a status, an empty body.
    ///
    /// A failing body makes hyper abandon the connection without flushing the
    /// response head. With [`ConnectionInfo`](crate::connection::ConnectionInfo) present
    /// the stream is already aborted and nothing could be written anyway; the
    /// failure is what still keeps HTTP/1 silent when it is missing.
    pub struct NoResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Dropped { reason: Option<DropReason> },
        Empty,
    }
}

impl<B> NoResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub(crate) fn dropped(reason: DropReason) -> Self {
        Self {
            kind: Kind::Dropped {
                reason: Some(reason),
            },
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for NoResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { body } => f.debug_tuple("NoResponseBody::Inner").field(body).finish(),
            Kind::Dropped { reason } => f
                .debug_tuple("NoResponseBody::Dropped")
                .field(reason)
                .finish(),
            Kind::Empty => f.write_str("NoResponseBody::Empty"),
        }
    }
}

impl<B> Body for NoResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(Into::into))),
            KindProj::Dropped { reason } => Poll::Ready(
                reason
                    .take()
                    .map(|reason| Err(Box::new(RequestDropped::new(reason)) as BoxError)),
            ),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Dropped { reason } => reason.is_none(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Dropped { .. } => SizeHint::default(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

/// An allowed request's body is handed back as it is, with no second box;
/// a dropped or answered one is boxed as axum boxes any body. For serving a
/// layer wrapped around a whole `Router` with `axum::serve`, which takes
/// axum's own response type (`Router::layer` converts on its own):
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Router, body::Body, http::Response, routing::get};
/// use tower::ServiceBuilder;
/// use tower_no_response::{NoResponseBody, NoResponseLayer};
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = NoResponseLayer::builder().build()?;
/// let router = Router::new().route("/", get(|| async { "ok" }));
/// let app = ServiceBuilder::new()
///     .map_response(|r: Response<NoResponseBody<Body>>| r.map(Body::from))
///     .layer(layer.clone())
///     .service(router);
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
///     SocketAddr,
/// >(app);
/// let server = axum::serve(layer.listener(tcp), app);
/// # drop(server);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "axum")]
impl From<NoResponseBody<axum::body::Body>> for axum::body::Body {
    fn from(body: NoResponseBody<axum::body::Body>) -> Self {
        match body.kind {
            Kind::Inner { body } => body,
            kind => Self::new(NoResponseBody { kind }),
        }
    }
}
