//! The shared store as managed Redis is run: TLS-only servers with a private
//! CA and client certificates, and a three-node Redis Cluster. Every server
//! is a real `redis-server` started here; a node is killed and restarted
//! under load.

use crate::common;
use crate::redis_servers;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{PATIENCE, spawn_app};
use redis_servers::{Cluster, events, events_about, served, shared_layer as layer, unique_prefix};
use tower_no_response::RateLimit;
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::limit::{FailurePolicy, RateLimitStore, SharedRateLimit, StoreVerdict};
use tower_no_response::redis::RedisStore;

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Ten requests alternating between two replicas: how many were served.
async fn alternate(a: SocketAddr, b: SocketAddr) -> usize {
    let mut passed = 0;
    for i in 0..10 {
        passed += usize::from(served(if i % 2 == 0 { a } else { b }).await);
    }
    passed
}

/// Two replicas, each with its own store made by `store`, failing closed:
/// ten requests alternating between them get one budget of five, and both
/// serve some. The timeout is generous: on a loaded machine, a first check
/// that also opens the TLS connections to every node may take longer than
/// the default 100 ms, and failing closed would count it as spent.
async fn two_replicas_share_one_budget(store: impl Fn() -> RedisStore) {
    let limit = RateLimit::per_minute(10).burst(4);
    let closed = |s: SharedRateLimit| {
        s.on_failure(FailurePolicy::Closed)
            .timeout(Duration::from_secs(5))
    };
    let a = spawn_app(layer(store(), limit, closed)).await;
    let b = spawn_app(layer(store(), limit, closed)).await;
    assert_eq!(alternate(a.addr, b.addr).await, 5, "capacity 5 across both");
    assert!(a.hits() >= 2 && b.hits() >= 2, "both replicas served some");
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "redis-tls")]
mod tls {
    use super::*;
    use redis_servers::TlsRedis;

    /// A TLS-only server, verified against the CA file: two replicas share
    /// one budget through it, exactly as over plain TCP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_share_one_budget_over_tls() {
        let Some(redis) = TlsRedis::start(false) else {
            return;
        };
        let store = || {
            RedisStore::builder()
                .url(redis.url())
                .ca_file(&redis.files.ca)
                .build()
                .unwrap()
                .key_prefix("tls:")
        };
        two_replicas_share_one_budget(&store).await;
        // The budget is really in the TLS server.
        let key = format!("tls:rl:{CLIENT}");
        assert_eq!(
            redis.server.command(&["EXISTS", &key]),
            redis::Value::Int(1)
        );
    }

    /// The certificate is checked: against the system roots (the default)
    /// or another CA, the handshake fails, and the failure policy applies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unverified_server_is_never_trusted() {
        let Some(redis) = TlsRedis::start(false) else {
            return;
        };
        let limit = RateLimit::per_minute(10);
        for store in [
            RedisStore::new(&redis.url()).unwrap(),
            RedisStore::builder()
                .url(redis.url())
                .ca_file(&redis.files.stranger_ca)
                .build()
                .unwrap(),
        ] {
            let error = store.check(CLIENT, &limit).await.unwrap_err().to_string();
            assert!(
                error.to_lowercase().contains("certificate"),
                "not a certificate error: {error}"
            );
        }
        let good = RedisStore::builder()
            .url(redis.url())
            .ca_file(&redis.files.ca)
            .build()
            .unwrap();
        assert_eq!(
            good.check(CLIENT, &limit).await.unwrap(),
            StoreVerdict::Allow
        );
    }

    /// A server that requires client certificates accepts the replica that
    /// presents one signed by its CA, and no other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls() {
        let Some(redis) = TlsRedis::start(true) else {
            return;
        };
        let limit = RateLimit::per_minute(10);
        let anonymous = RedisStore::builder()
            .url(redis.url())
            .ca_file(&redis.files.ca)
            .build()
            .unwrap();
        assert!(anonymous.check(CLIENT, &limit).await.is_err());
        let replica = RedisStore::builder()
            .url(redis.url())
            .ca_file(&redis.files.ca)
            .client_cert_files(&redis.files.client_cert, &redis.files.client_key)
            .build()
            .unwrap();
        assert_eq!(
            replica.check(CLIENT, &limit).await.unwrap(),
            StoreVerdict::Allow
        );
        // The same, from PEM text, and the bans travel over it too.
        let pem = |p: &std::path::Path| std::fs::read(p).unwrap();
        let store = || {
            RedisStore::builder()
                .url(redis.url())
                .ca_pem(pem(&redis.files.ca))
                .client_cert_pem(pem(&redis.files.client_cert), pem(&redis.files.client_key))
                .build()
                .unwrap()
                .key_prefix("mtls:")
        };
        let policy = BanPolicy::new(1, Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (BanList::new(policy), BanList::new(policy));
        store().share_bans(&a).unwrap();
        store().share_bans(&b).unwrap();
        // The subscriptions start in the background; ban until one lands.
        let banned: IpAddr = "192.0.2.9".parse().unwrap();
        a.ban(banned, Duration::from_secs(60));
        wait_until("the ban reaches the other replica over mTLS", || {
            b.is_banned(banned)
        })
        .await;
    }

    /// A TLS-only cluster, its bus included, as managed services run them:
    /// one budget across two replicas, and bans from one reach the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tls_cluster_shares_budgets_and_bans() {
        let Some(cluster) = Cluster::start_tls() else {
            return;
        };
        let ca = &cluster.tls.as_ref().expect("a TLS cluster").ca;
        let prefix = unique_prefix();
        let store = || {
            RedisStore::builder()
                .cluster(cluster.urls())
                .ca_file(ca)
                .build()
                .unwrap()
                .key_prefix(&prefix)
        };
        assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
        two_replicas_share_one_budget(&store).await;
        let policy = BanPolicy::new(1, Duration::from_secs(60), Duration::from_secs(600));
        let (one, other) = (BanList::new(policy), BanList::new(policy));
        store().share_bans(&one).unwrap();
        store().share_bans(&other).unwrap();
        let ips: Vec<IpAddr> = (1..=12u8).map(|i| IpAddr::from([203, 0, 113, i])).collect();
        for &ip in &ips {
            one.ban(ip, Duration::from_secs(600));
        }
        wait_until("every ban crosses the TLS cluster", || {
            ips.iter().all(|&ip| other.is_banned(ip))
        })
        .await;
    }
}

/// Two replicas share one budget through a cluster; the client's key lives
/// on the one node that owns its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget_through_a_cluster() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let prefix = unique_prefix();
    let store = || {
        RedisStore::builder()
            .cluster(cluster.urls())
            .build()
            .unwrap()
            .key_prefix(&prefix)
    };
    two_replicas_share_one_budget(&store).await;
    // Many clients spread over every primary, each with its own budget.
    let direct = store();
    let limit = RateLimit::per_minute(10).burst(1);
    for i in 0..60u8 {
        let ip = IpAddr::from([198, 51, 100, i]);
        assert_eq!(direct.check(ip, &limit).await.unwrap(), StoreVerdict::Allow);
        assert_eq!(direct.check(ip, &limit).await.unwrap(), StoreVerdict::Allow);
        assert!(matches!(
            direct.check(ip, &limit).await.unwrap(),
            StoreVerdict::Limited { .. }
        ));
    }
    let keys = cluster.keys_per_node();
    assert!(
        keys.iter().all(|&n| n > 0),
        "every primary holds budgets: {keys:?}"
    );
}

/// Bans made on one replica reach the others through any node: the
/// announcement is heard on a subscription to a node other than the one
/// that stored the ban, and a replica that starts late finds every stored
/// ban by scanning every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_cross_the_cluster_and_the_scan_covers_every_primary() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let prefix = unique_prefix();
    let store = |seeds: Vec<String>| {
        RedisStore::builder()
            .cluster(seeds)
            .build()
            .unwrap()
            .key_prefix(&prefix)
    };
    let policy = BanPolicy::new(1, Duration::from_secs(60), Duration::from_secs(600));
    // A subscribes through node 0 only, B through node 2 only: every ban
    // stored on node 1 is announced on a node neither listens to.
    let (a, b) = (BanList::new(policy), BanList::new(policy));
    let urls = cluster.urls();
    store(vec![urls[0].clone()]).share_bans(&a).unwrap();
    store(vec![urls[2].clone()]).share_bans(&b).unwrap();
    let ips: Vec<IpAddr> = (1..=30u8).map(|i| IpAddr::from([203, 0, 113, i])).collect();
    for &ip in &ips {
        a.ban(ip, Duration::from_secs(600));
    }
    wait_until("every ban reaches B", || {
        ips.iter().all(|&ip| b.is_banned(ip))
    })
    .await;
    let owners: std::collections::BTreeSet<usize> = ips
        .iter()
        .map(|ip| cluster.owner_of(&format!("{prefix}ban:{ip}")))
        .collect();
    assert_eq!(owners.len(), 3, "the bans are stored on every primary");
    // A replica started now catches up by scanning every primary.
    let late = BanList::new(policy);
    store(vec![urls[1].clone()]).share_bans(&late).unwrap();
    wait_until("the late replica finds every stored ban", || {
        ips.iter().all(|&ip| late.is_banned(ip))
    })
    .await;
    // Unbans travel the same way.
    assert!(a.unban(ips[0]));
    wait_until("the unban reaches B and the late replica", || {
        !b.is_banned(ips[0]) && !late.is_banned(ips[0])
    })
    .await;
}

/// The node that owns the client's slot dies under load. Each request gets
/// the failure policy (closed: dropped) within the timeout, never a hang;
/// when the node is back, the shared limit is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_load_fails_by_policy_then_recovers() {
    events();
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let prefix = unique_prefix();
    let store = RedisStore::builder()
        .cluster(cluster.urls())
        .build()
        .unwrap()
        .key_prefix(&prefix);
    let limit = RateLimit::per_minute(600).burst(1000);
    let app = spawn_app(layer(store, limit, |s| {
        s.timeout(Duration::from_millis(300))
            .retry_every(Duration::from_millis(100))
            .on_failure(FailurePolicy::Closed)
    }))
    .await;
    let owner = cluster.owner_of(&format!("{prefix}rl:{CLIENT}"));
    assert!(served(app.addr).await, "served while the cluster is whole");

    // Load from four clients for the whole outage.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        let addr = app.addr;
        load.push(tokio::spawn(async move {
            let (mut ok, mut dropped, mut slowest) = (0u32, 0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                if served(addr).await {
                    ok += 1;
                } else {
                    dropped += 1;
                }
                slowest = slowest.max(started.elapsed());
            }
            (ok, dropped, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[owner].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let down_at = Instant::now();
    // While it is down, requests are dropped by the policy.
    let mut dropped_while_down = 0;
    for _ in 0..5 {
        dropped_while_down += usize::from(!served(app.addr).await);
    }
    assert_eq!(dropped_while_down, 5, "fail closed while the owner is down");
    assert!(
        down_at.elapsed() < Duration::from_secs(5),
        "drops waited on the dead node"
    );
    cluster.nodes[owner].restart();
    cluster.wait_until_ok();
    let deadline = Instant::now() + PATIENCE * 2;
    while !served(app.addr).await {
        assert!(
            Instant::now() < deadline,
            "the restarted node was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut totals = (0, 0);
    for task in load {
        let (ok, dropped, slowest) = task.await.unwrap();
        totals.0 += ok;
        totals.1 += dropped;
        assert!(
            slowest < Duration::from_secs(5),
            "a request hung for {slowest:?}"
        );
    }
    assert!(
        totals.0 > 0 && totals.1 > 0,
        "load saw both sides: {totals:?}"
    );
    assert!(
        events_about("store unavailable")
            .iter()
            .any(|e| e.contains("fail=\"closed\"")),
        "the outage was reported"
    );
    assert!(
        !events_about("available again").is_empty(),
        "the recovery was reported"
    );
}

/// Waits until the store knows which primary holds `key`: the slot map is
/// read in the background after first use.
async fn part_of(store: &RedisStore, key: IpAddr) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(part) = store.part_of(key) {
            return part.to_string();
        }
        assert!(Instant::now() < deadline, "the slot map was never read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The store places each client's key on the primary where Redis itself
/// keeps it (the others answer `MOVED`), for IPv4 and IPv6 keys, plain
/// prefixes and a prefix with a hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_placed_on_the_primary_redis_keeps_it_on() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    for prefix in ["tower_no_response:", "shop:444:", "{shop}:444:", "{}x:"] {
        let store = RedisStore::builder()
            .cluster(cluster.urls())
            .build()
            .unwrap()
            .key_prefix(prefix);
        let mut seen = std::collections::HashSet::new();
        for n in 0..60u16 {
            let key: IpAddr = if n % 2 == 0 {
                IpAddr::from([10, 1, (n >> 8) as u8, n as u8])
            } else {
                IpAddr::from([0x2001, 0xdb8, n, 0, 0, 0, 0, 0])
            };
            let owner = cluster.owner_of(&format!("{prefix}rl:{key}"));
            assert_eq!(
                part_of(&store, key).await,
                cluster.name_of(owner),
                "{prefix}rl:{key}"
            );
            seen.insert(owner);
        }
        let expected = if prefix.starts_with("{shop}") { 1 } else { 3 };
        assert_eq!(seen.len(), expected, "{prefix}: primaries used");
    }
    let single = RedisStore::new("redis://127.0.0.1:1/").unwrap();
    assert_eq!(single.part_of(CLIENT), None, "one server is one part");
}

/// One primary stalls (SIGSTOP): after `open_after` slow answers its
/// circuit alone opens, so the clients whose keys it holds get the failure
/// policy at once instead of waiting out the timeout on every request,
/// while the clients on the healthy primaries keep their shared budget and
/// are never dropped. Both transitions are logged, naming the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_opens_its_own_circuit_and_spares_the_others() {
    events();
    let Some(cluster) = Cluster::start_partial() else {
        return;
    };
    let prefix = unique_prefix();
    let store = RedisStore::builder()
        .cluster(cluster.urls())
        .build()
        .unwrap()
        .key_prefix(&prefix);
    let timeout = Duration::from_millis(1000);
    let layer = tower_no_response::NoResponseLayer::builder()
        .trusted_proxy("127.0.0.1")
        .rate_limit(RateLimit::per_minute(6000).burst(1000))
        .shared_rate_limit(
            SharedRateLimit::new(store.clone())
                .timeout(timeout)
                .open_after(2)
                .retry_every(Duration::from_secs(3))
                .on_failure(FailurePolicy::Closed),
        )
        .build()
        .unwrap();
    let app = spawn_app(layer).await;

    // One client on the primary that will stall, and one on each other.
    let stalled = 0;
    let client_on = |node: usize| -> IpAddr {
        (1..=250u8)
            .map(|n| IpAddr::from([10, 9, 0, n]))
            .find(|ip| cluster.owner_of(&format!("{prefix}rl:{ip}")) == node)
            .expect("some client on every primary")
    };
    let victim = client_on(stalled);
    let others = [client_on(1), client_on(2)];
    let via = |ip: IpAddr| {
        common::request(
            "GET",
            "/",
            Some("example.com"),
            Some("curl/8.5.0"),
            &[("X-Forwarded-For", &ip.to_string())],
        )
    };
    let served_as = |ip: IpAddr| {
        let request = via(ip);
        async move {
            let started = Instant::now();
            let out = common::exchange(app.addr, &request).await;
            (!out.bytes.is_empty(), started.elapsed())
        }
    };
    for ip in [victim, others[0], others[1]] {
        assert!(
            served_as(ip).await.0,
            "{ip} served while the cluster is whole"
        );
        part_of(&store, ip).await;
    }
    // The store's own name lists every seed: look at the `part` field.
    let part = |node: usize| format!("part=\"{}\"", cluster.name_of(node));
    let name = part(stalled);
    let healthy = [part(1), part(2)];

    cluster.nodes[stalled].pause();
    // The stalled primary's clients and the others, interleaved as real
    // traffic is: the healthy primaries' answers must not keep the stalled
    // one's circuit shut.
    let mut waits = Vec::new();
    for _ in 0..7 {
        let (served, took) = served_as(victim).await;
        assert!(!served, "failing closed while its primary stalls");
        waits.push(took);
        for ip in others {
            let (served, took) = served_as(ip).await;
            assert!(served, "{ip} was dropped though its primary is healthy");
            assert!(took < timeout, "{ip} waited {took:?}");
        }
    }
    // The first two waited out the timeout; then the circuit is open and
    // the policy answers at once (one retry may wait, every `retry_every`).
    let after_open: Duration = waits[2..].iter().sum();
    assert!(
        after_open < timeout * 2,
        "five requests took {after_open:?} in all: they waited on the stalled primary ({waits:?})"
    );
    let down = events_about("store unavailable");
    assert!(
        down.iter().any(|e| e.contains(&name)),
        "the stalled primary's circuit was reported: {down:?}"
    );
    assert!(
        !down
            .iter()
            .any(|e| healthy.iter().any(|h| e.contains(h.as_str()))),
        "a healthy primary was reported down: {down:?}"
    );

    cluster.nodes[stalled].resume();
    let deadline = Instant::now() + PATIENCE * 2;
    while !served_as(victim).await.0 {
        assert!(
            Instant::now() < deadline,
            "the resumed primary was never used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        events_about("available again")
            .iter()
            .any(|e| e.contains(&name)),
        "the recovery was reported for the primary that stalled"
    );
}
