//! A gRPC server (tonic's own `Server`) behind the layer.
//!
//! ```text
//! cargo run --example tonic --features tonic -- [--listen ADDR]
//! ```
//!
//! It serves the standard gRPC health service. Calls whose `user-agent`
//! matches `grpcurl` or `masscan` are dropped: with `grpcurl`, for example,
//!
//! ```text
//! grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! fails with a stream reset (CANCEL) instead of an answer, while other
//! clients on the same connection are unaffected. Each drop prints one
//! `status=444` line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tower_no_response::{AbortableStream, NoResponseLayer};

/// Accepted connections, wrapped so the layer can abort them; tonic reads
/// each one's `ConnectionInfo` through `Connected`.
struct Incoming(TcpListener);

impl Stream for Incoming {
    type Item = std::io::Result<AbortableStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .poll_accept(cx)
            .map(|accepted| Some(accepted.map(|(stream, _)| AbortableStream::new(stream))))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:50051".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr.parse()?,
            _ => return Err("usage: tonic [--listen ADDR]".into()),
        }
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let layer = NoResponseLayer::builder()
        .deny_user_agents(["grpcurl", "masscan"])
        .build()?;
    let listener = TcpListener::bind(listen).await?;
    eprintln!("gRPC health service on {listen}");
    Server::builder()
        .layer(layer)
        .add_service(health)
        .serve_with_incoming(Incoming(listener))
        .await?;
    Ok(())
}
