//! The decisions in force, as one immutable table swapped whole after each
//! pull: single addresses in a hash map, ranges as sorted, non-overlapping
//! intervals, so a lookup is one hash probe and one binary search however
//! many decisions there are.

use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use ipnet::IpNet;

/// What a decision asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Remedy {
    /// Any type but `ban` (`captcha`, `throttle`, ...): the configured
    /// action for other types.
    Other,
    /// `ban`: a 444.
    Ban,
}

/// One decision, as the LAPI sent it and as far as the table needs it:
/// 32 bytes, with no allocation of its own, since a million of them may be
/// held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) target: Target,
    pub(crate) remedy: Remedy,
    /// When it runs out, in [`Epoch`] seconds.
    pub(crate) until: u32,
    /// Its scenario's index in the names the table is built with.
    pub(crate) scenario: u32,
}

/// Whom a decision covers: a network as its first address (IPv4 in its
/// IPv6-mapped form, as addresses are keyed) and its prefix length over
/// 128 bits; an address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    /// The first address, high word first: words rather than a `u128`,
    /// whose alignment would pad every decision to 48 bytes.
    first: [u32; 4],
    prefix: u8,
    /// An IPv6 range: every address it spans but the IPv4-mapped block.
    /// CrowdSec keeps the two families apart, so an IPv6 decision never
    /// covers an IPv4 client, not even `::/0`.
    v6_range: bool,
}

impl Target {
    pub(crate) fn ip(ip: IpAddr) -> Self {
        Self::of(key(ip), 128, false)
    }

    pub(crate) fn range(net: IpNet) -> Self {
        match net {
            IpNet::V4(v4) => Self::of(
                u128::from(v4.trunc().network().to_ipv6_mapped()),
                v4.prefix_len() + 96,
                false,
            ),
            IpNet::V6(v6) => Self::of(u128::from(v6.trunc().network()), v6.prefix_len(), true),
        }
    }

    fn of(first: u128, prefix: u8, v6_range: bool) -> Self {
        Self {
            first: [
                (first >> 96) as u32,
                (first >> 64) as u32,
                (first >> 32) as u32,
                first as u32,
            ],
            prefix,
            v6_range,
        }
    }

    /// First and last address, inclusive.
    fn bounds(self) -> (u128, u128) {
        let first = self.first.iter().fold(0, |n, &w| (n << 32) | u128::from(w));
        let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
        (first, first | host)
    }

    fn is_address(self) -> bool {
        self.prefix == 128 && !self.v6_range
    }

    /// The intervals of addresses covered, at most two: an IPv6 range with
    /// the IPv4-mapped block cut out.
    fn intervals(self) -> impl Iterator<Item = (u128, u128)> {
        let (first, last) = self.bounds();
        let (below, above) = if self.v6_range {
            let below = (first < *MAPPED.start()).then(|| (first, last.min(*MAPPED.start() - 1)));
            let above = (last > *MAPPED.end()).then(|| (first.max(*MAPPED.end() + 1), last));
            (below, above)
        } else {
            (Some((first, last)), None)
        };
        below.into_iter().chain(above)
    }

    /// The network this covers, in its own family.
    fn net(self) -> IpNet {
        let (first, _) = self.bounds();
        let v6 = std::net::Ipv6Addr::from(first);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.prefix >= 96 && !self.v6_range => IpNet::V4(
                ipnet::Ipv4Net::new(v4, self.prefix - 96).expect("a prefix of at most 32"),
            ),
            _ => IpNet::V6(ipnet::Ipv6Net::new(v6, self.prefix).expect("a prefix of at most 128")),
        }
    }
}

/// The instant decisions count their expiry from, in whole seconds: four
/// bytes per decision instead of an `Instant`'s sixteen. 136 years fit; a
/// longer decision lasts as long as that.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    pub(crate) fn new(at: Instant) -> Self {
        Self(at)
    }

    /// `at` in seconds, rounded up: a decision never runs out early.
    pub(crate) fn until(self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.0);
        let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// `left` from `now`, in seconds.
    pub(crate) fn until_after(self, now: Instant, left: Duration) -> u32 {
        match now.checked_add(left) {
            Some(at) => self.until(at),
            None => u32::MAX,
        }
    }

    /// `now` in seconds, rounded down: a decision is in force while this is
    /// below its `until`.
    pub(crate) fn now(self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.0).as_secs()).unwrap_or(u32::MAX)
    }

    pub(crate) fn instant(self, secs: u32) -> Instant {
        let mut ahead = Duration::from_secs(u64::from(secs));
        // The clock holds 136 years on every platform this runs on; if not,
        // as far as it can.
        loop {
            if let Some(at) = self.0.checked_add(ahead) {
                return at;
            }
            ahead /= 2;
        }
    }
}

/// The IPv4-mapped block, `::ffff:0:0/96`, where IPv4 addresses are keyed.
const MAPPED: std::ops::RangeInclusive<u128> = 0xffff_0000_0000..=0xffff_ffff_ffff;

/// An address as one number, IPv4 in its IPv6-mapped form, so both
/// spellings of a client are the same key.
fn key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) remedy: Remedy,
    pub(crate) scenario: Arc<str>,
}

/// The decisions in force; immutable once built.
#[derive(Debug)]
pub(crate) struct Table {
    exact: HashMap<u128, Entry, RandomState>,
    /// Each range's first address, for the search: dense, so a search
    /// touches few cache lines.
    starts: Vec<u128>,
    /// The same for the ranges that start inside the IPv4-mapped block,
    /// as 32 bits, beginning at `starts[v4_from]`: an IPv4 client, most
    /// clients, searches a quarter of the bytes with cheaper compares.
    v4_starts: Vec<u32>,
    v4_from: usize,
    /// Sorted by `first`, never overlapping.
    ranges: Vec<Interval>,
    len: usize,
    /// Whether any decision is of another type than `ban`.
    has_other: bool,
    /// The bans as networks, the longest lasting first, for the kernel
    /// filter, which holds a few hundred at most.
    kernel: Vec<(IpNet, u32)>,
    /// The scenarios' names, by index.
    names: Vec<Arc<str>>,
    epoch: Epoch,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            exact: HashMap::default(),
            starts: Vec::new(),
            v4_starts: Vec::new(),
            v4_from: 0,
            ranges: Vec::new(),
            len: 0,
            has_other: false,
            kernel: Vec::new(),
            names: Vec::new(),
            epoch: Epoch(Instant::now()),
        }
    }
}

/// The most bans listed for the kernel filter.
const KERNEL_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    remedy: Remedy,
    until: u32,
    scenario: u32,
}

impl Entry {
    /// The stronger of two: a ban over any other type, then the one that
    /// lasts longer.
    fn stronger(self, other: Self) -> Self {
        if (other.remedy, other.until) > (self.remedy, self.until) {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, Clone)]
struct Interval {
    first: u128,
    last: u128,
    entry: Entry,
}

impl Table {
    /// Builds the table from every decision in force at `now`, whose
    /// scenarios are indexes into `names`.
    pub(crate) fn build<'a>(
        decisions: impl Iterator<Item = &'a Decision> + Clone,
        names: Vec<Arc<str>>,
        epoch: Epoch,
        now: Instant,
    ) -> Self {
        let now = epoch.now(now);
        let live = decisions.filter(move |d| d.until > now);
        // Sized once: a map or vector that doubles holds both sizes at its
        // peak, and the table is the bulk of what a bouncer holds.
        let (mut addresses, mut pieces) = (0, 0);
        for d in live.clone() {
            if d.target.is_address() {
                addresses += 1;
            } else {
                pieces += d.target.intervals().count();
            }
        }
        let mut exact: HashMap<u128, Entry, RandomState> =
            HashMap::with_capacity_and_hasher(addresses, RandomState::default());
        let mut ranges = Vec::with_capacity(pieces);
        let mut len = 0;
        let mut has_other = false;
        // The longest lasting bans, the shortest on top to be replaced.
        let mut kernel = BinaryHeap::with_capacity(KERNEL_MAX + 1);
        for d in live {
            len += 1;
            has_other |= d.remedy == Remedy::Other;
            if d.remedy == Remedy::Ban {
                kernel.push(std::cmp::Reverse((d.until, Kernel(d.target))));
                if kernel.len() > KERNEL_MAX {
                    kernel.pop();
                }
            }
            let entry = Entry {
                remedy: d.remedy,
                until: d.until,
                scenario: d.scenario,
            };
            if d.target.is_address() {
                let (ip, _) = d.target.bounds();
                exact
                    .entry(ip)
                    .and_modify(|old| *old = old.stronger(entry))
                    .or_insert(entry);
            } else {
                for (first, last) in d.target.intervals() {
                    ranges.push(Interval { first, last, entry });
                }
            }
        }
        let ranges = flatten(ranges);
        let mut kernel: Vec<(IpNet, u32)> = kernel
            .into_iter()
            .map(|std::cmp::Reverse((until, Kernel(target)))| (target.net(), until))
            .collect();
        kernel.sort_by_key(|(_, until)| std::cmp::Reverse(*until));
        let starts: Vec<u128> = ranges.iter().map(|r| r.first).collect();
        let v4_from = starts.partition_point(|&first| first < *MAPPED.start());
        let v4_starts = starts[v4_from..]
            .iter()
            .take_while(|&&first| MAPPED.contains(&first))
            .map(|&first| first as u32)
            .collect();
        Self {
            exact,
            starts,
            v4_starts,
            v4_from,
            ranges,
            len,
            has_other,
            kernel,
            names,
            epoch,
        }
    }

    /// The bans in force at `now` as networks, the longest lasting first,
    /// at most `limit`.
    pub(crate) fn kernel_nets(&self, limit: usize, now: Instant) -> Vec<(IpNet, Instant)> {
        let now = self.epoch.now(now);
        let live = self.kernel.iter().filter(|(_, until)| *until > now);
        live.take(limit)
            .map(|&(net, until)| (net, self.epoch.instant(until)))
            .collect()
    }

    /// Whether any decision is of another type than `ban`.
    pub(crate) fn has_other(&self) -> bool {
        self.has_other
    }

    /// The decisions the table was built from that were in force.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The strongest decision in force on `ip`, if any. The clock is read
    /// only when a decision names `ip`: a client with none, the innocent
    /// case, costs one hash probe and one binary search.
    pub(crate) fn lookup(&self, ip: IpAddr, now: impl FnOnce() -> Instant) -> Option<Found> {
        let ip = key(ip);
        let exact = self.exact.get(&ip);
        // Every start before the mapped block is below a mapped address and
        // every one after it above, so within the block the search is the
        // same on the low 32 bits.
        let at = if MAPPED.contains(&ip) {
            self.v4_from + self.v4_starts.partition_point(|&first| first <= ip as u32)
        } else {
            self.starts.partition_point(|&first| first <= ip)
        };
        let range = at
            .checked_sub(1)
            .map(|i| &self.ranges[i])
            .filter(|r| r.last >= ip)
            .map(|r| &r.entry);
        if exact.is_none() && range.is_none() {
            return None;
        }
        let now = self.epoch.now(now());
        let live = |e: Option<&Entry>| e.filter(|e| e.until > now).copied();
        let entry = match (live(exact), live(range)) {
            (Some(a), Some(b)) => a.stronger(b),
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => return None,
        };
        Some(Found {
            remedy: entry.remedy,
            scenario: self.name(entry.scenario),
        })
    }

    fn name(&self, scenario: u32) -> Arc<str> {
        usize::try_from(scenario)
            .ok()
            .and_then(|i| self.names.get(i))
            .map_or_else(|| Arc::from(""), Arc::clone)
    }

    /// When the first decision in the table runs out, for a rebuild.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        let exact = self.exact.values().map(|e| e.until);
        let ranges = self.ranges.iter().map(|r| r.entry.until);
        exact.chain(ranges).min().map(|at| self.epoch.instant(at))
    }
}

/// A target ordered for the kernel's heap, where only its expiry counts.
#[derive(Debug, Clone, Copy)]
struct Kernel(Target);

impl PartialEq for Kernel {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Kernel {}
impl PartialOrd for Kernel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kernel {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Overlapping ranges become disjoint intervals, each with the strongest
/// decision over it: a sweep over the boundaries with the ranges open at
/// each point in a heap.
fn flatten(mut ranges: Vec<Interval>) -> Vec<Interval> {
    ranges.sort_by_key(|r| r.first);
    let mut bounds: Vec<u128> = Vec::with_capacity(ranges.len() * 2);
    for r in &ranges {
        bounds.push(r.first);
        if let Some(after) = r.last.checked_add(1) {
            bounds.push(after);
        }
    }
    bounds.sort_unstable();
    bounds.dedup();

    // Open ranges by strength; one that has ended is dropped when it reaches
    // the top.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Open {
        strength: (Remedy, u32),
        last: u128,
        index: usize,
    }
    let mut open = BinaryHeap::new();
    let mut next = 0;
    let mut out: Vec<Interval> = Vec::new();
    for (i, &start) in bounds.iter().enumerate() {
        while next < ranges.len() && ranges[next].first <= start {
            let r = &ranges[next];
            open.push(Open {
                strength: (r.entry.remedy, r.entry.until),
                last: r.last,
                index: next,
            });
            next += 1;
        }
        while open.peek().is_some_and(|o| o.last < start) {
            open.pop();
        }
        let Some(top) = open.peek() else {
            continue;
        };
        let end = bounds.get(i + 1).map_or(u128::MAX, |b| b - 1).min(top.last);
        let entry = &ranges[top.index].entry;
        match out.last_mut() {
            // The same decision over adjacent pieces: one interval.
            Some(prev) if prev.last.checked_add(1) == Some(start) && prev.entry == *entry => {
                prev.last = end;
            }
            _ => out.push(Interval {
                first: start,
                last: end,
                entry: *entry,
            }),
        }
    }
    out
}

/// Parses a Go duration as the LAPI writes them: `4h0m0s`, `59m59.1s`,
/// `-28.5ms`, `1.5µs`. `None` for anything else. A negative duration
/// (an expired or deleted decision) is `Some(ZERO)`.
/// Go's longest duration, `2562047h47m16.854775807s`.
pub(crate) const GO_MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number.starts_with('.') && number.len() == 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * seconds;
        rest = next;
    }
    if negative {
        return Some(Duration::ZERO);
    }
    // Go's durations are 64-bit nanoseconds: no decision lasts longer,
    // however many digits it was written with.
    Some(Duration::try_from_secs_f64(total).map_or(GO_MAX_DURATION, |d| d.min(GO_MAX_DURATION)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of decisions given as target, remedy, seconds left and
    /// scenario, built now.
    fn table(decisions: &[(Target, Remedy, u64, &str)]) -> Table {
        table_at(decisions, Instant::now())
    }

    fn table_at(decisions: &[(Target, Remedy, u64, &str)], now: Instant) -> Table {
        let epoch = Epoch::new(now);
        let mut names: Vec<Arc<str>> = Vec::new();
        let decisions: Vec<Decision> = decisions
            .iter()
            .map(|&(target, remedy, secs, scenario)| {
                let index = names
                    .iter()
                    .position(|n| &**n == scenario)
                    .unwrap_or_else(|| {
                        names.push(Arc::from(scenario));
                        names.len() - 1
                    });
                Decision {
                    target,
                    remedy,
                    until: epoch.until_after(now, Duration::from_secs(secs)),
                    scenario: index as u32,
                }
            })
            .collect();
        Table::build(decisions.iter(), names, epoch, now)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(s: &str) -> Target {
        Target::range(s.parse().unwrap())
    }

    #[test]
    fn go_durations_parse_as_the_lapi_writes_them() {
        let d = |s| go_duration(s);
        assert_eq!(d("4h0m0s"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(d("59m59.5s"), Some(Duration::from_millis(3_599_500)));
        assert_eq!(d("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("-28.555136ms"), Some(Duration::ZERO));
        assert_eq!(d("0"), Some(Duration::ZERO));
        for bad in ["", "h", "4", "4x", "1h-2m", "--1s", ".s", "NaNs", "1e400h"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        // Longer than Go can say: as long as it can.
        let endless = format!("{}h", "9".repeat(400));
        for huge in ["3000000000000000h", "2562048h", endless.as_str()] {
            assert_eq!(d(huge), Some(GO_MAX_DURATION), "{huge:?}");
        }
        assert!(
            std::time::Instant::now()
                .checked_add(GO_MAX_DURATION)
                .is_some()
        );
    }

    #[test]
    fn an_address_is_found_alone_and_inside_its_ranges_in_either_spelling() {
        let table = table(&[
            (Target::ip(ip("192.0.2.7")), Remedy::Ban, 60, "ssh-bf"),
            (range("198.51.100.0/24"), Remedy::Ban, 60, "scan"),
            (range("2001:db8::/48"), Remedy::Other, 60, "captcha"),
        ]);
        let now = Instant::now();
        let found = |s: &str| {
            table
                .lookup(ip(s), || now)
                .map(|f| (f.remedy, f.scenario.to_string()))
        };
        assert_eq!(found("192.0.2.7"), Some((Remedy::Ban, "ssh-bf".into())));
        assert_eq!(
            found("::ffff:192.0.2.7"),
            Some((Remedy::Ban, "ssh-bf".into()))
        );
        assert_eq!(found("192.0.2.8"), None);
        assert_eq!(found("198.51.100.0"), Some((Remedy::Ban, "scan".into())));
        assert_eq!(found("198.51.100.255"), Some((Remedy::Ban, "scan".into())));
        assert_eq!(found("198.51.101.0"), None);
        assert_eq!(found("198.51.99.255"), None);
        assert_eq!(
            found("2001:db8:0:ffff::1"),
            Some((Remedy::Other, "captcha".into()))
        );
        assert_eq!(found("2001:db9::1"), None);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn overlapping_ranges_keep_the_strongest_decision_over_each_part() {
        let table = table(&[
            (range("10.0.0.0/8"), Remedy::Other, 600, "wide"),
            (range("10.1.0.0/16"), Remedy::Ban, 60, "narrow"),
            (range("10.1.2.0/24"), Remedy::Other, 6000, "inner"),
        ]);
        let now = Instant::now();
        let scenario = |s: &str| table.lookup(ip(s), || now).map(|f| f.scenario.to_string());
        assert_eq!(scenario("10.0.0.1").as_deref(), Some("wide"));
        assert_eq!(scenario("10.1.0.1").as_deref(), Some("narrow"));
        // A ban outranks a longer decision of another type.
        assert_eq!(scenario("10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(scenario("10.2.0.1").as_deref(), Some("wide"));
        assert_eq!(scenario("11.0.0.0"), None);
        // Disjoint and sorted.
        assert!(table.ranges.windows(2).all(|w| w[0].last < w[1].first));
    }

    #[test]
    fn bans_are_listed_for_the_kernel_as_the_networks_they_were() {
        let table = table(&[
            (Target::ip(ip("192.0.2.7")), Remedy::Ban, 60, "a"),
            (range("198.51.100.0/24"), Remedy::Ban, 600, "b"),
            (range("2001:db8::/48"), Remedy::Ban, 6000, "c"),
            (Target::ip(ip("2001:db8::9")), Remedy::Ban, 30, "d"),
            (range("0.0.0.0/0"), Remedy::Other, 60, "e"),
        ]);
        let nets: Vec<String> = table
            .kernel_nets(10, Instant::now())
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            nets,
            [
                "2001:db8::/48",
                "198.51.100.0/24",
                "192.0.2.7/32",
                "2001:db8::9/128"
            ]
        );
        assert_eq!(table.kernel_nets(1, Instant::now()).len(), 1);
        assert!(
            table
                .kernel_nets(10, Instant::now() + Duration::from_secs(7000))
                .is_empty()
        );
        assert_eq!(range("::/0").net().to_string(), "::/0");
    }

    /// CrowdSec keeps the families apart: no IPv6 decision covers an
    /// IPv4 client, however wide, while the IPv6 clients it names are
    /// found on both sides of the IPv4-mapped block.
    #[test]
    fn an_ipv6_range_never_covers_an_ipv4_client() {
        let now = Instant::now();
        for wide in ["::/8", "::ffff:0:0/96", "::/0", "::ffff:10.0.0.0/104"] {
            let table = table_at(&[(range(wide), Remedy::Ban, 60, "bogons")], now);
            for v4 in ["127.0.0.1", "10.1.2.3", "255.255.255.255", "0.0.0.0"] {
                assert!(table.lookup(ip(v4), || now).is_none(), "{wide} covers {v4}");
                let mapped = format!("::ffff:{v4}");
                assert!(
                    table.lookup(ip(&mapped), || now).is_none(),
                    "{wide} covers {mapped}"
                );
            }
        }
        let table = table_at(&[(range("::/0"), Remedy::Ban, 60, "all")], now);
        for v6 in [
            "::1",
            "::fffe:ffff:ffff",
            "::1:0:0:0",
            "2001:db8::1",
            "ffff::1",
        ] {
            assert!(table.lookup(ip(v6), || now).is_some(), "{v6}");
        }
        // Nor is one listed for the kernel filter as IPv4.
        for wide in ["::ffff:0:0/96", "::ffff:10.0.0.0/104", "::/0"] {
            assert!(matches!(range(wide).net(), IpNet::V6(_)), "{wide}");
        }
        // An IPv4 decision still covers its clients, in either spelling.
        let table = table_at(&[(range("10.0.0.0/8"), Remedy::Ban, 60, "v4")], now);
        assert!(table.lookup(ip("10.1.2.3"), || now).is_some());
        assert!(table.lookup(ip("::ffff:10.1.2.3"), || now).is_some());
    }

    #[test]
    fn a_decision_that_ran_out_is_not_found() {
        let now = Instant::now();
        let table = table_at(&[(Target::ip(ip("192.0.2.1")), Remedy::Ban, 2, "x")], now);
        assert!(table.lookup(ip("192.0.2.1"), || now).is_some());
        let later = |ms| now + Duration::from_millis(ms);
        assert!(table.lookup(ip("192.0.2.1"), || later(1_999)).is_some());
        assert!(table.lookup(ip("192.0.2.1"), || later(2_000)).is_none());
    }

    /// Seconds are rounded so that a decision never runs out early, and
    /// one longer than the epoch holds lasts as long as it can.
    #[test]
    fn an_epoch_second_never_ends_a_decision_early() {
        let base = Instant::now();
        let epoch = Epoch::new(base);
        let at = base + Duration::from_millis(1_500);
        assert_eq!(epoch.until(at), 2);
        assert_eq!(epoch.now(at), 1);
        assert_eq!(epoch.until_after(base, GO_MAX_DURATION), u32::MAX);
        assert!(epoch.instant(u32::MAX) > base + Duration::from_secs(100 * 365 * 86_400));
        assert_eq!(std::mem::size_of::<Decision>(), 32);
    }

    #[test]
    fn ipv4_clients_find_what_a_search_of_every_range_finds() {
        // Ranges below, across, inside and above the IPv4-mapped block; the
        // IPv6 one across it is cut at the block, and no IPv4 client falls
        // in it.
        let table = table(&[
            (range("::/97"), Remedy::Ban, 60, "below"),
            (range("::fffe:0:0/95"), Remedy::Ban, 60, "across"),
            (range("10.0.0.0/8"), Remedy::Ban, 120, "ten"),
            (range("192.0.2.0/24"), Remedy::Ban, 60, "doc"),
            (range("255.255.255.0/24"), Remedy::Ban, 60, "top"),
            (range("::1:0:0:0/96"), Remedy::Ban, 60, "above"),
            (range("2001:db8::/32"), Remedy::Ban, 60, "v6"),
        ]);
        assert!(!table.v4_starts.is_empty());
        let now = Instant::now();
        let every_range = |ip: IpAddr| {
            let k = key(ip);
            table
                .ranges
                .iter()
                .find(|r| r.first <= k && k <= r.last)
                .map(|r| table.name(r.entry.scenario).to_string())
        };
        for s in [
            "0.0.0.0",
            "0.255.255.255",
            "1.0.0.0",
            "9.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "11.0.0.0",
            "192.0.2.0",
            "192.0.2.255",
            "192.0.3.0",
            "255.255.254.255",
            "255.255.255.255",
            "::ffff:10.1.2.3",
            "::fffe:1:2",
            "::1:0:0:1",
            "::1",
            "2001:db8::1",
            "2001:db9::1",
        ] {
            let found = table.lookup(ip(s), || now).map(|f| f.scenario.to_string());
            assert_eq!(found, every_range(ip(s)), "{s}");
        }
        for (s, scenario) in [
            ("0.0.0.5", None),
            ("10.1.2.3", Some("ten")),
            ("11.0.0.1", None),
            ("::fffe:1:2", Some("across")),
        ] {
            let found = table.lookup(ip(s), || now).map(|f| f.scenario.to_string());
            assert_eq!(found.as_deref(), scenario, "{s}");
        }
    }

    #[test]
    fn the_whole_address_space_can_be_one_range() {
        let table = table(&[
            (range("::/0"), Remedy::Ban, 60, "all6"),
            (range("0.0.0.0/0"), Remedy::Ban, 60, "all4"),
        ]);
        let now = Instant::now();
        assert!(
            table
                .lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), || now)
                .is_some()
        );
        assert!(table.lookup(ip("::"), || now).is_some());
        assert!(table.lookup(ip("203.0.113.9"), || now).is_some());
    }
}
