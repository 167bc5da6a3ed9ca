//! How a connection side closes a connection it refuses or drops itself,
//! and logs it, once.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{AbortableStream, CloseMode, ConnectionHandle};
use crate::DropReason;
use crate::audit::{Close, DropEvent, Handling};

/// Closes a connection before reading from it, and logs it as a 444.
pub(crate) fn refuse(stream: TcpStream, peer: SocketAddr, mode: CloseMode, reason: DropReason) {
    drop_connection(AbortableStream::new(stream).handle(), peer, mode, reason);
}

/// Aborts a connection the loop itself drops and logs it, once: a handle
/// already tripped by the layer has had its event.
pub(crate) fn drop_connection(
    handle: &ConnectionHandle,
    peer: SocketAddr,
    mode: CloseMode,
    reason: DropReason,
) {
    if handle.abort(mode) {
        DropEvent {
            rule: reason,
            handling: Handling::Drop(Close::Mode(mode)),
            client_ip: Some(peer.ip().to_canonical()),
            peer_addr: Some(peer),
            request: None,
            hello: None,
        }
        .emit();
    }
}
