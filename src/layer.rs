use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::stats::{Counted, Stats};
use crate::audit::{self, Outcome};
use crate::body::NoResponseBody;
use crate::builder::NoResponseLayerBuilder;
use crate::connection::registry::{Found, Registry};
use crate::connection::{CloseMode, ConnectionHandle, ConnectionInfo};
use crate::error::BuildError;
use crate::rules::rate_limit::Verdict;
use crate::rules::shared_limit::StoreCheck;
use crate::rules::{Action, ClientIp, DropReason, RuleSet};

/// A [`Layer`] that drops unwanted requests the way nginx's `return 444` does:
/// the inner service is never called and the connection closes without a
/// byte of response.
///
/// Build one with [`NoResponseLayer::builder`]. Clones share one compiled
/// rule set, which [`reload`](Self::reload) swaps for all of them at once.
#[derive(Clone)]
pub struct NoResponseLayer {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Compiled>,
    /// The connections this layer's listeners accepted, by peer.
    connections: Arc<Registry>,
    /// The missing-listener error is logged once, not once per request.
    warned_no_connection: AtomicBool,
}

/// Everything a builder configures, swapped as one.
#[derive(Debug)]
struct Compiled {
    rules: Arc<RuleSet>,
    close_mode: CloseMode,
}

impl NoResponseLayer {
    /// Starts a rule set with no rules.
    pub fn builder() -> NoResponseLayerBuilder {
        NoResponseLayerBuilder::default()
    }

    pub(crate) fn new(rules: RuleSet, close_mode: CloseMode) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(Compiled {
                    rules: Arc::new(rules),
                    close_mode,
                }),
                connections: Arc::default(),
                warned_no_connection: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the client is on the ban list, for a serve loop's accept.
    #[cfg(feature = "server")]
    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        let current = self.shared.current.load();
        current
            .rules
            .ban_list
            .as_ref()
            .is_some_and(|bans| bans.is_banned(ip))
    }

    #[cfg(feature = "axum")]
    pub(crate) fn connections(&self) -> &Arc<Registry> {
        &self.shared.connections
    }

    /// Replaces the whole configuration (rules, actions, dry-run, close
    /// mode) for every service made by this layer or its clones, atomically
    /// and without a restart.
    ///
    /// Requests already judged finish under the rules they were judged by.
    /// The new rules start with fresh counters and a fresh rate limiter.
    ///
    /// # Errors
    /// The new configuration's first bad value; the old one stays in force.
    pub fn reload(&self, builder: NoResponseLayerBuilder) -> Result<(), BuildError> {
        let (rules, close_mode) = builder.compile()?;
        self.shared.current.store(Arc::new(Compiled {
            rules: Arc::new(rules),
            close_mode,
        }));
        Ok(())
    }

    /// The rules in force now, e.g. to test a request against them.
    #[must_use]
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.shared.current.load().rules)
    }

    /// How dropped connections are closed now.
    #[must_use]
    pub fn close_mode(&self) -> CloseMode {
        self.shared.current.load().close_mode
    }

    /// A snapshot of the counters of the rules in force: per rule, requests
    /// dropped, answered and matched in dry-run, and requests allowed.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.current.load().rules.stats()
    }
}

impl fmt::Debug for NoResponseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("NoResponseLayer")
            .field("rules", &current.rules)
            .field("close_mode", &current.close_mode)
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
            .field("close_mode", &self.shared.current.load().close_mode)
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<NoResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The guard pins this request to the rules in force as it arrived.
        let current = self.shared.current.load();
        let rules = &current.rules;
        let (peer, _) = connection_of(&request);
        let decision = rules.evaluate(&request, peer, |reason, client_ip| {
            record_would_drop(rules, &request, reason, client_ip, peer);
        });
        let Some(reason) = decision.drop else {
            if let Some(ip) = decision.client_ip {
                request.extensions_mut().insert(ClientIp(ip));
            }
            if let Some(check) = decision
                .shared_check()
                .and_then(|key| rules.ask_shared(key))
            {
                // The service that was made ready goes with the request; the
                // clone stays behind for the next `poll_ready`.
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                return ResponseFuture {
                    kind: Kind::Checking {
                        check,
                        pending: Some(Box::new(Pending {
                            inner,
                            request,
                            layer: Arc::clone(&self.shared),
                            compiled: Arc::clone(&current),
                            client_ip: decision.client_ip,
                        })),
                    },
                };
            }
            rules.counters.allowed();
            return ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(request),
                },
            };
        };
        let rejection = reject(
            &self.shared,
            &current,
            &request,
            reason,
            decision.client_ip,
            decision.retry_after,
        );
        ResponseFuture {
            kind: Kind::Rejected { rejection },
        }
    }
}

/// Counts, logs and enacts a rule's action on a request that will not reach
/// the inner service.
fn reject<B>(
    layer: &Shared,
    current: &Compiled,
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    retry_after: Option<Duration>,
) -> Rejection {
    let rules = &current.rules;
    let (peer, connection) = connection_of(request);
    let slot = rules.policies.slot(reason);
    match rules.action(reason) {
        Action::Respond(status) => {
            rules.counters.count(slot, Counted::Responded);
            audit::emit(request, reason, client_ip, peer, Outcome::Respond(status));
            Rejection::Respond {
                status,
                retry_after,
                reason,
            }
        }
        Action::Drop => {
            let (handle, close) = match connection {
                // The serve loop turns the drop into a reset of this
                // stream alone; the connection stays up for the others.
                Some(info) if info.stream_resets && request.version() == Version::HTTP_2 => {
                    (None, "stream")
                }
                Some(info) => (Some(info.handle().clone()), current.close_mode.as_str()),
                // A connection from the layer's listener, known by its peer.
                None => match peer.map(|p| layer.connections.find(p, current.close_mode)) {
                    Some(Found::One(handle)) => (Some(handle), current.close_mode.as_str()),
                    Some(Found::AbortedAll) => (None, current.close_mode.as_str()),
                    Some(Found::Nothing) | None => {
                        layer.warn_no_connection();
                        (None, audit::CLOSE_BODY_ERROR)
                    }
                },
            };
            record_drop(rules, request, reason, client_ip, peer, close);
            Rejection::Dropped {
                handle,
                mode: current.close_mode,
                reason,
            }
        }
    }
}

/// Counts and logs a match of a rule in dry-run.
fn record_would_drop<B>(
    rules: &RuleSet,
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    peer: Option<SocketAddr>,
) {
    rules
        .counters
        .count(rules.policies.slot(reason), Counted::WouldDrop);
    audit::emit(request, reason, client_ip, peer, Outcome::WouldDrop);
}

/// Counts, logs and strikes one dropped request.
fn record_drop<B>(
    rules: &RuleSet,
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    peer: Option<SocketAddr>,
    close: &'static str,
) {
    rules
        .counters
        .count(rules.policies.slot(reason), Counted::Dropped);
    audit::emit(request, reason, client_ip, peer, Outcome::Drop(close));
    if let (Some(bans), Some(ip), Some(peer)) = (&rules.ban_list, client_ip, peer) {
        // Only a client that is the peer itself can be refused at accept;
        // behind a proxy that would refuse everyone.
        if ip == peer.ip().to_canonical() {
            bans.strike(ip);
        }
    }
}

impl NoResponseLayer {
    /// Judges a request head read by the serve loop before hyper has the
    /// connection; returns the close mode when a rule drops it, after
    /// counting and logging the drop as the layer would.
    #[cfg(feature = "server")]
    pub(crate) fn drop_early<B>(
        &self,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<CloseMode> {
        let current = self.shared.current.load();
        let (reason, client_ip) = current.rules.early_drop(request, peer)?;
        let mode = current.close_mode;
        record_drop(
            &current.rules,
            request,
            reason,
            Some(client_ip),
            Some(peer),
            mode.as_str(),
        );
        Some(mode)
    }
}

impl Shared {
    fn warn_no_connection(&self) {
        if !self.warned_no_connection.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target: "tower_no_response",
                "NoResponseLayer dropped a request but could not find its connection, so it \
                 cannot abort it. Serve with the layer's listener, `layer.listener(tcp)`, and \
                 `into_make_service_with_connect_info::<SocketAddr>()` (or with `layer.serve`, \
                 or tonic's `layer.incoming`). Until then, dropped responses fail their body \
                 instead: HTTP/1 clients still receive no bytes, but close modes are ignored \
                 and HTTP/2 clients may receive a `:status 444` head before their stream is \
                 reset."
            );
        }
    }
}

/// Finds the connection a request came on: the [`ConnectionInfo`] a serve
/// loop or tonic put there, or at least the peer that axum's connect info
/// names, whose connection the layer's listener registered.
fn connection_of<B>(request: &Request<B>) -> (Option<SocketAddr>, Option<&ConnectionInfo>) {
    let ext = request.extensions();
    if let Some(info) = ext.get::<ConnectionInfo>() {
        return (Some(info.peer_addr()), Some(info));
    }
    #[cfg(feature = "axum")]
    return (crate::extract::peer(ext), None);
    #[cfg(not(feature = "axum"))]
    (None, None)
}

pin_project! {
    /// The response future of [`NoResponse`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Inner { #[pin] future: S::Future },
        /// Waiting for the shared rate-limit store.
        Checking {
            check: StoreCheck,
            // Boxed so that only requests that wait pay for their size.
            pending: Option<Box<Pending<S, B>>>,
        },
        Rejected { rejection: Rejection },
    }
}

/// What a request waiting for the shared store needs once it has the answer.
struct Pending<S, B> {
    inner: S,
    request: Request<B>,
    layer: Arc<Shared>,
    compiled: Arc<Compiled>,
    client_ip: Option<IpAddr>,
}

#[derive(Debug)]
enum Rejection {
    Dropped {
        handle: Option<ConnectionHandle>,
        mode: CloseMode,
        reason: DropReason,
    },
    Respond {
        status: StatusCode,
        retry_after: Option<Duration>,
        reason: DropReason,
    },
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            Kind::Checking { .. } => f.write_str("ResponseFuture::Checking"),
            Kind::Rejected { rejection } => f
                .debug_tuple("ResponseFuture::Rejected")
                .field(rejection)
                .finish(),
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<NoResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KindProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(NoResponseBody::inner));
                }
                KindProj::Rejected { rejection } => {
                    return Poll::Ready(Ok(match rejection {
                        Rejection::Dropped {
                            handle,
                            mode,
                            reason,
                        } => {
                            // hyper flushes each HTTP/1 response before it
                            // parses the next pipelined request, so earlier
                            // responses are already out.
                            if let Some(handle) = handle {
                                handle.abort(*mode);
                            }
                            dropped_response(*reason)
                        }
                        Rejection::Respond {
                            status,
                            retry_after,
                            reason,
                        } => status_response(*status, *retry_after, *reason),
                    }));
                }
                KindProj::Checking { check, pending } => {
                    let verdict = std::task::ready!(check.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    pending.resume(verdict)
                }
            };
            this.kind.set(next);
        }
    }
}

impl<S: Service<Request<B>>, B> Pending<S, B> {
    fn resume(self, verdict: Verdict) -> Kind<S, B> {
        let Self {
            mut inner,
            request,
            layer,
            compiled,
            client_ip,
        } = self;
        let rules = &compiled.rules;
        let outcome = rules.shared_verdict(verdict, |reason| {
            record_would_drop(
                rules,
                &request,
                reason,
                client_ip,
                connection_of(&request).0,
            );
        });
        match outcome {
            Ok(()) => {
                rules.counters.allowed();
                Kind::Inner {
                    future: inner.call(request),
                }
            }
            Err((reason, retry_after)) => Kind::Rejected {
                rejection: reject(&layer, &compiled, &request, reason, client_ip, retry_after),
            },
        }
    }
}

/// Status 444 is never sent; it is there for outer middleware (tracing,
/// metrics) that record the status of what the service returned.
fn dropped_response<B>(reason: DropReason) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::dropped(reason));
    *response.status_mut() = StatusCode::from_u16(444).expect("444 is in range");
    response.extensions_mut().insert(reason);
    // The marker a serve loop looks for to drop at the protocol level.
    response
        .extensions_mut()
        .insert(crate::body::RequestDropped::new(reason));
    response
}

/// An empty answer with the rule's status. A `429` says when to come back:
/// the limiter's own wait, rounded up to whole seconds, or one second when
/// the rule that matched has no wait of its own.
fn status_response<B>(
    status: StatusCode,
    retry_after: Option<Duration>,
    reason: DropReason,
) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::empty());
    *response.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after.unwrap_or(Duration::from_secs(1));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response.extensions_mut().insert(reason);
    response
}
