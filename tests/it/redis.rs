//! The shared rate limit and ban list against a real `redis-server` on
//! loopback: two replicas share one budget, keys expire on their own, and an
//! outage (killed, paused, restarted) never hangs a request.
//!
//! Tests that kill or pause Redis start their own `redis-server`; the others
//! use `TNR_REDIS_URL` when set (`.ci/run` starts one) or start their own.
//! Without `redis-server` they skip with a printed reason, unless
//! `TNR_REQUIRE_REDIS` is set, as in CI, where they fail.

use crate::common;
use crate::redis_servers;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Close, PATIENCE, exchange, get, request, spawn_app};
use redis_servers::{RedisServer, events, events_about, served, shared_layer, unique_prefix};
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::limit::{FailurePolicy, RateLimitStore, SharedRateLimit, StoreVerdict};
use tower_no_response::redis::RedisStore;
use tower_no_response::rules::Action;
use tower_no_response::{DropReason, NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

/// The URL of a Redis that outlives the test: CI's, or one started here.
fn shared_redis() -> Option<(String, Option<RedisServer>)> {
    if let Ok(url) = std::env::var("TNR_REDIS_URL") {
        return Some((url, None));
    }
    let server = RedisServer::start()?;
    Some((server.url(), Some(server)))
}

fn layer(
    url: &str,
    prefix: &str,
    limit: RateLimit,
    shared: impl Fn(SharedRateLimit) -> SharedRateLimit,
) -> NoResponseLayer {
    shared_layer(
        RedisStore::new(url).unwrap().key_prefix(prefix),
        limit,
        shared,
    )
}

/// The point of the feature: a client spreading over two replicas gets one
/// budget, not two. With in-process limiters each replica would let 5 of
/// its 5 requests through.
#[tokio::test]
async fn two_replicas_share_one_budget() {
    events();
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let prefix = unique_prefix();
    let limit = RateLimit::per_minute(10).burst(4);
    let a = spawn_app(layer(&url, &prefix, limit, |s| s)).await;
    let b = spawn_app(layer(&url, &prefix, limit, |s| s)).await;
    let mut passed = 0;
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        passed += usize::from(served(app.addr).await);
    }
    assert_eq!(passed, 5, "capacity 5 across both replicas");
    assert_eq!(a.hits() + b.hits(), 5);
    assert!(a.hits() >= 2 && b.hits() >= 2, "both replicas served some");
}

/// nginx's `rate=10r/s burst=20 nodelay` figures hold with the budget in
/// Redis: 40 back-to-back requests, 21 pass. Per minute here, so that no
/// token refills during the run.
#[tokio::test]
async fn gcra_in_redis_matches_nginx_burst() {
    events();
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let store = RedisStore::new(&url).unwrap().key_prefix(unique_prefix());
    let limit = RateLimit::per_minute(10).burst(20);
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let mut passed = 0;
    let mut last_wait = Duration::ZERO;
    for _ in 0..40 {
        match store.check(ip, &limit).await.expect("redis answers") {
            StoreVerdict::Allow => passed += 1,
            StoreVerdict::Limited { retry_after } => last_wait = retry_after,
            _ => unreachable!(),
        }
    }
    assert_eq!(passed, 21);
    // The wait is the limiter's own: about one interval (6 s), less the
    // little time the run took.
    assert!(
        last_wait > Duration::from_secs(5) && last_wait <= Duration::from_secs(6),
        "{last_wait:?}"
    );
    let other: IpAddr = "192.0.2.2".parse().unwrap();
    assert_eq!(
        store.check(other, &limit).await.unwrap(),
        StoreVerdict::Allow
    );
}

/// A client's key lives only as long as its budget needs to refill.
#[tokio::test]
async fn keys_expire_once_the_budget_has_refilled() {
    events();
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix();
    let store = RedisStore::new(&server.url()).unwrap().key_prefix(&prefix);
    let limit = RateLimit::per_second(10).burst(1);
    let ip: IpAddr = "192.0.2.3".parse().unwrap();
    let key = format!("{prefix}rl:192.0.2.3");
    assert_eq!(store.check(ip, &limit).await.unwrap(), StoreVerdict::Allow);
    assert_eq!(store.check(ip, &limit).await.unwrap(), StoreVerdict::Allow);
    assert!(matches!(
        store.check(ip, &limit).await.unwrap(),
        StoreVerdict::Limited { .. }
    ));
    let ttl = server.command(&["PTTL", &key]);
    let redis::Value::Int(ttl) = ttl else {
        panic!("PTTL gave {ttl:?}")
    };
    assert!(ttl > 0 && ttl <= 200, "two intervals at most, got {ttl} ms");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(server.command(&["EXISTS", &key]), redis::Value::Int(0));
    assert_eq!(store.check(ip, &limit).await.unwrap(), StoreVerdict::Allow);
}

/// Redis killed mid-run, failing open: requests go on being served, none
/// waits out more than the timeout, and the outage is one event.
#[tokio::test]
async fn redis_killed_fail_open_keeps_a_local_limit() {
    events();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limit = RateLimit::per_minute(2).burst(0);
    let app = spawn_app(layer(&server.url(), &unique_prefix(), limit, |s| {
        s.timeout(Duration::from_millis(200))
            .on_failure(FailurePolicy::Open)
    }))
    .await;
    assert!(served(app.addr).await);
    assert!(!served(app.addr).await, "over the budget while Redis is up");
    server.kill();
    let started = Instant::now();
    let mut passed = 0;
    for _ in 0..10 {
        passed += usize::from(served(app.addr).await);
    }
    // Failing open, this replica's own limiter judges: the client's first
    // request here passes, the rest are over the limit. It is not let
    // through unlimited.
    assert_eq!(passed, 1, "fail open keeps a per-replica limit");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ten requests took {:?}: something waited on the dead store",
        started.elapsed()
    );
    let port = format!(":{}", server.port);
    let down = events_about("store unavailable");
    let down: Vec<_> = down.iter().filter(|e| e.contains(&port)).collect();
    assert_eq!(down.len(), 1, "one event per transition: {down:?}");
    assert!(down[0].contains("fail=\"open\""), "{down:?}");
}

/// One slow answer affects its own request only: the next request asks the
/// store again, instead of finding the shared limit switched off.
#[tokio::test]
async fn one_slow_answer_affects_only_its_own_request() {
    events();
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limit = RateLimit::per_minute(100).burst(100);
    let app = spawn_app(layer(&server.url(), &unique_prefix(), limit, |s| {
        s.timeout(Duration::from_millis(200))
            .on_failure(FailurePolicy::Closed)
            .retry_every(Duration::from_secs(60))
    }))
    .await;
    assert!(served(app.addr).await);
    let paused = Instant::now();
    server.command(&["CLIENT", "PAUSE", "400", "ALL"]);
    assert!(!served(app.addr).await, "no answer in time: failed closed");
    // Once the pause is over, the store answers the next request.
    tokio::time::sleep(Duration::from_millis(600).saturating_sub(paused.elapsed())).await;
    assert!(
        served(app.addr).await,
        "one slow answer switched the shared limit off for everyone"
    );
}

/// Redis killed mid-run, failing closed: every request is dropped with rule
/// `rate_limit_unavailable`, at once.
#[tokio::test]
async fn redis_killed_fail_closed_drops_everyone() {
    events();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let layer = layer(
        &server.url(),
        &unique_prefix(),
        RateLimit::per_minute(100).burst(100),
        |s| {
            s.timeout(Duration::from_millis(200))
                .on_failure(FailurePolicy::Closed)
        },
    );
    let app = spawn_app(layer.clone()).await;
    assert!(served(app.addr).await);
    server.kill();
    let started = Instant::now();
    for _ in 0..10 {
        assert!(!served(app.addr).await, "fail closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.hits(), 1);
    let stats = layer.stats();
    let rule = stats
        .rule(DropReason::RateLimitUnavailable.as_str())
        .unwrap();
    assert_eq!(rule.dropped, 10);
}

/// A store that stops answering (CLIENT PAUSE) costs each request at most
/// the timeout, and while it stays down, only one request a `retry_every`
/// waits at all.
#[tokio::test]
async fn a_paused_store_costs_at_most_the_timeout() {
    events();
    let Some(server) = RedisServer::start() else {
        return;
    };
    let limit = RateLimit::per_minute(100).burst(100);
    // One failure opens the circuit here, so the next requests need not
    // each wait the timeout.
    let app = spawn_app(layer(&server.url(), &unique_prefix(), limit, |s| {
        s.timeout(Duration::from_millis(300))
            .retry_every(Duration::from_secs(60))
            .open_after(1)
    }))
    .await;
    assert!(served(app.addr).await);
    server.command(&["CLIENT", "PAUSE", "4000", "ALL"]);
    let started = Instant::now();
    assert!(served(app.addr).await, "fail open after the timeout");
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(300),
        "it did wait: {first:?}"
    );
    assert!(
        first < Duration::from_secs(3),
        "but only the timeout: {first:?}"
    );
    let started = Instant::now();
    for _ in 0..5 {
        assert!(served(app.addr).await);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the open circuit answers without waiting: {:?}",
        started.elapsed()
    );
}

/// Redis restarted: the layer reconnects by itself, says so, and enforces
/// the shared budget again.
#[tokio::test]
async fn redis_restarted_is_used_again() {
    events();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limit = RateLimit::per_minute(1).burst(0);
    let layer = layer(&server.url(), &unique_prefix(), limit, |s| {
        s.timeout(Duration::from_millis(200))
            .retry_every(Duration::from_millis(100))
            .open_after(1)
    });
    let app = spawn_app(layer.clone()).await;
    assert!(served(app.addr).await);
    assert!(!served(app.addr).await);
    server.kill();
    // Failing open, this replica's own limiter lets the client's first
    // request through and holds the rest.
    assert!(served(app.addr).await, "fail open while down");
    assert!(!served(app.addr).await, "the local limit holds while down");
    server.restart();
    // The budget is gone with the old server's memory, and the local one is
    // spent: a request served now was answered by the restarted Redis.
    // Reconnecting takes a few tries.
    let deadline = Instant::now() + PATIENCE;
    while !served(app.addr).await {
        assert!(
            Instant::now() < deadline,
            "the restarted Redis was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!served(app.addr).await, "the shared limit holds again");
    let port = format!(":{}", server.port);
    let back: Vec<_> = events_about("available again")
        .into_iter()
        .filter(|e| e.contains(&port))
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
}

/// With the local pre-check, a client over the limit on this replica alone
/// is dropped without asking Redis, so the limit holds even while Redis is
/// down and the policy is to fail open.
#[tokio::test]
async fn local_precheck_holds_the_line_during_an_outage() {
    events();
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let limit = RateLimit::per_minute(3).burst(2);
    let app = spawn_app(layer(&server.url(), &unique_prefix(), limit, |s| {
        s.local_precheck(true).timeout(Duration::from_millis(200))
    }))
    .await;
    server.kill();
    let passed = {
        let mut n = 0;
        for _ in 0..8 {
            n += usize::from(served(app.addr).await);
        }
        n
    };
    assert_eq!(passed, 3, "the local budget, capacity 3");
}

/// A 429 instead of a drop carries the wait Redis computed.
#[tokio::test]
async fn respond_429_with_redis_retry_after() {
    events();
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let store = RedisStore::new(&url).unwrap().key_prefix(unique_prefix());
    let layer = NoResponseLayer::builder()
        .rate_limit(RateLimit::per_minute(1).burst(0))
        .shared_rate_limit(SharedRateLimit::new(store))
        .rule_action(
            "rate_limit",
            Action::Respond(http::StatusCode::TOO_MANY_REQUESTS),
        )
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    assert!(served(app.addr).await);
    let out = exchange(app.addr, &request("GET", "/", Some("example.com"), UA, &[])).await;
    let text = out.text();
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    let retry = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After")
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
}

/// A ban made on one replica reaches the others, including one that starts
/// after it was made, and lifts with its TTL.
#[tokio::test]
async fn bans_are_shared_and_expire() {
    events();
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let prefix = unique_prefix();
    let policy = BanPolicy::new(1, Duration::from_secs(60), Duration::from_secs(3));
    let store = || RedisStore::new(&url).unwrap().key_prefix(&prefix);
    let (a, b) = (BanList::new(policy), BanList::new(policy));
    store().share_bans(&a).unwrap();
    store().share_bans(&b).unwrap();
    assert!(store().share_bans(&a).is_err(), "a list is shared once");
    let wait_for = |list: &BanList, want: bool| {
        let list = list.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            while list.is_banned(LOOPBACK) != want {
                assert!(Instant::now() < deadline, "ban state never became {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Replica A drops a request from this client: one strike bans it.
    let replica_a = spawn_app(
        NoResponseLayer::builder()
            .server_name("example.com")
            .ban_list(a.clone())
            .build()
            .unwrap(),
    )
    .await;
    // Both replicas subscribe in the background; a ban made before B has
    // subscribed still reaches it through the scan of bans in force.
    let out = exchange(replica_a.addr, &get(Some("scanner.invalid"), UA)).await;
    out.assert_dropped(Close::Fin);
    assert!(a.is_banned(LOOPBACK));
    wait_for(&b, true).await;
    let late = BanList::new(policy);
    store().share_bans(&late).unwrap();
    wait_for(&late, true).await;
    assert!(
        !b.is_banned("192.0.2.67".parse().unwrap()),
        "only that client"
    );
    wait_for(&b, false).await;
    wait_for(&late, false).await;
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// SCAN's MATCH reads the key prefix as a glob. A prefix with `[`, `*` or
/// `?` in it matched shorter keys, whose slicing panicked and killed the
/// task that follows the shared bans. The prefix now matches only itself,
/// and the follower lives on: a ban announced after the scan still lands.
#[tokio::test]
async fn a_key_prefix_with_glob_characters_is_matched_literally() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let base = unique_prefix();
    let prefix = format!("{base}[ab]*?:");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut set = |key: String| {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("PX")
            .arg(60_000)
            .query(&mut conn)
            .unwrap();
    };
    // What the prefix matches as a glob: a shorter key, and one whose tail
    // parses as an address.
    set(format!("{base}aZ:ban:::1"));
    set(format!("{base}bZZ:ban:192.0.2.1"));
    // A ban under the prefix itself.
    set(format!("{prefix}ban:192.0.2.2"));
    let list = BanList::new(BanPolicy::new(
        1,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    RedisStore::new(&url)
        .unwrap()
        .key_prefix(&prefix)
        .share_bans(&list)
        .unwrap();
    let wait_for = |ip: &str| {
        let (list, ip) = (list.clone(), ip.parse::<IpAddr>().unwrap());
        async move {
            let deadline = Instant::now() + PATIENCE;
            while !list.is_banned(ip) {
                assert!(Instant::now() < deadline, "{ip} was never banned");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("192.0.2.2").await;
    assert!(!list.is_banned("192.0.2.1".parse().unwrap()));
    assert!(!list.is_banned("::1".parse().unwrap()));
    // The follower survived the scan.
    let () = redis::cmd("PUBLISH")
        .arg(format!("{prefix}bans"))
        .arg("192.0.2.3 60000")
        .query(
            &mut redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    wait_for("192.0.2.3").await;
}

/// Bans and unbans the application makes through the API reach every
/// replica, and an unban removes the ban a late replica would catch up on.
#[tokio::test]
async fn app_bans_and_unbans_are_shared() {
    let Some((url, _server)) = shared_redis() else {
        return;
    };
    let prefix = unique_prefix();
    let policy = BanPolicy::new(3, Duration::from_secs(60), Duration::from_secs(60));
    let store = || RedisStore::new(&url).unwrap().key_prefix(&prefix);
    let (a, b) = (BanList::new(policy), BanList::new(policy));
    store().share_bans(&a).unwrap();
    store().share_bans(&b).unwrap();
    let wait_for = |list: &BanList, ip: &str, want: bool| {
        let (list, ip) = (list.clone(), ip.parse::<IpAddr>().unwrap());
        async move {
            let deadline = Instant::now() + PATIENCE;
            while list.is_banned(ip) != want {
                assert!(Instant::now() < deadline, "{ip} never became banned={want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // A replica that subscribes after an announcement still catches up on
    // the ban's key, so no wait is needed here.
    a.ban("192.0.2.70".parse().unwrap(), Duration::from_secs(60));
    a.ban("192.0.2.71".parse().unwrap(), Duration::from_secs(60));
    wait_for(&b, "192.0.2.70", true).await;
    wait_for(&b, "192.0.2.71", true).await;
    assert!(a.unban("192.0.2.70".parse().unwrap()));
    wait_for(&b, "192.0.2.70", false).await;
    // A late replica catches up on the ban in force, not the lifted one.
    let late = BanList::new(policy);
    store().share_bans(&late).unwrap();
    wait_for(&late, "192.0.2.71", true).await;
    assert!(!late.is_banned("192.0.2.70".parse().unwrap()));
}
