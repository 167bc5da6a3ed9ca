//! The per-request cost of the layer's decision, for the rule set of
//! `examples/nginx_444.rs`.
//!
//! `cargo bench --bench decision`. Compare the allowed and dropped paths with
//! each other and with `baseline/no_layer` from the same run: the machines
//! these run on are shared, so absolute numbers drift and ratios do not.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Layer, Service, service_fn};
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder, RateLimit, TimedBody};

fn example_rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_ip("198.51.100.0/24")
        .deny_ip("203.0.113.7")
        .trusted_proxies(["127.0.0.0/8", "::1/128"])
        .deny_user_agents(["masscan", "zgrab"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
}

/// The example limits to 10 r/s; a bench hammering one client would only
/// measure the limiter's refusal. This rate keeps the allowed path allowed
/// while still doing the limiter's work on every request.
fn unlimited() -> RateLimit {
    RateLimit::per_second(1_000_000_000).burst(1_000_000_000)
}

fn req(host: &str, ua: &str, xff: Option<&str>) -> Request<String> {
    let mut b = Request::get("/index.html")
        .header("host", host)
        .header("user-agent", ua)
        .header("accept", "*/*");
    if let Some(x) = xff {
        b = b.header("x-forwarded-for", x);
    }
    b.body(String::new()).unwrap()
}

fn bench_decide(c: &mut Criterion) {
    let layer = example_rules().rate_limit(unlimited()).build().unwrap();
    let peer: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let mut g = c.benchmark_group("decide");
    let cases = [
        (
            "allowed",
            req(
                "www.example.com",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
                None,
            ),
            peer,
        ),
        (
            "allowed_via_proxy",
            req("example.com", "curl/8.5.0", Some("192.0.2.1, 10.0.0.1")),
            proxy,
        ),
        (
            "drop/host_unknown",
            req("evil.com", "curl/8.5.0", None),
            peer,
        ),
        (
            "drop/host_ip_literal",
            req("192.0.2.1:80", "curl/8.5.0", None),
            peer,
        ),
        (
            "drop/ip_deny",
            req("example.com", "curl/8.5.0", Some("198.51.100.7")),
            proxy,
        ),
        (
            "drop/user_agent",
            req(
                "example.com",
                "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
                None,
            ),
            peer,
        ),
    ];
    for (name, request, peer) in &cases {
        let expect_drop = name.starts_with("drop");
        assert_eq!(
            layer.judge_and_spend(request, Some(*peer)).stop().is_some(),
            expect_drop,
            "{name}"
        );
        g.bench_function(*name, |b| {
            b.iter(|| layer.judge_and_spend(black_box(request), black_box(Some(*peer))))
        });
    }
    // The pure judgement alone, without the rate limiter's state.
    let rules = layer.rules();
    let (_, allowed, peer) = &cases[0];
    g.bench_function("allowed/rules_alone", |b| {
        b.iter(|| rules.judge(black_box(allowed), black_box(Some(*peer))))
    });
    g.finish();
}

/// The whole service call, with an inner service that answers at once.
fn bench_service(c: &mut Criterion) {
    let layer = example_rules().rate_limit(unlimited()).build().unwrap();
    let mut with_layer = layer.layer(service_fn(|_: Request<TimedBody<String>>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut without =
        service_fn(|_: Request<String>| async { Ok::<_, Infallible>(Response::new(())) });
    let peer: SocketAddr = "192.0.2.10:50000".parse().unwrap();
    let make = |host: &str, ua: &str| {
        let mut r = req(host, ua, None);
        r.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        r
    };
    let mut g = c.benchmark_group("service_call");
    g.bench_function("baseline/no_layer", |b| {
        b.iter(|| run(without.call(make("example.com", "curl/8.5.0"))))
    });
    g.bench_function("allowed", |b| {
        b.iter(|| run(with_layer.call(make("example.com", "curl/8.5.0"))))
    });
    g.bench_function("dropped", |b| {
        b.iter(|| run(with_layer.call(make("evil.com", "curl/8.5.0"))))
    });
    g.finish();
}

/// Every future here is ready on its first poll.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the bench services never wait"),
    }
}

criterion_group!(benches, bench_decide, bench_service);
criterion_main!(benches);
