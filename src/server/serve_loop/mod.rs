//! The crate's own serve loop (feature `server`); see [`server`](crate::server).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

mod adapter;
mod bare;
mod conn;
mod service;
#[cfg(feature = "rustls")]
mod tls;

use super::early::{Early, judge_now};
use crate::DropReason;
use crate::NoResponseLayer;
use crate::connection::Accepted;
#[cfg(feature = "proxy-protocol")]
use crate::connection::proxy_header;
pub(crate) use crate::connection::refuse;
use crate::error::BuildError;
use crate::rules::ip::{IpAction, IpRules, parse_cidrs};
#[cfg(feature = "rustls")]
use crate::tls::ClientHello;
use conn::Connection;
/// Without TLS no connection has a ClientHello: always `None`.
#[cfg(not(feature = "rustls"))]
type ClientHello = ();
pub use service::ServeLoopService;

/// What a dropped HTTP/2 request does to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Http2Drop {
    /// Reset only the request's stream with `RST_STREAM(CANCEL)`; the other
    /// streams on the connection carry on, as with nginx's `return 444` on
    /// HTTP/2. The default.
    #[default]
    ResetStream,
    /// Reset only the stream, with `INTERNAL_ERROR`, which looks like any
    /// server fault.
    ResetStreamInternalError,
    /// Close the whole connection, with every stream on it (Caddy's
    /// `abort`).
    CloseConnection,
}

// `REFUSED_STREAM` is deliberately not offered: it tells the client the
// request was not processed and may be retried, which invites the retry.

/// Refusals checked at `accept`, before any byte is read: the cheapest drop
/// there is, for clients known to be bad by their address alone.
///
/// The peer here is the TCP peer: behind a proxy or CDN it is the proxy, so
/// use these only for traffic that reaches the server directly, and use the
/// layer's `deny_ip` (which sees the real client) otherwise.
#[derive(Debug, Default)]
pub struct AcceptRules {
    rules: IpRules,
}

impl AcceptRules {
    /// Refuses connections from each of `cidrs` (addresses, CIDR blocks or
    /// `all`), with rule name `accept_deny`.
    ///
    /// # Errors
    /// The first malformed value, by name.
    pub fn deny<I>(cidrs: I) -> Result<Self, BuildError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut rules = IpRules::default();
        for cidr in cidrs {
            rules.push(
                parse_cidrs("deny_at_accept", cidr.as_ref())?,
                IpAction::Deny,
            );
        }
        rules.seal();
        Ok(Self { rules })
    }

    fn denies(&self, peer: SocketAddr) -> bool {
        self.rules.first_match(peer.ip().to_canonical()) == Some(IpAction::Deny)
    }
}

/// A serve loop; see the [module docs](crate::server). Made by
/// [`NoResponseLayer::serve`].
#[must_use = "a server does nothing until it is run"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    layer: NoResponseLayer,
    http2_drop: Http2Drop,
    idle_timeout: Option<Duration>,
    limits: ConnectionLimits,
    accept_rules: AcceptRules,
    judge_early: bool,
    defer_accept: Option<Duration>,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    #[cfg(feature = "rustls")]
    tls_gate: tls::GateSetting,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("http2_drop", &self.http2_drop)
            .field("idle_timeout", &self.idle_timeout)
            .field("limits", &self.limits)
            .field("layer", &self.layer)
            .field("accept_rules", &self.accept_rules)
            .field("judge_early", &self.judge_early)
            .field("defer_accept", &self.defer_accept)
            .finish_non_exhaustive()
    }
}

impl NoResponseLayer {
    /// The crate's serve loop for `app` on `listener`, with this layer's
    /// close mode, ban list and rules. `app` is the service this layer
    /// wraps: an axum `Router` with `.layer(layer.clone())` added last, with
    /// any middleware that should see dropped requests (tracing, metrics)
    /// outside it.
    pub fn serve<S>(&self, listener: TcpListener, app: S) -> Serve<S> {
        Serve {
            listener,
            service: app,
            layer: self.clone(),
            http2_drop: Http2Drop::default(),
            idle_timeout: None,
            limits: ConnectionLimits::default(),
            accept_rules: AcceptRules::default(),
            judge_early: true,
            defer_accept: None,
            #[cfg(feature = "rustls")]
            tls: None,
            #[cfg(feature = "rustls")]
            tls_gate: tls::GateSetting::default(),
        }
    }
}

impl<S> Serve<S> {
    /// What a dropped HTTP/2 request does; [`Http2Drop::ResetStream`] by
    /// default.
    pub fn http2_drop(mut self, drop: Http2Drop) -> Self {
        self.http2_drop = drop;
        self
    }

    /// Closes a connection that has had no request in flight this long,
    /// HTTP/1 keep-alive and HTTP/2 alike, with an orderly close (a
    /// `GOAWAY` on HTTP/2) and no event, since nothing was dropped. A
    /// response still streaming its body counts as in flight. Unset by
    /// default: the layer's
    /// [`keepalive_timeout`](crate::NoResponseLayerBuilder::keepalive_timeout)
    /// closes an HTTP/1 connection idle between requests and an HTTP/2
    /// connection with no stream open, on every connection side.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// At most `n` connections at once; past it, new connections are
    /// refused at accept with the close mode, logged with rule
    /// `connection_limit`. Unlimited by default.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.total = Some(n);
        self
    }

    /// At most `n` connections at once from one client address (IPv6 by
    /// its /64, one customer's network); past it, refused at accept as for
    /// [`max_connections`](Self::max_connections). Unlimited by default.
    ///
    /// The address is the TCP peer, the only one known at accept. An edge
    /// (a trusted proxy, an `only_from_peer` peer) is not a client and is never
    /// counted here: its pooled connections carry everyone behind it. Cap
    /// edges apart with [`max_connections_per_proxy`](Self::max_connections_per_proxy).
    /// nginx's `limit_conn addr` after `real_ip` counts the real client;
    /// behind a proxy that pools connections there is no such count, and the
    /// layer's [`rate_limit`](crate::NoResponseLayerBuilder::rate_limit),
    /// keyed by the real client, is what bounds each client.
    pub fn max_connections_per_client(mut self, n: usize) -> Self {
        self.limits.per_client = Some(n);
        self
    }

    /// At most `n` connections at once from one edge address (a trusted
    /// proxy, an `only_from_peer` peer); past it, refused at accept as for
    /// [`max_connections`](Self::max_connections). Unlimited by default.
    pub fn max_connections_per_proxy(mut self, n: usize) -> Self {
        self.limits.per_proxy = Some(n);
        self
    }

    /// Refusals checked at accept.
    pub fn accept_rules(mut self, rules: AcceptRules) -> Self {
        self.accept_rules = rules;
        self
    }

    /// Holds each new connection in the kernel for up to `wait` until its
    /// first bytes arrive (`TCP_DEFER_ACCEPT`, Linux; see
    /// [`set_defer_accept`](crate::connection::set_defer_accept)). With
    /// early judging, a client whose request a rule drops then costs one
    /// accept, one read and a close, with no wake-up in between and no
    /// task. A client that sends nothing is accepted once `wait` is over.
    /// Off by default; on other systems, [`run`](Self::run) fails when it
    /// is set.
    pub fn defer_accept(mut self, wait: Duration) -> Self {
        self.defer_accept = Some(wait);
        self
    }

    /// Whether each connection's first request is judged with the layer's
    /// rules as soon as its head has arrived, before hyper sets up the
    /// connection; on by default. A request that a rule drops then costs an
    /// accept, one read and a close, which is all nginx spends on a
    /// `return 444`.
    ///
    /// Only enforced drops are made this early, by every rule but the rate
    /// limit, and counted and logged as the layer would. Everything else (no
    /// rule matched, a rule in dry-run or one that answers with a status, a
    /// head not complete yet, HTTP/2) goes on to hyper and the layer with
    /// the bytes already read, and the layer judges it in full. Over TLS,
    /// the first request is judged the same way once the handshake is done,
    /// from the first plain bytes. Later requests on a kept-alive connection
    /// are the layer's alone.
    pub fn judge_early(mut self, on: bool) -> Self {
        self.judge_early = on;
        self
    }

    /// Serves TLS with this rustls configuration (feature `rustls`); set its
    /// ALPN protocols to `h2` and `http/1.1` to offer both.
    ///
    /// Each connection's ClientHello is first judged by the layer's
    /// [`TlsGate`](crate::tls::TlsGate), which refuses a client before a
    /// byte is written (see [`tls`](crate::tls)); set another with
    /// [`tls_gate`](Self::tls_gate). Each handshake runs in its connection's
    /// own task, so a slow or stalled client never holds up the accept
    /// loop; one that has not finished its handshake within the header
    /// timeout (10 s when none is set) is dropped and logged as
    /// `header_timeout`. A dropped HTTP/1 request, or a connection closed
    /// whole, ends with the TCP stream closing: no application byte and no
    /// TLS alert is written, because the stream under TLS refuses every
    /// write once aborted.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The gate that judges each ClientHello, in place of the layer's own
    /// (which has no fingerprint rules); `None` hands every ClientHello to
    /// rustls unjudged, as before the gate existed (feature `rustls`).
    #[cfg(feature = "rustls")]
    pub fn tls_gate(mut self, gate: Option<crate::tls::TlsGate>) -> Self {
        self.tls_gate = match gate {
            Some(gate) => tls::GateSetting::Custom(gate),
            None => tls::GateSetting::Off,
        };
        self
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S: ServeLoopService> Serve<S> {
    /// Serves until the process ends.
    ///
    /// # Errors
    /// As [`run_until`](Self::run_until).
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting, lets every
    /// connection finish its requests in flight (idle ones close at once),
    /// and returns when the last one is done.
    ///
    /// # Errors
    /// When [`defer_accept`](Self::defer_accept) cannot be set on the
    /// listener, or the listener cannot be registered with the runtime;
    /// nothing else, today.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Self {
            listener,
            service,
            layer,
            http2_drop,
            idle_timeout,
            limits,
            accept_rules,
            judge_early,
            defer_accept,
            #[cfg(feature = "rustls")]
            tls,
            #[cfg(feature = "rustls")]
            tls_gate,
        } = self;
        if let Some(wait) = defer_accept {
            #[cfg(target_os = "linux")]
            crate::connection::set_defer_accept(&listener, wait)?;
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::other(format!(
                "defer_accept({wait:?}): TCP_DEFER_ACCEPT is Linux's"
            )));
        }
        let listener = bare::BareListener::new(listener)?;
        let limits = Arc::new(limits);
        let accept_rules = Arc::new(accept_rules);
        // Over TLS, the first request is judged inside it, after the
        // handshake, in the connection's task.
        #[cfg(feature = "rustls")]
        let tls = tls.map(|config| tls::TlsSetup {
            config,
            gate: tls_gate.resolve(&layer),
            judge_first: judge_early.then(|| layer.clone()),
        });
        #[cfg(feature = "rustls")]
        let judge_early = judge_early && tls.is_none();
        let judge_early = judge_early.then_some(&layer);
        // No header timeout in hyper: its timer also runs between kept-alive
        // requests. Each connection's stream keeps both timeouts instead.
        let builder = Arc::new(Builder::new(TokioExecutor::new()));
        let (stop_tx, stop_rx) = watch::channel(());
        // Every connection task holds a sender; all dropped means all done.
        let (done_tx, mut done_rx) = mpsc::channel::<Infallible>(1);
        let mut signal = pin!(signal);
        loop {
            // A bare socket until it is kept: see `bare`.
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut signal => break,
            };
            let close_mode = layer.close_mode();
            if accept_rules.denies(peer) {
                refuse(stream, peer, close_mode, DropReason::AcceptDenied);
                continue;
            }
            // Made only for a connection that is kept, or whose header is
            // to be read: a drop at accept costs none of these clones.
            let connection = || Connection {
                builder: Arc::clone(&builder),
                service: service.clone(),
                peer,
                balancer: None,
                #[cfg(feature = "proxy-protocol")]
                proxy_headers: layer.reads_proxy_headers(),
                http2_drop,
                close_mode,
                timeouts: crate::connection::Timeouts::of(&layer),
                idle_timeout,
                _slot: None,
                stop: stop_rx.clone(),
                _done: done_tx.clone(),
                #[cfg(feature = "rustls")]
                tls: tls.clone(),
            };
            // A balancer's connection is judged as its client's once its
            // PROXY protocol header is read, in the connection's task, so
            // that a slow header holds up no other accept.
            #[cfg(feature = "proxy-protocol")]
            if layer.sends_proxy_header(peer) {
                let Ok(stream) = bare::register(stream) else {
                    continue;
                };
                let (layer, rules, limits) = (
                    layer.clone(),
                    Arc::clone(&accept_rules),
                    Arc::clone(&limits),
                );
                let judge_early = judge_early.is_some();
                let mut connection = connection();
                tokio::spawn(async move {
                    let mut stop = connection.stop.clone();
                    let read = tokio::select! {
                        read = proxy_header::read(stream, peer, layer.proxy_header_policy()) => read,
                        _ = stop.changed() => None,
                    };
                    let Some((stream, origin)) = read else {
                        return;
                    };
                    let judge_early = judge_early.then_some(&layer);
                    let door = Door {
                        layer: &layer,
                        accept_rules: &rules,
                        limits: &limits,
                        judge_early,
                    };
                    let entered = door.enter(stream, origin.client, Some(origin.balancer));
                    if let Some((stream, prefix, judge_later, slot)) = entered {
                        connection.peer = origin.client;
                        connection.balancer = Some(origin.balancer);
                        connection._slot = slot;
                        connection.run(stream, prefix, judge_later).await;
                    }
                });
                continue;
            }
            let door = Door {
                layer: &layer,
                accept_rules: &accept_rules,
                limits: &limits,
                judge_early,
            };
            let Some((stream, prefix, judge_later, slot)) = door.enter(stream, peer, None) else {
                continue;
            };
            let Ok(stream) = bare::register(stream) else {
                // The runtime could not take it (out of memory for its
                // readiness slot): closed, as a failed accept would be.
                continue;
            };
            let mut connection = connection();
            connection._slot = slot;
            tokio::spawn(connection.run(stream, prefix, judge_later));
        }
        drop(listener);
        let _ = stop_tx.send(());
        drop(done_tx);
        // Returns `None` once every connection task has dropped its sender.
        let _ = done_rx.recv().await;
        Ok(())
    }
}

/// What a connection goes through between its accept (and its PROXY
/// protocol header, behind a balancer) and its task.
struct Door<'a> {
    layer: &'a NoResponseLayer,
    accept_rules: &'a AcceptRules,
    limits: &'a Arc<ConnectionLimits>,
    /// Judges the first request when it has arrived already.
    judge_early: Option<&'a NoResponseLayer>,
}

impl Door<'_> {
    /// Screens a connection from `peer` (the client a balancer's header
    /// named, with the `balancer`): the refusals at accept, the caps, then
    /// the first request if it is there. The stream, the bytes read, the
    /// layer to judge the first request with once it arrives, and the
    /// connection's slot under the caps; `None` once refused.
    #[allow(clippy::type_complexity)]
    fn enter<St: Accepted>(
        &self,
        stream: St,
        peer: SocketAddr,
        balancer: Option<SocketAddr>,
    ) -> Option<(St, Vec<u8>, Option<NoResponseLayer>, Option<ConnectionSlot>)> {
        let close_mode = self.layer.close_mode();
        if balancer.is_some() && self.accept_rules.denies(peer) {
            refuse(stream, peer, close_mode, DropReason::AcceptDenied);
            return None;
        }
        let stream = match balancer {
            None => self.layer.screen_at_accept(stream, peer)?,
            #[cfg(feature = "proxy-protocol")]
            Some(_) => self.layer.screen_behind_balancer(stream, peer)?,
            #[cfg(not(feature = "proxy-protocol"))]
            Some(_) => unreachable!("only the proxy-protocol feature reads a balancer's client"),
        };
        let edge = self.layer.rules().is_edge(peer.ip());
        let Some(slot) = ConnectionLimits::admit(self.limits, peer.ip(), edge) else {
            refuse(stream, peer, close_mode, DropReason::ConnectionLimit);
            return None;
        };
        // Judge the first request now if it has arrived, else in the
        // connection's task once it does; hyper sees it only if no rule
        // drops it.
        Some(match self.judge_early {
            None => (stream, Vec::new(), None, slot),
            Some(layer) => match judge_now(stream, peer, layer) {
                Early::Done => return None,
                Early::Undecided(stream, read) if read.is_empty() => {
                    (stream, read, Some(layer.clone()), slot)
                }
                Early::Undecided(stream, read) => (stream, read, None, slot),
            },
        })
    }
}

/// The caps on concurrent connections, overall and per client.
#[derive(Debug, Default)]
struct ConnectionLimits {
    total: Option<usize>,
    per_client: Option<usize>,
    per_proxy: Option<usize>,
    live: AtomicUsize,
    by_client: DashMap<IpAddr, usize>,
}

/// A connection counted against the caps, until it is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    client: Option<IpAddr>,
}

impl ConnectionLimits {
    /// The slot of a new connection from `ip`, if the caps leave room; none
    /// is needed (and `Some(None)` given) when there are no caps. An `edge`
    /// is counted against the per-proxy cap, never the per-client one.
    fn admit(limits: &Arc<Self>, ip: IpAddr, edge: bool) -> Option<Option<ConnectionSlot>> {
        if limits.total.is_none() && limits.per_client.is_none() && limits.per_proxy.is_none() {
            return Some(None);
        }
        if limits.live.fetch_add(1, Ordering::AcqRel) >= limits.total.unwrap_or(usize::MAX) {
            limits.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let mut slot = ConnectionSlot {
            limits: Arc::clone(limits),
            client: None,
        };
        let cap = if edge {
            limits.per_proxy
        } else {
            limits.per_client
        };
        if let Some(cap) = cap {
            let client = client_key(ip);
            let mut count = limits.by_client.entry(client).or_insert(0);
            if *count >= cap {
                // Dropping the slot gives back the overall count.
                return None;
            }
            *count += 1;
            slot.client = Some(client);
        }
        Some(Some(slot))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(client) = self.client {
            self.limits.by_client.remove_if_mut(&client, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

/// A client as the per-client cap counts it: IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    crate::rules::client_ip::Ipv6Prefix::new(64).client(ip.to_canonical())
}
