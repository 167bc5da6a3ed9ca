//! Operating the layer safely, on real sockets: dry-run, counters, answering
//! with a status instead of dropping, path and custom rules, and live reload.

use crate::common;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use common::{Close, counting_router, exchange, get as get_req, request, seed_rules, serve_with};
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_no_response::rules::Action;
use tower_no_response::{DropReason, NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

async fn app(layer: NoResponseLayer) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve_with(layer, counting_router(Arc::clone(&hits))).await;
    (addr, hits)
}

/// Layer-wide dry-run: every rule is evaluated and counted, no connection
/// is closed, every request is served.
#[tokio::test]
async fn dry_run_lets_everything_through_and_counts_what_would_drop() {
    let layer = seed_rules().dry_run(true).build().unwrap();
    let (addr, hits) = app(layer.clone()).await;
    for req in [
        get_req(Some("evil.com"), UA),
        get_req(Some("example.com"), Some("masscan")),
        get_req(Some("127.0.0.1"), Some("")),
        get_req(Some("example.com"), UA),
    ] {
        let out = exchange(addr, &req).await;
        out.assert_ok();
        assert_eq!(out.close, Close::Fin);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let stats = layer.stats();
    assert_eq!(stats.allowed, 4, "dry-run matches are still allowed");
    assert_eq!(stats.rule("host_unknown").unwrap().would_drop, 1);
    assert_eq!(stats.rule("user_agent").unwrap().would_drop, 1);
    // Evaluation goes on past a dry-run match: one request, two rules.
    assert_eq!(stats.rule("host_ip_literal").unwrap().would_drop, 1);
    assert_eq!(stats.rule("user_agent_empty").unwrap().would_drop, 1);
    assert!(stats.rules.iter().all(|r| r.dropped == 0));
}

/// One rule in dry-run while the others stay enforced.
#[tokio::test]
async fn per_rule_dry_run() {
    let layer = seed_rules()
        .deny_path(r"/\.env")
        .dry_run_rule("user_agent")
        .build()
        .unwrap();
    let (addr, hits) = app(layer.clone()).await;
    exchange(addr, &get_req(Some("example.com"), Some("masscan")))
        .await
        .assert_ok();
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    // The dry-run match is reported, then the enforced path rule drops.
    exchange(
        addr,
        &request("GET", "/.env", Some("example.com"), Some("masscan"), &[]),
    )
    .await
    .assert_dropped(Close::Fin);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let stats = layer.stats();
    assert_eq!(stats.rule("user_agent").unwrap().would_drop, 2);
    assert_eq!(stats.rule("user_agent").unwrap().dropped, 0);
    assert_eq!(stats.rule("host_unknown").unwrap().dropped, 1);
    assert_eq!(stats.rule("path").unwrap().dropped, 1);
    assert_eq!(stats.allowed, 1);
}

fn status_and_header<'a>(text: &'a str, name: &str) -> (u16, Option<&'a str>) {
    let status = text[9..12].parse().unwrap();
    let header = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    });
    (status, header)
}

/// `limit_req_status 429`: the rate limit answers 429 with the limiter's
/// own wait as Retry-After, and the connection stays usable.
#[tokio::test]
async fn rate_limit_can_answer_429_with_retry_after() {
    let layer = NoResponseLayer::builder()
        .rate_limit(RateLimit::per_minute(1))
        .rule_action("rate_limit", Action::Respond(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap();
    let (addr, hits) = app(layer.clone()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let keep_alive = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
    stream.write_all(keep_alive).await.unwrap();
    let first = common::read_one_response(&mut stream).await;
    assert!(first.starts_with(b"HTTP/1.1 200 OK"));
    stream.write_all(keep_alive).await.unwrap();
    let second = common::read_one_response(&mut stream).await;
    let text = String::from_utf8(second).unwrap();
    let (status, retry_after) = status_and_header(&text, "retry-after");
    assert_eq!(status, 429, "{text}");
    // One request a minute: the next is allowed in 60 s (59-60 after rounding).
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((59..=60).contains(&secs), "{secs}");
    // And which limit it was, in the IETF's RateLimit headers.
    let (_, policy) = status_and_header(&text, "ratelimit-policy");
    assert_eq!(policy, Some("\"rate_limit\";q=1;w=60"), "{text}");
    let (_, state) = status_and_header(&text, "ratelimit");
    assert_eq!(
        state,
        Some(format!("\"rate_limit\";r=0;t={secs}").as_str()),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().rule("rate_limit").unwrap().responded, 1);
}

#[tokio::test]
async fn other_rules_can_answer_400_or_403() {
    let layer = seed_rules()
        .rule_action("host_invalid", Action::Respond(StatusCode::BAD_REQUEST))
        .rule_action("user_agent", Action::Respond(StatusCode::FORBIDDEN))
        .build()
        .unwrap();
    let (addr, hits) = app(layer).await;
    let out = exchange(
        addr,
        &request("GET", "/", Some("example.com"), UA, &[("Host", "b.test")]),
    )
    .await;
    assert_eq!(
        status_and_header(&out.text(), "content-length"),
        (400, Some("0"))
    );
    let out = exchange(addr, &get_req(Some("example.com"), Some("zgrab"))).await;
    assert_eq!(status_and_header(&out.text(), "retry-after"), (403, None));
    // Rules without an action still drop.
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn actions_are_validated_by_name_and_status() {
    let err = NoResponseLayer::builder()
        .rule_action("rate_limt", Action::Respond(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"rate_limt\""), "{err}");
    let err = NoResponseLayer::builder()
        .rule_action("path", Action::Respond(StatusCode::OK))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("not a 4xx"), "{err}");
    let err = NoResponseLayer::builder()
        .dry_run_rule("nope")
        .build()
        .unwrap_err();
    assert!(err.to_string().starts_with("dry_run_rule"), "{err}");
}

#[tokio::test]
async fn scanner_paths_are_dropped_in_any_case_or_encoding() {
    let layer = NoResponseLayer::builder()
        .deny_paths([r"/\.env", r"^/wp-login\.php", r"/\.git/"])
        .build()
        .unwrap();
    let (addr, hits) = app(layer).await;
    for path in [
        "/.env",
        "/app/.ENV",
        "/%2eenv",
        "/wp-login.php",
        "/.git/config",
        // Path tricks an anchored pattern would miss without normalising.
        "//wp-login.php",
        "/./wp-login.php",
        "/x/../wp-login.php",
        "/%2e/wp-login.php",
        "/%77p%2dlogin.php",
        "/wp-login.php;jsessionid=1",
    ] {
        exchange(addr, &request("GET", path, Some("a.test"), UA, &[]))
            .await
            .assert_dropped(Close::Fin);
    }
    for allowed in ["/environment", "/a/wp-login.php", "/x/../a/wp-login.php"] {
        exchange(addr, &request("GET", allowed, Some("a.test"), UA, &[]))
            .await
            .assert_ok();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn custom_rules_see_the_head_and_the_client() {
    let layer = NoResponseLayer::builder()
        .trusted_proxy("127.0.0.1")
        .custom_rule("trace_method", |head| head.method == Method::TRACE)
        .custom_rule("documentation_net", |head| {
            head.client_ip
                .is_some_and(|ip| matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [192, 0, 2]))
        })
        .build()
        .unwrap();
    let (addr, hits) = app(layer.clone()).await;
    exchange(addr, &request("TRACE", "/", Some("a.test"), UA, &[]))
        .await
        .assert_dropped(Close::Fin);
    exchange(
        addr,
        &request(
            "GET",
            "/",
            Some("a.test"),
            UA,
            &[("X-Forwarded-For", "192.0.2.9")],
        ),
    )
    .await
    .assert_dropped(Close::Fin);
    exchange(addr, &get_req(Some("a.test"), UA))
        .await
        .assert_ok();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let stats = layer.stats();
    assert_eq!(stats.rule("trace_method").unwrap().dropped, 1);
    assert_eq!(stats.rule("documentation_net").unwrap().dropped, 1);
}

#[test]
fn custom_rule_names_are_checked() {
    for (name, why) in [
        ("user_agent", "built-in"),
        ("Bad Name", "lowercase"),
        ("", "lowercase"),
    ] {
        let err = NoResponseLayer::builder()
            .custom_rule(name, |_| true)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains(why), "{name}: {err}");
    }
    let err = NoResponseLayer::builder()
        .custom_rule("twice", |_| true)
        .custom_rule("twice", |_| false)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
}

/// Reload swaps the rules for every clone at once; a bad configuration is
/// refused and the old rules stay; a request already admitted finishes.
#[tokio::test]
async fn reload_swaps_rules_atomically() {
    let layer = NoResponseLayer::builder().build().unwrap();
    let admitted = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (a, r) = (Arc::clone(&admitted), Arc::clone(&release));
    let router = Router::new()
        .route(
            "/slow",
            get(move || {
                let (a, r) = (Arc::clone(&a), Arc::clone(&r));
                async move {
                    a.notify_one();
                    r.notified().await;
                    "slow"
                }
            }),
        )
        .fallback(|| async { "ok" });
    let addr = serve_with(layer.clone(), router).await;
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_ok();

    let slow_request = request("GET", "/slow", Some("evil.com"), UA, &[]);
    let slow = tokio::spawn(async move { exchange(addr, &slow_request).await });
    admitted.notified().await;
    layer
        .reload(NoResponseLayer::builder().server_name("example.com"))
        .unwrap();
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    release.notify_one();
    let slow = slow.await.unwrap();
    assert!(slow.text().ends_with("\r\n\r\nslow"), "{}", slow.text());

    let err = layer
        .reload(NoResponseLayer::builder().deny_ip("10.0.0.0/33"))
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
    // The previous rules are still in force.
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
}

/// A rule set from a document, reloaded from another; a bad document is
/// refused naming its field, and the rules in force stay.
#[cfg(feature = "serde")]
#[tokio::test]
async fn reload_from_documents() {
    use tower_no_response::config::RuleConfig;

    let layer = RuleConfig::from_toml("server_names = [\"example.com\"]")
        .unwrap()
        .build()
        .unwrap();
    let (addr, _) = app(layer.clone()).await;
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);

    let json = r#"{"server_names": ["example.com", "evil.com"], "deny_paths": ["/\\.env"]}"#;
    layer
        .reload_config(RuleConfig::from_json(json).unwrap())
        .unwrap();
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_ok();
    exchange(addr, &request("GET", "/.env", Some("evil.com"), UA, &[]))
        .await
        .assert_dropped(Close::Fin);

    let bad = RuleConfig::from_toml("ip_rules = [{ deny = \"300.0.0.1\" }]").unwrap();
    let err = layer.reload_config(bad).unwrap_err();
    assert!(err.to_string().starts_with("field `ip_rules`"), "{err}");
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_ok();
}

/// A reload from a document replaces the rules and keeps what a document
/// cannot hold: a custom rule (which the document's actions may name), a
/// keyed limit, the timeouts it leaves out. `reload` with the document's
/// builder replaces everything, as its docs say.
#[cfg(feature = "serde")]
#[tokio::test]
async fn a_document_reload_keeps_what_the_code_set() {
    use std::time::Duration;
    use tower_no_response::config::RuleConfig;
    use tower_no_response::rules::LimitKey;

    let trace = |method: &str| request(method, "/", Some("example.com"), UA, &[]);
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .custom_rule("trace_method", |head| head.method == Method::TRACE)
        .rate_limit_by("api_key", RateLimit::per_second(100), |head| {
            head.headers
                .get("x-api-key")
                .map(|k| LimitKey::bytes(k.as_bytes()))
        })
        .header_timeout(Duration::from_secs(5))
        .body_timeout(Duration::from_secs(7))
        .build()
        .unwrap();
    let (addr, _) = app(layer.clone()).await;
    exchange(addr, &trace("TRACE"))
        .await
        .assert_dropped(Close::Fin);

    let doc = r#"
        server_names = ["example.com", "www.example.com"]
        body_timeout_secs = 2.5
        [actions]
        trace_method = 403
    "#;
    layer
        .reload_config(RuleConfig::from_toml(doc).unwrap())
        .unwrap();
    let out = exchange(addr, &trace("TRACE")).await;
    assert!(out.text().starts_with("HTTP/1.1 403"), "{}", out.text());
    exchange(addr, &get_req(Some("www.example.com"), UA))
        .await
        .assert_ok();
    assert_eq!(layer.header_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(layer.body_timeout(), Some(Duration::from_millis(2500)));
    let stats = layer.stats();
    assert!(stats.rule("trace_method").is_some() && stats.rule("api_key").is_some());

    // The explicit form decides every part: what it leaves out is gone.
    let builder = RuleConfig::from_toml(r#"server_names = ["example.com"]"#)
        .unwrap()
        .into_builder()
        .unwrap();
    layer.reload(builder).unwrap();
    exchange(addr, &trace("TRACE")).await.assert_ok();
    assert_eq!(layer.header_timeout(), None);
}

/// A reload keeps what still applies. With the same rate limit, a client
/// that used up its budget is still limited, the counters go on, and a ban
/// stands; a reload that changes the rate starts every budget afresh.
#[tokio::test]
async fn reload_keeps_budgets_counters_and_bans() {
    use std::time::Duration;
    use tower_no_response::ban::{BanList, BanPolicy};

    // Three strikes: this test's own client earns two in all.
    let bans = BanList::new(BanPolicy::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(600),
    ));
    // Two requests, then the budget is spent for a minute.
    let limited = || {
        NoResponseLayer::builder()
            .server_name("example.com")
            .rate_limit(RateLimit::per_minute(1).burst(1))
    };
    let layer = limited().ban_list(bans.clone()).build().unwrap();
    let (addr, _hits) = app(layer.clone()).await;
    for _ in 0..2 {
        exchange(addr, &get_req(Some("example.com"), UA))
            .await
            .assert_ok();
    }
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    // A ban on a client other than this test's, so the test can go on.
    let banned: IpAddr = "192.0.2.66".parse().unwrap();
    bans_strike(&layer, banned).await;

    // Same limit, and a config that says nothing of bans: all of it stays.
    layer
        .reload(limited().server_name("www.example.com"))
        .unwrap();
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    let stats = layer.stats();
    assert_eq!(stats.allowed, 2);
    assert_eq!(stats.rule("rate_limit").unwrap().dropped, 2);
    assert!(
        layer.ban_list().unwrap().is_banned(banned),
        "the ban was lost"
    );

    // A new rate: budgets earned under the old one mean nothing now.
    layer
        .reload(
            NoResponseLayer::builder()
                .server_name("example.com")
                .rate_limit(RateLimit::per_minute(2).burst(1)),
        )
        .unwrap();
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    assert_eq!(layer.stats().allowed, 3);
}

/// Bans `ip` the way drops would: through three requests from it, judged by
/// the layer's own service.
async fn bans_strike(layer: &NoResponseLayer, ip: IpAddr) {
    use tower::ServiceExt;
    let peer = std::net::SocketAddr::new(ip, 4000);
    let request = StrikeRequest(peer);
    let app = counting_router(Arc::default()).layer(layer.clone());
    for _ in 0..3 {
        let request = request.clone_for_strike();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 444);
    }
    assert!(layer.ban_list().unwrap().is_banned(ip));
}

struct StrikeRequest(std::net::SocketAddr);

impl StrikeRequest {
    fn clone_for_strike(&self) -> http::Request<axum::body::Body> {
        http::Request::builder()
            .uri("/")
            .header("host", "evil.example")
            .extension(axum::extract::ConnectInfo(self.0))
            .body(axum::body::Body::empty())
            .unwrap()
    }
}

/// `stats()` lists the rules in force and no others, so a dashboard built
/// from it shows what the rule set can do.
#[test]
fn stats_list_the_rules_in_force() {
    let names = |layer: &tower_no_response::NoResponseLayer| -> Vec<&'static str> {
        layer.stats().rules.iter().map(|r| r.rule).collect()
    };
    let bare = tower_no_response::NoResponseLayer::builder()
        .deny_user_agent("masscan")
        .build()
        .unwrap();
    assert_eq!(names(&bare), ["user_agent"]);
    let seed = seed_rules()
        .rate_limit(tower_no_response::RateLimit::per_second(10))
        .custom_rule("trace_method", |h| h.method == http::Method::TRACE)
        .build()
        .unwrap();
    assert_eq!(
        names(&seed),
        [
            "host_missing",
            "host_invalid",
            "host_mismatch",
            "host_ip_literal",
            "host_unknown",
            "client_ip_unknown",
            "ip_deny",
            "user_agent",
            "user_agent_empty",
            "rate_limit",
            "rate_limit_full",
            "trace_method",
        ]
    );
    assert!(
        seed.stats().rule(DropReason::Path).is_none(),
        "no deny_path"
    );
    assert!(seed.stats().rule(DropReason::HostUnknown).is_some());
}
