//! The drop as hyper and tonic see it.

use std::fmt;

use crate::DropReason;

/// Why a dropped request produced no response: the error a dropped
/// response's body fails with, and the marker in a dropped response's
/// extensions, which a serve loop turns into a stream reset (see
/// [`DropAsError`](crate::connection::DropAsError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDropped {
    reason: DropReason,
}

impl RequestDropped {
    pub(crate) fn new(reason: DropReason) -> Self {
        Self { reason }
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

impl std::error::Error for RequestDropped {}
