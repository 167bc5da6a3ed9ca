//! A per-client rate limit with nginx's `limit_req ... nodelay` model.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::error::BuildError;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RateLimit {
    requests: u32,
    per: Duration,
    burst: u32,
    ipv6_prefix: u8,
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

    fn quota(&self) -> Result<Quota, BuildError> {
        let bad = |reason: String| BuildError::RateLimit { reason };
        if self.requests == 0 {
            return Err(bad("the rate must be at least one request".into()));
        }
        if self.ipv6_prefix > 128 {
            return Err(bad(format!("ipv6_prefix {} is over 128", self.ipv6_prefix)));
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

/// The compiled limiter, generic over the clock so tests can step time.
pub(crate) struct Limiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    v6_mask: u128,
}

impl<C: Clock> std::fmt::Debug for Limiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("keys", &self.limiter.len())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    pub(crate) fn new(config: &RateLimit) -> Result<Self, BuildError> {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock> Limiter<C> {
    pub(crate) fn with_clock(config: &RateLimit, clock: C) -> Result<Self, BuildError> {
        let quota = config.quota()?;
        let v6_mask = match config.ipv6_prefix {
            0 => 0,
            len => u128::MAX << (128 - u32::from(len)),
        };
        Ok(Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock),
            v6_mask,
        })
    }

    /// `ip` must already be canonical. Returns `false` when over the limit.
    pub(crate) fn check(&self, ip: IpAddr) -> bool {
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & self.v6_mask)),
        };
        self.limiter.check_key(&key).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn run(limiter: &Limiter<FakeRelativeClock>, ip: IpAddr, n: usize) -> (usize, usize) {
        let passed = (0..n).filter(|_| limiter.check(ip)).count();
        (passed, n - passed)
    }

    /// The figures measured on nginx with `rate=10r/s burst=20 nodelay`:
    /// 40 back-to-back requests give 21 passes and 19 drops; one second
    /// later, 10 pass and 30 drop.
    #[test]
    fn matches_nginx_limit_req_burst_nodelay() {
        let clock = FakeRelativeClock::default();
        let limiter =
            Limiter::with_clock(&RateLimit::per_second(10).burst(20), clock.clone()).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(run(&limiter, ip, 40), (21, 19));
        clock.advance(Duration::from_secs(1));
        assert_eq!(run(&limiter, ip, 40), (10, 30));
        // Another client has its own budget.
        assert_eq!(run(&limiter, "192.0.2.2".parse().unwrap(), 40), (21, 19));
    }

    #[test]
    fn ipv6_hosts_share_their_prefix() {
        let limiter = Limiter::with_clock(
            &RateLimit::per_minute(1).burst(1),
            FakeRelativeClock::default(),
        )
        .unwrap();
        assert!(limiter.check("2001:db8:0:1::1".parse().unwrap()));
        assert!(limiter.check("2001:db8:0:1::2".parse().unwrap()));
        assert!(!limiter.check("2001:db8:0:1:ffff::3".parse().unwrap()));
        assert!(limiter.check("2001:db8:0:2::1".parse().unwrap()));
    }

    #[test]
    fn impossible_limits_are_refused() {
        assert!(Limiter::new(&RateLimit::per_second(0)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).burst(u32::MAX)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).ipv6_prefix(129)).is_err());
        assert!(Limiter::new(&RateLimit::per_second(1).ipv6_prefix(0)).is_ok());
    }
}
