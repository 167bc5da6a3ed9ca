//! A rate limit whose budget lives in a store shared by every replica, such
//! as Redis (feature `redis`), so that a client spreading its requests over N
//! replicas still gets one budget, not N.
//!
//! The store is reached over the network, so the check is asynchronous and
//! can fail. This module owns what is the same for every store: the per-call
//! timeout, the failure policy, the circuit that stops waiting on a store
//! that is down, and the optional in-process pre-check that cuts an obvious
//! flood without a round trip.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::local::Limiter;
use super::rate::RateLimit;
use crate::error::BuildError;
use crate::rules::Budget;

/// A store that keeps rate-limit state for many replicas.
///
/// Implementations count one request per call, atomically, with GCRA
/// semantics matching [`RateLimit`]: a fresh client may send
/// [`RateLimit::capacity`] requests at once, then one per
/// [`RateLimit::interval`]. The crate ships one for Redis and Valkey
/// (`redis::RedisStore`, feature `redis`).
pub trait RateLimitStore: fmt::Debug + Send + Sync + 'static {
    /// Counts one request under `key` against `limit` and says whether it
    /// is within the budget. `key` is already the client's key: the IPv4
    /// address, or the IPv6 address cut to the limit's prefix.
    ///
    /// The future must not panic; the caller bounds how long it may take.
    fn check(&self, key: IpAddr, limit: &RateLimit) -> StoreFuture;

    /// The name of the part of the store that answers for `key`, for a
    /// store spread over servers that fail on their own, such as a Redis
    /// Cluster's primaries. Each part gets its own circuit: a part that
    /// stalls is marked down alone, and the clients whose keys live on the
    /// other parts keep their shared budget. `None`, the default, means one
    /// circuit for the whole store (also used while a store does not yet
    /// know where `key` lives).
    ///
    /// It is called once or twice per request on the path to the store, so
    /// it must be cheap and must not wait.
    fn part_of(&self, key: IpAddr) -> Option<Arc<str>> {
        let _ = key;
        None
    }
}

/// What [`RateLimitStore::check`] returns.
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<StoreVerdict, StoreError>> + Send>>;

/// A store's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreVerdict {
    /// Within the budget; the request was counted.
    Allow,
    /// Over the budget; the client may try again after this long.
    Limited {
        /// The wait until one more request would be allowed.
        retry_after: Duration,
    },
}

/// Why a store could not answer.
pub struct StoreError {
    source: Box<dyn Error + Send + Sync>,
}

impl StoreError {
    /// Wraps the store client's own error.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreError").field(&self.source).finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store failed: {}", self.source)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// What happens to a request when the store does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Judge it by this replica's own in-process limiter, at the same rate,
    /// so a per-replica limit still holds. The default: an outage of the
    /// limiter's store should not become an outage of the service, nor let
    /// every client through unlimited.
    #[default]
    Open,
    /// Drop it with rule `rate_limit_unavailable`, for services where an
    /// unlimited client is worse than a refused one.
    Closed,
}

impl FailurePolicy {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// A rate limit kept in a shared store. Give it to
/// [`NoResponseLayerBuilder::shared_rate_limit`](crate::NoResponseLayerBuilder::shared_rate_limit)
/// together with the [`RateLimit`] itself.
///
/// ```
/// # #[cfg(feature = "redis")] {
/// use std::time::Duration;
/// use tower_no_response::redis::RedisStore;
/// use tower_no_response::limit::{FailurePolicy, SharedRateLimit};
/// use tower_no_response::{NoResponseLayer, RateLimit};
///
/// let store = RedisStore::new("redis://127.0.0.1:6379/").unwrap();
/// let layer = NoResponseLayer::builder()
///     .rate_limit(RateLimit::per_second(10).burst(20))
///     .shared_rate_limit(
///         SharedRateLimit::new(store)
///             .timeout(Duration::from_millis(50))
///             .on_failure(FailurePolicy::Open)
///             .local_precheck(true),
///     )
///     .build()
///     .unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SharedRateLimit {
    store: Arc<dyn RateLimitStore>,
    timeout: Duration,
    on_failure: FailurePolicy,
    local_precheck: bool,
    retry_every: Duration,
    open_after: u32,
}

impl SharedRateLimit {
    /// A limit kept in `store`, with a 100 ms timeout, failing open, and no
    /// local pre-check.
    pub fn new(store: impl RateLimitStore) -> Self {
        Self {
            store: Arc::new(store),
            timeout: Duration::from_millis(100),
            on_failure: FailurePolicy::Open,
            local_precheck: false,
            retry_every: Duration::from_millis(500),
            open_after: 5,
        }
    }

    /// The longest a request waits for the store; past it, the failure
    /// policy decides.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do with requests while the store cannot answer.
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Checks each client against this replica's own in-process limiter
    /// (with the same rate) before asking the store. A client over the limit
    /// on one replica alone is over it in total, so such a flood is dropped
    /// without a round trip. (Failing open uses the same limiter whether or
    /// not it is also in front.)
    pub fn local_precheck(mut self, on: bool) -> Self {
        self.local_precheck = on;
        self
    }

    /// While the store (or one part of it) is down, how often one request
    /// tries it again; the others get the failure policy at once instead of
    /// each waiting out the timeout. 500 ms by default.
    pub fn retry_every(mut self, every: Duration) -> Self {
        self.retry_every = every;
        self
    }

    /// How many failed answers in a row mark the store down, 5 by default.
    /// Until then a failure (an error, or no answer within the timeout)
    /// affects only its own request, which gets the failure policy; so one
    /// slow answer under a flood does not switch the shared limit off for
    /// everyone. Any answer resets the count.
    ///
    /// For a store in parts ([`RateLimitStore::part_of`], such as a Redis
    /// Cluster's primaries), failures are counted, and the store marked
    /// down, per part: a primary that stalls is cut off alone, and answers
    /// from the others neither reset its count nor are lost with it.
    pub fn open_after(mut self, failures: u32) -> Self {
        self.open_after = failures.max(1);
        self
    }

    fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
            && self.timeout == other.timeout
            && self.on_failure == other.on_failure
            && self.local_precheck == other.local_precheck
            && self.retry_every == other.retry_every
            && self.open_after == other.open_after
    }

    pub(crate) fn compile(&self, limit: &RateLimit) -> Result<SharedLimiter, BuildError> {
        let bad = |reason: String| BuildError::RateLimit { reason };
        if self.timeout.is_zero() {
            return Err(bad(
                "the shared rate limit's timeout must not be zero".into()
            ));
        }
        if self.retry_every.is_zero() {
            return Err(bad(
                "the shared rate limit's retry_every must not be zero".into()
            ));
        }
        Ok(SharedLimiter {
            config: self.clone(),
            store: Arc::clone(&self.store),
            limit: *limit,
            local: Arc::new(Limiter::new(limit)?),
            precheck: self.local_precheck,
            health: Arc::new(Health::new(self, None)),
            parts: RwLock::new(HashMap::new()),
        })
    }
}

/// A store that names more parts than this is not split into circuits any
/// further: the extra parts share the store-wide one. Real clusters have
/// tens of primaries at most; this only bounds memory should a store name
/// parts without limit.
const MAX_PARTS: usize = 1024;

/// The compiled shared limit.
#[derive(Debug)]
pub(crate) struct SharedLimiter {
    /// What it was built from: a reload with the same store and settings
    /// keeps this limiter, and with it the store's health.
    config: SharedRateLimit,
    store: Arc<dyn RateLimitStore>,
    limit: RateLimit,
    /// This replica's own limiter at the same rate: in front of the store
    /// with the pre-check, and the judge when failing open.
    local: Arc<Limiter>,
    precheck: bool,
    /// The circuit for the whole store, or for the keys whose part is not
    /// known.
    health: Arc<Health>,
    /// One circuit per part of the store that
    /// [`RateLimitStore::part_of`] names, made on first sight.
    parts: RwLock<HashMap<Arc<str>, Arc<Health>>>,
}

/// The check still to run against the store.
pub(crate) type StoreCheck = Pin<Box<dyn Future<Output = Budget> + Send>>;

/// What the synchronous part of the check found.
pub(crate) enum Step {
    Done(Budget),
    /// Ask the store.
    Ask,
}

impl SharedLimiter {
    /// The part that needs no round trip: the local pre-check, and the
    /// circuit that answers at once while the store is down.
    pub(crate) fn check(&self, ip: IpAddr) -> Step {
        if self.precheck {
            if let over @ Budget::OverLimit(_) = self.local.check(ip) {
                return Step::Done(over);
            }
        }
        let health = self.health_of(self.limit.key_of(ip));
        if !health.may_try() || tokio::runtime::Handle::try_current().is_err() {
            return Step::Done(failed_verdict(&health, &self.local, self.precheck, ip));
        }
        Step::Ask
    }

    /// The round trip for `ip`'s key, bounded by the timeout; never fails.
    pub(crate) fn ask(&self, ip: IpAddr) -> StoreCheck {
        let key = self.limit.key_of(ip);
        let call = self.store.check(key, &self.limit);
        let health = self.health_of(key);
        let (local, precheck) = (Arc::clone(&self.local), self.precheck);
        Box::pin(async move {
            let outcome = match tokio::time::timeout(health.timeout, call).await {
                Ok(Ok(verdict)) => Ok(verdict),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {:?}", health.timeout)),
            };
            match outcome {
                Ok(verdict) => {
                    health.succeeded();
                    match verdict {
                        StoreVerdict::Allow => Budget::Allow,
                        StoreVerdict::Limited { retry_after } => Budget::OverLimit(retry_after),
                    }
                }
                Err(error) => {
                    health.failed(&error);
                    failed_verdict(&health, &local, precheck, ip)
                }
            }
        })
    }

    /// The circuit for the part of the store that holds `key`.
    fn health_of(&self, key: IpAddr) -> Arc<Health> {
        let Some(part) = self.store.part_of(key) else {
            return Arc::clone(&self.health);
        };
        let parts = self
            .parts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(health) = parts.get(&part) {
            return Arc::clone(health);
        }
        let full = parts.len() >= MAX_PARTS;
        drop(parts);
        if full {
            return Arc::clone(&self.health);
        }
        let mut parts = self
            .parts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            parts
                .entry(Arc::clone(&part))
                .or_insert_with(|| Arc::new(Health::new(&self.config, Some(part)))),
        )
    }

    /// The settings this limiter was built from.
    #[cfg(feature = "serde")]
    pub(crate) fn config(&self) -> &SharedRateLimit {
        &self.config
    }

    /// Whether a reload to `limit` in `shared` may keep this limiter.
    pub(crate) fn serves(&self, limit: &RateLimit, shared: &SharedRateLimit) -> bool {
        self.limit == *limit && self.config.same_as(shared)
    }

    pub(crate) fn local_clients(&self) -> Option<usize> {
        self.precheck.then(|| self.local.len())
    }
}

/// What a request gets when the store cannot answer for it: failing
/// closed, a drop; failing open, this replica's own limit (which the
/// pre-check, when on, has already applied).
fn failed_verdict(health: &Health, local: &Limiter, precheck: bool, ip: IpAddr) -> Budget {
    match health.on_failure {
        FailurePolicy::Closed => Budget::Unavailable,
        FailurePolicy::Open if precheck => Budget::Allow,
        FailurePolicy::Open => local.check(ip),
    }
}

/// Whether the store answers, and when to try it again if not.
#[derive(Debug)]
struct Health {
    store: String,
    /// The part of the store this circuit is for, if the store has parts.
    part: Option<Arc<str>>,
    on_failure: FailurePolicy,
    timeout: Duration,
    retry_every_ms: u64,
    /// Failed answers in a row that mark the store down.
    open_after: u32,
    failures: AtomicU32,
    up: AtomicBool,
    /// Milliseconds since `epoch` after which one request may try a store
    /// that is down.
    next_try_ms: AtomicU64,
    epoch: Instant,
}

impl Health {
    fn new(config: &SharedRateLimit, part: Option<Arc<str>>) -> Self {
        // A circuit starts closed, and says so before its first change.
        crate::audit::export::store_up(part.as_deref(), true);
        Self {
            store: format!("{:?}", config.store),
            part,
            on_failure: config.on_failure,
            timeout: config.timeout,
            retry_every_ms: u64::try_from(config.retry_every.as_millis()).unwrap_or(u64::MAX),
            open_after: config.open_after,
            failures: AtomicU32::new(0),
            up: AtomicBool::new(true),
            next_try_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Always while up; while down, one caller per `retry_every`.
    fn may_try(&self) -> bool {
        if self.up.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_try_ms.load(Ordering::Acquire);
        now >= next
            && self
                .next_try_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.retry_every_ms),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Counts a failed answer; the store is marked down only once failures
    /// run `open_after` in a row, and while down each failed trial waits
    /// `retry_every` again.
    fn failed(&self, error: &str) {
        let in_a_row = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if in_a_row < self.open_after {
            return;
        }
        self.next_try_ms.store(
            self.now_ms().saturating_add(self.retry_every_ms),
            Ordering::Release,
        );
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                target: "tower_no_response::rate_limit",
                store = %self.store,
                part = self.part.as_deref(),
                error,
                fail = self.on_failure.as_str(),
                "rate-limit store unavailable; failing {}",
                self.on_failure.as_str(),
            );
            crate::audit::export::store_up(self.part.as_deref(), false);
        }
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(
                target: "tower_no_response::rate_limit",
                store = %self.store,
                part = self.part.as_deref(),
                "rate-limit store available again"
            );
            crate::audit::export::store_up(self.part.as_deref(), true);
        }
    }
}
