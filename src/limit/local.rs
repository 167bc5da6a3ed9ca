//! A per-client rate limit with nginx's `limit_req ... nodelay` model, whose
//! memory is bounded: idle clients are evicted on a schedule and the number
//! of tracked clients has a hard cap.

use std::cell::Cell;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::RateLimiter;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;

use super::overflow::Sketch;
use super::rate::RateLimit;
use super::table::SlotTable;
use crate::alarm::Chore;
use crate::error::BuildError;
use crate::rules::client_ip::Ipv6Prefix;
use crate::rules::{Budget, LimitKey};

/// A client's key in the table: its address (IPv4 in the IPv4-mapped form)
/// or IPv6 prefix, as two words, hashed and compared as two integers where
/// `IpAddr` is a tagged enum of byte arrays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct ClientKey(u64, u64);

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        let bits = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        Self((bits >> 64) as u64, bits as u64)
    }
}

thread_local! {
    /// Set by [`KeyTable`] when it refuses to add a key. governor's store
    /// interface cannot return an error of its own, and the check runs
    /// synchronously on this thread, so the flag is read right after.
    static REFUSED: Cell<bool> = const { Cell::new(false) };
}

/// governor's keyed state, in a table that counts its keys so the cap is
/// exact and cheap to check.
struct KeyTable {
    slots: SlotTable<ClientKey>,
    len: AtomicUsize,
    cap: usize,
}

impl StateStore for KeyTable {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(result) = self.slots.with_state(key, |state| measure(state, &f)) {
            return result;
        }
        // Reserve a place before adding, so racing adds cannot overshoot.
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.len.fetch_sub(1, Ordering::AcqRel);
            REFUSED.with(|r| r.set(true));
            return f(None).map(|(t, _)| t);
        }
        self.slots.with_state_or_add(key, |state, added| {
            if !added {
                // Another thread added it first; give the place back.
                self.len.fetch_sub(1, Ordering::AcqRel);
            }
            measure(state, &f)
        })
    }
}

/// The compare-and-swap loop of governor's own in-memory state: `0` means a
/// fresh client.
fn measure<T, E>(
    state: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let load = |v: u64| (v != 0).then(|| Nanos::from(v));
    let mut prev = state.load(Ordering::Acquire);
    let mut decision = f(load(prev));
    while let Ok((result, next)) = decision {
        match state.compare_exchange_weak(prev, next.into(), Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return Ok(result),
            Err(actual) => prev = actual,
        }
        decision = f(load(prev));
    }
    decision.map(|(result, _)| result)
}

impl KeyTable {
    /// Forgets the clients whose state is below `drop_below`.
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below: u64 = drop_below.into();
        let removed = self.slots.retain(|state| state > drop_below);
        self.len.fetch_sub(removed, Ordering::AcqRel);
    }

    fn shrink_to_fit(&self) {
        self.slots.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// The table as governor holds it, shared with the limiter's own sweeps,
/// which need a cutoff governor's API does not take.
struct SharedTable(Arc<KeyTable>);

impl StateStore for SharedTable {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

type Governor<C> = RateLimiter<ClientKey, SharedTable, C, NoOpMiddleware<<C as Clock>::Instant>>;

struct LimiterState<C: Clock> {
    /// What it was built from: a reload to the same limit keeps it.
    config: RateLimit,
    /// Judges new clients, by network, while the table is full.
    overflow: Sketch,
    governor: Governor<C>,
    table: Arc<KeyTable>,
    clock: C,
    start: C::Instant,
    prefix: Ipv6Prefix,
    eviction_interval: Duration,
    /// Clock nanoseconds of the last eviction run on the request path.
    last_inline_eviction: AtomicU64,
    /// Whether the background eviction task was started (or tried).
    housekeeper: std::sync::Once,
}

/// The compiled limiter, generic over the clock so tests can step time.
pub(crate) struct Limiter<C: Clock = DefaultClock> {
    shared: Arc<LimiterState<C>>,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    pub(crate) fn new(config: &RateLimit) -> Result<Self, BuildError> {
        Self::with_clock(config, DefaultClock::default())
    }

    /// A limiter for a keyed limit's keys: each key its own budget, with no
    /// IPv6 prefix.
    pub(crate) fn for_keys(config: &RateLimit) -> Result<Self, BuildError> {
        let mut limiter = Self::with_clock(config, DefaultClock::default())?;
        let shared = Arc::get_mut(&mut limiter.shared).expect("just built");
        shared.prefix = Ipv6Prefix::new(128);
        Ok(limiter)
    }

    /// Checks the budget of a keyed limit's `key`, sent by `client`. While
    /// the table is full, a new key is judged with its client's network,
    /// as a new client is by the per-client limit: one address spraying
    /// fresh keys limits itself, not the newcomers of other networks.
    pub(crate) fn check_key_of(&self, key: LimitKey, client: Option<IpAddr>) -> Budget {
        let key = IpAddr::V6(Ipv6Addr::from(key.0));
        self.check_with(key, client.unwrap_or(key))
    }
}

impl<C: Clock> Limiter<C> {
    pub(crate) fn len(&self) -> usize {
        self.shared.table.len()
    }

    /// Whether a reload to `limit` may keep this limiter and its budgets.
    pub(crate) fn serves(&self, limit: &RateLimit) -> bool {
        self.shared.config == *limit
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> Limiter<C>
where
    C::Instant: Send + Sync,
{
    pub(crate) fn with_clock(config: &RateLimit, clock: C) -> Result<Self, BuildError> {
        let quota = config.quota()?;
        let prefix = Ipv6Prefix::new(config.ipv6_prefix);
        let table = Arc::new(KeyTable {
            slots: SlotTable::new(),
            len: AtomicUsize::new(0),
            cap: config.max_keys,
        });
        Ok(Self {
            shared: Arc::new(LimiterState {
                config: *config,
                overflow: Sketch::new(config.max_keys, config.interval(), config.capacity(), true),
                governor: RateLimiter::new(quota, SharedTable(Arc::clone(&table)), clock.clone()),
                table,
                start: clock.now(),
                clock,
                prefix,
                eviction_interval: config.eviction_interval,
                last_inline_eviction: AtomicU64::new(0),
                housekeeper: std::sync::Once::new(),
            }),
        })
    }

    /// `ip` must already be canonical.
    pub(crate) fn check(&self, ip: IpAddr) -> Budget {
        self.check_with(ip, ip)
    }

    /// The budget of `ip`'s key; a new key while the table is full is
    /// judged with `newcomer`'s network.
    fn check_with(&self, ip: IpAddr, newcomer: IpAddr) -> Budget {
        self.shared
            .housekeeper
            .call_once(|| spawn_housekeeper(Arc::downgrade(&self.shared)));
        let key = ClientKey::of(self.shared.prefix.client(ip));
        let verdict = match self.check_key(&key) {
            None if self.evict_inline() => self.check_key(&key),
            verdict => verdict,
        };
        verdict.unwrap_or_else(|| {
            // Full: judged with its network, in fixed memory.
            let now = self.shared.clock.now().duration_since(self.shared.start);
            match self.shared.overflow.check(newcomer, u64::from(now)) {
                Ok(()) => Budget::Allow,
                Err(wait) => Budget::NetworkOverLimit(wait),
            }
        })
    }

    /// The budget of a tracked client, or `None` when it is new and the
    /// table has no room for it.
    fn check_key(&self, key: &ClientKey) -> Option<Budget> {
        REFUSED.with(|r| r.set(false));
        let outcome = self.shared.governor.check_key(key);
        if REFUSED.with(Cell::get) {
            return None;
        }
        Some(match outcome {
            Ok(()) => Budget::Allow,
            Err(not_until) => Budget::OverLimit(not_until.wait_time_from(self.shared.clock.now())),
        })
    }

    /// Evicts idle clients from the request path, at most once a second so a
    /// flood of new clients cannot make every request scan the table.
    /// Returns whether it ran.
    fn evict_inline(&self) -> bool {
        // Offset by one so that zero can mean "never ran".
        let now = u64::from(self.shared.clock.now().duration_since(self.shared.start)) + 1;
        let last = self.shared.last_inline_eviction.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < 1_000_000_000 {
            return false;
        }
        if self
            .shared
            .last_inline_eviction
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.shared.evict(Duration::ZERO);
        true
    }

    #[cfg(test)]
    pub(crate) fn evict_now(&self) {
        self.shared.evict(Duration::ZERO);
    }

    #[cfg(test)]
    pub(crate) fn evict_on_schedule(&self) {
        self.shared.evict(self.shared.eviction_interval);
    }
}

impl<C: Clock> LimiterState<C> {
    /// Forgets the clients whose budget has been full again for at least
    /// `idle_for`. A client with a full budget is no different from a new
    /// one, but the scheduled sweep keeps those seen within its interval:
    /// a client that comes back every few seconds would otherwise be
    /// forgotten and added again at every sweep, and the table shrunk and
    /// grown with it. A full table, which must make room, sweeps with no
    /// grace.
    fn evict(&self, idle_for: Duration) {
        let before = self.table.len();
        let now = u64::from(self.clock.now().duration_since(self.start));
        // A state is the client's theoretical arrival time; it is a fresh
        // client's once that lies one emission interval in the past, as
        // governor's own sweep reckons it.
        let idle_for = self.config.interval().saturating_add(idle_for);
        let idle_for = u64::try_from(idle_for.as_nanos()).unwrap_or(u64::MAX);
        self.table
            .retain_recent(Nanos::from(now.saturating_sub(idle_for)));
        // Give memory back after a flood has passed, not on every small sweep.
        if self.table.len() < before / 2 {
            self.table.shrink_to_fit();
        }
    }
}

/// Runs scheduled eviction on the crate's alarm thread, for as long as the
/// limiter lives: a timer in tokio's wheel would cost every request (see
/// [`alarm`](crate::alarm)).
fn spawn_housekeeper<C>(shared: Weak<LimiterState<C>>)
where
    C: Clock + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    let Some(interval) = shared.upgrade().map(|s| s.eviction_interval) else {
        return;
    };
    let chore: Weak<dyn Chore> = shared;
    crate::alarm::every(interval, chore);
}

impl<C> Chore for LimiterState<C>
where
    C: Clock + Send + Sync,
    C::Instant: Send + Sync,
{
    fn run(&self) {
        self.evict(self.eviction_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn run(limiter: &Limiter<FakeRelativeClock>, ip: IpAddr, n: usize) -> (usize, usize) {
        let passed = (0..n)
            .filter(|_| limiter.check(ip) == Budget::Allow)
            .count();
        (passed, n - passed)
    }

    fn fake(config: RateLimit) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(&config, clock.clone()).unwrap(), clock)
    }

    /// The figures measured on nginx with `rate=10r/s burst=20 nodelay`:
    /// 40 back-to-back requests give 21 passes and 19 drops; one second
    /// later, 10 pass and 30 drop.
    #[test]
    fn matches_nginx_limit_req_burst_nodelay() {
        let (limiter, clock) = fake(RateLimit::per_second(10).burst(20));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(run(&limiter, ip, 40), (21, 19));
        clock.advance(Duration::from_secs(1));
        assert_eq!(run(&limiter, ip, 40), (10, 30));
        // Another client has its own budget.
        assert_eq!(run(&limiter, "192.0.2.2".parse().unwrap(), 40), (21, 19));
    }

    #[test]
    fn the_wait_is_the_limiter_s_own() {
        let (limiter, clock) = fake(RateLimit::per_second(10).burst(1));
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(limiter.check(ip), Budget::Allow);
        assert_eq!(limiter.check(ip), Budget::Allow);
        assert_eq!(
            limiter.check(ip),
            Budget::OverLimit(Duration::from_millis(100))
        );
        clock.advance(Duration::from_millis(40));
        assert_eq!(
            limiter.check(ip),
            Budget::OverLimit(Duration::from_millis(60))
        );
    }

    #[test]
    fn ipv6_hosts_share_their_prefix() {
        let (limiter, _) = fake(RateLimit::per_minute(1).burst(1));
        let check = |s: &str| limiter.check(s.parse().unwrap());
        assert_eq!(check("2001:db8:0:1::1"), Budget::Allow);
        assert_eq!(check("2001:db8:0:1::2"), Budget::Allow);
        assert!(matches!(
            check("2001:db8:0:1:ffff::3"),
            Budget::OverLimit(_)
        ));
        assert_eq!(check("2001:db8:0:2::1"), Budget::Allow);
        let (wide, _) = fake(RateLimit::per_minute(1).ipv6_prefix(48));
        assert_eq!(
            wide.check("2001:db8:0:1::1".parse().unwrap()),
            Budget::Allow
        );
        assert!(matches!(
            wide.check("2001:db8:0:2::1".parse().unwrap()),
            Budget::OverLimit(_)
        ));
    }

    #[test]
    fn the_table_never_grows_past_its_cap() {
        let (limiter, clock) = fake(RateLimit::per_second(1).max_keys(100));
        let ip = |i: u32| IpAddr::from((0xC000_0200u32 + i).to_be_bytes());
        for i in 0..100 {
            assert_eq!(limiter.check(ip(i)), Budget::Allow);
        }
        assert_eq!(limiter.len(), 100);
        // Full, and every tracked client is still within its refill time:
        // a new client is judged with its /24, which shares one budget; the
        // tracked ones are unaffected, and the table does not grow.
        assert_eq!(limiter.check(ip(1000)), Budget::Allow);
        assert!(matches!(
            limiter.check(ip(1001)),
            Budget::NetworkOverLimit(_)
        ));
        assert!(matches!(limiter.check(ip(5)), Budget::OverLimit(_)));
        assert_eq!(limiter.len(), 100);
        // Once the tracked clients are idle, a full table evicts them inline.
        clock.advance(Duration::from_secs(5));
        assert_eq!(limiter.check(ip(1000)), Budget::Allow);
        assert_eq!(limiter.len(), 1);
    }

    /// A spray of 10,000 /64s from one /48 under a strict limit: memory
    /// stays at the cap, a newcomer from another network passes, and a
    /// sprayed address is still limited, in the table or out of it.
    #[test]
    fn a_spray_neither_crowds_out_newcomers_nor_escapes_its_limit() {
        let (limiter, _clock) = fake(RateLimit::per_minute(1).max_keys(1000));
        let sprayed = |i: u128, host: u128| {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_0001u128 << 80) | (i << 64) | host,
            ))
        };
        for i in 0..10_000 {
            let _ = limiter.check(sprayed(i, 1));
        }
        assert_eq!(limiter.len(), 1000);
        assert!(matches!(
            limiter.check(sprayed(10, 2)),
            Budget::OverLimit(_)
        ));
        assert!(matches!(
            limiter.check(sprayed(5000, 2)),
            Budget::NetworkOverLimit(_)
        ));
        for newcomer in ["2001:db8:2::1", "192.0.2.1", "198.51.100.7"] {
            assert_eq!(
                limiter.check(newcomer.parse().unwrap()),
                Budget::Allow,
                "{newcomer}"
            );
        }
    }

    #[test]
    fn inline_eviction_is_throttled() {
        let (limiter, clock) = fake(RateLimit::per_second(1).burst(5).max_keys(2));
        let ip = |i: u32| IpAddr::from((0x0A00_0000u32 + i).to_be_bytes());
        // Both clients spend their whole burst: idle again only after 7 s.
        for _ in 0..6 {
            assert_eq!(limiter.check(ip(1)), Budget::Allow);
            assert_eq!(limiter.check(ip(2)), Budget::Allow);
        }
        let ms = Duration::from_millis;
        clock.advance(ms(6_500));
        // Nothing idle to evict: the newcomer is judged by its network.
        assert_eq!(limiter.check(ip(3)), Budget::Allow);
        assert_eq!(limiter.len(), 2, "nothing idle to evict");
        clock.advance(ms(700));
        assert_eq!(limiter.check(ip(4)), Budget::Allow);
        assert_eq!(
            limiter.len(),
            2,
            "idle now, but the last scan was under a second ago"
        );
        clock.advance(ms(400));
        assert_eq!(limiter.check(ip(5)), Budget::Allow);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn scheduled_eviction_forgets_idle_clients() {
        let (limiter, clock) = fake(RateLimit::per_second(10).burst(20));
        for i in 0..50u32 {
            limiter.check(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(limiter.len(), 50);
        limiter.evict_now();
        assert_eq!(limiter.len(), 50, "still refilling");
        clock.advance(Duration::from_secs(3));
        limiter.evict_now();
        assert_eq!(limiter.len(), 0);
    }

    /// The scheduled sweep keeps a client whose budget is full but who was
    /// seen within the interval, and forgets it an interval later.
    #[test]
    fn the_scheduled_sweep_keeps_clients_seen_within_its_interval() {
        let (limiter, clock) =
            fake(RateLimit::per_second(10).eviction_interval(Duration::from_secs(10)));
        let client = IpAddr::from([192, 0, 2, 1]);
        assert_eq!(limiter.check(client), Budget::Allow);
        // Full again after 100 ms, seen 5 s ago: kept.
        clock.advance(Duration::from_secs(5));
        limiter.evict_on_schedule();
        assert_eq!(limiter.len(), 1);
        // Full for over a whole interval: forgotten.
        clock.advance(Duration::from_secs(6));
        limiter.evict_on_schedule();
        assert_eq!(limiter.len(), 0);
    }

    #[test]
    fn client_keys_are_the_address_bits() {
        let key = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(key("192.0.2.1"), key("::192.0.2.1"));
        assert_eq!(key("2001:db8::1"), ClientKey(0x2001_0db8_0000_0000, 1));
        assert_eq!(std::mem::size_of::<ClientKey>(), 16);
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(Limiter::new(&RateLimit::per_second(0)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).burst(u32::MAX)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).ipv6_prefix(129)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).max_keys(0)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).eviction_interval(Duration::ZERO)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).ipv6_prefix(0)).is_ok());
    }
}
