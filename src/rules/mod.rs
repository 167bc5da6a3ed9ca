//! The request-side rules: what a request is judged on, compiled once.
//!
//! Rules run in a fixed order, and the first one that matches, and is not in
//! dry-run, decides the request:
//!
//! 1. **Host**: `host_missing`, `host_invalid`, `host_ip_literal`, `host_unknown`.
//! 2. **Client IP**: `client_ip_unknown`, then `ip_deny`.
//! 3. **User-Agent**: `user_agent`, `user_agent_empty`.
//! 4. **Path**: `path`.
//! 5. **Custom rules**, in the order they were added.
//! 6. **Rate limit**: `rate_limit`, `rate_limit_full`, and with a shared
//!    store, `rate_limit_unavailable`.
//!
//! The rate limit runs last so that only requests every other rule accepted
//! count toward a client's budget, as in nginx's phase order: a scanner that
//! is dropped for its Host cannot use up a shared client's allowance.
//!
//! A rule in dry-run is evaluated fully; when it matches, an event records
//! what it would have done and evaluation goes on with the next rule.

pub(crate) mod client_ip;
pub(crate) mod custom;
pub(crate) mod host;
pub(crate) mod ip;
pub(crate) mod path;
mod patterns;
pub(crate) mod policy;
pub(crate) mod rate_limit;
mod reason;
pub(crate) mod shared_limit;
pub(crate) mod user_agent;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Request;

pub use client_ip::{CLOUDFLARE_RANGES, ClientIp, RealIpHeader};
pub use custom::RequestHead;
pub use policy::Action;
pub use rate_limit::RateLimit;
pub use reason::DropReason;
pub use shared_limit::{
    FailurePolicy, RateLimitStore, SharedRateLimit, StoreError, StoreFuture, StoreVerdict,
};

use crate::audit::stats::{Counters, Stats};
use custom::CustomRule;
use path::PathRules;
use policy::Policies;

use client_ip::RealIp;
use host::HostRules;
use ip::{IpAction, IpRules};
use rate_limit::{Limiter, Verdict};
use shared_limit::{SharedLimiter, Step, StoreCheck};
use user_agent::UserAgentRules;

/// A compiled, immutable rule set. Build it with
/// [`NoResponseLayer::builder`](crate::NoResponseLayer::builder); every
/// service made by the layer shares one behind an `Arc`.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) host: HostRules,
    pub(crate) ip: IpRules,
    pub(crate) real_ip: RealIp,
    pub(crate) user_agent: UserAgentRules,
    pub(crate) paths: PathRules,
    pub(crate) custom: Vec<CustomRule>,
    pub(crate) rate_limit: Option<RateLimiter>,
    pub(crate) policies: Policies,
    pub(crate) counters: Counters,
    pub(crate) ban_list: Option<crate::connection::ban::BanList>,
}

/// Where the rate limit's budget is kept.
#[derive(Debug)]
pub(crate) enum RateLimiter {
    /// In this process: governor's GCRA, the default.
    Local(Limiter),
    /// In a store shared with other replicas.
    Shared(SharedLimiter),
}

/// The outcome of judging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    /// The client the rules judged, when a peer address was known.
    pub client_ip: Option<IpAddr>,
    /// The enforced rule that stopped the request, or `None` to let it
    /// through. What it does (drop, or respond) is [`RuleSet::action`].
    pub drop: Option<DropReason>,
    /// The first rule in dry-run that matched, if any.
    pub would_drop: Option<DropReason>,
    /// How long the client should wait, when the rate limit matched.
    pub retry_after: Option<Duration>,
    /// The key to ask the shared rate-limit store about, when every other
    /// rule let the request through.
    shared_check: Option<IpAddr>,
}

impl RuleSet {
    /// Judges a request from its head and the socket peer. Allocation-free.
    ///
    /// `peer` is the TCP peer; the client IP is derived from it and, when the
    /// peer is a trusted proxy, from the real-IP header.
    ///
    /// With a [shared rate limit](SharedRateLimit) this judges every rule
    /// but the shared budget, which needs a round trip: the local pre-check
    /// runs, the store is not asked, and
    /// [`Decision::awaits_shared_limit`] says so.
    pub fn decide<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Decision {
        let mut would_drop = None;
        self.evaluate(request, peer, |reason, _| {
            would_drop.get_or_insert(reason);
        })
        .with_would_drop(would_drop)
    }

    /// [`decide`](Self::decide), calling `dry_run` with the client IP for
    /// every rule in dry-run that matched, in order.
    pub(crate) fn evaluate<B>(
        &self,
        request: &Request<B>,
        peer: Option<SocketAddr>,
        mut dry_run: impl FnMut(DropReason, Option<IpAddr>),
    ) -> Decision {
        let client_ip = peer.map(|p| self.real_ip.resolve(p.ip(), request.headers()));
        let mut retry_after = None;
        let mut report = |reason| dry_run(reason, client_ip);
        let (drop, shared_check) =
            match self.first_drop(request, client_ip, &mut retry_after, &mut report, true) {
                Ok(ask) => (None, ask),
                Err(reason) => (Some(reason), None),
            };
        Decision {
            client_ip,
            drop,
            would_drop: None,
            retry_after,
            shared_check,
        }
    }

    /// The rule that drops `request` outright, judged on every rule but the
    /// rate limit, for a serve loop that judges a connection's first request
    /// before hyper sees it. `None` whenever the layer must judge the request
    /// itself: nothing drops it, a rule in dry-run matched (its event is the
    /// layer's to emit), or the rule that matched answers with a status.
    #[cfg(feature = "server")]
    pub(crate) fn early_drop<B>(
        &self,
        request: &Request<B>,
        peer: SocketAddr,
    ) -> Option<(DropReason, IpAddr)> {
        let client_ip = self.real_ip.resolve(peer.ip(), request.headers());
        let mut dry_run_matched = false;
        let reason = self
            .first_drop(
                request,
                Some(client_ip),
                &mut None,
                &mut |_| dry_run_matched = true,
                false,
            )
            .err()?;
        (!dry_run_matched && self.action(reason) == Action::Drop).then_some((reason, client_ip))
    }

    /// The round trip to the shared store that a decision awaits.
    pub(crate) fn ask_shared(&self, key: IpAddr) -> Option<StoreCheck> {
        match &self.rate_limit {
            Some(RateLimiter::Shared(shared)) => Some(shared.ask(key)),
            _ => None,
        }
    }

    /// Applies the store's verdict: `Ok` lets the request through (a match
    /// in dry-run is reported first), `Err` names the rule that stops it and
    /// the wait to advertise.
    pub(crate) fn shared_verdict(
        &self,
        verdict: Verdict,
        mut dry_run: impl FnMut(DropReason),
    ) -> Result<(), (DropReason, Option<Duration>)> {
        let (outcome, wait) = Self::rate_outcome(verdict);
        self.enforce(outcome, &mut dry_run)
            .map_err(|reason| (reason, wait))
    }

    fn rate_outcome(verdict: Verdict) -> (Result<(), DropReason>, Option<Duration>) {
        match verdict {
            Verdict::Allow => (Ok(()), None),
            Verdict::OverLimit(wait) => (Err(DropReason::RateLimited), Some(wait)),
            Verdict::TableFull => (Err(DropReason::RateLimitFull), None),
            Verdict::Unavailable => (Err(DropReason::RateLimitUnavailable), None),
        }
    }

    /// What the rule that matched does.
    #[must_use]
    pub fn action(&self, reason: DropReason) -> Action {
        self.policies.get(reason).action
    }

    /// A snapshot of the counters: per rule, how many requests were
    /// dropped, answered or matched in dry-run, and how many were allowed.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// How many clients the in-process rate limiter tracks now, if there is
    /// one (with a shared store, the local pre-check's). Idle clients are
    /// evicted on a schedule, so this rises and falls with traffic, up to
    /// [`RateLimit::max_keys`].
    #[must_use]
    pub fn rate_limited_clients(&self) -> Option<usize> {
        match self.rate_limit.as_ref()? {
            RateLimiter::Local(limiter) => Some(limiter.len()),
            RateLimiter::Shared(shared) => shared.local_clients(),
        }
    }

    /// A matching rule in dry-run is reported and treated as not matching.
    fn enforce(
        &self,
        outcome: Result<(), DropReason>,
        dry_run: &mut impl FnMut(DropReason),
    ) -> Result<(), DropReason> {
        match outcome {
            Err(reason) if self.policies.get(reason).dry_run => {
                dry_run(reason);
                Ok(())
            }
            other => other,
        }
    }

    fn first_drop<B>(
        &self,
        request: &Request<B>,
        client_ip: Option<IpAddr>,
        retry_after: &mut Option<Duration>,
        dry_run: &mut impl FnMut(DropReason),
        rate_limit: bool,
    ) -> Result<Option<IpAddr>, DropReason> {
        let headers = request.headers();
        self.enforce(
            self.host.check(request.version(), request.uri(), headers),
            dry_run,
        )?;
        let needs_ip = !self.ip.is_empty() || self.rate_limit.is_some();
        let client_ip = match client_ip {
            None if needs_ip => {
                self.enforce(Err(DropReason::ClientIpUnknown), dry_run)?;
                None
            }
            ip => ip,
        };
        if let Some(ip) = client_ip {
            if self.ip.first_match(ip) == Some(IpAction::Deny) {
                self.enforce(Err(DropReason::IpDenied), dry_run)?;
            }
        }
        self.enforce(self.user_agent.check(headers), dry_run)?;
        self.enforce(self.paths.check(request.uri()), dry_run)?;
        if !self.custom.is_empty() {
            let head = RequestHead {
                method: request.method(),
                uri: request.uri(),
                version: request.version(),
                headers,
                client_ip,
            };
            for rule in &self.custom {
                if (rule.predicate)(&head) {
                    self.enforce(Err(DropReason::Custom(rule.name)), dry_run)?;
                }
            }
        }
        let (Some(limiter), Some(ip), true) = (&self.rate_limit, client_ip, rate_limit) else {
            return Ok(None);
        };
        let verdict = match limiter {
            RateLimiter::Local(limiter) => limiter.check(ip),
            RateLimiter::Shared(shared) => match shared.check(ip) {
                Step::Done(verdict) => verdict,
                Step::Ask(key) => return Ok(Some(key)),
            },
        };
        let (outcome, wait) = Self::rate_outcome(verdict);
        *retry_after = wait;
        self.enforce(outcome, dry_run).map(|()| None)
    }
}

impl Decision {
    /// Whether the request passed every rule but still awaits the shared
    /// rate-limit store's answer.
    #[must_use]
    pub fn awaits_shared_limit(&self) -> bool {
        self.shared_check.is_some()
    }

    pub(crate) fn shared_check(&self) -> Option<IpAddr> {
        self.shared_check
    }

    fn with_would_drop(mut self, would_drop: Option<DropReason>) -> Self {
        self.would_drop = would_drop;
        self
    }
}
