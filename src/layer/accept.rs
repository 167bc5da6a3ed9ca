//! What the connection side (the layer's listener, the crate's serve loop,
//! tonic's incoming stream) asks of the layer: whether to refuse a peer at
//! accept, and how to judge a first request before any server has it.

use std::net::IpAddr;
#[cfg(any(feature = "axum", feature = "server"))]
use std::net::SocketAddr;
#[cfg(feature = "axum")]
use std::sync::Arc;
#[cfg(any(feature = "axum", feature = "server"))]
use std::sync::atomic::Ordering;

#[cfg(any(feature = "axum", feature = "server"))]
use http::Request;

use super::NoResponseLayer;
#[cfg(any(feature = "axum", feature = "server"))]
use super::service::record_drop;
#[cfg(any(feature = "axum", feature = "server"))]
use super::state::{MISPLACED_AFTER, MISPLACED_AFTER_PASSES};
use crate::audit::{Close, Handling};
#[cfg(feature = "axum")]
use crate::connection::registry::Registry;
#[cfg(any(feature = "axum", feature = "server"))]
use crate::rules::Action;
use crate::rules::{CloseMode, DropReason};

impl NoResponseLayer {
    /// Where the layer's listeners record their connections.
    #[cfg(feature = "axum")]
    pub(crate) fn connections(&self) -> &Arc<Registry> {
        &self.shared.connections
    }

    /// Why a connection from `peer` is refused before a byte is read, if
    /// it is, with the close mode, counted as the rule's drop: a peer
    /// outside `only_from_peer`, or a banned client that connects directly (an
    /// edge is never banned).
    #[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
    pub(crate) fn refusal_at_accept(&self, peer: IpAddr) -> Option<(DropReason, CloseMode)> {
        let current = self.shared.current.load();
        let ip = peer.to_canonical();
        let reason = if current.rules.refuses_peer(ip) {
            DropReason::PeerNotAllowed
        } else if current.is_banned(ip) {
            DropReason::Banned
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

    /// Judges a request head read by the serve loop before hyper has the
    /// connection; returns the close mode when a rule drops it, after
    /// counting and logging the drop as the layer would. Leaves to the
    /// layer whatever is not an enforced drop: a pass, a status answer, a
    /// match in dry-run (whose event is the layer's), or the rate limit.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn drop_early<B>(
        &self,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<CloseMode> {
        let current = self.shared.current.load();
        let judgement = current.with_bans(current.rules.judge_at_accept(request, peer));
        let stop = judgement.stop()?;
        if stop.action != Action::Drop || !judgement.dry_run.is_empty() {
            return None;
        }
        let mode = current.close_mode;
        record_drop(
            &current,
            request,
            stop.rule,
            judgement.client_ip,
            Some(peer),
            Close::Mode(mode),
            true,
        );
        Some(mode)
    }

    /// Notes a first request that a listener judged at accept and let
    /// through, and warns once when the layer itself keeps judging nothing:
    /// the layer was added before the routes, so the first request on each
    /// connection is judged at accept while every later one goes unjudged.
    #[cfg(any(feature = "axum", feature = "server"))]
    pub(crate) fn passed_early(&self) {
        let shared = &self.shared;
        let early = &shared.early;
        let passes = early
            .count
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let first = *early.first.get_or_init(std::time::Instant::now);
        if passes >= MISPLACED_AFTER_PASSES
            && first.elapsed() >= MISPLACED_AFTER
            && !shared.judged.load(Ordering::Relaxed)
            && !early.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                target: "tower_no_response",
                passes,
                "the layer's listener judged {passes} first requests at accept, but the layer \
                 itself has judged no request: it wraps none of the routes, so every later \
                 request on a kept-alive connection, and every HTTP/2 request, goes unjudged. \
                 Add the layer after the routes, `Router::new().route(..).layer(layer)`, or \
                 around the whole app; if it guards only part of the app, turn judging at \
                 accept off: `layer.listener_without_early_judging(tcp)` under `axum::serve`, \
                 `layer.serve(..).judge_early(false)` for the serve loop."
            );
        }
    }
}
