//! Properties of the rules over generated input, with bounded case counts so
//! the normal test run stays fast. The cargo-fuzz targets in `fuzz/` push
//! the same parsers much further, by hand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{HeaderValue, Request};
use proptest::prelude::*;
use tower_no_response::rules::RealIpHeader;
use tower_no_response::{DropReason, NoResponseLayer, RateLimit};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn request(headers: &[(&str, &[u8])]) -> Request<()> {
    let mut req = Request::get("/").body(()).unwrap();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            req.headers_mut().append(name, v);
        }
    }
    req
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

fn mapped(v4: Ipv4Addr) -> IpAddr {
    IpAddr::V6(v4.to_ipv6_mapped())
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes in every header any rule reads, under every real-IP
    /// mode: deciding never panics.
    #[test]
    fn deciding_never_panics(
        host in proptest::collection::vec(any::<u8>(), 0..80),
        ua in proptest::collection::vec(any::<u8>(), 0..80),
        xff in proptest::collection::vec(any::<u8>(), 0..120),
        fwd in proptest::collection::vec(any::<u8>(), 0..120),
        mode in 0..4usize,
        recursive in any::<bool>(),
        peer in any_ip(),
    ) {
        let header = [
            RealIpHeader::XForwardedFor,
            RealIpHeader::Forwarded,
            RealIpHeader::XRealIp,
            RealIpHeader::CfConnectingIp,
        ][mode].clone();
        let layer = NoResponseLayer::builder()
            .server_names(["example.com", "*.example.org"])
            .deny_user_agents(["masscan", "(?-i)ZGrab"])
            .drop_empty_user_agent(true)
            .deny_ip("198.51.100.0/24")
            .trusted_proxies(["0.0.0.0/0", "::/0"])
            .real_ip_header(header)
            .real_ip_recursive(recursive)
            .rate_limit(RateLimit::per_second(1000).burst(1000))
            .build()
            .unwrap();
        let req = request(&[
            ("host", &host),
            ("user-agent", &ua),
            ("x-forwarded-for", &xff),
            ("forwarded", &fwd),
            ("x-real-ip", &xff),
            ("cf-connecting-ip", &xff),
        ]);
        let _ = layer.judge_and_spend(&req, Some(SocketAddr::new(peer, 1)));
    }

    /// An IPv4-mapped IPv6 peer is judged exactly like its IPv4 form, by
    /// IPv4 rules and by mapped-form rules alike.
    #[test]
    fn mapped_addresses_match_like_ipv4(
        addr in any::<u32>(),
        net in any::<u32>(),
        prefix in 0u8..=32,
        mapped_rule in any::<bool>(),
    ) {
        let net = Ipv4Addr::from(net & u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
        let rule = if mapped_rule {
            format!("::ffff:{net}/{}", u32::from(prefix) + 96)
        } else {
            format!("{net}/{prefix}")
        };
        let layer = NoResponseLayer::builder().deny_ip(rule).build().unwrap();
        let req = request(&[]);
        let v4 = Ipv4Addr::from(addr);
        let plain = layer.judge_and_spend(&req, Some(SocketAddr::new(IpAddr::V4(v4), 1)));
        let as_mapped = layer.judge_and_spend(&req, Some(SocketAddr::new(mapped(v4), 1)));
        prop_assert_eq!(plain.stop(), as_mapped.stop());
        prop_assert_eq!(plain.client_ip, as_mapped.client_ip);
    }

    /// `allow X; deny all;` never drops a client inside X, whatever X is.
    #[test]
    fn allow_then_deny_all_never_drops_the_allowed(
        base in any_ip(),
        prefix_seed in any::<u8>(),
        host_bits in any::<u128>(),
    ) {
        let (net, client) = match base {
            IpAddr::V4(v4) => {
                let prefix = u32::from(prefix_seed % 33);
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                let net = u32::from(v4) & mask;
                let client = net | (host_bits as u32 & !mask);
                (format!("{}/{prefix}", Ipv4Addr::from(net)), IpAddr::V4(Ipv4Addr::from(client)))
            }
            IpAddr::V6(v6) => {
                let prefix = u32::from(prefix_seed % 129);
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                let net = u128::from(v6) & mask;
                let client = net | (host_bits & !mask);
                (format!("{}/{prefix}", Ipv6Addr::from(net)), IpAddr::V6(Ipv6Addr::from(client)))
            }
        };
        let layer = NoResponseLayer::builder().allow_ip(net.clone()).deny_ip("all").build().unwrap();
        let decision = layer.judge_and_spend(&request(&[]), Some(SocketAddr::new(client, 1)));
        prop_assert_eq!(decision.stop().map(|s| s.rule), None, "{} dropped by allow {}; deny all", client, net);
    }

    /// The client is always the peer or an address that one of the list's
    /// entries spells out: garbage never yields an address.
    #[test]
    fn the_client_comes_from_the_peer_or_a_real_entry(
        entries in proptest::collection::vec(
            prop_oneof![
                any_ip().prop_map(Some),
                "[a-z0-9:._\\[\\] -]{0,12}".prop_map(|_| None),
            ],
            0..8,
        ),
        garbage in proptest::collection::vec("[a-z0-9:._\\[\\]\" =;-]{0,12}", 8),
        forwarded in any::<bool>(),
        recursive in any::<bool>(),
    ) {
        let rendered: Vec<String> = entries
            .iter()
            .zip(&garbage)
            .map(|(e, g)| match (e, forwarded) {
                (Some(IpAddr::V6(v6)), true) => format!("for=\"[{v6}]\""),
                (Some(ip), true) => format!("for={ip}"),
                (Some(ip), false) => ip.to_string(),
                (None, true) => format!("for={g}"),
                (None, false) => g.clone(),
            })
            .collect();
        let (header, name) = if forwarded {
            (RealIpHeader::Forwarded, "forwarded")
        } else {
            (RealIpHeader::XForwardedFor, "x-forwarded-for")
        };
        let layer = NoResponseLayer::builder()
            .trusted_proxies(["10.0.0.0/8"])
            .real_ip_header(header)
            .real_ip_recursive(recursive)
            .build()
            .unwrap();
        let value = rendered.join(", ");
        let req = request(&[(name, value.as_bytes())]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let client = layer.judge_and_spend(&req, Some(SocketAddr::new(peer, 1))).client_ip.unwrap();
        let named = entries.iter().flatten().any(|ip| ip.to_canonical() == client);
        // Garbage can still happen to spell an address; then it is one.
        let spelled = value.contains(&client.to_string());
        prop_assert!(client == peer || named || spelled, "{client} from {value:?}");
    }
}

#[test]
fn ip_rules_fail_closed_without_a_peer() {
    let layer = NoResponseLayer::builder().allow_ip("all").build().unwrap();
    let decision = layer.judge_and_spend(&request(&[]), None);
    assert_eq!(
        decision.stop().map(|s| s.rule),
        Some(DropReason::ClientIpUnknown)
    );
}

/// A reference first-match scan over the same rules, for the tables.
fn scan(rules: &[(ipnet::IpNet, bool)], ip: IpAddr) -> Option<bool> {
    rules
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|&(_, deny)| deny)
}

proptest! {
    #![proptest_config(config())]

    /// The interval tables give the first match of an ordered rule list, for
    /// any mix of nested, overlapping and disjoint blocks.
    #[test]
    fn ip_tables_give_the_first_match(
        rules in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<bool>()), 1..40),
        probes in proptest::collection::vec(any::<u32>(), 1..40),
    ) {
        let mut nets: Vec<(ipnet::IpNet, bool)> = rules
            .iter()
            .map(|&(addr, len, deny)| {
                let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
                (ipnet::IpNet::V4(net), deny)
            })
            .collect();
        // A rule after a `/0` could never match, and the builder refuses it.
        if let Some(all) = nets.iter().position(|(net, _)| net.prefix_len() == 0) {
            nets.truncate(all + 1);
        }
        let mut builder = NoResponseLayer::builder();
        for (net, deny) in &nets {
            builder = if *deny { builder.deny_ip(net.to_string()) } else { builder.allow_ip(net.to_string()) };
        }
        let layer = builder.build().unwrap();
        // Probe the rules' own edges too, where off-by-one errors live.
        let edges = nets.iter().flat_map(|(net, _)| match net {
            ipnet::IpNet::V4(n) => [u32::from(n.network()), u32::from(n.broadcast())],
            ipnet::IpNet::V6(_) => unreachable!(),
        });
        for probe in probes.into_iter().chain(edges) {
            let ip = IpAddr::V4(Ipv4Addr::from(probe));
            let dropped = layer.judge_and_spend(&request(&[]), Some(SocketAddr::new(ip, 1))).stop().is_some();
            prop_assert_eq!(dropped, scan(&nets, ip) == Some(true), "{}", ip);
        }
    }
}
