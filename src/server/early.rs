//! Judging a connection's first request before hyper sets the connection
//! up: a drop then costs an accept, one read and a close.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::drop_connection;
use crate::NoResponseLayer;
use crate::connection::AbortableStream;
use crate::connection::early::{Early, judge_now};
use crate::rules::{CloseMode, DropReason};

/// Waits for the client's first bytes, within the header timeout, and
/// judges them before hyper has the connection.
pub(super) async fn judge_when_read(
    stream: TcpStream,
    layer: &NoResponseLayer,
    peer: SocketAddr,
    header_timeout: Option<Duration>,
    close_mode: CloseMode,
) -> Early {
    let readable = stream.readable();
    let ready = match header_timeout {
        Some(limit) => match tokio::time::timeout(limit, readable).await {
            Ok(ready) => ready,
            Err(_) => {
                // Not one byte in time: what hyper would drop anyway.
                let stream = AbortableStream::new(stream);
                drop_connection(stream.handle(), peer, close_mode, DropReason::HeaderTimeout);
                return Early::Done;
            }
        },
        None => readable.await,
    };
    if ready.is_err() {
        return Early::Done;
    }
    judge_now(stream, peer, layer)
}
