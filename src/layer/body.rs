use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::DropReason;
use crate::connection::{InFlight, RequestDropped};
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
        pub(crate) kind: Kind<B>,
        // The exchange, for the connection's timers: over once hyper is
        // done with this body and drops it.
        pub(crate) in_flight: Option<InFlight>,
    }
}

pin_project! {
    #[project = KindProj]
    pub(crate) enum Kind<B> {
        Inner { #[pin] body: B },
        Dropped { reason: Option<DropReason> },
        Empty,
    }
}

impl<B> NoResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self::of(Kind::Inner { body })
    }

    pub(crate) fn empty() -> Self {
        Self::of(Kind::Empty)
    }

    pub(crate) fn dropped(reason: DropReason) -> Self {
        Self::of(Kind::Dropped {
            reason: Some(reason),
        })
    }

    pub(crate) fn of(kind: Kind<B>) -> Self {
        Self {
            kind,
            in_flight: None,
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
