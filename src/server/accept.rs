//! What every accept side (the crate's serve loop, the layer's listener,
//! tonic's incoming stream) does before it reads a byte.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::connection::refuse;

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
