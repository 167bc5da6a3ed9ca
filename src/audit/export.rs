//! The per-rule counters as published through the `metrics` facade
//! (feature `metrics`); without the feature, handles that do nothing, so
//! the counters never branch on it.

/// The `metrics` names, documented in the crate's README:
///
/// - `tower_no_response_requests_total{rule, action}`, a counter, where
///   `action` is `drop`, `respond` or `would_drop`;
/// - `tower_no_response_allowed_total`, a counter.
///
/// Handles are registered on first use, with whatever recorder is installed
/// then, and reused after, so counting costs no lookup.
#[cfg(feature = "metrics")]
mod published {
    use std::sync::OnceLock;

    use metrics::Counter;

    use crate::audit::Handling;

    pub(crate) const REQUESTS: &str = "tower_no_response_requests_total";
    pub(crate) const ALLOWED: &str = "tower_no_response_allowed_total";

    /// One rule's handles, one per action.
    #[derive(Debug, Default)]
    pub(crate) struct RuleHandles([OnceLock<Counter>; 3]);

    impl RuleHandles {
        pub(crate) fn count(&self, rule: &'static str, what: Handling) {
            self.0[what.index()]
                .get_or_init(
                    || metrics::counter!(REQUESTS, "rule" => rule, "action" => what.action()),
                )
                .increment(1);
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct AllowedHandle(OnceLock<Counter>);

    impl AllowedHandle {
        pub(crate) fn increment(&self) {
            self.0
                .get_or_init(|| metrics::counter!(ALLOWED))
                .increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use published::{AllowedHandle, RuleHandles};

#[cfg(not(feature = "metrics"))]
mod unpublished {
    use crate::audit::Handling;

    #[derive(Debug, Default)]
    pub(crate) struct RuleHandles;

    impl RuleHandles {
        pub(crate) fn count(&self, _: &'static str, _: Handling) {}
    }

    #[derive(Debug, Default)]
    pub(crate) struct AllowedHandle;

    impl AllowedHandle {
        pub(crate) fn increment(&self) {}
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) use unpublished::{AllowedHandle, RuleHandles};
