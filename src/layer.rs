use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit;
use crate::body::NoResponseBody;
use crate::builder::NoResponseLayerBuilder;
use crate::connection::{CloseMode, ConnectionHandle, ConnectionInfo};
use crate::rules::{ClientIp, DropReason, RuleSet};

/// A [`Layer`] that drops unwanted requests the way nginx's `return 444` does:
/// the inner service is never called and the connection closes without a
/// byte of response.
///
/// Build one with [`NoResponseLayer::builder`]. Clones share one compiled
/// rule set, and one rate limiter.
#[derive(Clone)]
pub struct NoResponseLayer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    rules: RuleSet,
    close_mode: CloseMode,
    /// The missing-listener error is logged once, not once per request.
    warned_no_connection: AtomicBool,
}

impl NoResponseLayer {
    /// Starts a rule set with no rules.
    pub fn builder() -> NoResponseLayerBuilder {
        NoResponseLayerBuilder::default()
    }

    pub(crate) fn new(rules: RuleSet, close_mode: CloseMode) -> Self {
        Self {
            shared: Arc::new(Shared {
                rules,
                close_mode,
                warned_no_connection: AtomicBool::new(false),
            }),
        }
    }

    /// The compiled rules, e.g. to test a request against them.
    #[must_use]
    pub fn rules(&self) -> &RuleSet {
        &self.shared.rules
    }

    /// How dropped connections are closed.
    #[must_use]
    pub fn close_mode(&self) -> CloseMode {
        self.shared.close_mode
    }
}

impl fmt::Debug for NoResponseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoResponseLayer")
            .field("rules", &self.shared.rules)
            .field("close_mode", &self.shared.close_mode)
            .finish()
    }
}

impl<S> Layer<S> for NoResponseLayer {
    type Service = NoResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NoResponse {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service made by [`NoResponseLayer`].
#[derive(Clone)]
pub struct NoResponse<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for NoResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoResponse")
            .field("inner", &self.inner)
            .field("close_mode", &self.shared.close_mode)
            .finish_non_exhaustive()
    }
}

impl<S> NoResponse<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for NoResponse<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<NoResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let (peer, handle) = connection_of(&request);
        let decision = self.shared.rules.decide(&request, peer);
        let Some(reason) = decision.drop else {
            if let Some(ip) = decision.client_ip {
                request.extensions_mut().insert(ClientIp(ip));
            }
            #[cfg(feature = "axum")]
            if let Some(peer) = peer {
                let ext = request.extensions_mut();
                if ext
                    .get::<axum::extract::ConnectInfo<SocketAddr>>()
                    .is_none()
                {
                    ext.insert(axum::extract::ConnectInfo(peer));
                }
            }
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(request),
                },
            };
        };
        let handle = handle.cloned();
        let close = match handle {
            Some(_) => self.shared.close_mode.as_str(),
            None => {
                self.warn_no_connection();
                audit::CLOSE_BODY_ERROR
            }
        };
        audit::emit_drop(&request, reason, decision.client_ip, peer, close);
        ResponseFuture {
            kind: Kind::Dropped {
                handle,
                mode: self.shared.close_mode,
                reason,
            },
        }
    }
}

impl<S> NoResponse<S> {
    fn warn_no_connection(&self) {
        if !self
            .shared
            .warned_no_connection
            .swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                target: "tower_no_response",
                "NoResponseLayer dropped a request but found no ConnectionInfo in its extensions, \
                 so it cannot abort the connection. Serve with `NoResponseListener` and \
                 `into_make_service_with_connect_info::<ConnectionInfo>()`. Until then, dropped \
                 responses fail their body instead: HTTP/1 clients still receive no bytes, but \
                 close modes are ignored and HTTP/2 clients may receive a `:status 444` head \
                 before their stream is reset."
            );
        }
    }
}

/// Finds the connection a request came on: the crate's own
/// [`ConnectionInfo`], bare or as axum's `ConnectInfo`, or at least axum's
/// `ConnectInfo<SocketAddr>` for the peer.
fn connection_of<B>(request: &Request<B>) -> (Option<SocketAddr>, Option<&ConnectionHandle>) {
    let ext = request.extensions();
    let info = ext.get::<ConnectionInfo>();
    #[cfg(feature = "axum")]
    let info = info.or_else(|| {
        ext.get::<axum::extract::ConnectInfo<ConnectionInfo>>()
            .map(|c| &c.0)
    });
    if let Some(info) = info {
        return (Some(info.peer_addr()), Some(info.handle()));
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(peer)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return (Some(*peer), None);
    }
    (None, None)
}

pin_project! {
    /// The response future of [`NoResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Dropped {
            handle: Option<ConnectionHandle>,
            mode: CloseMode,
            reason: DropReason,
        },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            Kind::Dropped { reason, .. } => f
                .debug_tuple("ResponseFuture::Dropped")
                .field(reason)
                .finish(),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<NoResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(NoResponseBody::inner)),
            KindProj::Dropped {
                handle,
                mode,
                reason,
            } => {
                // hyper flushes each HTTP/1 response before it parses the next
                // pipelined request, so earlier responses are already out.
                if let Some(handle) = handle {
                    handle.abort(*mode);
                }
                Poll::Ready(Ok(dropped_response(*reason)))
            }
        }
    }
}

/// Status 444 is never sent; it is there for outer middleware (tracing,
/// metrics) that record the status of what the service returned.
fn dropped_response<B>(reason: DropReason) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::dropped(reason));
    *response.status_mut() = StatusCode::from_u16(444).expect("444 is in range");
    response.extensions_mut().insert(reason);
    response
}
