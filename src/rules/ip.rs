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
    let net = if trimmed.contains('/') {
        let net: IpNet = trimmed.parse().map_err(|e| bad(format!("{e}")))?;
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
#[derive(Debug, Default)]
pub(crate) struct IpRules {
    rules: Vec<(IpNet, IpAction)>,
}

impl IpRules {
    pub(crate) fn push(&mut self, nets: Vec<IpNet>, action: IpAction) {
        self.rules.extend(nets.into_iter().map(|n| (n, action)));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `ip` must already be canonical (see [`IpAddr::to_canonical`]).
    pub(crate) fn first_match(&self, ip: IpAddr) -> Option<IpAction> {
        self.rules
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, action)| action)
    }
}

/// An unordered set of blocks, used for trusted proxies.
#[derive(Debug, Default)]
pub(crate) struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    pub(crate) fn extend(&mut self, nets: Vec<IpNet>) {
        self.nets.extend(nets);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// `ip` must already be canonical.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
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
        r
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
