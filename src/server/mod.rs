//! The crate's own serve loop, for hyper and tower services that want more
//! than `axum::serve` gives (feature `server`):
//!
//! - a dropped HTTP/2 request resets **only its stream**, as nginx does,
//!   instead of closing the connection with every other stream on it;
//! - clients can be refused at `accept`, before a byte of HTTP is read;
//! - a connection's first request is judged before hyper sets the
//!   connection up, so a drop costs what it costs nginx: an accept, a read
//!   and a close;
//! - a client that does not finish its request headers in time is dropped
//!   without a `408` (nginx's `client_header_timeout`, Slowloris).
//!
//! It serves HTTP/1.1 and h2c (HTTP/2 without TLS, by prior knowledge) on one
//! port with hyper-util's auto builder, runs connections concurrently, shuts
//! down gracefully, and handles accept errors as `axum::serve` does.
//!
//! It is made from the layer, [`NoResponseLayer::serve`], which gives it the
//! close mode, the ban list and the rules for early judging: there is no
//! second place to set them. Each request carries axum's
//! `ConnectInfo<SocketAddr>`, for handlers and for middleware outside the
//! layer alike.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_no_response::NoResponseLayer;
//! use tower_no_response::server::Http2Drop;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = NoResponseLayer::builder()
//!     .server_name("example.com")
//!     .header_timeout(std::time::Duration::from_secs(10))
//!     .build()?;
//! let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! layer
//!     .serve(listener, app)
//!     .http2_drop(Http2Drop::ResetStream)
//!     .run_until(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The crate's own serve loop
//!
//! `axum::serve` can only drop a request by closing its connection. With the
//! `server` feature (on by default), `layer.serve(tcp, app)` serves any tower
//! service that the layer wraps (an axum `Router` with `.layer(layer.clone())`,
//! for instance) on HTTP/1.1 and h2c, and can do more than close. It is made
//! from the layer, so the close mode, the ban list and the rules it judges
//! first requests by are the layer's: there is no second place to set them.
//!
//! ```rust,no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_no_response::NoResponseLayer;
//! use tower_no_response::ban::{BanList, BanPolicy};
//! use tower_no_response::server::{AcceptRules, Http2Drop};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Five drops in a minute: refused at accept for ten minutes.
//!     let bans = BanList::new(BanPolicy::new(5, Duration::from_secs(60), Duration::from_secs(600)));
//!     let layer = NoResponseLayer::builder()
//!         .server_name("example.com")
//!         .ban_list(bans.clone())
//!         .header_timeout(Duration::from_secs(10))
//!         .build()?;
//!     let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     layer
//!         .serve(listener, app)
//!         .http2_drop(Http2Drop::ResetStream)
//!         .idle_timeout(Duration::from_secs(75))
//!         .max_connections(10_000)
//!         .max_connections_per_client(100)
//!         .accept_rules(AcceptRules::deny(["198.51.100.0/24"])?)
//!         .run_until(async { tokio::signal::ctrl_c().await.ok(); })
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! What each kind of client sees:
//!
//! | situation | HTTP/1.1 (curl) | HTTP/2 (curl `--http2-prior-knowledge`, gRPC) | logged `rule` |
//! |---|---|---|---|
//! | a rule drops the request | no bytes, FIN or RST: `(52)` / `(56)` | `RST_STREAM(CANCEL)` on that stream only: `(92) HTTP/2 stream 1 was not closed cleanly: CANCEL`; other streams finish | the rule's name |
//! | the same, `Http2Drop::ResetStreamInternalError` | as above | `RST_STREAM(INTERNAL_ERROR)` | the rule's name |
//! | the same, `Http2Drop::CloseConnection` (Caddy's `abort`) | as above | the whole connection closes, every stream with it | the rule's name |
//! | the peer matches `AcceptRules::deny` | closed before any byte is read: `(52)` / `(56)` | the same | `accept_deny` |
//! | the peer is outside `only_from_peer` | closed before any byte is read | the same | `peer_not_allowed` |
//! | the peer is banned | closed before any byte is read | the same | `banned` |
//! | the client is banned while connected | its next request: no bytes, the connection closes | the whole connection closes | `banned` |
//! | over `max_connections` or `max_connections_per_client` | closed before any byte is read | the same | `connection_limit` |
//! | a request head not complete within the header timeout, counted from accept or from its first byte | no `408`, nothing: the connection closes | no request within it after the preface: the connection closes, nothing written | `header_timeout` |
//! | the request body stalls for the body timeout while the app reads it, before any response | nothing: the connection closes | the stream is reset | `body_timeout` |
//! | idle past `keepalive_timeout` (or `idle_timeout`) | an orderly close | `GOAWAY`, then the close | not logged: nothing was dropped |
//!
//! `REFUSED_STREAM` is never used for drops: it tells the client the request
//! was not processed and may safely be retried. At the hyper boundary, the
//! serve loop turns the layer's drop marker into a service error whose source
//! is an `h2::Error` with the chosen reason; hyper resets that stream with it,
//! and on HTTP/1 writes nothing.
//!
//! **Judging before hyper.** By default (`judge_early(false)` turns it off), the loop reads each
//! connection's first bytes (at accept if they are there, or in the
//! connection's task as soon as they arrive, within the header timeout) and,
//! when they hold a whole HTTP/1 request head, applies the layer's rules to it
//! before hyper sets up the connection. A request a rule drops then costs a
//! read and a close, and is counted and logged exactly as the layer would.
//! Only enforced drops happen this early, by every rule but the rate limit;
//! everything else (nothing matched, a rule in dry-run, a rule that answers
//! with a status, a head not complete in the first read, HTTP/2, TLS) goes on
//! to hyper with the bytes already read, and the layer judges it in full. Later
//! requests on a kept-alive connection are the layer's alone. On the load
//! bench it used about 10% less CPU per dropped connection than
//! `axum::serve` in the same run (see the performance report,
//! `benches/README.md`).
//!
//! The loop runs each connection in its own task, stops accepting on the
//! signal given to `run_until`, lets requests in flight finish, and returns
//! when the last connection is done. Accept errors are handled as
//! `axum::serve` handles them.
//!
//! **Bans and proxies.** Strikes and bans are by the judged client, the real
//! one behind trusted proxies (see the rules' [Peer and
//! client](crate::rules#peer-and-client) table). The layer refuses a banned
//! client on every request, through any proxy; this loop refuses it at accept
//! when it connects directly. An edge (a trusted proxy, an `only_from_peer` peer)
//! is never struck, banned or refused at accept, even for a request whose
//! real-IP header did not resolve: that would refuse every client behind it.
//! A client banned behind a proxy loses only its own HTTP/2 stream; a banned
//! peer loses its whole connection. Only drops the client caused strike
//! (`DropReason::strikes`): not `rate_limit_full`, `rate_limit_unavailable`,
//! `client_ip_unknown` or `peer_not_allowed`, and a keyed limit only when its
//! key is the client's address. IPv6 clients are struck and banned by their
//! /64 (`BanPolicy::ipv6_prefix`). The list holds at most `max_clients`
//! entries (100,000 by default); when full it is swept at most once a second
//! and then makes room by evicting one entry from a small sample (a client
//! only striking before a ban, among bans the one ending soonest), so strikes
//! keep working and a strike costs the same however full the table is. A ban
//! of `Duration::MAX` lasts a century. Ban and unban emit events on the
//! target `tower_no_response::ban`.
//!
//! **The application's own signals.** The ban list is the layer's
//! (`layer.ban_list()`), and handlers drive it as fail2ban's jails do:
//! `strike(ip)` counts a strike (a failed login, say) and returns whether it
//! banned the client, `ban(ip, duration)` bans at once, `unban(ip)` lifts a
//! ban, and `bans()` lists the bans in force for an admin endpoint. With a
//! shared Redis ban list, bans and unbans reach every replica.
//!
//! ```rust
//! use axum::{Router, extract::State, routing::post};
//! use tower_no_response::ClientIp;
//! use tower_no_response::ban::BanList;
//!
//! async fn login(State(bans): State<BanList>, ClientIp(ip): ClientIp) -> &'static str {
//!     let password_ok = false; // the application's own check
//!     if !password_ok {
//!         bans.strike(ip); // the policy's strikes within its window ban
//!     }
//!     "denied"
//! }
//!
//! # fn app(bans: BanList) -> Router {
//! Router::new().route("/login", post(login)).with_state(bans)
//! # }
//! ```
//!
//! The demo's `GET /login?password=...` does this: with `--ban-after 3`,
//! three failed logins ban the client.
//!
//! **TLS** (feature `rustls`). `serve(...).tls(Arc<rustls::ServerConfig>)`
//! serves over tokio-rustls. Each handshake runs in its connection's own task
//! under the header timeout (10 s when none is set), so a stalled client never
//! holds up the accept loop. Because the TCP stream under TLS refuses every
//! write once aborted, a dropped HTTP/1 request, or a connection closed whole,
//! ends with the TCP stream closing: no application record and no TLS alert
//! (`tests/tls.rs` counts every raw byte after the handshake, with a
//! certificate generated at test time). On HTTP/2 over TLS a stream reset is,
//! by nature, an encrypted `RST_STREAM` frame. Set the config's ALPN to `h2`
//! and `http/1.1` to offer both.
//!
//! The demo takes `--server own`, and `--header-timeout SECS` with either server.
//!
//! ## tonic
//!
//! With the `tonic` feature, one layer gives both of tonic's halves:
//! `layer.grpc()` for `Server::builder().layer(...)`, and `layer.incoming(tcp)`
//! for `serve_with_incoming`, which sets `TCP_NODELAY` on every connection as
//! tonic's own `serve` does (tonic ignores its `tcp_nodelay` setting for an
//! incoming stream):
//!
//! ```rust,no_run
//! # async fn run(health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) -> Result<(), Box<dyn std::error::Error>> {
//! use tower_no_response::NoResponseLayer;
//!
//! let layer = NoResponseLayer::builder().deny_user_agents(["masscan"]).build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//! tonic::transport::Server::builder()
//!     .layer(layer.grpc())
//!     .add_service(health)
//!     .serve_with_incoming(layer.incoming(listener))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! A dropped call fails at the transport level: its stream is reset with
//! `CANCEL`, and not one frame of a response comes from the server: no
//! `HEADERS`, no gRPC status, no trailer (tonic clients report a `Cancelled`
//! status they made up from the reset). The drop reaches tonic as an error
//! that tonic passes through untouched, so hyper resets the stream without
//! ever writing a head; `tests/tonic.rs` checks 10,000 dropped calls
//! interleaved with allowed ones on a multi-thread runtime, frame by frame.
//! Other calls on the same channel carry on. `Request::remote_addr()` keeps
//! working. Given the plain layer (`.layer(layer)`) instead of `layer.grpc()`,
//! a drop closes the whole connection: still zero bytes, but every call on it
//! goes too. See `examples/tonic.rs` (`cargo run --example tonic --features
//! tonic`).

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
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower_service::Service;

mod adapter;
mod conn;
#[cfg(feature = "rustls")]
mod tls;

use crate::DropReason;
use crate::NoResponseLayer;
use crate::connection::early::{Early, judge_now};
pub(crate) use crate::connection::{drop_connection, refuse};
use crate::error::{BoxError, BuildError};
use crate::rules::ip::{IpAction, IpRules, parse_cidrs};
use conn::Connection;

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

/// A serve loop; see the [module docs](self). Made by
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

    /// Closes a connection that has had no request in flight this long, as
    /// nginx's `keepalive_timeout` does: HTTP/1 keep-alive and HTTP/2 alike,
    /// with an orderly close (a `GOAWAY` on HTTP/2) and no event, since
    /// nothing was dropped. A response still streaming its body counts as
    /// in flight. When it is not set, an HTTP/1 connection is closed after
    /// the layer's
    /// [`keepalive_timeout`](crate::NoResponseLayerBuilder::keepalive_timeout)
    /// between requests, and an HTTP/2 connection after as long with no
    /// stream open.
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
    /// head not complete yet, HTTP/2, TLS) goes on to hyper and the layer
    /// with the bytes already read, and the layer judges it in full. Later
    /// requests on a kept-alive connection are the layer's alone.
    pub fn judge_early(mut self, on: bool) -> Self {
        self.judge_early = on;
        self
    }

    /// Serves TLS with this rustls configuration (feature `rustls`); set its
    /// ALPN protocols to `h2` and `http/1.1` to offer both.
    ///
    /// Each handshake runs in its connection's own task, so a slow or
    /// stalled client never holds up the accept loop; one that has not
    /// finished its handshake within the header timeout (10 s when none is
    /// set) is dropped and logged as `header_timeout`. A dropped HTTP/1
    /// request, or a connection closed whole, ends with the TCP stream
    /// closing: no application byte and no TLS alert is written, because the
    /// stream under TLS refuses every write once aborted.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
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

impl<S, B> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
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
    /// listener; nothing else, today.
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
        } = self;
        if let Some(wait) = defer_accept {
            #[cfg(target_os = "linux")]
            crate::connection::set_defer_accept(&listener, wait)?;
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::other(format!(
                "defer_accept({wait:?}): TCP_DEFER_ACCEPT is Linux's"
            )));
        }
        let limits = Arc::new(limits);
        #[cfg(feature = "rustls")]
        let judge_early = judge_early && tls.is_none();
        let judge_early = judge_early.then_some(&layer);
        // No header timeout in hyper: its timer also runs between kept-alive
        // requests. Each connection's stream keeps both timeouts instead.
        let builder = Builder::new(TokioExecutor::new());
        let (stop_tx, stop_rx) = watch::channel(());
        // Every connection task holds a sender; all dropped means all done.
        let (done_tx, mut done_rx) = mpsc::channel::<Infallible>(1);
        let mut signal = pin!(signal);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                () = &mut signal => break,
            };
            let close_mode = layer.close_mode();
            if accept_rules.denies(peer) {
                refuse(stream, peer, close_mode, DropReason::AcceptDenied);
                continue;
            }
            let Some(stream) = layer.screen_at_accept(stream, peer) else {
                continue;
            };
            let edge = layer.rules().is_edge(peer.ip());
            let Some(slot) = ConnectionLimits::admit(&limits, peer.ip(), edge) else {
                refuse(stream, peer, close_mode, DropReason::ConnectionLimit);
                continue;
            };
            // Judge the first request now if it has arrived, else in the
            // connection's task once it does; hyper sees it only if no rule
            // drops it.
            let (stream, prefix, judge_later) = match judge_early {
                None => (stream, Vec::new(), None),
                Some(layer) => match judge_now(stream, peer, layer) {
                    Early::Done => continue,
                    Early::Undecided(stream, read) if read.is_empty() => {
                        (stream, read, Some(layer.clone()))
                    }
                    Early::Undecided(stream, read) => (stream, read, None),
                },
            };
            let connection = Connection {
                builder: builder.clone(),
                service: service.clone(),
                peer,
                http2_drop,
                close_mode,
                timeouts: crate::connection::Timeouts::of(&layer),
                idle_timeout,
                _slot: slot,
                stop: stop_rx.clone(),
                _done: done_tx.clone(),
                #[cfg(feature = "rustls")]
                tls: tls.clone(),
            };
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

/// Accepts like `axum::serve`: errors that belong to one connection are
/// skipped; others (such as running out of file descriptors) are logged and
/// retried after a second, instead of spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::error!(target: "tower_no_response", "accept error: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
