//! How the decision scales: CIDR rules from 10 to 1,000,000, User-Agent
//! patterns from 1 to 1,000, and the rate limiter with 1 and 1,000,000 live
//! clients. `cargo bench --bench scaling`; compare within one run.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Request;
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder, RateLimit};

/// `n` distinct deny blocks, /24 to /32, spread over 1.0.0.0–223.255.255.255
/// by a fixed mixing function so runs are comparable.
fn cidrs(n: usize) -> impl Iterator<Item = String> {
    (0..n as u32).map(|i| {
        let mixed = i.wrapping_mul(2_654_435_761) % (223 << 24);
        let addr = Ipv4Addr::from((1 << 24) + mixed);
        let len = 24 + (i % 9);
        let net = ipnet::Ipv4Net::new(addr, len as u8).unwrap().trunc();
        net.to_string()
    })
}

fn with_cidrs(n: usize) -> NoResponseLayerBuilder {
    cidrs(n).fold(NoResponseLayer::builder(), |b, c| b.deny_ip(c))
}

fn with_user_agents(b: NoResponseLayerBuilder, n: usize) -> NoResponseLayerBuilder {
    b.deny_user_agents((0..n).map(|i| format!("badbot-{i:04}")))
}

fn request() -> Request<()> {
    Request::get("/")
        .header("host", "example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        )
        .body(())
        .unwrap()
}

/// An address no generated block is likely to hold: 0.0.0.0/8 is not used.
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(0, 1, 2, 3)), 40_000);

/// One benchmark per size: the decision for a client no rule matches, with
/// the rule set `build` makes for that size.
fn scaling_group(
    c: &mut Criterion,
    name: &str,
    sizes: &[usize],
    build: impl Fn(usize) -> NoResponseLayerBuilder,
) {
    let mut g = c.benchmark_group(name);
    for &n in sizes {
        let layer = build(n).build().unwrap();
        let req = request();
        assert_eq!(layer.judge_and_spend(&req, Some(CLIENT)).stop(), None);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| layer.judge_and_spend(black_box(&req), black_box(Some(CLIENT))))
        });
    }
    g.finish();
}

fn cidr_scaling(c: &mut Criterion) {
    scaling_group(
        c,
        "cidr_rules",
        &[10, 1_000, 100_000, 1_000_000],
        with_cidrs,
    );
}

fn user_agent_scaling(c: &mut Criterion) {
    scaling_group(c, "user_agent_patterns", &[1, 10, 100, 1_000], |n| {
        with_user_agents(NoResponseLayer::builder(), n)
    });
}

fn limiter_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit_live_clients");
    for n in [1u32, 1_000_000] {
        let layer = NoResponseLayer::builder()
            .rate_limit(
                RateLimit::per_second(1_000_000_000)
                    .burst(1_000_000_000)
                    .max_keys(2_000_000),
            )
            .build()
            .unwrap();
        let req = request();
        for i in 0..n {
            let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i)), 1);
            let _ = layer.judge_and_spend(&req, Some(peer));
        }
        assert_eq!(layer.rate_limited_clients(), Some(n as usize));
        let known = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0B00_0000)), 1);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| layer.judge_and_spend(black_box(&req), black_box(Some(known))))
        });
    }
    g.finish();
}

/// The worst case: 1,000,000 CIDRs and 1,000 User-Agent patterns.
fn combined(c: &mut Criterion) {
    let layer = with_user_agents(with_cidrs(1_000_000), 1_000)
        .build()
        .unwrap();
    let req = request();
    assert_eq!(layer.judge_and_spend(&req, Some(CLIENT)).stop(), None);
    c.bench_function("decide/1m_cidrs_1k_user_agents", |b| {
        b.iter(|| layer.judge_and_spend(black_box(&req), black_box(Some(CLIENT))))
    });
}

criterion_group!(
    benches,
    cidr_scaling,
    user_agent_scaling,
    limiter_scaling,
    combined
);
criterion_main!(benches);
