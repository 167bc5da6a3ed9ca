//! Per-rule counters: lock-free, read with [`NoResponseLayer::stats`], and
//! published through the `metrics` facade with the `metrics` feature.
//!
//! [`NoResponseLayer::stats`]: crate::NoResponseLayer::stats

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleStats {
    /// The rule's name.
    pub rule: &'static str,
    /// Requests the rule dropped (444).
    pub dropped: u64,
    /// Requests the rule answered with a status instead.
    pub responded: u64,
    /// Requests the rule matched in dry-run and let through.
    pub would_drop: u64,
}

/// A snapshot of every counter of a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Requests no enforced rule stopped.
    pub allowed: u64,
    /// One entry per rule, built-in rules first, in evaluation order.
    pub rules: Vec<RuleStats>,
}

impl Stats {
    /// The counts of the rule with this name.
    #[must_use]
    pub fn rule(&self, name: &str) -> Option<&RuleStats> {
        self.rules.iter().find(|r| r.rule == name)
    }
}

/// What happened to a request, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Dropped,
    Responded,
    WouldDrop,
}

impl Counted {
    const fn index(self) -> usize {
        match self {
            Self::Dropped => 0,
            Self::Responded => 1,
            Self::WouldDrop => 2,
        }
    }

    #[cfg(feature = "metrics")]
    const fn label(self) -> &'static str {
        match self {
            Self::Dropped => "drop",
            Self::Responded => "respond",
            Self::WouldDrop => "would_drop",
        }
    }
}

/// Counters by rule slot (see `Policies`), and the allowed count.
#[derive(Debug)]
pub(crate) struct Counters {
    names: Vec<&'static str>,
    counts: Vec<[AtomicU64; 3]>,
    allowed: AtomicU64,
    #[cfg(feature = "metrics")]
    exported: metrics_export::Handles,
}

impl Counters {
    pub(crate) fn new(names: &[&'static str]) -> Self {
        Self {
            names: names.to_vec(),
            counts: names.iter().map(|_| Default::default()).collect(),
            allowed: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            exported: metrics_export::Handles::new(names.len()),
        }
    }

    pub(crate) fn allowed(&self) {
        self.allowed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.allowed();
    }

    pub(crate) fn count(&self, slot: usize, what: Counted) {
        self.counts[slot][what.index()].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.count(slot, self.names[slot], what);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            allowed: load(&self.allowed),
            rules: self
                .names
                .iter()
                .zip(&self.counts)
                .map(|(rule, [dropped, responded, would_drop])| RuleStats {
                    rule,
                    dropped: load(dropped),
                    responded: load(responded),
                    would_drop: load(would_drop),
                })
                .collect(),
        }
    }
}

/// The `metrics` names, documented in the crate's README:
///
/// - `tower_no_response_requests_total{rule, action}`, a counter, where
///   `action` is `drop`, `respond` or `would_drop`;
/// - `tower_no_response_allowed_total`, a counter.
///
/// Handles are registered on first use, with whatever recorder is installed
/// then, and reused after, so counting costs no lookup.
#[cfg(feature = "metrics")]
mod metrics_export {
    use std::sync::OnceLock;

    use metrics::Counter;

    use super::Counted;

    pub(super) const REQUESTS: &str = "tower_no_response_requests_total";
    pub(super) const ALLOWED: &str = "tower_no_response_allowed_total";

    #[derive(Debug)]
    pub(super) struct Handles {
        allowed: OnceLock<Counter>,
        per_rule: Vec<[OnceLock<Counter>; 3]>,
    }

    impl Handles {
        pub(super) fn new(rules: usize) -> Self {
            Self {
                allowed: OnceLock::new(),
                per_rule: (0..rules).map(|_| Default::default()).collect(),
            }
        }

        pub(super) fn allowed(&self) {
            self.allowed
                .get_or_init(|| metrics::counter!(ALLOWED))
                .increment(1);
        }

        pub(super) fn count(&self, slot: usize, rule: &'static str, what: Counted) {
            self.per_rule[slot][what.index()]
                .get_or_init(
                    || metrics::counter!(REQUESTS, "rule" => rule, "action" => what.label()),
                )
                .increment(1);
        }
    }
}
