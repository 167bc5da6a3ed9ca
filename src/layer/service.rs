//! [`NoResponse`], the service: judging each request, and the rejection
//! path that counts, logs and enacts a rule's action.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use tower_service::Service;

use super::future::{Exchange, Kind, Pending, ResponseFuture};
use super::state::{Compiled, LayerState};
use super::{NoResponseBody, TimedBody};
use crate::audit::{Close, DropEvent, Handling, RequestView};
use crate::ban::RequestPrint;
use crate::connection::registry::Found;
use crate::connection::{ConnectionHandle, ConnectionInfo};
use crate::limit::RateLimit;
use crate::rules::{Action, CloseMode, DropReason, Judgement, Stop, Verdict};

/// The way from a service to the rules in force, for its [`Cache`].
#[derive(Clone)]
pub(super) struct RulesInForce(pub(super) Arc<LayerState>);

impl std::ops::Deref for RulesInForce {
    type Target = ArcSwap<Compiled>;

    fn deref(&self) -> &ArcSwap<Compiled> {
        &self.0.current
    }
}

/// The service made by [`NoResponseLayer`](crate::NoResponseLayer).
#[derive(Clone)]
pub struct NoResponse<S> {
    pub(super) inner: S,
    /// The rules in force as this service last saw them: checking that
    /// they are still current is one atomic load, where a fresh guard from
    /// the `ArcSwap` costs tens of instructions on every request. A
    /// replaced rule set stays alive in an idle service until its next
    /// request.
    pub(super) current: Cache<RulesInForce, Arc<Compiled>>,
    pub(super) shared: Arc<LayerState>,
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
    S: Service<Request<TimedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
{
    type Response = Response<NoResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // This pins the request to the rules in force as it arrived.
        let current = self.current.load();
        self.shared.placement.layer_judged();
        // The one lookup of the request's connection; everything after
        // takes the peer found here.
        let connection = self.shared.connection_of(&request);
        let peer = connection.peer;
        let exchange = connection.in_flight.map(|in_flight| Exchange {
            in_flight,
            connect: request.method() == http::Method::CONNECT,
        });
        let (judgement, strikes) = current.judge(&request, peer);
        record_would_drop(current, &request, &judgement, peer);
        match judgement.verdict {
            Verdict::Stop(stop) => ResponseFuture {
                kind: Kind::Rejected {
                    rejection: reject(
                        &self.shared,
                        current,
                        &request,
                        stop,
                        (judgement.client_ip, peer),
                        strikes,
                    ),
                },
                exchange,
            },
            Verdict::RateLimit(ip) => {
                let check = ip
                    .zip(current.limiter.as_ref())
                    .and_then(|(ip, limiter)| limiter.ask(ip))
                    .expect("only a shared limiter leaves a judgement at RateLimit");
                // The service that was made ready goes with the request; the
                // clone stays behind for the next `poll_ready`.
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                ResponseFuture {
                    kind: Kind::Checking {
                        check,
                        pending: Some(Box::new(Pending {
                            inner,
                            request,
                            layer: Arc::clone(&self.shared),
                            compiled: Arc::clone(current),
                            judgement,
                            peer,
                        })),
                    },
                    exchange,
                }
            }
            Verdict::Pass => {
                current.admit(&mut request, judgement.client_ip);
                let (request, body) =
                    TimedBody::wrap(request, &self.shared, current, (judgement.client_ip, peer));
                ResponseFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(request),
                        body,
                    },
                    exchange,
                }
            }
        }
    }
}

/// Counts, logs and enacts a rule's action on a request that will not reach
/// the inner service.
pub(super) fn reject<B>(
    layer: &LayerState,
    current: &Compiled,
    request: &Request<B>,
    stop: Stop,
    (client_ip, peer): (Option<IpAddr>, Option<SocketAddr>),
    strikes: bool,
) -> Rejection {
    let connection = request.extensions().get::<ConnectionInfo>();
    reject_on(
        layer,
        current,
        request,
        stop,
        client_ip,
        strikes,
        (peer, connection),
    )
}

/// [`reject`], with the request's connection found already.
pub(super) fn reject_on<B>(
    layer: &LayerState,
    current: &Compiled,
    request: &Request<B>,
    stop: Stop,
    client_ip: Option<IpAddr>,
    strikes: bool,
    (peer, connection): (Option<SocketAddr>, Option<&ConnectionInfo>),
) -> Rejection {
    match stop.action {
        Action::Respond(status) => {
            let handling = Handling::Respond(status);
            record(current, request, stop.rule, handling, client_ip, peer);
            Rejection::Respond {
                status,
                retry_after: stop.retry_after,
                reason: stop.rule,
                rate: current.rate_of(stop.rule),
            }
        }
        Action::Drop => {
            let mode = current.close_mode;
            let (handle, close) = match connection {
                // A `DropAsError` outside turns the drop into a reset of
                // this stream alone; the connection stays up for the others.
                // A ban of the peer itself closes the whole connection; a
                // client banned behind a proxy loses only its own stream.
                Some(info)
                    if info.stream_resets
                        && request.version() == Version::HTTP_2
                        && !(stop.rule == DropReason::Banned
                            && client_ip == Some(info.peer_addr().ip().to_canonical())) =>
                {
                    (None, Close::Stream)
                }
                Some(info) => (Some(info.handle().clone()), Close::Mode(mode)),
                // A connection from the layer's listener, known by its peer.
                None => match layer.connections.find(peer, mode) {
                    Found::One(handle) => (Some(handle), Close::Mode(mode)),
                    Found::AbortedAll => (None, Close::Mode(mode)),
                    Found::Nothing => {
                        layer.warn_no_connection();
                        (None, Close::BodyError)
                    }
                },
            };
            // A client sends the request again, once, when a connection
            // that served it before closes unanswered: one strike for both.
            let reused = handle.as_ref().is_some_and(ConnectionHandle::reused);
            record_drop(
                current,
                request,
                stop.rule,
                (client_ip, peer),
                close,
                strikes.then_some(reused),
            );
            Rejection::Dropped {
                handle,
                mode,
                reason: stop.rule,
            }
        }
    }
}

/// Counts and logs every match of a rule in dry-run. Inlined for its
/// test: on an allowed request, the common case, nothing matched in
/// dry-run, and a call would cost more than the check.
#[inline]
pub(super) fn record_would_drop<B>(
    current: &Compiled,
    request: &Request<B>,
    judgement: &Judgement,
    peer: Option<SocketAddr>,
) {
    if !judgement.dry_run.is_empty() {
        record_dry_run_hits(current, request, judgement, peer);
    }
}

#[cold]
fn record_dry_run_hits<B>(
    current: &Compiled,
    request: &Request<B>,
    judgement: &Judgement,
    peer: Option<SocketAddr>,
) {
    for reason in current.rules.would_drop(judgement.dry_run) {
        let client_ip = judgement.client_ip;
        record(
            current,
            request,
            reason,
            Handling::WouldDrop,
            client_ip,
            peer,
        );
    }
}

/// Counts, logs and strikes one dropped request; `strike` is `None` for a
/// drop that strikes no one, else whether the request came on a connection
/// that had served others before it.
pub(crate) fn record_drop<B>(
    current: &Compiled,
    request: &Request<B>,
    reason: DropReason,
    (client_ip, peer): (Option<IpAddr>, Option<SocketAddr>),
    close: Close,
    strike: Option<bool>,
) {
    record(
        current,
        request,
        reason,
        Handling::Drop(close),
        client_ip,
        peer,
    );
    let (Some(bans), Some(ip)) = (&current.ban_list, client_ip) else {
        return;
    };
    // The judged client is struck, through any trusted proxy; the layer
    // refuses it on every request, and accept refuses it when it connects
    // directly. An edge is never struck, even for a request whose real-IP
    // header did not resolve: banning it would refuse everyone behind it.
    // And only the client's own behaviour strikes.
    match strike {
        Some(reused) if reason.strikes() && !current.rules.is_edge(ip) => {
            bans.strike_request(ip, RequestPrint::of(request), reused);
        }
        _ => {}
    }
}

/// Counts a rule's match and emits its event: one record for every output.
pub(super) fn record<B>(
    current: &Compiled,
    request: &Request<B>,
    rule: DropReason,
    handling: Handling,
    client_ip: Option<IpAddr>,
    peer_addr: Option<SocketAddr>,
) {
    if let Some(slot) = current.rules.policies.slot_of(rule) {
        current.counters.count(slot, handling);
    }
    // A request inside TLS names its connection's ClientHello, as the
    // gate's refusals do.
    let hello = request
        .extensions()
        .get::<ConnectionInfo>()
        .and_then(|info| info.hello.as_deref())
        .map(crate::audit::HelloNames::view);
    DropEvent {
        rule,
        handling,
        client_ip,
        peer_addr,
        request: Some(RequestView::of(request)),
        hello,
    }
    .emit();
}

#[derive(Debug)]
pub(super) enum Rejection {
    Dropped {
        handle: Option<ConnectionHandle>,
        mode: CloseMode,
        reason: DropReason,
    },
    Respond {
        status: StatusCode,
        retry_after: Option<Duration>,
        reason: DropReason,
        rate: Option<(&'static str, RateLimit)>,
    },
}
