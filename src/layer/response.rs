//! The responses the layer returns in place of the inner service's: the
//! dropped marker and a rule's status answer.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::NoResponseBody;
use crate::connection::RequestDropped;
use crate::limit::RateLimit;
use crate::rules::DropReason;

/// Status 444 is never sent; it is there for outer middleware (tracing,
/// metrics) that record the status of what the service returned.
pub(super) fn dropped_response<B>(reason: DropReason) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::dropped(reason));
    *response.status_mut() = StatusCode::from_u16(444).expect("444 is in range");
    response.extensions_mut().insert(reason);
    // The marker a serve loop looks for to drop at the protocol level.
    response
        .extensions_mut()
        .insert(RequestDropped::new(reason));
    response
}

/// An empty answer with the rule's status. A `429` says when to come back:
/// the limiter's own wait, rounded up to whole seconds, or one second when
/// the rule that matched has no wait of its own.
///
/// A rate limit's `429` also says which limit it was, in the IETF's
/// `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers): `"login";q=5;w=60` (the quota
/// and its window in seconds) and `"login";r=0;t=12` (none left, and the
/// seconds until there is).
pub(super) fn status_response<B>(
    status: StatusCode,
    retry_after: Option<Duration>,
    reason: DropReason,
    rate: Option<(&'static str, RateLimit)>,
) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::empty());
    *response.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after.unwrap_or(Duration::from_secs(1));
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        if let Some((name, limit)) = rate {
            let (quota, window) = limit.policy();
            let policy = format!("\"{name}\";q={quota};w={window}");
            let state = format!("\"{name}\";r=0;t={secs}");
            // Rule names are plain identifiers, so both are valid values.
            if let (Ok(policy), Ok(state)) =
                (HeaderValue::try_from(policy), HeaderValue::try_from(state))
            {
                headers.insert(RATELIMIT_POLICY, policy);
                headers.insert(RATELIMIT, state);
            }
        }
    }
    response.extensions_mut().insert(reason);
    response
}

pub(super) const RATELIMIT_POLICY: header::HeaderName =
    header::HeaderName::from_static("ratelimit-policy");
pub(super) const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");
