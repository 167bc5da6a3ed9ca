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
    /// (a CrowdSec decision).
    pub(crate) fn refusal_at_accept(&self, peer: IpAddr) -> Option<(DropReason, CloseMode)> {
        let current = self.shared.current.load();
        let ip = peer.to_canonical();
        let reason = if current.rules.refuses_peer(ip) {
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
        match self.refusal_at_accept(peer.ip()) {
            None => Some(stream),
            Some((reason, mode)) => {
                refuse(stream, peer, mode, reason);
                None
            }
        }
    }
}
