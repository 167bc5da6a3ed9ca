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
//! - [`rules`]: what a request is judged on: Host, client IP (the real client
//!   behind trusted proxies, from the [`RealIpHeader`] you choose),
//!   User-Agent and a rate limit with bounded memory, compiled once into a
//!   [`RuleSet`].
//! - [`connection`]: how a drop reaches the socket. A tower service can only
//!   return a response, so the connection side is made from the layer and
//!   shares its state: [`NoResponseLayer::listener`] for `axum::serve`,
//!   [`NoResponseLayer::serve`] for the crate's own serve loop, and
//!   `NoResponseLayer::incoming` with `NoResponseLayer::grpc` for tonic
//!   (feature `tonic`, see `grpc`). On a drop the layer trips the
//!   connection's [`ConnectionHandle`] before any response exists, and the
//!   [`AbortableStream`] refuses every write and closes with the layer's
//!   [`CloseMode`].
//! - [`audit`]: the 444 event that records every drop.
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
//! to a real client.
//!
//! Without the connection side the layer still never calls the inner
//! service for a dropped request and never hangs: the dropped response's
//! body fails, so hyper abandons an HTTP/1 connection without writing. An
//! error is logged once, naming the fix. Close modes do not apply then, and
//! an HTTP/2 client sees its stream reset but may first receive a bare
//! `:status 444` head.

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod audit;
mod body;
mod builder;
#[cfg(feature = "serde")]
pub mod config;
pub mod connection;
mod error;
#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "tonic")]
pub mod grpc;
mod layer;
mod limit;
#[cfg(feature = "redis")]
pub mod redis;
pub mod rules;

pub use audit::{RuleStats, Stats};
pub use body::{BoxError, NoResponseBody, RequestDropped};
pub use builder::NoResponseLayerBuilder;
#[cfg(feature = "axum")]
pub use connection::NoResponseListener;
pub use connection::{AbortableStream, CloseMode, ConnectionHandle, ConnectionInfo};
pub use error::BuildError;
#[cfg(feature = "axum")]
pub use extract::ClientIpRejection;
pub use layer::{NoResponse, NoResponseLayer, ResponseFuture};
pub use rules::{
    Action, ClientIp, DropReason, DryRunHits, Judgement, RateLimit, RealIpHeader, RequestHead,
    RuleSet, Stop, Verdict,
};

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
