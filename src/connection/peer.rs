//! Where the layer reads the peer when no serve loop of the crate's put a
//! `ConnectionInfo` in the request.

use std::net::SocketAddr;

use http::Extensions;

/// The peer axum's `ConnectInfo<SocketAddr>` names, or, in tests served
/// with `oneshot`, its `MockConnectInfo<SocketAddr>`.
#[cfg(feature = "axum")]
pub(crate) fn connect_info(extensions: &Extensions) -> Option<SocketAddr> {
    use axum::extract::connect_info::{ConnectInfo, MockConnectInfo};
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|MockConnectInfo(peer)| *peer)
        })
}

/// Without axum there is no connect info to read.
#[cfg(not(feature = "axum"))]
pub(crate) fn connect_info(_: &Extensions) -> Option<SocketAddr> {
    None
}
