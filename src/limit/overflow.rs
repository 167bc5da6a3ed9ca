//! Where the rate limiter judges new clients while its table is full: a
//! fixed-memory sketch of GCRA states, one per network.
//!
//! A full table used to refuse every new client (`rate_limit_full`), so a
//! spray of addresses — an IPv6 /48 holds 65,536 /64s — locked out every
//! legitimate newcomer. Evicting the least recently seen client instead, as
//! nginx's `limit_req` zone does, keeps newcomers in but forgets the
//! sprayers, whose next requests then start with a full budget. The sketch
//! keeps both promises within bounded memory:
//!
//! - **Per network.** A newcomer is judged together with its network (IPv4
//!   /24, IPv6 /48), the unit a spray comes from, so one spray is one key
//!   here however many addresses it uses, and cannot crowd out a client in
//!   another network. A client who shares a /24 or /48 with a sprayer
//!   shares its fate while the table is full.
//! - **Conservative GCRA.** Each network hashes to one cell in each of
//!   [`ROWS`] rows, and a cell keeps the latest theoretical arrival time of
//!   any network that maps to it. A network's estimate is the smallest of
//!   its cells, which is never earlier than its own: a sprayed network is
//!   never under-limited. A newcomer is over-limited only when every one of
//!   its cells is shared with a busier network; `benches/limiter_memory.rs`
//!   measures how often, under a spray of 1,000,000 addresses.
//!
//! Concurrent requests of one network may, in a race, both pass where one
//! should: the estimate is read before either updates it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Rows of the sketch: each network has one cell in each.
pub(crate) const ROWS: usize = 4;

/// A fixed-size table of theoretical arrival times, in nanoseconds since
/// the limiter started.
#[derive(Debug)]
pub(crate) struct Sketch {
    /// Allocated the first time a client is judged here: only a full table
    /// sends clients to the sketch, and most tables never fill, so most
    /// limiters never pay for its megabytes. A limiter a reload replaced
    /// may be held a while by idle connections; this keeps it small.
    cells: OnceLock<Box<[AtomicU64]>>,
    /// Cells per row, a power of two.
    width: usize,
    /// Keyed per process, so an attacker cannot aim at an innocent's cells.
    hasher: RandomState,
    /// The emission interval and the most a budget may run ahead of now,
    /// in nanoseconds: GCRA's `T` and `T * capacity`.
    interval: u64,
    ahead: u64,
    /// Whether keys are addresses judged with their network, or keys of
    /// their own (a keyed limit's).
    by_network: bool,
}

impl Sketch {
    /// A sketch sized for a table of `max_keys` clients: twice as many cells
    /// per row, between 1,024 and 4,194,304 (8 KiB to 32 MiB a row); 8 MiB
    /// in all for the default 100,000, allocated when first used. Fewer
    /// cells fill up sooner: with a spray over as many networks as a row
    /// has cells, one newcomer in six is wrongly limited.
    pub(crate) fn new(
        max_keys: usize,
        interval: Duration,
        capacity: u32,
        by_network: bool,
    ) -> Self {
        let width = max_keys
            .saturating_mul(2)
            .clamp(1024, 1 << 22)
            .next_power_of_two();
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        Self {
            cells: OnceLock::new(),
            width,
            hasher: RandomState::new(),
            interval,
            ahead: interval.saturating_mul(u64::from(capacity)),
            by_network,
        }
    }

    /// The bytes the sketch holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.cells.get().map_or(0, |cells| cells.len()) * std::mem::size_of::<AtomicU64>()
    }

    fn cells(&self) -> &[AtomicU64] {
        self.cells
            .get_or_init(|| (0..self.width * ROWS).map(|_| AtomicU64::new(0)).collect())
    }

    /// Judges one request from `ip`'s network at `now` (nanoseconds since
    /// the limiter started): `Ok` and counted, or the wait until it would
    /// pass.
    pub(crate) fn check(&self, ip: IpAddr, now: u64) -> Result<(), Duration> {
        let cells = self.cells_of(if self.by_network { network(ip) } else { ip });
        let table = self.cells();
        let estimate = cells
            .iter()
            .map(|&i| table[i].load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        let next = estimate.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead > self.ahead {
            return Err(Duration::from_nanos(ahead - self.ahead));
        }
        for i in cells {
            table[i].fetch_max(next, Ordering::AcqRel);
        }
        Ok(())
    }

    fn cells_of(&self, network: IpAddr) -> [usize; ROWS] {
        let hash = self.hasher.hash_one(network);
        // Double hashing: one keyed hash gives every row its own index.
        let (h1, h2) = (hash as usize, ((hash >> 32) as usize) | 1);
        std::array::from_fn(|row| {
            row * self.width + (h1.wrapping_add(row.wrapping_mul(h2)) & (self.width - 1))
        })
    }
}

/// The network a spray comes from: IPv4 /24, IPv6 /48.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xFFFF_FF00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 80) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    #[test]
    fn a_network_gets_the_rate_and_burst() {
        // One a minute, burst 1: two at once, then one a minute.
        let sketch = Sketch::new(1000, Duration::from_secs(60), 2, true);
        assert_eq!(sketch.bytes(), 0, "nothing until first used");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(sketch.check(ip, 0).is_ok());
        assert!(sketch.check(ip, 0).is_ok());
        let wait = sketch.check(ip, 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        // The same /24 shares the budget; another does not.
        assert!(sketch.check("192.0.2.77".parse().unwrap(), 0).is_err());
        assert!(sketch.check("192.0.3.1".parse().unwrap(), 0).is_ok());
        assert!(sketch.check(ip, MIN).is_ok());
        assert!(sketch.check(ip, MIN).is_err());
        assert_eq!(
            sketch.bytes(),
            2048 * ROWS * 8,
            "twice the keys, a power of two"
        );
    }

    #[test]
    fn ipv6_networks_are_slash_48() {
        let sketch = Sketch::new(1000, Duration::from_secs(60), 1, true);
        assert!(sketch.check("2001:db8:1:2::1".parse().unwrap(), 0).is_ok());
        assert!(
            sketch
                .check("2001:db8:1:ffff::1".parse().unwrap(), 0)
                .is_err()
        );
        assert!(sketch.check("2001:db8:2::1".parse().unwrap(), 0).is_ok());
    }
}
