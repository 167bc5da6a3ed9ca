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

use tokio::net::TcpListener;
use tonic::transport::Server;
use tower_no_response::NoResponseLayer;

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
    // One layer gives both halves: the service side and the accept stream.
    Server::builder()
        .layer(layer.grpc())
        .add_service(health)
        .serve_with_incoming(layer.incoming(listener))
        .await?;
    Ok(())
}
