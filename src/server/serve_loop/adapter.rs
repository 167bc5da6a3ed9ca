//! The adapter between hyper and the service: each request gets its
//! connection, and a dropped response becomes the error hyper resets the
//! stream for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::ClientHello;
use crate::connection::{ConnectionInfo, DropAsError, Exchanges};
use crate::error::BoxError;

/// What a connection is doing, for its idle timeout: how many requests are
/// in flight (until their response body is done), and when that last
/// changed.
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last change.
    changed_ms: AtomicU64,
    epoch: Instant,
    /// The same exchanges, told to the stream's timers.
    exchanges: Arc<Exchanges>,
    /// Woken by each change, for the connection's idle timeout.
    change: tokio::sync::Notify,
    /// Whether an idle timeout reads this: without one, a request costs
    /// no clock read and no wake-up here.
    timed: bool,
}

impl Activity {
    pub(super) fn new(exchanges: Arc<Exchanges>, timed: bool) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            changed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            exchanges,
            change: tokio::sync::Notify::new(),
            timed,
        })
    }

    fn touch(&self) {
        if !self.timed {
            return;
        }
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.changed_ms.store(ms, Ordering::Release);
        self.change.notify_one();
    }

    /// Ready at the next change of activity (or at once, for one missed
    /// while nobody waited).
    pub(super) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.change.notified()
    }

    fn begin(self: &Arc<Self>, body: &http_body::SizeHint) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self), self.exchanges.begin(body))
    }

    /// Since when the connection has had nothing in flight, if it has not.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.changed_ms.load(Ordering::Acquire);
        Some(self.epoch + Duration::from_millis(ms))
    }
}

/// One request in flight; its end (response sent, failed, or abandoned) is
/// when this is dropped.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>, crate::connection::InFlight);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

pin_project! {
    /// A response body that holds its request in flight until it is done.
    pub(super) struct TrackedBody<B> {
        #[pin]
        body: B,
        _in_flight: InFlight,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// The future of [`StreamResets`]: the request stays in flight with
    /// its response's body.
    pub(super) struct Tracked<F> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
        // Whether the method is `CONNECT`, whose `2xx` makes a tunnel.
        connect: bool,
    }
}

impl<F, B> Future for Tracked<F>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
{
    type Output = Result<Response<TrackedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.future.poll(cx))?;
        let in_flight = this
            .in_flight
            .take()
            .expect("Tracked polled after completion");
        in_flight.1.answered(*this.connect, response.status());
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// Marks each request's connection as one whose HTTP/2 drops are turned
/// into stream resets, and turns every dropped response into a
/// [`RequestDropped`] error. The serve loop's; tonic's is `NoResponseGrpc`.
#[derive(Clone, Debug)]
pub(super) struct StreamResets<S> {
    inner: S,
    reset: h2::Reason,
    /// The connection, put in each request.
    info: ConnectionInfo,
    activity: Arc<Activity>,
    /// The ClientHello the TLS gate let through, put in each request.
    #[cfg_attr(not(feature = "rustls"), allow(dead_code))]
    hello: Option<ClientHello>,
}

impl<S> StreamResets<S> {
    pub(super) fn new(
        inner: S,
        reset: h2::Reason,
        info: ConnectionInfo,
        activity: Arc<Activity>,
        hello: Option<ClientHello>,
    ) -> Self {
        Self {
            inner,
            reset,
            info,
            activity,
            hello,
        }
    }
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for StreamResets<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    ReqBody: http_body::Body,
{
    type Response = Response<TrackedBody<B>>;
    type Error = BoxError;
    type Future = Tracked<DropAsError<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions_mut();
        // Middleware outside the layer reads the peer as axum's.
        #[cfg(feature = "axum")]
        extensions.insert(axum::extract::ConnectInfo(self.info.peer_addr()));
        extensions.insert(self.info.clone());
        #[cfg(feature = "rustls")]
        if let Some(hello) = &self.hello {
            extensions.insert(hello.clone());
        }
        Tracked {
            connect: request.method() == http::Method::CONNECT,
            in_flight: Some(self.activity.begin(&request.body().size_hint())),
            future: DropAsError::new(self.inner.call(request), self.reset),
        }
    }
}
