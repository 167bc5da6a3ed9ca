//! The layer: the tower `Layer` + `Service` + `ResponseFuture` trio, the
//! builder that configures it, and the state it keeps beside the rules.

mod body;
mod builder;
mod dropped;
mod handle;
mod peer;
pub(crate) mod registry;
mod request_body;

pub use body::NoResponseBody;
use builder::Config;
pub use builder::NoResponseLayerBuilder;
pub use dropped::RequestDropped;
pub use handle::{ConnectionHandle, ConnectionInfo};
pub use request_body::TimedBody;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use arc_swap::cache::Cache;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit::stats::{Counters, Stats};
use crate::audit::{Close, DropEvent, Handling, RequestView};
use crate::ban::BanList;
use crate::error::BuildError;
use crate::limit::local::Limiter;
use crate::limit::{RateLimit, RateLimiter, Step, StoreCheck};
use crate::rules::{
    Action, Budget, ClientIp, CloseMode, DropReason, DryRunHits, Judgement, LimitKey, RequestHead,
    RuleSet, Stop, Verdict,
};
use registry::{Found, Registry};
use request_body::BodyWatch;

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
    shared: Arc<LayerState>,
}

struct LayerState {
    current: ArcSwap<Compiled>,
    /// The connections this layer's listeners accepted, by peer.
    connections: Arc<Registry>,
    /// The missing-listener error is logged once, not once per request.
    warned_no_connection: AtomicBool,
    /// Whether the layer itself has judged a request yet.
    judged: AtomicBool,
    /// The first requests a listener judged at accept and let through,
    /// to tell a layer that wraps none of the routes.
    #[cfg(any(feature = "axum", feature = "server"))]
    early: EarlyPasses,
}

/// First requests judged at accept and let through: when they keep coming
/// and the layer itself still judges nothing, it wraps none of the routes.
#[cfg(any(feature = "axum", feature = "server"))]
#[derive(Debug, Default)]
struct EarlyPasses {
    count: std::sync::atomic::AtomicU32,
    /// When the first was let through.
    first: std::sync::OnceLock<std::time::Instant>,
    warned: AtomicBool,
}

/// A layer that has judged nothing this long after a listener let a first
/// request through, and this many of them, wraps none of the routes: a
/// request let through reaches the layer within milliseconds otherwise.
#[cfg(any(feature = "axum", feature = "server"))]
const MISPLACED_AFTER: Duration = Duration::from_secs(1);
#[cfg(any(feature = "axum", feature = "server"))]
const MISPLACED_AFTER_PASSES: u32 = 8;

/// The rules in force and the state that goes with them, swapped as one by
/// a reload that hands on whatever still applies.
#[derive(Debug)]
struct Compiled {
    rules: Arc<RuleSet>,
    close_mode: CloseMode,
    header_timeout: Option<Duration>,
    keepalive_timeout: Duration,
    body_timeout: Option<Duration>,
    /// Whether an allowed request gets its [`ClientIp`] extension.
    client_ip_extension: bool,
    limiter: Option<RateLimiter>,
    /// The per-client limit's rate, for the `RateLimit` headers of a `429`.
    rate_limit: Option<RateLimit>,
    /// The keyed limits, in the rules' order.
    keyed: Vec<KeyedLimiter>,
    counters: Counters,
    ban_list: Option<BanList>,
}

/// A keyed limit's state: its budgets, by key.
#[derive(Debug)]
struct KeyedLimiter {
    name: &'static str,
    limit: RateLimit,
    limiter: Arc<Limiter>,
}

impl Compiled {
    fn new(config: Config, previous: Option<&Compiled>) -> Result<Self, BuildError> {
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
        Ok(Self {
            rules: Arc::new(config.rules),
            close_mode: config.close_mode,
            header_timeout: config.header_timeout,
            keepalive_timeout: config.keepalive_timeout,
            body_timeout: config.body_timeout,
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
    fn is_banned(&self, ip: IpAddr) -> bool {
        self.ban_list
            .as_ref()
            .is_some_and(|bans| bans.is_banned(ip) && !self.rules.is_edge(ip))
    }

    /// The rules' judgement, with bans applied: a banned client, judged
    /// through any trusted proxy, is dropped as `banned` whatever else
    /// its request says, before it can spend a rate budget.
    fn judge_rules<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Judgement {
        self.with_bans(self.rules.judge(request, peer))
    }

    /// A judgement of the rules, overruled by a ban of the judged client.
    fn with_bans(&self, judgement: Judgement) -> Judgement {
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
    fn judge<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> (Judgement, bool) {
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
    fn admit<B>(&self, request: &mut Request<B>, client_ip: Option<IpAddr>) {
        if let Some(ip) = client_ip.filter(|_| self.client_ip_extension) {
            request.extensions_mut().insert(ClientIp(ip));
        }
        self.counters.allowed();
    }

    /// The rate behind a rate-limit rule, for a `429`'s headers.
    fn rate_of(&self, rule: DropReason) -> Option<(&'static str, RateLimit)> {
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
                judged: AtomicBool::new(false),
                #[cfg(any(feature = "axum", feature = "server"))]
                early: EarlyPasses::default(),
            }),
        })
    }

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
    /// at [`Verdict::RateLimit`] awaits the shared store, which this does
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

/// The way from a service to the rules in force, for its [`Cache`].
#[derive(Clone)]
struct RulesInForce(Arc<LayerState>);

impl std::ops::Deref for RulesInForce {
    type Target = ArcSwap<Compiled>;

    fn deref(&self) -> &ArcSwap<Compiled> {
        &self.0.current
    }
}

/// The service made by [`NoResponseLayer`].
#[derive(Clone)]
pub struct NoResponse<S> {
    inner: S,
    /// The rules in force as this service last saw them: checking that
    /// they are still current is one atomic load, where a fresh guard from
    /// the `ArcSwap` costs tens of instructions on every request. A
    /// replaced rule set stays alive in an idle service until its next
    /// request.
    current: Cache<RulesInForce, Arc<Compiled>>,
    shared: Arc<LayerState>,
}

impl<S: fmt::Debug> fmt::Debug for NoResponse<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoResponse")
            .field("inner", &self.inner)
            .field("close_mode", &self.shared.current.load().close_mode)
            .finish_non_exhaustive()
    }
}

impl<S> NoResponse<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for NoResponse<S>
where
    S: Service<Request<TimedBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
{
    type Response = Response<NoResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // This pins the request to the rules in force as it arrived.
        let current = self.current.load();
        // A plain load on every request; the store happens once.
        if !self.shared.judged.load(Ordering::Relaxed) {
            self.shared.judged.store(true, Ordering::Relaxed);
        }
        let peer = self.shared.connection_of(&request).0;
        let (judgement, strikes) = current.judge(&request, peer);
        record_would_drop(current, &request, &judgement, peer);
        match judgement.verdict {
            Verdict::Stop(stop) => ResponseFuture {
                kind: Kind::Rejected {
                    rejection: reject(
                        &self.shared,
                        current,
                        &request,
                        stop,
                        judgement.client_ip,
                        strikes,
                    ),
                },
            },
            Verdict::RateLimit(ip) => {
                let check = ip
                    .zip(current.limiter.as_ref())
                    .and_then(|(ip, limiter)| limiter.ask(ip))
                    .expect("only a shared limiter leaves a judgement at RateLimit");
                // The service that was made ready goes with the request; the
                // clone stays behind for the next `poll_ready`.
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                ResponseFuture {
                    kind: Kind::Checking {
                        check,
                        pending: Some(Box::new(Pending {
                            inner,
                            request,
                            layer: Arc::clone(&self.shared),
                            compiled: Arc::clone(current),
                            judgement,
                        })),
                    },
                }
            }
            Verdict::Pass => {
                current.admit(&mut request, judgement.client_ip);
                let (request, body) =
                    TimedBody::wrap(request, &self.shared, current, judgement.client_ip);
                ResponseFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(request),
                        body,
                    },
                }
            }
        }
    }
}

/// Counts, logs and enacts a rule's action on a request that will not reach
/// the inner service.
fn reject<B>(
    layer: &LayerState,
    current: &Compiled,
    request: &Request<B>,
    stop: Stop,
    client_ip: Option<IpAddr>,
    strikes: bool,
) -> Rejection {
    let connection = layer.connection_of(request);
    reject_on(
        layer, current, request, stop, client_ip, strikes, connection,
    )
}

/// [`reject`], with the request's connection found already.
fn reject_on<B>(
    layer: &LayerState,
    current: &Compiled,
    request: &Request<B>,
    stop: Stop,
    client_ip: Option<IpAddr>,
    strikes: bool,
    (peer, connection): (Option<SocketAddr>, Option<&ConnectionInfo>),
) -> Rejection {
    match stop.action {
        Action::Respond(status) => {
            let handling = Handling::Respond(status);
            record(current, request, stop.rule, handling, client_ip, peer);
            Rejection::Respond {
                status,
                retry_after: stop.retry_after,
                reason: stop.rule,
                rate: current.rate_of(stop.rule),
            }
        }
        Action::Drop => {
            let mode = current.close_mode;
            let (handle, close) = match connection {
                // A `DropAsError` outside turns the drop into a reset of
                // this stream alone; the connection stays up for the others.
                // A ban of the peer itself closes the whole connection; a
                // client banned behind a proxy loses only its own stream.
                Some(info)
                    if info.stream_resets
                        && request.version() == Version::HTTP_2
                        && !(stop.rule == DropReason::Banned
                            && client_ip == Some(info.peer_addr().ip().to_canonical())) =>
                {
                    (None, Close::Stream)
                }
                Some(info) => (Some(info.handle().clone()), Close::Mode(mode)),
                // A connection from the layer's listener, known by its peer.
                None => match layer.connections.find(peer, mode) {
                    Found::One(handle) => (Some(handle), Close::Mode(mode)),
                    Found::AbortedAll => (None, Close::Mode(mode)),
                    Found::Nothing => {
                        layer.warn_no_connection();
                        (None, Close::BodyError)
                    }
                },
            };
            record_drop(current, request, stop.rule, client_ip, peer, close, strikes);
            Rejection::Dropped {
                handle,
                mode,
                reason: stop.rule,
            }
        }
    }
}

/// Counts and logs every match of a rule in dry-run.
fn record_would_drop<B>(
    current: &Compiled,
    request: &Request<B>,
    judgement: &Judgement,
    peer: Option<SocketAddr>,
) {
    if judgement.dry_run.is_empty() {
        return;
    }
    for reason in current.rules.would_drop(judgement.dry_run) {
        let client_ip = judgement.client_ip;
        record(
            current,
            request,
            reason,
            Handling::WouldDrop,
            client_ip,
            peer,
        );
    }
}

/// Counts, logs and strikes one dropped request.
fn record_drop<B>(
    current: &Compiled,
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    peer: Option<SocketAddr>,
    close: Close,
    strikes: bool,
) {
    record(
        current,
        request,
        reason,
        Handling::Drop(close),
        client_ip,
        peer,
    );
    let (Some(bans), Some(ip)) = (&current.ban_list, client_ip) else {
        return;
    };
    // The judged client is struck, through any trusted proxy; the layer
    // refuses it on every request, and accept refuses it when it connects
    // directly. An edge is never struck, even for a request whose real-IP
    // header did not resolve: banning it would refuse everyone behind it.
    // And only the client's own behaviour strikes.
    if strikes && reason.strikes() && !current.rules.is_edge(ip) {
        bans.strike(ip);
    }
}

/// Counts a rule's match and emits its event: one record for every output.
fn record<B>(
    current: &Compiled,
    request: &Request<B>,
    rule: DropReason,
    handling: Handling,
    client_ip: Option<IpAddr>,
    peer_addr: Option<SocketAddr>,
) {
    if let Some(slot) = current.rules.policies.slot_of(rule) {
        current.counters.count(slot, handling);
    }
    DropEvent {
        rule,
        handling,
        client_ip,
        peer_addr,
        request: Some(RequestView::of(request)),
    }
    .emit();
}

impl NoResponseLayer {
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
}

impl NoResponseLayer {
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

impl LayerState {
    fn warn_no_connection(&self) {
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
    /// for the connection being served.
    fn connection_of<'r, B>(
        &self,
        request: &'r Request<B>,
    ) -> (Option<SocketAddr>, Option<&'r ConnectionInfo>) {
        let ext = request.extensions();
        match ext.get::<ConnectionInfo>() {
            Some(info) => (Some(info.peer_addr()), Some(info)),
            None => (
                peer::connect_info(ext).or_else(|| self.connections.peer_of_current()),
                None,
            ),
        }
    }
}

pin_project! {
    /// The response future of [`NoResponse`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<TimedBody<B>>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<TimedBody<B>>>,
    {
        Inner {
            #[pin]
            future: S::Future,
            // Shared with the request body's timer, if it has one.
            body: Option<Arc<BodyWatch>>,
        },
        /// Waiting for the shared rate-limit store.
        Checking {
            check: StoreCheck,
            // Boxed so that only requests that wait pay for their size.
            pending: Option<Box<Pending<S, B>>>,
        },
        Rejected { rejection: Rejection },
    }
}

/// What a request waiting for the shared store needs once it has the answer.
struct Pending<S, B> {
    inner: S,
    request: Request<B>,
    layer: Arc<LayerState>,
    compiled: Arc<Compiled>,
    judgement: Judgement,
}

#[derive(Debug)]
enum Rejection {
    Dropped {
        handle: Option<ConnectionHandle>,
        mode: CloseMode,
        reason: DropReason,
    },
    Respond {
        status: StatusCode,
        retry_after: Option<Duration>,
        reason: DropReason,
        rate: Option<(&'static str, RateLimit)>,
    },
}

impl<S: Service<Request<TimedBody<B>>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            Kind::Checking { .. } => f.write_str("ResponseFuture::Checking"),
            Kind::Rejected { rejection } => f
                .debug_tuple("ResponseFuture::Rejected")
                .field(rejection)
                .finish(),
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<TimedBody<B>>, Response = Response<ResBody>>,
    B: Body,
{
    type Output = Result<Response<NoResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KindProj::Inner { future, body } => {
                    // A body that ran out of time drops the request, whatever
                    // the inner service is doing: its future is dropped with
                    // this one.
                    let Some(body) = body else {
                        return future
                            .poll(cx)
                            .map_ok(|response| response.map(NoResponseBody::inner));
                    };
                    if body.poll_timed_out(cx) {
                        return Poll::Ready(Ok(dropped_response(DropReason::BodyTimeout)));
                    }
                    let response = std::task::ready!(future.poll(cx));
                    if !body.answered() {
                        return Poll::Ready(Ok(dropped_response(DropReason::BodyTimeout)));
                    }
                    return Poll::Ready(response.map(|r| r.map(NoResponseBody::inner)));
                }
                KindProj::Rejected { rejection } => {
                    return Poll::Ready(Ok(match rejection {
                        Rejection::Dropped {
                            handle,
                            mode,
                            reason,
                        } => {
                            // hyper flushes each HTTP/1 response before it
                            // parses the next pipelined request, so earlier
                            // responses are already out.
                            if let Some(handle) = handle {
                                handle.abort(*mode);
                            }
                            dropped_response(*reason)
                        }
                        Rejection::Respond {
                            status,
                            retry_after,
                            reason,
                            rate,
                        } => status_response(*status, *retry_after, *reason, *rate),
                    }));
                }
                KindProj::Checking { check, pending } => {
                    let verdict = std::task::ready!(check.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    pending.resume(verdict)
                }
            };
            this.kind.set(next);
        }
    }
}

impl<S: Service<Request<TimedBody<B>>>, B: Body> Pending<S, B> {
    fn resume(self, budget: Budget) -> Kind<S, B> {
        let Self {
            mut inner,
            mut request,
            layer,
            compiled,
            judgement,
        } = self;
        let settled = compiled.rules.settle(judgement, budget);
        let peer = layer.connection_of(&request).0;
        let fresh = Judgement {
            dry_run: settled.dry_run.since(judgement.dry_run),
            ..settled
        };
        record_would_drop(&compiled, &request, &fresh, peer);
        match settled.verdict {
            Verdict::Stop(stop) => Kind::Rejected {
                rejection: reject(&layer, &compiled, &request, stop, settled.client_ip, true),
            },
            Verdict::Pass | Verdict::RateLimit(_) => {
                compiled.admit(&mut request, settled.client_ip);
                let (request, body) =
                    TimedBody::wrap(request, &layer, &compiled, settled.client_ip);
                Kind::Inner {
                    future: inner.call(request),
                    body,
                }
            }
        }
    }
}

/// Status 444 is never sent; it is there for outer middleware (tracing,
/// metrics) that record the status of what the service returned.
fn dropped_response<B>(reason: DropReason) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::dropped(reason));
    *response.status_mut() = StatusCode::from_u16(444).expect("444 is in range");
    response.extensions_mut().insert(reason);
    // The marker a serve loop looks for to drop at the protocol level.
    response
        .extensions_mut()
        .insert(RequestDropped::new(reason));
    response
}

/// An empty answer with the rule's status. A `429` says when to come back:
/// the limiter's own wait, rounded up to whole seconds, or one second when
/// the rule that matched has no wait of its own.
///
/// A rate limit's `429` also says which limit it was, in the IETF's
/// `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers): `"login";q=5;w=60` (the quota
/// and its window in seconds) and `"login";r=0;t=12` (none left, and the
/// seconds until there is).
fn status_response<B>(
    status: StatusCode,
    retry_after: Option<Duration>,
    reason: DropReason,
    rate: Option<(&'static str, RateLimit)>,
) -> Response<NoResponseBody<B>> {
    let mut response = Response::new(NoResponseBody::empty());
    *response.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after.unwrap_or(Duration::from_secs(1));
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        if let Some((name, limit)) = rate {
            let (quota, window) = limit.policy();
            let policy = format!("\"{name}\";q={quota};w={window}");
            let state = format!("\"{name}\";r=0;t={secs}");
            // Rule names are plain identifiers, so both are valid values.
            if let (Ok(policy), Ok(state)) =
                (HeaderValue::try_from(policy), HeaderValue::try_from(state))
            {
                headers.insert(RATELIMIT_POLICY, policy);
                headers.insert(RATELIMIT, state);
            }
        }
    }
    response.extensions_mut().insert(reason);
    response
}

const RATELIMIT_POLICY: header::HeaderName = header::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");
