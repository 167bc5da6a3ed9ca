//! The counters as Prometheus scrapes them: the `metrics` facade's
//! Prometheus exporter serves them over loopback, real clients are dropped,
//! answered, banned and served, and the real `promtool check metrics`
//! (Debian's `prometheus`) passes the scrape, whose counters moved by
//! exactly what was sent.
//!
//! Without `promtool` on the machine the test says so and passes, unless
//! `TNR_REQUIRE_PROMTOOL` is set, as in CI, where it fails.

#[path = "common/certs.rs"]
mod certs;
mod common;
#[path = "common/redis_servers.rs"]
mod redis_servers;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Close, exchange, read_until_close, request};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::rules::Action;
use tower_no_response::{DropReason, NoResponseLayer};

fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TNR_REQUIRE_PROMTOOL").is_none(),
            "TNR_REQUIRE_PROMTOOL is set but promtool is not installed"
        );
        eprintln!("skipped: promtool is not installed (Debian's prometheus)");
    }
    found
}

fn via_proxy(client: &str, host: &str, user_agent: &str) -> Vec<u8> {
    request(
        "GET",
        "/",
        Some(host),
        Some(user_agent),
        &[("X-Forwarded-For", client)],
    )
}

/// `GET /metrics` over a plain socket, as Prometheus asks for it.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Every sample of the scrape, by its name and labels as written.
fn samples(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_passes_promtool_and_counts_exactly_what_was_sent() {
    if !promtool() {
        return;
    }
    let exporter = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(exporter)
        .install()
        .unwrap();

    let layer = common::seed_rules()
        .dry_run_rule(DropReason::UserAgentDenied)
        .rate_limit(tower_no_response::RateLimit::per_second(1).burst(2))
        .rule_action(
            DropReason::RateLimited,
            Action::Respond(StatusCode::TOO_MANY_REQUESTS),
        )
        .ban_list(BanList::new(BanPolicy::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )))
        .header_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let app = common::spawn_app(layer.clone()).await;
    let addr = app.addr;

    // Served: two clients, one request each.
    for client in ["192.0.2.1", "192.0.2.2"] {
        exchange(addr, &via_proxy(client, "example.com", "curl/8"))
            .await
            .assert_ok();
    }
    // Three drops by the Host rule strike 192.0.2.3 out; its next request,
    // a good one, is dropped as banned.
    for _ in 0..3 {
        exchange(addr, &via_proxy("192.0.2.3", "evil.com", "curl/8"))
            .await
            .assert_dropped(Close::Fin);
    }
    exchange(addr, &via_proxy("192.0.2.3", "example.com", "curl/8"))
        .await
        .assert_dropped(Close::Fin);
    // A dry-run match: served, and counted as a would-drop.
    exchange(addr, &via_proxy("192.0.2.4", "example.com", "masscan"))
        .await
        .assert_ok();
    // Past its burst, a client is answered 429.
    let mut answered = 0;
    for _ in 0..5 {
        let out = exchange(addr, &via_proxy("192.0.2.5", "example.com", "curl/8")).await;
        if out.text().starts_with("HTTP/1.1 429") {
            answered += 1;
        } else {
            out.assert_ok();
        }
    }
    assert!(answered >= 2, "{answered} answers of 429");
    // A head begun and left: dropped at the header timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: exa")
        .await
        .unwrap();
    read_until_close(&mut slow).await.assert_dropped(Close::Fin);
    // Opened and never used: closed, and counted nowhere.
    let mut unused = TcpStream::connect(addr).await.unwrap();
    read_until_close(&mut unused)
        .await
        .assert_dropped(Close::Fin);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let scraped = scrape(exporter).await;
    assert_promtool_passes(&scraped);

    let got = samples(&scraped);
    let served = 2 + 1 + (5 - answered);
    let want: HashMap<String, f64> = [
        ("tower_no_response_allowed_total".to_owned(), served),
        (
            r#"tower_no_response_requests_total{rule="host_unknown",action="drop"}"#.to_owned(),
            3,
        ),
        (
            r#"tower_no_response_requests_total{rule="user_agent",action="would_drop"}"#.to_owned(),
            1,
        ),
        (
            r#"tower_no_response_requests_total{rule="rate_limit",action="respond"}"#.to_owned(),
            answered,
        ),
        (
            r#"tower_no_response_connection_drops_total{rule="banned"}"#.to_owned(),
            1,
        ),
        (
            r#"tower_no_response_connection_drops_total{rule="header_timeout"}"#.to_owned(),
            1,
        ),
        (
            r#"tower_no_response_bans_total{source="strikes"}"#.to_owned(),
            1,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k, f64::from(v)))
    .collect();
    assert_eq!(got, want, "the scrape was:\n{scraped}");
    // The layer's own stats agree with the exporter.
    let stats = layer.stats();
    assert_eq!(
        stats.allowed as f64,
        want["tower_no_response_allowed_total"]
    );
    assert_eq!(stats.rule(DropReason::HostUnknown).unwrap().dropped, 3);

    // The shared store's gauge, against a real Redis that stalls and
    // comes back.
    let Some(redis) = redis_servers::RedisServer::start() else {
        return;
    };
    let store = tower_no_response::redis::RedisStore::new(&redis.url()).unwrap();
    let shared = tower_no_response::limit::SharedRateLimit::new(store)
        .timeout(Duration::from_millis(300))
        .open_after(1)
        .retry_every(Duration::from_millis(200));
    let limited = NoResponseLayer::builder()
        .server_name("example.com")
        .rate_limit(tower_no_response::RateLimit::per_second(100).burst(100))
        .shared_rate_limit(shared)
        .build()
        .unwrap();
    let limited_app = common::spawn_app(limited).await;
    let gauge = r#"tower_no_response_rate_limit_store_up{part="store"}"#;
    let served = || async {
        exchange(
            limited_app.addr,
            &common::get(Some("example.com"), Some("curl/8")),
        )
        .await
        .assert_ok();
    };
    served().await;
    assert_eq!(samples(&scrape(exporter).await).get(gauge), Some(&1.0));
    redis.pause();
    // Failing open: served while the store stalls, and the circuit opens.
    served().await;
    assert_eq!(samples(&scrape(exporter).await).get(gauge), Some(&0.0));
    redis.resume();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        served().await;
        if samples(&scrape(exporter).await).get(gauge) == Some(&1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gauge never came back to 1"
        );
    }
    assert_promtool_passes(&scrape(exporter).await);
}

/// `promtool check metrics` on `scraped`: it must pass with nothing to say.
fn assert_promtool_passes(scraped: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scraped.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\nthe scrape was:\n{scraped}"
    );
}
