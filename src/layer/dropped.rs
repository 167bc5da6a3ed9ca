//! The drop as hyper and tonic see it.

use std::fmt;

use crate::DropReason;

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

    /// Whether `response`, as the layer's service returned it, stands for
    /// a dropped request, and by which rule. For tests that call the
    /// service directly (`oneshot`), where no connection closes: the layer
    /// returns a response with status 444, this marker in its extensions,
    /// and a body that fails when read. A server never sends it.
    ///
    /// ```
    /// # async fn run(app: axum::Router) {
    /// use tower::ServiceExt;
    /// use tower_no_response::{DropReason, RequestDropped};
    ///
    /// let request = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
    /// let response = app.oneshot(request).await.unwrap();
    /// let dropped = RequestDropped::of(&response).map(|d| d.reason());
    /// assert_eq!(dropped, Some(DropReason::HostMissing));
    /// # }
    /// ```
    #[must_use]
    pub fn of<B>(response: &http::Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
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
