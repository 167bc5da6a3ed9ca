//! Where a drop becomes a stream reset: the service that sits between hyper
//! (or tonic) and the layer and turns a dropped response into a service
//! error.
//!
//! hyper writes a response head the moment a service returns a response, so
//! a dropped response, however its body fails, may have its `HEADERS` frame
//! flushed by another thread before the stream is reset. A service *error*
//! never reaches the wire as a head: hyper resets the HTTP/2 stream with the
//! `h2::Reason` it finds in the error's source chain, and closes an HTTP/1
//! connection without writing.
//!
//! tonic turns a service error that *is* an `h2::Error` (or a `Status`)
//! into a gRPC status response, which has a head, but passes on an error
//! that merely has one in its source chain. [`StreamDropped`] is such an
//! error, so the same wrapper serves hyper and tonic.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::RequestDropped;
use crate::error::BoxError;

pin_project! {
    /// The future of a service that hands hyper a [`RequestDropped`] error
    /// in place of a dropped response, so that hyper resets the stream (or
    /// closes an HTTP/1 connection) without writing a head.
    pub struct DropAsError<F> {
        #[pin]
        future: F,
        reset: h2::Reason,
    }
}

impl<F> DropAsError<F> {
    pub(crate) fn new(future: F, reset: h2::Reason) -> Self {
        Self { future, reset }
    }
}

impl<F> fmt::Debug for DropAsError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropAsError")
            .field("reset", &self.reset)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for DropAsError<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx)).map_err(Into::into)?;
        match response.extensions().get::<RequestDropped>() {
            Some(dropped) => Poll::Ready(Err(Box::new(StreamDropped {
                dropped: *dropped,
                reset: *this.reset,
            }))),
            None => Poll::Ready(Ok(response)),
        }
    }
}

/// A dropped request as a service error: the drop, and the reason its
/// HTTP/2 stream is reset with, which hyper finds in the source chain.
#[derive(Debug, Clone, Copy)]
pub struct StreamDropped {
    dropped: RequestDropped,
    reset: h2::Reason,
}

impl StreamDropped {
    /// The drop: the rule that made it.
    #[must_use]
    pub fn dropped(&self) -> RequestDropped {
        self.dropped
    }
}

impl fmt::Display for StreamDropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.dropped.fmt(f)
    }
}

/// The two reasons a drop resets a stream with, as the `'static` errors a
/// source chain needs. `CANCEL` by default, never `REFUSED_STREAM`, which
/// would invite a retry.
static CANCEL: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Error::from(h2::Reason::CANCEL));
static INTERNAL_ERROR: std::sync::LazyLock<h2::Error> =
    std::sync::LazyLock::new(|| h2::Error::from(h2::Reason::INTERNAL_ERROR));

impl std::error::Error for StreamDropped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.reset == h2::Reason::INTERNAL_ERROR {
            Some(&*INTERNAL_ERROR)
        } else {
            Some(&*CANCEL)
        }
    }
}
