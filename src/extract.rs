//! axum integration (feature `axum`): where the layer reads the peer, where
//! a serve loop puts it, and [`ClientIp`] as an extractor.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
use axum::response::{IntoResponse, Response};
use http::{Extensions, StatusCode, request::Parts};

use crate::rules::ClientIp;

/// The peer axum's `ConnectInfo<SocketAddr>` names, or, in tests served
/// with `oneshot`, its `MockConnectInfo<SocketAddr>`.
pub(crate) fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|MockConnectInfo(peer)| *peer)
        })
}

/// What the crate's serve loop gives each request, as `axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()` would.
#[cfg(feature = "server")]
pub(crate) fn insert_peer(extensions: &mut Extensions, peer: SocketAddr) {
    extensions.insert(ConnectInfo(peer));
}

/// The client the layer judged, for handlers behind it:
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_no_response::{ClientIp, NoResponseLayer};
///
/// async fn whoami(ClientIp(ip): ClientIp) -> String {
///     ip.to_string()
/// }
///
/// # fn app() -> Result<Router, tower_no_response::BuildError> {
/// let layer = NoResponseLayer::builder().build()?;
/// Ok(Router::new().route("/whoami", get(whoami)).layer(layer))
/// # }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ClientIpRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .ok_or(ClientIpRejection(()))
    }
}

/// The rejection of the [`ClientIp`] extractor: the request did not pass
/// through a `NoResponseLayer`, or passed without a peer address. A `500`,
/// since it is the server's set-up that is wrong, not the request.
#[derive(Debug)]
pub struct ClientIpRejection(());

impl fmt::Display for ClientIpRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no ClientIp in the request: add NoResponseLayer around this route, and serve \
             with into_make_service_with_connect_info::<SocketAddr>()",
        )
    }
}

impl std::error::Error for ClientIpRejection {}

impl IntoResponse for ClientIpRejection {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}
