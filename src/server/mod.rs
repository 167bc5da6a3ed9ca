//! The connection sides: how each server runs the connections a
//! [`NoResponseLayer`](crate::NoResponseLayer) drops. Each is made from the
//! layer and shares its state, and each is one file here:
//!
//! | server | service side | connection side | file |
//! |---|---|---|---|
//! | `axum::serve` | `.layer(layer.clone())` | [`layer.listener(tcp)`](crate::NoResponseLayer::listener) | `listener.rs` |
//! | the crate's serve loop | `.layer(layer.clone())` | [`layer.serve(tcp, app)`](crate::NoResponseLayer::serve) | `serve_loop/` |
//! | tonic's `Server` | `.layer(layer.grpc())` | [`layer.incoming(tcp)`](crate::NoResponseLayer::incoming) | `incoming.rs` |
//! | axum-server over rustls (feature `axum-server`) | `.layer(layer.clone())` | the TLS gate's `acceptor()` in `RustlsAcceptor` | `tls/axum_server.rs` |
//!
//! Beside them: what every side does at accept (`accept.rs`), judging a
//! connection's first request before the server has it (`early.rs`), and,
//! on Linux, the [`kernel_filter`] that refuses banned and denied clients
//! before their handshake. The primitives they share, the handle and the
//! stream that obeys it, are in [`connection`](crate::connection).
//!
//! # The crate's own serve loop
//!
//! For hyper and tower services that want more than `axum::serve` gives
//! (feature `server`):
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
//! It is made from the layer, [`NoResponseLayer::serve`](crate::NoResponseLayer::serve), which gives it the
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
//! # Refusals at accept, caps and bans
//!
//! Beyond its drops, the loop refuses clients before a byte is read, caps
//! connections, and keeps every timer, each set on the loop or taken from
//! the layer:
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
//! | a request head begun and not complete within the header timeout, counted from accept, from its first byte, or from the end of the response before it | no `408`, nothing: the connection closes | a header block (`HEADERS` without `END_HEADERS`) not ended in time: the connection closes | `header_timeout` |
//! | a new connection on which no request began within the header timeout (a browser's unused preconnection) | an orderly close | `GOAWAY`, then the close | not logged: nothing was dropped |
//! | the request body stalls for the body timeout while the app reads it, before any response | nothing: the connection closes | the stream is reset | `body_timeout` |
//! | idle past `keepalive_timeout` (or `idle_timeout`) | an orderly close | no stream open that long: `GOAWAY`, then the close | not logged: nothing was dropped |
//! | reads no byte of a response for `send_timeout` | the connection closes | the same | not a 444: `reason=send_timeout` at `info` |
//! | still open a header timeout after the server's `GOAWAY` (a shutdown) | | the connection closes, streams and all | not logged |
//!
//! These rows hold for `axum::serve` with the layer's listener too, where
//! the stream wrapper applies every timer, HTTP/2's included, except that a
//! dropped HTTP/2 request closes the whole connection: `axum::serve` has no
//! way to reset one stream.
//!
//! Under axum-server with the gate's acceptor, refusals at accept (bans,
//! `only_from_peer`, CrowdSec) and the gate's own refusals happen before
//! the handshake, with zero bytes. A request dropped inside TLS closes the
//! whole connection, HTTP/1 or HTTP/2, with no further byte: the stream
//! under TLS refuses every write, a `close_notify` included. The crate's
//! header, keep-alive and send timeouts do not apply there; set
//! axum-server's own.
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
//! (`tests/it/tls.rs` counts every raw byte after the handshake, with a
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
//! ever writing a head; `tests/it/tonic.rs` checks 10,000 dropped calls
//! interleaved with allowed ones on a multi-thread runtime, frame by frame.
//! Other calls on the same channel carry on. `Request::remote_addr()` keeps
//! working. Given the plain layer (`.layer(layer)`) instead of `layer.grpc()`,
//! a drop closes the whole connection: still zero bytes, but every call on it
//! goes too. See `examples/tonic.rs` (`cargo run --example tonic --features
//! tonic`).

#[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
mod accept;
#[cfg(all(target_os = "linux", any(feature = "server", feature = "axum")))]
mod backlog;
#[cfg(any(feature = "server", feature = "axum"))]
mod early;
#[cfg(feature = "tonic")]
mod incoming;
#[cfg(target_os = "linux")]
pub mod kernel_filter;
#[cfg(feature = "axum")]
mod listener;
#[cfg(feature = "server")]
mod serve_loop;
#[cfg(any(feature = "server", feature = "axum"))]
mod timeouts;

#[cfg(feature = "tonic")]
pub use incoming::NoResponseIncoming;
#[cfg(all(feature = "tonic", feature = "rustls"))]
pub use incoming::{NoResponseTlsIncoming, TlsConnection};
#[cfg(target_os = "linux")]
pub use kernel_filter::KernelFilter;
#[cfg(feature = "axum")]
pub use listener::{AbortableListener, NoResponseListener};
#[cfg(feature = "server")]
pub use serve_loop::*;
