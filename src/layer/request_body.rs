use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::service::{Rejection, reject_on};
use super::state::{Compiled, LayerState};
use crate::alarm::Alarm;
use crate::connection::ConnectionInfo;
use crate::error::BoxError;
use crate::rules::{Action, DropReason, Stop};

pin_project! {
    /// The request body the inner service reads: the client's own, under
    /// the layer's [body timeout](crate::NoResponseLayerBuilder::body_timeout).
    ///
    /// Without a body timeout, or for a request that has no body, it passes
    /// every frame through untouched. With one, a read that finds nothing
    /// new starts the timer and the next frame stops it; a timer that runs
    /// out drops the request, and the read fails with the error
    /// "request body timed out".
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        timer: Option<BodyTimer>,
    }
}

/// The body timer of one request.
struct BodyTimer {
    timeout: Duration,
    /// Since when the body has sent nothing: from a read that found
    /// nothing to the next frame.
    waiting_since: Option<Instant>,
    /// Set no later than the deadline, so a wait that ends and another
    /// that begins costs no new alarm, only a look when it rings; off
    /// tokio's timer wheel (see [`alarm`](crate::alarm)).
    alarm: Alarm,
    /// The instant `alarm` was set to.
    armed: Option<Instant>,
    watch: Arc<BodyWatch>,
}

/// What a request's body timer and its response future share: whether the
/// inner service answered first or the body ran out of time first, and
/// what the drop needs to be enacted, counted and logged.
pub(super) struct BodyWatch {
    state: AtomicU8,
    /// The response future, woken when the body runs out of time.
    waker: AtomicWaker,
    layer: Arc<LayerState>,
    compiled: Arc<Compiled>,
    /// The request's head, for the event and the access log.
    head: Request<()>,
    peer: Option<SocketAddr>,
    connection: Option<ConnectionInfo>,
    client_ip: Option<IpAddr>,
}

const WAITING: u8 = 0;
const ANSWERED: u8 = 1;
const TIMED_OUT: u8 = 2;

impl BodyWatch {
    /// Whether the body ran out of time before the inner service answered;
    /// `cx` is woken if it does later.
    pub(super) fn poll_timed_out(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.state.load(Ordering::Acquire) == TIMED_OUT
    }

    /// Records that the inner service answered; `false` when the body ran
    /// out of time first, and the answer must not be sent.
    pub(super) fn answered(&self) -> bool {
        self.state
            .compare_exchange(WAITING, ANSWERED, Ordering::AcqRel, Ordering::Acquire)
            .map_or_else(|state| state != TIMED_OUT, |_| true)
    }

    /// Drops the request, once, unless the inner service answered first:
    /// counted, logged and struck as any drop, its connection aborted (or,
    /// on an HTTP/2 connection that resets streams, its stream reset by the
    /// response future's answer).
    fn time_out(&self) -> bool {
        if self
            .state
            .compare_exchange(WAITING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let stop = Stop {
            rule: DropReason::BodyTimeout,
            action: Action::Drop,
            retry_after: None,
        };
        let rejection = reject_on(
            &self.layer,
            &self.compiled,
            &self.head,
            stop,
            self.client_ip,
            true,
            (self.peer, self.connection.as_ref()),
        );
        if let Rejection::Dropped {
            handle: Some(handle),
            mode,
            ..
        } = rejection
        {
            handle.abort(mode);
        }
        self.waker.wake();
        true
    }
}

impl<B> TimedBody<B> {
    /// The body as it is, with no timer.
    pub(super) fn untimed(inner: B) -> Self {
        Self { inner, timer: None }
    }
}

impl<B: Body> TimedBody<B> {
    /// Puts `request`'s body under the body timeout of `compiled`, if it
    /// has one and the request has a body; the watch goes to the response
    /// future.
    pub(super) fn wrap(
        request: Request<B>,
        layer: &Arc<LayerState>,
        compiled: &Arc<Compiled>,
        (client_ip, peer): (Option<IpAddr>, Option<SocketAddr>),
    ) -> (Request<TimedBody<B>>, Option<Arc<BodyWatch>>) {
        let Some(timeout) = compiled.body_timeout else {
            return (request.map(Self::untimed), None);
        };
        if request.body().is_end_stream() {
            return (request.map(Self::untimed), None);
        }
        let connection = request.extensions().get::<ConnectionInfo>().cloned();
        let mut head = Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = request.headers().clone();
        let watch = Arc::new(BodyWatch {
            state: AtomicU8::new(WAITING),
            waker: AtomicWaker::new(),
            layer: Arc::clone(layer),
            compiled: Arc::clone(compiled),
            head,
            peer,
            connection,
            client_ip,
        });
        let timer = BodyTimer {
            timeout,
            waiting_since: None,
            alarm: Alarm::new(),
            armed: None,
            watch: Arc::clone(&watch),
        };
        let request = request.map(|inner| Self {
            inner,
            timer: Some(timer),
        });
        (request, Some(watch))
    }
}

/// The error a body that ran out of time ends with.
#[derive(Debug)]
struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body timed out")
    }
}

impl std::error::Error for TimedOut {}

impl<B> Body for TimedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let poll = this.inner.poll_frame(cx);
        let Some(timer) = this.timer.as_mut() else {
            return poll.map_err(Into::into);
        };
        if poll.is_ready() {
            timer.waiting_since = None;
            return poll.map_err(Into::into);
        }
        if timer.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        timer.watch.time_out();
        *this.timer = None;
        Poll::Ready(Some(Err(TimedOut.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl BodyTimer {
    /// After a read that found nothing: ready once the body has sent
    /// nothing for the whole timeout; otherwise `cx` is woken to look
    /// again when the alarm rings.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        // A deadline past what an `Instant` holds is never reached.
        let Some(deadline) = since.checked_add(self.timeout) else {
            return Poll::Pending;
        };
        loop {
            if self.alarm.is_set() {
                // The body may be read from another task than the one
                // that set it.
                self.alarm.rewake(cx);
                return Poll::Pending;
            }
            // Rung, or due when set: the alarm ran out at `armed`, the
            // deadline or a look on the way to a later one.
            if self.armed.is_some_and(|armed| armed >= deadline) {
                return Poll::Ready(());
            }
            self.armed = Some(deadline);
            if !self.alarm.set(deadline, Instant::now(), cx) {
                return Poll::Pending;
            }
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedBody")
            .field("inner", &self.inner)
            .field("timeout", &self.timer.as_ref().map(|t| t.timeout))
            .finish()
    }
}

impl fmt::Debug for BodyWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyWatch")
            .field("state", &self.state)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}
