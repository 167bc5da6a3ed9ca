//! The request-side rules: what a request is judged on, compiled once.
//!
//! Rules run in a fixed order, and the first one that matches, and is not in
//! dry-run, decides the request:
//!
//! 1. **Host**: `host_missing`, `host_invalid`, `host_mismatch`, `host_ip_literal`,
//!    `host_unknown`.
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
//!
//! Judging is pure: [`RuleSet::judge`] reads a request head and the peer
//! and returns a [`Judgement`], with no clock, runtime, logging or state.
//! The rate limit's budget is runtime state, kept by the layer beside the
//! rules, so the rules end at "ask the limiter about this client"
//! ([`Verdict::RateLimit`]), and the layer applies the limiter's answer.

pub(crate) mod client_ip;
pub(crate) mod custom;
pub(crate) mod host;
pub(crate) mod ip;
pub(crate) mod path;
mod patterns;
pub(crate) mod policy;
mod reason;
pub(crate) mod user_agent;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Request;

pub use client_ip::{CLOUDFLARE_RANGES, ClientIp, RealIpHeader};
pub use custom::RequestHead;
pub use policy::{Action, CloseMode};
pub use reason::DropReason;

use custom::CustomRule;
use path::PathRules;
use policy::Policies;

use client_ip::RealIp;
use host::HostRules;
use ip::{IpAction, IpRules};
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
    /// Whether a rate limit follows the other rules.
    pub(crate) rate_limited: bool,
    pub(crate) policies: Policies,
}

/// What the rules make of one request: [`RuleSet::judge`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Judgement {
    /// The client the rules judged, when a peer address was known.
    pub client_ip: Option<IpAddr>,
    /// What happens to the request.
    pub verdict: Verdict,
    /// The rules in dry-run that matched; see [`RuleSet::would_drop`].
    pub dry_run: DryRunHits,
}

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every enforced rule let it through.
    Pass,
    /// An enforced rule stopped it.
    Stop(Stop),
    /// Every other rule let it through; the rate limiter decides, for this
    /// client; the layer applies its answer.
    RateLimit(IpAddr),
}

/// The rule that stopped a request, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The rule that matched.
    pub rule: DropReason,
    /// Drop (444), or respond with a status.
    pub action: Action,
    /// How long the client should wait, when the rate limit matched.
    pub retry_after: Option<Duration>,
}

/// The set of rules in dry-run that matched one request, by their slot in
/// the rule set: built-in rules first, then custom rules. A rule set holds
/// at most 128 rules, so it fits in one word pair and judging allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DryRunHits(u128);

impl DryRunHits {
    /// Whether no rule in dry-run matched.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The hits in `self` that are not in `earlier`.
    #[must_use]
    pub const fn since(self, earlier: DryRunHits) -> DryRunHits {
        DryRunHits(self.0 & !earlier.0)
    }

    fn with(self, slot: usize) -> Self {
        Self(self.0 | 1 << slot)
    }

    fn slots(self) -> impl Iterator<Item = usize> {
        (0..128).filter(move |slot| self.0 & (1 << slot) != 0)
    }
}

/// What the rate limiter says about one request's budget: the answer
/// [`RuleSet::settle`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    Allow,
    /// Over the limit; the client may try again after this long.
    OverLimit(Duration),
    /// A new client while the table is full, whose network is over the
    /// rate; how long until it is not.
    NetworkOverLimit(Duration),
    /// The shared store could not answer and the policy is to fail closed.
    Unavailable,
}

/// The most rules a rule set holds: the slots of [`DryRunHits`], of which
/// the built-in rules take 13, leaving 115 for custom rules.
pub(crate) const MAX_RULES: usize = 128;
const _: () = assert!(MAX_RULES - DropReason::BUILTIN.len() == 115);

impl RuleSet {
    /// Judges a request from its head and the socket peer: allocation-free,
    /// with no clock, runtime or logging.
    ///
    /// `peer` is the TCP peer; the client IP is derived from it and, when the
    /// peer is a trusted proxy, from the real-IP header.
    pub fn judge<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Judgement {
        let client_ip = peer.map(|p| self.real_ip.resolve(p.ip(), request.headers()));
        let mut dry_run = DryRunHits::default();
        let verdict = match self.first_stop(request, client_ip, &mut dry_run) {
            Err(stop) => Verdict::Stop(stop),
            Ok(()) => match client_ip {
                Some(ip) if self.rate_limited => Verdict::RateLimit(ip),
                _ => Verdict::Pass,
            },
        };
        Judgement {
            client_ip,
            verdict,
            dry_run,
        }
    }

    /// Applies the rate limiter's answer to a judgement that awaits it; any
    /// other judgement is returned as it is.
    pub(crate) fn settle(&self, judgement: Judgement, budget: Budget) -> Judgement {
        if !matches!(judgement.verdict, Verdict::RateLimit(_)) {
            return judgement;
        }
        let mut dry_run = judgement.dry_run;
        let (rule, retry_after) = match budget {
            Budget::Allow => {
                return Judgement {
                    verdict: Verdict::Pass,
                    ..judgement
                };
            }
            Budget::OverLimit(wait) => (DropReason::RateLimited, Some(wait)),
            Budget::NetworkOverLimit(wait) => (DropReason::RateLimitFull, Some(wait)),
            Budget::Unavailable => (DropReason::RateLimitUnavailable, None),
        };
        let verdict = match self.enforce(rule, &mut dry_run) {
            Ok(()) => Verdict::Pass,
            Err(mut stop) => {
                stop.retry_after = retry_after;
                Verdict::Stop(stop)
            }
        };
        Judgement {
            client_ip: judgement.client_ip,
            verdict,
            dry_run,
        }
    }

    /// The rules in dry-run that matched, in evaluation order.
    pub fn would_drop(&self, hits: DryRunHits) -> impl Iterator<Item = DropReason> + '_ {
        hits.slots().map(|slot| self.policies.reason(slot))
    }

    /// Whether `ip` is one of the trusted proxies: an address whose drops
    /// are its clients', never its own.
    #[must_use]
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.real_ip.trusted.contains(ip.to_canonical())
    }

    /// What the rule that matched does.
    #[must_use]
    pub fn action(&self, reason: DropReason) -> Action {
        self.policies.get(reason).action
    }

    /// A rule that matched: a stop when enforced, a hit when in dry-run.
    fn enforce(&self, rule: DropReason, dry_run: &mut DryRunHits) -> Result<(), Stop> {
        let slot = self.policies.slot(rule);
        let policy = self.policies.policies[slot];
        if policy.dry_run {
            *dry_run = dry_run.with(slot);
            return Ok(());
        }
        Err(Stop {
            rule,
            action: policy.action,
            retry_after: None,
        })
    }

    fn first_stop<B>(
        &self,
        request: &Request<B>,
        client_ip: Option<IpAddr>,
        dry_run: &mut DryRunHits,
    ) -> Result<(), Stop> {
        let headers = request.headers();
        if let Err(rule) = self.host.check(request.version(), request.uri(), headers) {
            self.enforce(rule, dry_run)?;
        }
        let needs_ip = !self.ip.is_empty() || self.rate_limited;
        if client_ip.is_none() && needs_ip {
            self.enforce(DropReason::ClientIpUnknown, dry_run)?;
        }
        if let Some(ip) = client_ip {
            if self.ip.first_match(ip) == Some(IpAction::Deny) {
                self.enforce(DropReason::IpDenied, dry_run)?;
            }
        }
        if let Err(rule) = self.user_agent.check(headers) {
            self.enforce(rule, dry_run)?;
        }
        if let Err(rule) = self.paths.check(request.uri()) {
            self.enforce(rule, dry_run)?;
        }
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
                    self.enforce(DropReason::Custom(rule.name), dry_run)?;
                }
            }
        }
        Ok(())
    }
}

impl Judgement {
    /// The stop, if an enforced rule stopped the request.
    #[must_use]
    pub fn stop(&self) -> Option<Stop> {
        match self.verdict {
            Verdict::Stop(stop) => Some(stop),
            _ => None,
        }
    }
}
