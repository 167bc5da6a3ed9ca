//! TLS in the serve loop (feature `rustls`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use crate::connection::AbortableStream;
use crate::connection::drop_connection;
use crate::rules::{CloseMode, DropReason};
use crate::tls::TlsGate;

/// The serve loop's TLS: rustls's configuration, and the gate that judges
/// each ClientHello first, unless it was turned off.
#[derive(Clone)]
pub(super) struct TlsSetup {
    pub(super) config: Arc<ServerConfig>,
    pub(super) gate: Option<TlsGate>,
    /// With early judging on: the layer that judges the first request
    /// inside TLS before hyper has the connection.
    pub(super) judge_first: Option<crate::NoResponseLayer>,
}

/// The gate the serve loop uses.
#[derive(Debug, Clone, Default)]
pub(super) enum GateSetting {
    /// The layer's own: its Host rules and peer refusals.
    #[default]
    Layer,
    Off,
    Custom(TlsGate),
}

impl GateSetting {
    pub(super) fn resolve(self, layer: &crate::NoResponseLayer) -> Option<TlsGate> {
        match self {
            Self::Layer => Some(TlsGate::of(layer)),
            Self::Off => None,
            Self::Custom(gate) => Some(gate),
        }
    }
}

/// Runs the handshake in the connection's own task, so a slow client never
/// holds up the accept loop. A client that has not finished it within
/// `limit` is dropped as `header_timeout`; a failed handshake is rustls's to
/// answer, with an alert.
pub(super) async fn handshake(
    config: Arc<ServerConfig>,
    io: AbortableStream,
    limit: Duration,
    peer: SocketAddr,
    close_mode: CloseMode,
) -> Option<TlsStream<AbortableStream>> {
    let handle = io.handle().clone();
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(io);
    match crate::alarm::within(limit, handshake).await {
        Some(done) => done.ok(),
        None => {
            // Trip first: the stream, still inside the handshake, then
            // closes with the close mode when it is dropped.
            drop_connection(&handle, peer, close_mode, DropReason::HeaderTimeout);
            None
        }
    }
}
