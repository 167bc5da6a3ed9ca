//! nginx's `return 444` for tower, axum and hyper: drop unwanted requests by
//! closing the connection without writing a single byte.
//!
//! A scanner that sweeps addresses, a bot with a known User-Agent, a client
//! over its rate: nginx answers them with `444`, which is not a status at all.
//! The connection just closes, so they learn nothing about the server, and the
//! access log still records status 444 and the rule that fired.
//! [`NoResponseLayer`] does the same for any tower service, and emits a
//! `tracing` event with `status=444` for each drop (see [`audit`]).
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Router, routing::get};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tower_no_response::NoResponseLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = NoResponseLayer::builder()
//!     .server_names(["example.com"])
//!     .deny_user_agents(["masscan", "zgrab"])
//!     .build()?;
//!
//! // Add the layer last, after every route and fallback, so that it wraps the
//! // whole router and judges requests for paths without a route too.
//! let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
//!
//! // The connection side comes from the same layer: its drops close the
//! // connection they came on, and everything else sees axum's usual
//! // `ConnectInfo<SocketAddr>`.
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = tcp.local_addr()?;
//! let listener = layer.listener(tcp);
//! tokio::spawn(async move {
//!     axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! });
//!
//! // A scanner that asks for the server by IP receives nothing at all.
//! let mut scanner = tokio::net::TcpStream::connect(addr).await?;
//! scanner.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
//! let mut received = Vec::new();
//! scanner.read_to_end(&mut received).await?;
//! assert!(received.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # How it fits together
//!
//! Each part uses only the parts above it in this list, so a request can be
//! followed through the code from top to bottom:
//!
//! - the parsers (private): what a request says about its host and its
//!   client, read from bytes without allocating;
//! - [`rules`]: the judgement. A [`RuleSet`](rules::RuleSet), compiled once and immutable,
//!   judges a request head and its peer with [`RuleSet::judge`](rules::RuleSet::judge) and returns
//!   a [`Judgement`](rules::Judgement): pass, stop with a rule and its action, or ask the rate
//!   limiter, plus the rules in dry-run that matched. It is pure: no clock,
//!   runtime, logging or state;
//! - [`limit`], [`ban`] and [`audit`]: the runtime state beside the rules
//!   (the rate limiter's budgets, in this process or shared through a
//!   store; the ban list) and the audit output (the 444 event, the per-rule
//!   counters and metrics, nginx's access-log line);
//! - [`connection`]: the primitives a drop reaches the socket through. A
//!   [`ConnectionHandle`](connection::ConnectionHandle) is shared by the
//!   layer and the connection; the [`AbortableStream`](connection::AbortableStream)
//!   refuses every write once its handle is tripped and closes with the
//!   layer's [`CloseMode`](connection::CloseMode); [`RequestDropped`] is the
//!   drop as a server sees it; [`connection::set_defer_accept`] holds
//!   connections in the kernel until their request arrives (Linux);
//! - the layer, [`NoResponseLayer`]: the tower `Layer`, `Service` and
//!   `ResponseFuture`, which judges each request, keeps the state, counts
//!   and logs, and trips the connection's handle on a drop;
//! - [`server`]: the connection sides, made from the layer and sharing its
//!   state, one file each: [`NoResponseLayer::listener`] for `axum::serve`,
//!   the crate's own serve loop [`NoResponseLayer::serve`] (feature
//!   `server`), and `NoResponseLayer::incoming` for tonic; beside them,
//!   judging a first request at accept and, on Linux,
//!   [`NoResponseLayer::kernel_filter`], which refuses banned and denied
//!   clients in the kernel before their handshake;
//! - the integrations, each behind its feature: the [`ClientIp`] extractor
//!   (`axum`), `grpc` (`tonic`), `redis` (`redis`; `rediss://` with `redis-tls`),
//!   `config` (`serde`).
//!
//! # Serving
//!
//! Everything is configured once, on the layer: its close mode, ban list
//! and rules reach the connection side through it.
//!
//! | server | service side | connection side | what an HTTP/2 drop does |
//! |---|---|---|---|
//! | `axum::serve` | `.layer(layer.clone())` | `layer.listener(tcp)` | closes the connection |
//! | the crate's serve loop | `.layer(layer.clone())` | `layer.serve(tcp, app)` | resets its stream |
//! | tonic's `Server` | `.layer(layer.grpc())` | `layer.incoming(tcp)` | resets its stream |
//!
//! No path writes a byte of a dropped response: where a stream cannot be
//! reset without a head, the whole connection is closed instead.
//!
//! With `axum::serve`, serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`: the layer judges
//! the peer that `ConnectInfo<SocketAddr>` names, as every other middleware
//! reads it, and handlers take the judged client with the [`ClientIp`]
//! extractor. In `oneshot` tests, axum's `MockConnectInfo<SocketAddr>` stands
//! in for the peer, and the IP rules and the rate limit apply as they would
//! to a real client. An app served without connect info is still judged by
//! the peer the layer's listener recorded, for every request whose service
//! is called in its connection's task (all of HTTP/1, and HTTP/2 when the
//! layer wraps the whole `Router`).
//!
//! # Behind a proxy or CDN
//!
//! Each rule, strike, ban, cap and filter judges either the TCP peer or the
//! real client behind trusted proxies; the rules' [Peer and
//! client](rules#peer-and-client) table says which. In short: `only_from_peer`,
//! accept-time refusals, connection caps and the kernel filter see the peer;
//! IP rules, rate limits, strikes and bans in the layer see the client; and
//! a trusted proxy or `only_from_peer` peer is never struck, banned, capped as a
//! client or refused by the kernel filter. Behind an L4 load balancer, the
//! client in its PROXY protocol header takes the peer's place
//! ([`proxy_protocol_from`](NoResponseLayerBuilder::proxy_protocol_from),
//! feature `proxy-protocol`).
//!
//! ```rust
//! use tower_no_response::{BuildError, NoResponseLayer};
//!
//! fn main() -> Result<(), BuildError> {
//!     let _layer = NoResponseLayer::builder()
//!         .server_name("example.com")
//!         .trust_cloudflare_only() // trust the edge's CF-Connecting-IP; refuse any other peer
//!         .deny_ip("198.51.100.0/24") // judges the visitor, not the edge
//!         .build()?;
//!     Ok(())
//! }
//! ```
//!
//! Without the connection side the layer still never calls the inner
//! service for a dropped request and never hangs: the dropped response's
//! body fails, so hyper abandons an HTTP/1 connection without writing. An
//! error is logged once, naming the fix. Close modes do not apply then, and
//! an HTTP/2 client sees its stream reset but may first receive a bare
//! `:status 444` head.
//!
//! # From nginx to the builder
//!
//! | nginx | builder |
//! |---|---|
//! | `server { listen 80 default_server; return 444; }` and `server_name example.com;` | `.server_name("example.com")` |
//! | `server_name *.example.com;` / `.example.com;` | `.server_name("*.example.com")` / `.server_name(".example.com")` |
//! | `deny 198.51.100.0/24;` | `.deny_ip("198.51.100.0/24")` |
//! | `allow 173.245.48.0/20; deny all;` (judging the client) | `.allow_ip("173.245.48.0/20").deny_ip("all")` |
//! | `allow` Cloudflare's ranges, `deny all;` (judging the connection, before `real_ip`) | `.trust_cloudflare_only()`, or `.only_from_peers(ranges)` for any CDN or load balancer |
//! | `set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on;` | `.trusted_proxy("10.0.0.0/8")` |
//! | `real_ip_header X-Real-IP;` | `.real_ip_header(RealIpHeader::XRealIp)` |
//! | `listen 80 proxy_protocol; set_real_ip_from 10.0.0.0/8; real_ip_header proxy_protocol;` | `.proxy_protocol_from("10.0.0.0/8")` (feature `proxy-protocol`) |
//! | `map $http_user_agent $bad_agent { ~*masscan 1; ~*python-requests 0; "" 1; }` | `.deny_user_agent("masscan").allow_user_agent("python-requests").drop_empty_user_agent(true)` |
//! | `limit_req_zone ... rate=10r/s; limit_req zone=z burst=20 nodelay;` | `.rate_limit(RateLimit::per_second(10).burst(20))` |
//! | `limit_req_status 429;` | `.rule_action(DropReason::RateLimited, Action::Respond(StatusCode::TOO_MANY_REQUESTS))` |
//! | `limit_req_zone $http_x_api_key zone=api:10m rate=10r/s;` | `.rate_limit_by("api", RateLimit::per_second(10), key)`, where `key` reads the header (see [`rate_limit_by`](NoResponseLayerBuilder::rate_limit_by)) |
//! | `location ~ ^/wp-login\.php { return 444; }` | `.deny_path(r"^/wp-login\.php")` |
//! | `if ($request_method = TRACE) { return 444; }` | `.custom_rule("trace", \|h\| h.method == Method::TRACE)` |
//! | `client_header_timeout 10s;` | `.header_timeout(Duration::from_secs(10))` |
//! | `client_body_timeout 10s;` | `.body_timeout(Duration::from_secs(10))` |
//! | `keepalive_timeout 75s;` | `.keepalive_timeout(Duration::from_secs(75))` (the default) |
//! | `send_timeout 60s;` | `.send_timeout(Duration::from_secs(60))` (the default) |
//! | `listen 443 ssl default_server; ssl_reject_handshake on;` | `layer.serve(tcp, app).tls(config)`: the served names judge each ClientHello's server name, and a refused client gets no byte at all, not even the alert (`tls_gate().sni_refusal(SniRefusal::UnrecognizedNameAlert)` sends nginx's) |
//! | `limit_conn addr 100;` | `layer.serve(...).max_connections_per_client(100)` (direct clients; a proxy's connections have `.max_connections_per_proxy(n)`) |
//! | fail2ban's `maxretry = 5` | `.ban_list(BanList::new(BanPolicy::new(5, window, ban_for)))` |
//!
//! # Testing
//!
//! An app behind the layer can be tested without a socket, with tower's
//! `oneshot`. A dropped request comes back as a response with status 444,
//! a [`RequestDropped`] marker ([`RequestDropped::of`] reads it) and a body
//! that fails when read; a server never sends it. The IP rules and the rate
//! limit need a peer: give one with axum's `MockConnectInfo`, added **after**
//! the layer so that it runs first, outside it.
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::extract::connect_info::MockConnectInfo;
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_no_response::{DropReason, NoResponseLayer, RequestDropped};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = NoResponseLayer::builder()
//!     .server_names(["example.com"])
//!     .deny_ip("203.0.113.0/24")
//!     .build()
//!     .unwrap();
//! let app = |peer: &str| {
//!     Router::new()
//!         .route("/", get(|| async { "ok" }))
//!         .layer(layer.clone())
//!         .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
//! };
//! let get = |host: &str| Request::get("/").header("host", host).body(Body::empty()).unwrap();
//!
//! let served = app("192.0.2.1:5000").oneshot(get("example.com")).await.unwrap();
//! assert_eq!(served.status(), StatusCode::OK);
//! assert!(RequestDropped::of(&served).is_none());
//!
//! let denied = app("203.0.113.9:5000").oneshot(get("example.com")).await.unwrap();
//! assert_eq!(RequestDropped::of(&denied).map(|d| d.reason()), Some(DropReason::IpDenied));
//!
//! let scanner = app("192.0.2.1:5000").oneshot(get("192.0.2.80")).await.unwrap();
//! assert_eq!(
//!     RequestDropped::of(&scanner).map(|d| d.reason()),
//!     Some(DropReason::HostIpLiteral)
//! );
//! # }
//! ```
//!
//! For what a client sees on the wire (zero bytes, a FIN or an RST), serve
//! the app on a loopback listener as in the first example.

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
// One audited module sets a socket option no safe API offers:
// `connection::defer_accept`.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alarm;
pub mod audit;
pub mod ban;
#[cfg(feature = "serde")]
pub mod config;
pub mod connection;
#[cfg(feature = "crowdsec")]
pub mod crowdsec;
mod error;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "tonic")]
pub mod grpc;
mod layer;
pub mod limit;
mod parse;
#[cfg(feature = "redis")]
pub mod redis;
pub mod rules;
pub mod server;
#[cfg(feature = "rustls")]
pub mod tls;

// The core names live at the root; everything else has one home, in its
// module.
pub use connection::RequestDropped;
pub use error::{BoxError, BuildError};
#[cfg(feature = "axum")]
pub use extract::ClientIpRejection;
pub use layer::{
    NoResponse, NoResponseBody, NoResponseLayer, NoResponseLayerBuilder, ResponseFuture, TimedBody,
};
pub use limit::rate::RateLimit;
pub use rules::client_ip::ClientIp;
pub use rules::reason::DropReason;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
