//! Telling a layer that wraps none of the routes: its listener judges
//! first requests at accept and lets them through, while the layer itself
//! never sees a request.

// Only the listener and the serve loop judge at accept; the layer notes
// its own judging whatever the features.
#![cfg_attr(not(any(feature = "axum", feature = "server")), allow(dead_code))]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A layer that has judged nothing this long after a listener let a first
/// request through, and this many of them, wraps none of the routes: a
/// request let through reaches the layer within milliseconds otherwise.
/// Low, so that the first few requests of a trial run with curl show it;
/// more than one, so that one request an outer middleware answered before
/// the layer (an authentication layer's `401`) does not.
pub(crate) const MISPLACED_AFTER: Duration = Duration::from_millis(250);
pub(crate) const MISPLACED_AFTER_PASSES: u32 = 3;

/// Whether the layer wraps the routes: when first requests judged at
/// accept and let through keep coming and the layer itself still judges
/// nothing, it wraps none of them.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// Whether the layer itself has judged a request yet.
    judged: AtomicBool,
    /// First requests judged at accept and let through.
    count: AtomicU32,
    /// When the first was let through.
    first: OnceLock<Instant>,
    warned: AtomicBool,
}

impl Placement {
    /// Notes that the layer judged a request: a plain load on every
    /// request, the store happens once.
    pub(crate) fn layer_judged(&self) {
        if !self.judged.load(Ordering::Relaxed) {
            self.judged.store(true, Ordering::Relaxed);
        }
    }

    /// Notes one first request let through at accept, and warns once when
    /// the layer has still judged nothing.
    pub(crate) fn passed_at_accept(&self) {
        let passes = self.count.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let first = *self.first.get_or_init(Instant::now);
        if passes >= MISPLACED_AFTER_PASSES
            && first.elapsed() >= MISPLACED_AFTER
            && !self.judged.load(Ordering::Relaxed)
            && !self.warned.swap(true, Ordering::Relaxed)
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
