//! Every header a rule reads, from fuzzer bytes, judged by the demo's rule
//! set: deciding must never panic, and a request with no usable Host must
//! never be let through.
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;

use http::{HeaderName, HeaderValue, Request, Version};
use libfuzzer_sys::fuzz_target;
use tower_no_response::{NoResponseLayer, RateLimit};

static LAYER: LazyLock<NoResponseLayer> = LazyLock::new(|| {
    NoResponseLayer::builder()
        .server_names(["example.com", "*.example.org", ".example.net"])
        .deny_user_agents(["masscan", "zgrab", "(?-i)^Bad"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
        .deny_ip("198.51.100.0/24")
        .trusted_proxies(["127.0.0.0/8", "::1"])
        .rate_limit(RateLimit::per_second(1_000_000).burst(1_000_000))
        .build()
        .unwrap()
});

const NAMES: [&str; 4] = ["host", "user-agent", "x-forwarded-for", "forwarded"];

fuzz_target!(|data: &[u8]| {
    // Layout: a version byte, an authority flag, then NUL-separated values
    // assigned to the headers in turn.
    let [version, flags, rest @ ..] = data else { return };
    let version = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][*version as usize % 3];
    let mut builder = Request::builder().version(version);
    let mut parts = rest.split(|&b| b == 0);
    if flags & 1 == 1 {
        let Some(target) = parts.next() else { return };
        let Ok(target) = std::str::from_utf8(target) else { return };
        builder = builder.uri(format!("http://{target}/"));
    }
    let Ok(mut req) = builder.body(()) else { return };
    for (i, value) in parts.enumerate() {
        let name = HeaderName::from_static(NAMES[i % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            req.headers_mut().append(name, value);
        }
    }
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let judgement = LAYER.rules().judge(&req, Some(peer));
    if req.uri().authority().is_none() && req.headers().get("host").is_none() {
        assert!(judgement.stop().is_some(), "a request without a host was allowed");
    }
});
