//! axum integration (feature `axum`): [`ClientIp`] as an extractor, and
//! the layer's response body as axum's.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, request::Parts};
use std::fmt;

use crate::layer::body::Kind;
use crate::{ClientIp, NoResponseBody};

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

/// An allowed request's body is handed back as it is, with no second box,
/// unless a connection's timers wait for the response to end (under the
/// layer's listener): then, as for a dropped or answered one, it is boxed
/// as axum boxes any body. For serving a
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
impl From<NoResponseBody<axum::body::Body>> for axum::body::Body {
    fn from(body: NoResponseBody<axum::body::Body>) -> Self {
        match body {
            // The connection's timers learn of the response's end from
            // the drop of the wrapper, so it stays while it reports one.
            NoResponseBody {
                kind: Kind::Inner { body },
                in_flight: None,
            } => body,
            body => Self::new(body),
        }
    }
}
