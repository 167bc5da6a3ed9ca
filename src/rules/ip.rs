//! Client IP rules: ordered allow/deny on CIDR blocks, as nginx's
//! `allow`/`deny`, and the trusted-proxy set used to find the real client.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::error::BuildError;

/// What an IP rule does when it is the first to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpAction {
    Allow,
    Deny,
}

/// Parses `all`, a single address or a CIDR block.
///
/// IPv4-mapped IPv6 blocks (`::ffff:192.0.2.0/120`) become their IPv4 form so
/// that one rule covers both spellings of the same client. A block with host
/// bits set (`192.0.2.1/24`) is refused: it usually means a typo, and guessing
/// in a deny list fails open.
pub(crate) fn parse_cidrs(rule: &'static str, value: &str) -> Result<Vec<IpNet>, BuildError> {
    let bad = |reason: String| BuildError::Cidr {
        rule,
        value: value.to_owned(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.eq_ignore_ascii_case("all") {
        return Ok(vec![
            "0.0.0.0/0".parse().expect("literal"),
            "::/0".parse().expect("literal"),
        ]);
    }
    let net = if let Some((addr, len)) = trimmed.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
        let longest = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|len| *len <= longest)
            .ok_or_else(|| {
                bad(format!(
                    "the prefix length must be a number from 0 to {longest}, not {len:?}"
                ))
            })?;
        let net = IpNet::new(addr, len).map_err(|e| bad(e.to_string()))?;
        if net.addr() != net.network() {
            return Err(bad(format!(
                "host bits are set; the block is {}",
                net.trunc()
            )));
        }
        net
    } else {
        let addr: IpAddr = trimmed
            .parse()
            .map_err(|e| bad(format!("{e}; expected an address, a CIDR block or `all`")))?;
        IpNet::from(addr)
    };
    Ok(vec![canonical_net(net)])
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// Ordered allow/deny rules; the first match wins and no match allows.
///
/// The rules are flattened once, at build, into sorted tables of disjoint
/// address intervals, each holding the action of the first rule that covers
/// it. A lookup is then one binary search, whatever the number of rules or
/// their order: `O(log n)` instead of a scan of every block.
#[derive(Default)]
pub(crate) struct IpRules {
    rules: Vec<(IpNet, IpAction)>,
    v4: Table<u32>,
    v6: Table<u128>,
}

impl std::fmt::Debug for IpRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRules")
            .field("rules", &self.rules.len())
            .field("intervals", &(self.v4.starts.len() + self.v6.starts.len()))
            .finish()
    }
}

impl IpRules {
    pub(crate) fn push(&mut self, nets: Vec<IpNet>, action: IpAction) {
        self.rules.extend(nets.into_iter().map(|n| (n, action)));
    }

    /// Builds the lookup tables; call once, after the last `push`.
    pub(crate) fn seal(&mut self) {
        let ranges = |want_v4: bool| {
            self.rules
                .iter()
                .filter(move |(net, _)| matches!(net, IpNet::V4(_)) == want_v4)
                .map(|&(net, action)| (net, action))
        };
        self.v4 = Table::build(ranges(true).map(|(net, action)| match net {
            IpNet::V4(n) => (u32::from(n.network()), u32::from(n.broadcast()), action),
            IpNet::V6(_) => unreachable!("filtered to IPv4"),
        }));
        self.v6 = Table::build(ranges(false).map(|(net, action)| match net {
            IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast()), action),
            IpNet::V4(_) => unreachable!("filtered to IPv6"),
        }));
    }

    /// The rules in order of precedence.
    pub(crate) fn rules(&self) -> &[(IpNet, IpAction)] {
        &self.rules
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `ip` must already be canonical (see [`IpAddr::to_canonical`]).
    pub(crate) fn first_match(&self, ip: IpAddr) -> Option<IpAction> {
        debug_assert!(
            self.rules.is_empty() || !(self.v4.starts.is_empty() && self.v6.starts.is_empty()),
            "IpRules used before seal()"
        );
        match ip {
            IpAddr::V4(v4) => self.v4.lookup(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.lookup(u128::from(v6)),
        }
    }
}

/// An address type the tables can hold.
trait Point: Copy + Ord + Default {
    fn next(self) -> Option<Self>;
}

impl Point for u32 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Point for u128 {
    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// Disjoint intervals covering the whole address space: interval `i` runs
/// from `starts[i]` to just before `starts[i + 1]` and resolves to
/// `actions[i]` (`None`: no rule matches).
#[derive(Debug, Default)]
struct Table<T> {
    starts: Vec<T>,
    actions: Vec<Option<IpAction>>,
}

impl<T: Point> Table<T> {
    /// `rules` are `(first, last, action)` in rule order. A sweep over the
    /// boundaries keeps the set of rules covering the current point; the
    /// lowest rule index in it is the first match there.
    fn build(rules: impl Iterator<Item = (T, T, IpAction)>) -> Self {
        let rules: Vec<(T, T, IpAction)> = rules.collect();
        if rules.is_empty() {
            return Self::default();
        }
        // (position, rule index, is_start); ends are "last + 1".
        let mut events: Vec<(T, usize, bool)> = Vec::with_capacity(rules.len() * 2);
        for (i, &(first, last, _)) in rules.iter().enumerate() {
            events.push((first, i, true));
            if let Some(after) = last.next() {
                events.push((after, i, false));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut active = std::collections::BTreeSet::new();
        let mut table = Self {
            starts: vec![T::default()],
            actions: vec![None],
        };
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            while i < events.len() && events[i].0 == at {
                let (_, rule, is_start) = events[i];
                if is_start {
                    active.insert(rule);
                } else {
                    active.remove(&rule);
                }
                i += 1;
            }
            let action = active.first().map(|&rule| rules[rule].2);
            if table.actions.last() == Some(&action) {
                continue;
            }
            if table.starts.last() == Some(&at) {
                // The interval that began here is empty; replace it.
                *table.actions.last_mut().expect("never empty") = action;
            } else {
                table.starts.push(at);
                table.actions.push(action);
            }
        }
        table
    }

    fn lookup(&self, addr: T) -> Option<IpAction> {
        // The first start is the lowest address, so the index is never 0.
        let i = self.starts.partition_point(|&start| start <= addr);
        self.actions.get(i.checked_sub(1)?).copied().flatten()
    }
}

/// An unordered set of blocks, used for trusted proxies.
#[derive(Debug, Default)]
pub(crate) struct IpSet {
    /// Each network as (address, mask), masked already: a test is one AND
    /// and one compare, where `IpNet::contains` works the mask out again on
    /// every call.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    pub(crate) fn extend(&mut self, nets: Vec<IpNet>) {
        for net in nets {
            match net {
                IpNet::V4(n) => {
                    let mask = n.netmask().to_bits();
                    self.v4.push((n.network().to_bits() & mask, mask));
                }
                IpNet::V6(n) => {
                    let mask = n.netmask().to_bits();
                    self.v6.push((n.network().to_bits() & mask, mask));
                }
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The networks in the set, as they were added.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn nets(&self) -> Vec<IpNet> {
        let v4 = self.v4.iter().map(|&(net, mask)| {
            let len = u8::try_from(mask.count_ones()).expect("at most 32");
            IpNet::from(ipnet::Ipv4Net::new(net.into(), len).expect("a valid prefix"))
        });
        let v6 = self.v6.iter().map(|&(net, mask)| {
            let len = u8::try_from(mask.count_ones()).expect("at most 128");
            IpNet::from(ipnet::Ipv6Net::new(net.into(), len).expect("a valid prefix"))
        });
        v4.chain(v6).collect()
    }

    /// `ip` must already be canonical.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let bits = v4.to_bits();
                self.v4.iter().any(|&(net, mask)| bits & mask == net)
            }
            IpAddr::V6(v6) => {
                let bits = v6.to_bits();
                self.v6.iter().any(|&(net, mask)| bits & mask == net)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: &[(&str, IpAction)]) -> IpRules {
        let mut r = IpRules::default();
        for (v, a) in spec {
            r.push(parse_cidrs("test", v).unwrap(), *a);
        }
        r.seal();
        r
    }

    /// The table must agree with the plain first-match scan it replaces.
    fn scan(rules: &IpRules, ip: IpAddr) -> Option<IpAction> {
        rules
            .rules
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, action)| action)
    }

    #[test]
    fn tables_agree_with_a_scan_on_nested_and_overlapping_blocks() {
        let r = rules(&[
            ("10.1.2.0/24", IpAction::Allow),
            ("10.0.0.0/8", IpAction::Deny),
            ("10.1.0.0/16", IpAction::Allow),
            ("0.0.0.0/0", IpAction::Allow),
            ("255.255.255.255", IpAction::Deny),
            ("::/0", IpAction::Deny),
            ("2001:db8::/32", IpAction::Allow),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", IpAction::Allow),
        ]);
        for probe in [
            "0.0.0.0",
            "9.255.255.255",
            "10.0.0.0",
            "10.1.1.255",
            "10.1.2.0",
            "10.1.2.255",
            "10.1.3.0",
            "10.255.255.255",
            "11.0.0.0",
            "255.255.255.254",
            "255.255.255.255",
            "::",
            "2001:db8::1",
            "2001:db9::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            assert_eq!(r.first_match(ip), scan(&r, ip), "{probe}");
        }
        assert_eq!(r.first_match(ip("10.1.2.3")), Some(IpAction::Allow));
        assert_eq!(r.first_match(ip("10.9.9.9")), Some(IpAction::Deny));
        assert_eq!(r.first_match(ip("255.255.255.255")), Some(IpAction::Allow));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse::<IpAddr>().unwrap().to_canonical()
    }

    #[test]
    fn first_match_wins() {
        let r = rules(&[
            ("198.51.100.7", IpAction::Allow),
            ("198.51.100.0/24", IpAction::Deny),
            ("2001:db8::/32", IpAction::Deny),
        ]);
        assert_eq!(r.first_match(ip("198.51.100.7")), Some(IpAction::Allow));
        assert_eq!(r.first_match(ip("198.51.100.8")), Some(IpAction::Deny));
        assert_eq!(r.first_match(ip("2001:db8::1")), Some(IpAction::Deny));
        assert_eq!(r.first_match(ip("192.0.2.1")), None);
    }

    #[test]
    fn allow_ranges_then_deny_all() {
        let r = rules(&[
            ("173.245.48.0/20", IpAction::Allow),
            ("all", IpAction::Deny),
        ]);
        assert_eq!(r.first_match(ip("173.245.48.1")), Some(IpAction::Allow));
        assert_eq!(r.first_match(ip("8.8.8.8")), Some(IpAction::Deny));
        assert_eq!(r.first_match(ip("2001:db8::1")), Some(IpAction::Deny));
    }

    #[test]
    fn mapped_addresses_match_ipv4_rules_both_ways() {
        let r = rules(&[("198.51.100.0/24", IpAction::Deny)]);
        assert_eq!(
            r.first_match(ip("::ffff:198.51.100.9")),
            Some(IpAction::Deny)
        );
        let mapped_rule = rules(&[("::ffff:198.51.100.0/120", IpAction::Deny)]);
        assert_eq!(
            mapped_rule.first_match(ip("198.51.100.9")),
            Some(IpAction::Deny)
        );
    }

    #[test]
    fn malformed_values_are_refused_by_name() {
        for bad in [
            "300.1.1.1",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "example.com",
            "",
            "::1/129",
        ] {
            let err = parse_cidrs("deny_ip", bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.starts_with("deny_ip"), "{err}");
        }
    }
}
