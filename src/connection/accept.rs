//! What every accept side (the crate's serve loop, the layer's listener,
//! tonic's incoming stream) does before it reads a byte.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{AbortableStream, CloseMode, ConnectionHandle};
use crate::DropReason;
use crate::audit::{Close, DropEvent, Handling};

impl crate::NoResponseLayer {
    /// What every accept side does before it reads a byte: refuses a peer
    /// outside `only_from_peer`, and a banned client that connects directly.
    /// Hands the stream back when it may be served.
    pub(crate) fn screen_at_accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TcpStream> {
        match self.refusal_at_accept(peer.ip()) {
            None => Some(stream),
            Some((reason, mode)) => {
                refuse(stream, peer, mode, reason);
                None
            }
        }
    }
}

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
        }
        .emit();
    }
}
