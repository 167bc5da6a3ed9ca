//! Scheduled eviction runs on the tokio runtime without any help: idle
//! clients are forgotten and the tracked count falls back to zero.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use tower_no_response::{NoResponseLayer, RateLimit};

#[tokio::test]
async fn idle_clients_are_evicted_on_schedule() {
    let layer = NoResponseLayer::builder()
        .rate_limit(RateLimit::per_second(100).eviction_interval(Duration::from_millis(50)))
        .build()
        .unwrap();
    let req = Request::get("/").body(()).unwrap();
    for i in 0..10u8 {
        let peer = SocketAddr::from(([192, 0, 2, i], 4000));
        assert_eq!(layer.judge_and_spend(&req, Some(peer)).stop(), None);
    }
    assert_eq!(layer.rate_limited_clients(), Some(10));
    // Each client is idle 10 ms after its request; the sweep runs every
    // 50 ms. The bound only guards against a sweep that never comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while layer.rate_limited_clients() != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle clients were never evicted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn without_a_rule_there_is_no_count() {
    let layer = NoResponseLayer::builder().build().unwrap();
    assert_eq!(layer.rate_limited_clients(), None);
}
