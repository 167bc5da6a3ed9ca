//! [`ResponseFuture`]: the inner service's answer, a rejection, or a
//! request waiting for the shared store's verdict.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::request_body::BodyWatch;
use super::response::{dropped_response, status_response};
use super::service::{Rejection, record_would_drop, reject};
use super::state::{Compiled, LayerState};
use super::{NoResponseBody, TimedBody};
use crate::connection::InFlight;
use crate::limit::StoreCheck;
use crate::rules::{Budget, DropReason, Judgement, Verdict};

pin_project! {
    /// The response future of [`NoResponse`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<TimedBody<B>>>,
    {
        #[pin]
        pub(super) kind: Kind<S, B>,
        // The exchange, for the connection's timers, handed to the
        // response's body.
        pub(super) exchange: Option<Exchange>,
    }
}

pin_project! {
    #[project = KindProj]
    pub(super) enum Kind<S, B>
    where
        S: Service<Request<TimedBody<B>>>,
    {
        Inner {
            #[pin]
            future: S::Future,
            // Shared with the request body's timer, if it has one.
            body: Option<Arc<BodyWatch>>,
        },
        /// Waiting for the shared rate-limit store.
        Checking {
            check: StoreCheck,
            // Boxed so that only requests that wait pay for their size.
            pending: Option<Box<Pending<S, B>>>,
        },
        Rejected { rejection: Rejection },
    }
}

/// A request in flight on a connection the layer's listener serves.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) in_flight: InFlight,
    /// Whether the method is `CONNECT`, whose `2xx` makes a tunnel.
    pub(super) connect: bool,
}

impl Exchange {
    /// Hands the exchange to the response that ends it.
    fn answer<B>(
        this: &mut Option<Self>,
        mut response: Response<NoResponseBody<B>>,
    ) -> Response<NoResponseBody<B>> {
        if let Some(exchange) = this.take() {
            exchange
                .in_flight
                .answered(exchange.connect, response.status());
            response.body_mut().in_flight = Some(exchange.in_flight);
        }
        response
    }
}

/// What a request waiting for the shared store needs once it has the answer.
pub(super) struct Pending<S, B> {
    pub(super) inner: S,
    pub(super) request: Request<B>,
    pub(super) layer: Arc<LayerState>,
    pub(super) compiled: Arc<Compiled>,
    pub(super) judgement: Judgement,
    /// The request's peer, as the service found it.
    pub(super) peer: Option<SocketAddr>,
}

impl<S: Service<Request<TimedBody<B>>>, B> fmt::Debug for ResponseFuture<S, B> {
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
    S: Service<Request<TimedBody<B>>, Response = Response<ResBody>>,
    B: Body,
{
    type Output = Result<Response<NoResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let exchange = this.exchange;
        let poll = poll_kind(this.kind, cx);
        poll.map_ok(|response| Exchange::answer(exchange, response))
    }
}

/// The response of the request's path through the layer.
fn poll_kind<S, B, ResBody>(
    mut kind: Pin<&mut Kind<S, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<NoResponseBody<ResBody>>, S::Error>>
where
    S: Service<Request<TimedBody<B>>, Response = Response<ResBody>>,
    B: Body,
{
    loop {
        let next = match kind.as_mut().project() {
            KindProj::Inner { future, body } => {
                // A body that ran out of time drops the request, whatever
                // the inner service is doing: its future is dropped with
                // this one.
                let Some(body) = body else {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(NoResponseBody::inner));
                };
                if body.poll_timed_out(cx) {
                    return Poll::Ready(Ok(dropped_response(DropReason::BodyTimeout)));
                }
                let response = std::task::ready!(future.poll(cx));
                if !body.answered() {
                    return Poll::Ready(Ok(dropped_response(DropReason::BodyTimeout)));
                }
                return Poll::Ready(response.map(|r| r.map(NoResponseBody::inner)));
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
                        rate,
                    } => status_response(*status, *retry_after, *reason, *rate),
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
        kind.set(next);
    }
}

impl<S: Service<Request<TimedBody<B>>>, B: Body> Pending<S, B> {
    fn resume(self, budget: Budget) -> Kind<S, B> {
        let Self {
            mut inner,
            mut request,
            layer,
            compiled,
            judgement,
            peer,
        } = self;
        let settled = compiled.rules.settle(judgement, budget);
        let fresh = Judgement {
            dry_run: settled.dry_run.since(judgement.dry_run),
            ..settled
        };
        record_would_drop(&compiled, &request, &fresh, peer);
        match settled.verdict {
            Verdict::Stop(stop) => Kind::Rejected {
                rejection: reject(
                    &layer,
                    &compiled,
                    &request,
                    stop,
                    (settled.client_ip, peer),
                    true,
                ),
            },
            Verdict::Pass | Verdict::RateLimit(_) => {
                compiled.admit(&mut request, settled.client_ip);
                let (request, body) =
                    TimedBody::wrap(request, &layer, &compiled, (settled.client_ip, peer));
                Kind::Inner {
                    future: inner.call(request),
                    body,
                }
            }
        }
    }
}
