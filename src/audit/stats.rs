//! Per-rule counters: lock-free, read with [`NoResponseLayer::stats`], and
//! published through the `metrics` facade with the `metrics` feature.
//!
//! [`NoResponseLayer::stats`]: crate::NoResponseLayer::stats

use std::sync::Arc;

use super::{Handling, export};
use crate::rules::RuleName;
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
    /// One entry per rule in force, built-in rules first, in evaluation
    /// order, then custom rules and keyed limits in the order added. A
    /// built-in rule that this configuration never applies (`path` without
    /// any `deny_path`) is not listed.
    pub rules: Vec<RuleStats>,
}

impl Stats {
    /// The counts of a rule in force: a built-in rule by its
    /// [`DropReason`](crate::DropReason), any rule by its name.
    #[must_use]
    pub fn rule(&self, rule: impl Into<RuleName>) -> Option<&RuleStats> {
        let rule = rule.into();
        self.rules.iter().find(|r| r.rule == rule.as_str())
    }
}

impl Handling {
    /// The slot of each handling in a rule's counts.
    pub(super) const fn index(self) -> usize {
        match self {
            Self::Drop(_) => 0,
            Self::Respond(_) => 1,
            Self::WouldDrop => 2,
        }
    }
}

/// Counters by rule slot (see `Policies`), and the allowed count.
///
/// Each rule's counts sit in a cell of their own, so that a reload can hand
/// the cells of the rules it keeps to the new rule set: counts survive a
/// reload, by rule name, and requests still finishing under the old rules
/// count into the same cells.
#[derive(Debug)]
pub(crate) struct Counters {
    cells: Vec<Arc<RuleCell>>,
    /// Whether each slot's rule is in force, and so listed by `snapshot`.
    listed: Vec<bool>,
    allowed: Arc<AllowedCell>,
}

#[derive(Debug)]
struct RuleCell {
    rule: &'static str,
    counts: [AtomicU64; 3],
    exported: export::RuleHandles,
}

#[derive(Debug, Default)]
struct AllowedCell {
    count: AtomicU64,
    exported: export::AllowedHandle,
}

impl Counters {
    /// Counters for `names`, in slot order, carrying over the cells of
    /// `previous` for every name they share.
    pub(crate) fn new(
        names: &[&'static str],
        listed: Vec<bool>,
        previous: Option<&Counters>,
    ) -> Self {
        let cells = names
            .iter()
            .map(|&rule| {
                previous
                    .and_then(|p| p.cells.iter().find(|c| c.rule == rule))
                    .map_or_else(
                        || {
                            Arc::new(RuleCell {
                                rule,
                                counts: Default::default(),
                                exported: Default::default(),
                            })
                        },
                        Arc::clone,
                    )
            })
            .collect();
        let allowed = previous.map_or_else(Arc::default, |p| Arc::clone(&p.allowed));
        Self {
            cells,
            listed,
            allowed,
        }
    }

    pub(crate) fn allowed(&self) {
        self.allowed.count.fetch_add(1, Ordering::Relaxed);
        self.allowed.exported.increment();
    }

    pub(crate) fn count(&self, slot: usize, what: Handling) {
        let cell = &self.cells[slot];
        cell.counts[what.index()].fetch_add(1, Ordering::Relaxed);
        cell.exported.count(cell.rule, what);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            allowed: load(&self.allowed.count),
            rules: self
                .cells
                .iter()
                .zip(&self.listed)
                .filter(|(_, listed)| **listed)
                .map(|(cell, _)| {
                    let [dropped, responded, would_drop] = &cell.counts;
                    RuleStats {
                        rule: cell.rule,
                        dropped: load(dropped),
                        responded: load(responded),
                        would_drop: load(would_drop),
                    }
                })
                .collect(),
        }
    }
}
