//! The TLS gate (feature `rustls`): refuses a TLS client at its
//! ClientHello, before the server writes a byte, so a refused client sees
//! no ServerHello, no certificate and no alert.
//!
//! nginx's catch-all `default_server` answers unknown names with `return
//! 444`, but over TLS it must finish the handshake first, and the
//! certificate it sends names every host it serves: a scanner that connects
//! by address collects exactly that. nginx's `ssl_reject_handshake on`
//! refuses the handshake instead, with a TLS alert, which still tells the
//! scanner a TLS server is there. The gate reads the ClientHello itself,
//! judges it, and either closes the connection with nothing written or
//! hands the same bytes to rustls, which reads them as if from the socket.
//!
//! # What it judges
//!
//! | rule | refuses | identity |
//! |---|---|---|
//! | `tls_sni_missing` | no server name (SNI), as a client that connects by address sends, when the Host rules drop addresses: a served-names list, or [`drop_ip_literal_host`] | the TCP peer |
//! | `tls_sni_ip_literal` | a server name that is an IP address, likewise | the TCP peer |
//! | `tls_sni_unknown` | a server name outside the served names (same exact, `*.` and `.` forms as the Host rules) | the TCP peer |
//! | `tls_fingerprint` | a [`Ja4`] fingerprint matching [`deny_tls_fingerprint`] and no [`allow_tls_fingerprint`] | the TCP peer |
//! | `tls_client_hello_invalid` | first bytes that are not a ClientHello: plain HTTP, SSLv2-style, garbage, or a ClientHello split into more than 64 records (tools that split it to get past filters use a few) | the TCP peer |
//! | `peer_not_allowed`, `banned`, CrowdSec's | as at accept, checked again at the ClientHello | the TCP peer |
//! | `header_timeout` | part of a ClientHello, not finished within the [timeout] | the TCP peer |
//!
//! The gate sees only the TCP peer. A trusted proxy or an `only_from_peer`
//! peer is an edge, and the server-name and fingerprint rules never judge
//! it: a load balancer that re-encrypts often sends no server name, and its
//! fingerprint is its own, not its clients'. The layer's rules judge each
//! request it carries, by the real client. `drop_missing_host` alone does
//! not drop a hello without a server name, since the requests inside still
//! carry a Host for it to judge. Each refusal strikes the client toward a
//! ban, except `tls_client_hello_invalid` (a plain-HTTP request sent to the
//! TLS port by mistake looks like that) and the timeout.
//!
//! A refusal is counted, logged as a 444 event with the server name (`sni`)
//! and fingerprint (`ja4`) fields, and closed with the layer's close mode.
//! [`SniRefusal::UnrecognizedNameAlert`] answers the server-name rules with
//! nginx's alert instead. A client that sends nothing at all within the
//! timeout is closed in order and not logged: a browser's unused
//! preconnection looks like that.
//!
//! A client let through carries its [`ClientHello`] (server name, ALPN, JA4)
//! into every request as an extension, where handlers and custom rules can
//! read it.
//!
//! # Where it plugs in
//!
//! - The crate's serve loop: on by default with
//!   [`Serve::tls`](crate::server::Serve::tls); [`Serve::tls_gate`] sets the
//!   gate.
//! - tonic over TLS: [`NoResponseIncoming::tls`] with `layer.grpc()`.
//! - axum-server: `TlsGate::acceptor` (feature `axum-server`) runs before
//!   its `RustlsAcceptor`.
//! - Any accept loop, with [`TlsGate::admit`], such as tokio-rustls's. The
//!   stream it hands back replays the ClientHello to the TLS library:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tokio::net::TcpListener;
//! use tokio_rustls::TlsAcceptor;
//! use tokio_rustls::rustls::ServerConfig;
//! use tower_no_response::NoResponseLayer;
//!
//! # async fn run(config: Arc<ServerConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! let layer = NoResponseLayer::builder().server_names(["example.com"]).build()?;
//! let gate = layer
//!     .tls_gate()
//!     .deny_tls_fingerprint(["t13i1811h1_*_*"])
//!     .build()?;
//! let acceptor = TlsAcceptor::from(config);
//! let listener = TcpListener::bind("0.0.0.0:443").await?;
//! loop {
//!     let (tcp, peer) = listener.accept().await?;
//!     let (gate, acceptor) = (gate.clone(), acceptor.clone());
//!     tokio::spawn(async move {
//!         // Refused clients are closed and logged here.
//!         let Some(admitted) = gate.admit(tcp, peer).await else {
//!             return;
//!         };
//!         let (stream, hello) = admitted.into_parts();
//!         let Ok(tls) = acceptor.accept(stream).await else {
//!             return;
//!         };
//!         // Serve `tls` with hyper, putting `hello` and a
//!         // `ConnectionInfo` in each request.
//!         # drop((tls, hello));
//!     });
//! }
//! # }
//! ```
//!
//! [`drop_ip_literal_host`]: crate::NoResponseLayerBuilder::drop_ip_literal_host
//! [`deny_tls_fingerprint`]: TlsGateBuilder::deny_tls_fingerprint
//! [`allow_tls_fingerprint`]: TlsGateBuilder::allow_tls_fingerprint
//! [timeout]: TlsGateBuilder::timeout
//! [`Serve::tls_gate`]: crate::server::Serve::tls_gate
//! [`NoResponseIncoming::tls`]: crate::server::NoResponseIncoming

#[cfg(feature = "axum-server")]
mod axum_server;
mod client_hello;
mod fingerprint;
mod gate;
mod ja4;

#[cfg(feature = "axum-server")]
pub use axum_server::{GateAcceptor, WithClientHello};
pub use client_hello::{ClientHello, InvalidClientHello};
pub use gate::{Admitted, SniRefusal, TlsGate, TlsGateBuilder};
pub use ja4::{InvalidJa4, Ja4};
