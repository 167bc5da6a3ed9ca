//! A request rate per client, in nginx's terms: the settings of a rate
//! limit, whichever limiter enforces it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;

use crate::error::BuildError;
use crate::rules::client_ip::Ipv6Prefix;

/// A request rate per client, in nginx's terms.
///
/// `RateLimit::per_second(10).burst(20)` is
/// `limit_req_zone ... rate=10r/s; limit_req ... burst=20 nodelay;`: a client
/// may send 21 requests at once, then one every 100 ms. Requests over the
/// limit are dropped at once; nginx's queueing mode (without `nodelay`) has no
/// equivalent, since delaying attackers costs the server, not them.
///
/// Clients are keyed by IPv4 address, or by IPv6 prefix (`/64` by default) so
/// that one host cannot escape the limit by rotating through its own subnet.
/// Behind trusted proxies the client is the real one, not the proxy.
///
/// # Sizing it for innocent traffic
///
/// A drop over the limit is silent, so size the limit for the busiest
/// innocent client, not the average one:
///
/// - **A page view is a burst.** A browser fetches a page and all its
///   sub-resources at once, over up to six connections, and every request
///   counts. With `burst(20)` the 22nd request of a first visit is dropped,
///   so a page with 30 images loads with holes. Set the burst above the
///   most requests one page view makes, or limit only the paths that need
///   it, with [`rate_limit_by`](crate::NoResponseLayerBuilder::rate_limit_by)
///   keyed by the path and the client. Behind a CDN that caches static
///   files, only what reaches the origin counts.
/// - **One address can be many people.** An office, a campus or a
///   carrier-grade NAT sends many users from one IPv4 address, and they
///   share one budget. A limit that fits one person drops the second.
///
/// # Memory
///
/// Each tracked client costs a few dozen bytes. A sweep every
/// [`eviction_interval`](Self::eviction_interval), run by the task that
/// keeps the connection timers on the runtime that first used the limit
/// (none without a runtime), forgets the clients whose budget has been
/// full again for a whole interval, so a client that keeps coming back is not forgotten and
/// added again at every sweep; at most [`max_keys`](Self::max_keys)
/// clients are tracked at once. When the table is full, idle clients are
/// evicted on the spot (at most once a second); if it is still full, a new
/// client is judged together with its network (IPv4 /24, IPv6 /48) in a
/// fixed-memory sketch at the same rate (allocated the first time the
/// table is full: 8 MiB for the default cap), and dropped with rule
/// `rate_limit_full` if that network is over it. A spray of addresses thus
/// neither grows memory nor crowds out newcomers from other networks, and a
/// sprayed network stays limited. Clients already tracked are unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RateLimit {
    pub(super) requests: u32,
    pub(super) per: Duration,
    pub(super) burst: u32,
    pub(super) ipv6_prefix: u8,
    pub(super) max_keys: usize,
    pub(super) eviction_interval: Duration,
}

impl RateLimit {
    /// `n` requests a second (`rate=nr/s`).
    pub const fn per_second(n: u32) -> Self {
        Self::new(n, Duration::from_secs(1))
    }

    /// `n` requests a minute (`rate=nr/m`).
    pub const fn per_minute(n: u32) -> Self {
        Self::new(n, Duration::from_secs(60))
    }

    const fn new(requests: u32, per: Duration) -> Self {
        Self {
            requests,
            per,
            burst: 0,
            ipv6_prefix: 64,
            max_keys: 100_000,
            eviction_interval: Duration::from_secs(10),
        }
    }

    /// Requests allowed beyond the rate at once (`burst=n`, always `nodelay`).
    pub const fn burst(mut self, n: u32) -> Self {
        self.burst = n;
        self
    }

    /// The IPv6 prefix length that shares one budget, `/64` by default.
    pub const fn ipv6_prefix(mut self, len: u8) -> Self {
        self.ipv6_prefix = len;
        self
    }

    /// The most clients tracked at once, 100,000 by default (a few MiB).
    pub const fn max_keys(mut self, n: usize) -> Self {
        self.max_keys = n;
        self
    }

    /// How often idle clients are forgotten, every 10 seconds by default.
    pub const fn eviction_interval(mut self, every: Duration) -> Self {
        self.eviction_interval = every;
        self
    }

    /// How long one request's share of the budget takes to refill: the
    /// period divided by the rate (100 ms for `per_second(10)`).
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }

    /// How many requests a fresh client may send at once: the first one plus
    /// the [`burst`](Self::burst).
    #[must_use]
    pub const fn capacity(&self) -> u32 {
        self.burst.saturating_add(1)
    }

    /// The quota and its window in seconds, as a `RateLimit-Policy` header
    /// writes them: `10r/s` is 10 in 1, `30r/m` 30 in 60.
    pub(crate) fn policy(&self) -> (u32, u64) {
        (self.requests, self.per.as_secs())
    }

    /// The key `ip` (canonical) is counted under: the address itself for
    /// IPv4, its prefix for IPv6.
    pub(crate) fn key_of(&self, ip: IpAddr) -> IpAddr {
        Ipv6Prefix::new(self.ipv6_prefix).client(ip)
    }

    pub(crate) fn quota(&self) -> Result<Quota, BuildError> {
        let bad = |reason: String| BuildError::RateLimit { reason };
        if self.requests == 0 {
            return Err(bad("the rate must be at least one request".into()));
        }
        if self.ipv6_prefix > 128 {
            return Err(bad(format!("ipv6_prefix {} is over 128", self.ipv6_prefix)));
        }
        if self.max_keys == 0 {
            return Err(bad("max_keys must be at least 1".into()));
        }
        if self.eviction_interval.is_zero() {
            return Err(bad("eviction_interval must not be zero".into()));
        }
        let period = self.per / self.requests;
        // nginx admits the first request plus `burst` more; governor's burst
        // is the whole bucket.
        let bucket = self
            .burst
            .checked_add(1)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| bad(format!("burst {} is too large", self.burst)))?;
        Quota::with_period(period)
            .map(|q| q.allow_burst(bucket))
            .ok_or_else(|| {
                bad(format!(
                    "{} requests per {:?} is too fast",
                    self.requests, self.per
                ))
            })
    }
}
