//! The per-rule counters as published through the `metrics` facade
//! (feature `metrics`); without the feature, handles that do nothing, so
//! the counters never branch on it.

/// The `metrics` names, documented in the `audit` module:
///
/// - `tower_no_response_requests_total{rule, action}`, a counter, where
///   `action` is `drop`, `respond` or `would_drop`;
/// - `tower_no_response_allowed_total`, a counter;
/// - `tower_no_response_connection_drops_total{rule}`, a counter of the
///   drops by the connection-level reasons;
/// - `tower_no_response_send_timeouts_total`, a counter of connections
///   closed because the client read nothing for the send timeout;
/// - `tower_no_response_bans_total{source}`, a counter of bans begun;
/// - `tower_no_response_rate_limit_store_up{part}`, a gauge.
///
/// The per-rule handles are registered on first use, with whatever
/// recorder is installed then, and reused after, so counting an allowed
/// request or a rule's outcome costs no lookup. The rest are rare events,
/// looked up each time.
#[cfg(feature = "metrics")]
mod published {
    use std::sync::OnceLock;

    use metrics::Counter;

    use crate::audit::Handling;

    pub(crate) const REQUESTS: &str = "tower_no_response_requests_total";
    pub(crate) const ALLOWED: &str = "tower_no_response_allowed_total";
    pub(crate) const CONNECTION_DROPS: &str = "tower_no_response_connection_drops_total";
    pub(crate) const BANS: &str = "tower_no_response_bans_total";
    pub(crate) const SEND_TIMEOUTS: &str = "tower_no_response_send_timeouts_total";
    pub(crate) const STORE_UP: &str = "tower_no_response_rate_limit_store_up";

    /// Gives each name its help text and unit, once per recorder that asks.
    pub(crate) fn describe() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            metrics::describe_counter!(
                REQUESTS,
                "Requests a rule dropped (action=drop), answered with a status (respond) or matched in dry-run (would_drop), by rule"
            );
            metrics::describe_counter!(ALLOWED, "Requests no rule stopped");
            metrics::describe_counter!(
                CONNECTION_DROPS,
                "Connections the connection side dropped itself, by reason: refused at accept, a request head or body that stalled, a banned client"
            );
            metrics::describe_counter!(BANS, "Clients banned, by where the ban came from");
            metrics::describe_counter!(
                SEND_TIMEOUTS,
                "Connections closed because the client accepted no byte of a response for the send timeout"
            );
            metrics::describe_gauge!(
                STORE_UP,
                "Whether the shared rate-limit store answers (1) or its circuit is open (0), by part"
            );
        });
    }

    pub(crate) fn connection_drop(rule: &'static str) {
        describe();
        metrics::counter!(CONNECTION_DROPS, "rule" => rule).increment(1);
    }

    pub(crate) fn send_timeout() {
        describe();
        metrics::counter!(SEND_TIMEOUTS).increment(1);
    }

    pub(crate) fn ban_begun(source: &'static str) {
        describe();
        metrics::counter!(BANS, "source" => source).increment(1);
    }

    pub(crate) fn store_up(part: Option<&str>, up: bool) {
        describe();
        let part = part.unwrap_or("store").to_owned();
        metrics::gauge!(STORE_UP, "part" => part).set(if up { 1.0 } else { 0.0 });
    }

    /// One rule's handles, one per action.
    #[derive(Debug, Default)]
    pub(crate) struct RuleHandles([OnceLock<Counter>; 3]);

    impl RuleHandles {
        pub(crate) fn count(&self, rule: &'static str, what: Handling) {
            self.0[what.index()]
                .get_or_init(|| {
                    describe();
                    metrics::counter!(REQUESTS, "rule" => rule, "action" => what.action())
                })
                .increment(1);
        }
    }

    #[derive(Debug, Default)]
    pub(crate) struct AllowedHandle(OnceLock<Counter>);

    impl AllowedHandle {
        pub(crate) fn increment(&self) {
            self.0
                .get_or_init(|| {
                    describe();
                    metrics::counter!(ALLOWED)
                })
                .increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use published::{
    AllowedHandle, RuleHandles, ban_begun, connection_drop, send_timeout, store_up,
};

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

    pub(crate) fn connection_drop(_: &'static str) {}

    pub(crate) fn send_timeout() {}

    pub(crate) fn ban_begun(_: &'static str) {}

    pub(crate) fn store_up(_: Option<&str>, _: bool) {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use unpublished::{
    AllowedHandle, RuleHandles, ban_begun, connection_drop, send_timeout, store_up,
};
