//! What every accept side (the crate's serve loop, the layer's listener,
//! tonic's incoming stream) does before it reads a byte.

use std::net::{IpAddr, SocketAddr};

use crate::audit::{Close, Handling};
use crate::connection::{Accepted, refuse};
use crate::rules::{CloseMode, DropReason};

impl crate::NoResponseLayer {
    /// Why a connection from `peer` is refused before a byte is read, if
    /// it is, with the close mode, counted as the rule's drop: a peer
    /// outside `only_from_peer`, a banned client that connects directly (an
    /// edge is never banned), or one a rule that judges bare peers refuses
    /// (a CrowdSec decision). A client `behind_balancer` came in a PROXY
    /// protocol header: `only_from_peer` judged the balancer, its TCP peer.
    pub(crate) fn refusal_at_accept(
        &self,
        peer: IpAddr,
        behind_balancer: bool,
    ) -> Option<(DropReason, CloseMode)> {
        let current = self.shared.current.load();
        let ip = peer.to_canonical();
        let reason = if !behind_balancer && current.rules.refuses_peer(ip) {
            DropReason::PeerNotAllowed
        } else if current.is_banned(ip) {
            DropReason::Banned
        } else if let Some(rule) = current.rules.custom_refuses_peer(ip) {
            DropReason::Custom(rule)
        } else {
            return None;
        };
        let mode = current.close_mode;
        if let Some(slot) = current.rules.policies.slot_of(reason) {
            current
                .counters
                .count(slot, Handling::Drop(Close::Mode(mode)));
        }
        Some((reason, mode))
    }

    /// What every accept side does before it reads a byte: refuses a peer
    /// outside `only_from_peer`, and a banned client that connects directly.
    /// Hands the stream back when it may be served.
    pub(crate) fn screen_at_accept<S: Accepted>(&self, stream: S, peer: SocketAddr) -> Option<S> {
        self.screen(stream, peer, false)
    }

    /// [`screen_at_accept`](Self::screen_at_accept) for the client a
    /// balancer's PROXY protocol header named.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn screen_behind_balancer<S: Accepted>(
        &self,
        stream: S,
        client: SocketAddr,
    ) -> Option<S> {
        self.screen(stream, client, true)
    }

    fn screen<S: Accepted>(&self, stream: S, peer: SocketAddr, behind_balancer: bool) -> Option<S> {
        match self.refusal_at_accept(peer.ip(), behind_balancer) {
            None => Some(stream),
            Some((reason, mode)) => {
                refuse(stream, peer, mode, reason);
                None
            }
        }
    }

    /// Whether a connection from `peer` begins with a PROXY protocol
    /// header: `peer` is one of the `proxy_protocol_from` balancers.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn sends_proxy_header(&self, peer: SocketAddr) -> bool {
        self.shared
            .current
            .load()
            .rules
            .sends_proxy_header(peer.ip())
    }

    /// How long a balancer's header may take, and how a connection that
    /// gets it wrong is closed.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn proxy_header_policy(&self) -> crate::connection::proxy_header::Policy {
        crate::connection::proxy_header::Policy {
            limit: self
                .header_timeout()
                .unwrap_or(std::time::Duration::from_secs(10)),
            mode: self.close_mode(),
        }
    }

    /// Whether the layer reads PROXY protocol headers from balancers.
    #[cfg(feature = "proxy-protocol")]
    pub(crate) fn reads_proxy_headers(&self) -> bool {
        self.shared.current.load().rules.reads_proxy_headers()
    }

    /// Watches a connection from a peer that is not a balancer for a PROXY
    /// header, while the layer reads them from balancers.
    #[cfg(all(feature = "proxy-protocol", feature = "axum"))]
    pub(crate) fn guard_proxy_header(
        &self,
        stream: crate::connection::AbortableStream,
        peer: SocketAddr,
    ) -> crate::connection::AbortableStream {
        if self.reads_proxy_headers() {
            stream.refusing_proxy_headers(peer, self.close_mode())
        } else {
            stream
        }
    }
}
