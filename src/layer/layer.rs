//! [`NoResponseLayer`]: the tower `Layer`, its reload and its accessors,
//! and what the connection side asks of it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;
use http::Request;
use tower_layer::Layer;

use super::NoResponseLayerBuilder;
use super::builder::Config;
use super::service::{NoResponse, RulesInForce};
use super::state::{Compiled, LayerState};
use crate::audit::stats::Stats;
use crate::ban::BanList;
use crate::connection::Placement;
use crate::error::BuildError;
use crate::rules::{CloseMode, Judgement, RuleSet};

/// A tower [`Layer`](tower_layer::Layer) that drops unwanted requests the way nginx's `return 444` does:
/// the inner service is never called and the connection closes without a
/// byte of response.
///
/// Build one with [`NoResponseLayer::builder`]. Clones share one compiled
/// rule set, which [`reload`](Self::reload) swaps for all of them at once,
/// and the runtime state beside it: the rate limiter's budgets, the
/// counters, the ban list and the connections its listeners accepted.
#[derive(Clone)]
pub struct NoResponseLayer {
    pub(crate) shared: Arc<LayerState>,
}

impl NoResponseLayer {
    /// Starts a rule set with no rules.
    pub fn builder() -> NoResponseLayerBuilder {
        NoResponseLayerBuilder::default()
    }

    pub(crate) fn new(config: Config) -> Result<Self, BuildError> {
        Ok(Self {
            shared: Arc::new(LayerState {
                current: ArcSwap::from_pointee(Compiled::new(config, None)?),
                connections: Arc::default(),
                warned_no_connection: AtomicBool::new(false),
                placement: Placement::default(),
            }),
        })
    }

    /// Replaces the configuration (rules, actions, dry-run, close mode) for
    /// every service made by this layer or its clones, atomically and
    /// without a restart. Requests already judged finish under the rules
    /// they were judged by. Each service keeps the rule set it last judged
    /// by until its next request, so an idle connection holds the old rules
    /// (and a rate limiter the reload replaced) in memory until it sends
    /// another request or closes.
    ///
    /// What the layer has learned survives where it still applies:
    ///
    /// - **Counters** carry over by rule name. A rule the new configuration
    ///   drops leaves [`stats`](Self::stats) with it; one it adds starts at
    ///   zero.
    /// - **Rate budgets** survive when the new rate limit is the same as the
    ///   old one (rate, burst, IPv6 prefix, key cap, eviction interval) and,
    ///   for a shared limit, uses the same store and settings, which also
    ///   keeps the store's health. A changed limit starts every client with
    ///   a full budget, since budgets earned under one rate mean nothing
    ///   under another.
    /// - **Bans** survive: a new configuration without a ban list keeps the
    ///   current one, and one with a ban list uses that list.
    ///
    /// # Errors
    /// The new configuration's first bad value; the old one stays in force.
    pub fn reload(&self, builder: NoResponseLayerBuilder) -> Result<(), BuildError> {
        let config = builder.compile()?;
        let current = self.shared.current.load();
        let next = Compiled::new(config, Some(&current))?;
        self.shared.current.store(Arc::new(next));
        Ok(())
    }

    /// [`reload`](Self::reload)s with `builder`, made from a document,
    /// keeping what a document cannot hold; see
    /// [`reload_config`](Self::reload_config).
    #[cfg(feature = "serde")]
    pub(crate) fn reload_document(
        &self,
        builder: NoResponseLayerBuilder,
    ) -> Result<(), BuildError> {
        let current = self.shared.current.load();
        self.reload(builder.keep_code_parts(&current))
    }

    /// The rules in force now.
    #[must_use]
    pub fn rules(&self) -> Arc<RuleSet> {
        Arc::clone(&self.shared.current.load().rules)
    }

    /// Judges a request as the layer would, with the rules in force and the
    /// in-process rate limiter, and **spends** a request's worth of the
    /// client's rate budget, as the layer does; it counts and logs nothing.
    /// For tests, benches and tools; [`RuleSet::judge`], on
    /// [`rules`](Self::rules), judges without spending. A judgement still
    /// at [`Verdict::RateLimit`](crate::rules::Verdict::RateLimit) awaits the shared store, which this does
    /// not ask.
    pub fn judge_and_spend<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Judgement {
        self.shared.current.load().judge(request, peer).0
    }

    /// How dropped connections are closed now.
    #[must_use]
    pub fn close_mode(&self) -> CloseMode {
        self.shared.current.load().close_mode
    }

    /// The header timeout the connection side applies, if any; see
    /// [`NoResponseLayerBuilder::header_timeout`].
    #[must_use]
    pub fn header_timeout(&self) -> Option<Duration> {
        self.shared.current.load().header_timeout
    }

    /// How long the connection side keeps an idle kept-alive connection
    /// open; see [`NoResponseLayerBuilder::keepalive_timeout`].
    #[must_use]
    pub fn keepalive_timeout(&self) -> Duration {
        self.shared.current.load().keepalive_timeout
    }

    /// How long a write may wait for the client to read before the
    /// connection is closed; see [`NoResponseLayerBuilder::send_timeout`].
    #[must_use]
    pub fn send_timeout(&self) -> Duration {
        self.shared.current.load().send_timeout
    }

    /// The longest wait for the next part of a request body; see
    /// [`NoResponseLayerBuilder::body_timeout`].
    #[must_use]
    pub fn body_timeout(&self) -> Option<Duration> {
        self.shared.current.load().body_timeout
    }

    /// A snapshot of the counters: per rule in force, requests dropped,
    /// answered and matched in dry-run, and requests allowed.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.current.load().counters.snapshot()
    }

    /// How many clients the in-process rate limiter tracks now, if there is
    /// one (with a shared store, the local pre-check's). Idle clients are
    /// evicted on a schedule, so this rises and falls with traffic, up to
    /// [`RateLimit::max_keys`](crate::RateLimit::max_keys).
    #[must_use]
    pub fn rate_limited_clients(&self) -> Option<usize> {
        self.shared.current.load().limiter.as_ref()?.clients()
    }

    /// The ban list in force, if any.
    #[must_use]
    pub fn ban_list(&self) -> Option<BanList> {
        self.shared.current.load().ban_list.clone()
    }
}

impl fmt::Debug for NoResponseLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.shared.current.load();
        f.debug_struct("NoResponseLayer")
            .field("rules", &current.rules)
            .field("close_mode", &current.close_mode)
            .field("limiter", &current.limiter)
            .field("ban_list", &current.ban_list)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for NoResponseLayer {
    type Service = NoResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NoResponse {
            inner,
            current: Cache::new(RulesInForce(Arc::clone(&self.shared))),
            shared: Arc::clone(&self.shared),
        }
    }
}
