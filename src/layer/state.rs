//! What a layer keeps beside the rules: the compiled configuration in
//! force and the runtime state that goes with it, swapped as one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Request;

use super::builder::Config;
use crate::audit::stats::Counters;
use crate::ban::BanList;
use crate::connection::Placement;
use crate::connection::registry::Registry;
use crate::connection::{ConnectionInfo, InFlight, peer};
use crate::error::BuildError;
use crate::limit::local::Limiter;
use crate::limit::{RateLimit, RateLimiter, Step};
use crate::rules::{
    Action, Budget, ClientIp, CloseMode, DropReason, DryRunHits, Judgement, LimitKey, RequestHead,
    RuleSet, Stop, Verdict,
};

pub(crate) struct LayerState {
    pub(crate) current: ArcSwap<Compiled>,
    /// The connections this layer's listeners accepted, by peer.
    pub(crate) connections: Arc<Registry>,
    /// The missing-listener error is logged once, not once per request.
    pub(crate) warned_no_connection: AtomicBool,
    /// Whether the layer wraps the routes, told from what it judges and
    /// what its listeners judged at accept.
    pub(crate) placement: Placement,
}

/// The rules in force and the state that goes with them, swapped as one by
/// a reload that hands on whatever still applies.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) close_mode: CloseMode,
    pub(crate) header_timeout: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) body_timeout: Option<Duration>,
    pub(crate) send_timeout: Duration,
    /// Whether an allowed request gets its [`ClientIp`] extension.
    pub(crate) client_ip_extension: bool,
    pub(crate) limiter: Option<RateLimiter>,
    /// The per-client limit's rate, for the `RateLimit` headers of a `429`.
    pub(crate) rate_limit: Option<RateLimit>,
    /// The keyed limits, in the rules' order.
    pub(crate) keyed: Vec<KeyedLimiter>,
    pub(crate) counters: Counters,
    pub(crate) ban_list: Option<BanList>,
}

/// A keyed limit's state: its budgets, by key.
#[derive(Debug)]
pub(crate) struct KeyedLimiter {
    pub(crate) name: &'static str,
    pub(crate) limit: RateLimit,
    pub(crate) limiter: Arc<Limiter>,
}

impl Compiled {
    pub(crate) fn new(config: Config, previous: Option<&Compiled>) -> Result<Self, BuildError> {
        let limiter = match &config.rate_limit {
            None => None,
            Some((limit, shared)) => Some(RateLimiter::for_limit(
                limit,
                shared.as_ref(),
                previous.and_then(|p| p.limiter.as_ref()),
            )?),
        };
        let mut keyed = Vec::with_capacity(config.keyed_limits.len());
        for (name, limit) in &config.keyed_limits {
            // Budgets survive a reload that keeps the limit, as the
            // per-client limit's do.
            let kept = previous
                .and_then(|p| p.keyed.iter().find(|k| k.name == *name))
                .filter(|k| k.limiter.serves(limit));
            let limiter = match kept {
                Some(k) => Arc::clone(&k.limiter),
                None => Arc::new(Limiter::for_keys(limit)?),
            };
            keyed.push(KeyedLimiter {
                name,
                limit: *limit,
                limiter,
            });
        }
        let rules = &config.rules;
        let listed = (0..rules.policies.names.len())
            .map(|slot| rules.in_force.get(slot).copied().unwrap_or(true))
            .collect();
        let counters = Counters::new(&rules.policies.names, listed, previous.map(|p| &p.counters));
        let ban_list = config
            .ban_list
            .or_else(|| previous.and_then(|p| p.ban_list.clone()));
        let rules = Arc::new(config.rules);
        if let Some(bans) = &ban_list {
            bans.serve_rules(&rules);
        }
        Ok(Self {
            rules,
            close_mode: config.close_mode,
            header_timeout: config.header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            body_timeout: config.body_timeout,
            send_timeout: config.send_timeout,
            client_ip_extension: config.client_ip_extension,
            limiter,
            rate_limit: config.rate_limit.as_ref().map(|(limit, _)| *limit),
            keyed,
            counters,
            ban_list,
        })
    }

    /// Whether `ip` is banned. An edge (a trusted proxy, an `only_from_peer`
    /// peer) never is: its clients' drops are theirs, not its own.
    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.ban_list
            .as_ref()
            .is_some_and(|bans| bans.is_banned(ip) && !self.rules.is_edge(ip))
    }

    /// The rules' judgement, with bans applied: a banned client, judged
    /// through any trusted proxy, is dropped as `banned` whatever else
    /// its request says, before it can spend a rate budget.
    pub(crate) fn judge_rules<B>(
        &self,
        request: &Request<B>,
        peer: Option<SocketAddr>,
    ) -> Judgement {
        self.with_bans(self.rules.judge(request, peer))
    }

    /// A judgement of the rules, overruled by a ban of the judged client.
    pub(crate) fn with_bans(&self, judgement: Judgement) -> Judgement {
        match judgement.client_ip {
            Some(ip) if self.is_banned(ip) => Judgement {
                verdict: Verdict::Stop(Stop {
                    rule: DropReason::Banned,
                    action: Action::Drop,
                    retry_after: None,
                }),
                dry_run: DryRunHits::default(),
                ..judgement
            },
            _ => judgement,
        }
    }

    /// The rules' judgement, with bans and the in-process part of the rate
    /// limits applied, and whether a drop it makes is the client's own
    /// doing (a strike). A judgement still at [`Verdict::RateLimit`] after
    /// this awaits the shared store.
    pub(crate) fn judge<B>(
        &self,
        request: &Request<B>,
        peer: Option<SocketAddr>,
    ) -> (Judgement, bool) {
        let mut judgement = self.judge_rules(request, peer);
        let Verdict::RateLimit(ip) = judgement.verdict else {
            return (judgement, true);
        };
        if !self.keyed.is_empty() {
            let head = RequestHead::of(request, peer, judgement.client_ip);
            for (index, keyed) in self.keyed.iter().enumerate() {
                let Some(key) = self.rules.limit_key(index, &head) else {
                    continue;
                };
                let budget = keyed.limiter.check_key_of(key, judgement.client_ip);
                judgement = self.rules.settle_keyed(judgement, index, budget);
                if !matches!(judgement.verdict, Verdict::RateLimit(_)) {
                    // A keyed limit strikes only when what it limits is the
                    // client itself: over an API key's or a route's budget,
                    // the sender may be one of many innocents sharing it.
                    let own = matches!(budget, Budget::OverLimit(_))
                        && judgement.client_ip.map(LimitKey::ip) == Some(key);
                    return (judgement, own);
                }
            }
        }
        let judgement = match (ip, &self.limiter) {
            (Some(ip), Some(limiter)) => match limiter.check(ip) {
                Step::Done(budget) => self.rules.settle(judgement, budget),
                Step::Ask => judgement,
            },
            _ => Judgement {
                verdict: Verdict::Pass,
                ..judgement
            },
        };
        (judgement, true)
    }

    /// Lets a request through: it carries its [`ClientIp`] when the
    /// extension is on, and is counted as allowed.
    pub(crate) fn admit<B>(&self, request: &mut Request<B>, client_ip: Option<IpAddr>) {
        if let Some(ip) = client_ip.filter(|_| self.client_ip_extension) {
            request.extensions_mut().insert(ClientIp(ip));
        }
        self.counters.allowed();
    }

    /// The rate behind a rate-limit rule, for a `429`'s headers.
    pub(crate) fn rate_of(&self, rule: DropReason) -> Option<(&'static str, RateLimit)> {
        match rule {
            DropReason::RateLimited | DropReason::RateLimitFull => {
                Some((rule.as_str(), self.rate_limit?))
            }
            DropReason::Custom(name) => self
                .keyed
                .iter()
                .find(|k| k.name == name)
                .map(|k| (k.name, k.limit)),
            _ => None,
        }
    }
}

impl LayerState {
    pub(crate) fn warn_no_connection(&self) {
        if !self.warned_no_connection.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target: "tower_no_response",
                "NoResponseLayer dropped a request but could not find its connection, so it \
                 cannot abort it. Serve with the layer's listener, `layer.listener(tcp)`, and \
                 `into_make_service_with_connect_info::<SocketAddr>()` (or with `layer.serve`, \
                 or tonic's `layer.incoming`). Until then, dropped responses fail their body \
                 instead: HTTP/1 clients still receive no bytes, but close modes are ignored \
                 and HTTP/2 clients may receive a `:status 444` head before their stream is \
                 reset."
            );
        }
    }
}

impl LayerState {
    /// Finds the connection a request came on: the [`ConnectionInfo`] a
    /// serve loop or tonic put there, or at least the peer that axum's
    /// connect info names, whose connection the layer's listener
    /// registered; without connect info, the peer that listener recorded
    /// for the connection being served. A connection the layer's listener
    /// serves in this task also learns of the exchange, with how hyper
    /// framed its body, for its timers.
    pub(crate) fn connection_of<B: http_body::Body>(&self, request: &Request<B>) -> Connection {
        let ext = request.extensions();
        if let Some(info) = ext.get::<ConnectionInfo>() {
            // The serve loop's adapter reports the exchange itself.
            return Connection {
                peer: Some(info.peer_addr()),
                in_flight: None,
            };
        }
        let peer = peer::connect_info(ext);
        match self
            .connections
            .begin_current(peer, &request.body().size_hint())
        {
            Some((served, in_flight)) => Connection {
                peer: Some(peer.unwrap_or(served)),
                in_flight: Some(in_flight),
            },
            None => Connection {
                peer,
                in_flight: None,
            },
        }
    }
}

/// The connection a request came on, as far as the layer can tell.
pub(crate) struct Connection {
    pub(crate) peer: Option<SocketAddr>,
    /// The exchange, reported to the connection's timers.
    pub(crate) in_flight: Option<InFlight>,
}
