use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::rules::DropReason;

/// The boxed error type of [`NoResponseBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The response body of [`NoResponse`](crate::NoResponse): the inner
    /// service's body; for a dropped request, a body whose first poll fails;
    /// for a rule that answers with a status, an empty body.
    ///
    /// A failing body makes hyper abandon the connection without flushing the
    /// response head. With [`ConnectionInfo`](crate::ConnectionInfo) present
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

/// Why a dropped request produced no response: the error a dropped
/// response's body fails with, the error a serve loop hands hyper in place
/// of the response, and the marker in a dropped response's extensions.
///
/// Where hyper resets an HTTP/2 stream over this error, it takes the reason
/// from the error's source chain: `CANCEL` by default, never
/// `REFUSED_STREAM`, which would invite a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDropped {
    reason: DropReason,
    #[cfg(any(feature = "server", feature = "tonic"))]
    reset: h2::Reason,
}

impl RequestDropped {
    pub(crate) fn new(reason: DropReason) -> Self {
        Self {
            reason,
            #[cfg(any(feature = "server", feature = "tonic"))]
            reset: h2::Reason::CANCEL,
        }
    }

    /// The same drop, resetting its stream with `reset`.
    #[cfg(any(feature = "server", feature = "tonic"))]
    pub(crate) fn resetting_with(mut self, reset: h2::Reason) -> Self {
        self.reset = reset;
        self
    }

    /// The rule that dropped the request.
    #[must_use]
    pub fn reason(&self) -> DropReason {
        self.reason
    }
}

impl fmt::Display for RequestDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request dropped with status 444 by rule {}", self.reason)
    }
}

/// The two reasons a drop resets a stream with, as the `'static` errors a
/// source chain needs.
#[cfg(any(feature = "server", feature = "tonic"))]
static CANCEL: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Error::from(h2::Reason::CANCEL));
#[cfg(any(feature = "server", feature = "tonic"))]
static INTERNAL_ERROR: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Error::from(h2::Reason::INTERNAL_ERROR));

impl std::error::Error for RequestDropped {
    #[cfg(any(feature = "server", feature = "tonic"))]
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.reset == h2::Reason::INTERNAL_ERROR {
            Some(&*INTERNAL_ERROR)
        } else {
            Some(&*CANCEL)
        }
    }
}
