//! The peer the load bench compares the crate with: the same app as the
//! demo (every path answers `200 ok`), rate limited by `tower_governor` alone,
//! keyed by the leftmost `X-Forwarded-For` address (its
//! `SmartIpKeyExtractor`), at the demo's rate: 10 requests a second with a
//! burst of 20, nginx's `limit_req rate=10r/s burst=20 nodelay`.
//!
//! ```text
//! cargo run --release --example governor_peer -- [--listen ADDR]
//! ```
//!
//! Served exactly as the demo serves: `axum::serve` from a worker thread,
//! with `ConnectInfo<SocketAddr>` for governor's fallback key, and the
//! middleware wrapped around the whole `Router`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::SmartIpKeyExtractor;

#[tokio::main]
async fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:8446".parse().expect("literal");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next().map(|v| v.parse())) {
            ("--listen", Some(Ok(addr))) => listen = addr,
            _ => {
                eprintln!("usage: governor_peer [--listen ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    let config = GovernorConfigBuilder::default()
        .per_millisecond(100)
        // nginx's burst=20 lets 21 requests through at once.
        .burst_size(21)
        .key_extractor(SmartIpKeyExtractor)
        .finish()
        .expect("a valid governor configuration");
    // Wrapped around the whole Router, as the demo wraps its layer, so the
    // two differ by their middleware alone (`Router::layer` would add axum's
    // per-route boxing to both).
    let app = tower::ServiceBuilder::new()
        .map_response(axum::response::IntoResponse::into_response)
        .layer(GovernorLayer::new(Arc::new(config)))
        .service(Router::new().fallback(|| async { "ok" }));
    eprintln!("listening on http://{listen} (axum + tower_governor)");
    let served = tokio::spawn(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .await
    })
    .await
    .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}
