//! Behind a proxy or CDN, on real sockets: every rule, strike, ban, cap and
//! filter uses the identity it documents. The TCP peer (the proxy, or a
//! client that connects directly) is judged at accept; the client behind a
//! trusted proxy is judged, struck and banned on its requests. Peers come
//! from several loopback addresses (127.0.0.0/8 is all loopback on Linux):
//! 127.0.0.1 is the trusted proxy, others are direct clients.
#![cfg(target_os = "linux")]

use crate::common;
use crate::h2_frames;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get as route_get, post};
use common::{Close, Outcome, PATIENCE, counting_router, read_one_response, read_until_close};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::rules::LimitKey;
use tower_no_response::{ClientIp, NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The proxy in front of the app.
const PROXY: u8 = 1;

fn bans(strikes: u32) -> BanList {
    BanList::new(BanPolicy::new(
        strikes,
        Duration::from_secs(60),
        Duration::from_secs(600),
    ))
}

/// Rules for an app behind one trusted proxy at 127.0.0.1.
fn behind_proxy() -> tower_no_response::NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_name("example.com")
        .trusted_proxy("127.0.0.1")
        .deny_user_agent("masscan")
}

/// A connection from `source`, or `None` when no SYN-ACK came within a
/// second.
async fn connect_from(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
        .await
        .ok()
        .map(|connected| connected.expect("a connect that is answered succeeds"))
}

/// Sends one request from `source` and reads until the server closes.
async fn send_from(source: IpAddr, to: SocketAddr, request: &[u8]) -> Outcome {
    let mut stream = connect_from(source, to).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_until_close(&mut stream).await
}

/// Asserts a connection refused at accept: not one byte. It closes with
/// a FIN, or a reset when the request lands after the close.
async fn refused_unread(source: IpAddr, to: SocketAddr, request: &[u8]) {
    let out = send_from(source, to, request).await;
    assert!(out.bytes.is_empty(), "{source} got {}", out.text());
}

/// A `GET` for example.com, forwarded for `client` when there is one.
fn forwarded(path: &str, client: Option<&str>, user_agent: Option<&str>) -> Vec<u8> {
    let extra: Vec<(&str, &str)> = client.map(|c| ("X-Forwarded-For", c)).into_iter().collect();
    common::request("GET", path, Some("example.com"), user_agent, &extra)
}

/// The same request, kept alive.
fn kept_alive(client: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n\
         X-Forwarded-For: {client}\r\n\r\n"
    )
    .into_bytes()
}

async fn bind() -> (TcpListener, SocketAddr) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    (tcp, addr)
}

/// `app` behind the layer, on `axum::serve` with the layer's listener.
async fn on_axum(layer: &NoResponseLayer, app: Router) -> SocketAddr {
    common::serve_layered(app.layer(layer.clone()), layer).await
}

/// `app` behind the layer, on the crate's serve loop.
async fn on_serve_loop(layer: &NoResponseLayer, app: Router) -> SocketAddr {
    let (tcp, addr) = bind().await;
    tokio::spawn(layer.serve(tcp, app.layer(layer.clone())).run());
    addr
}

/// Drops through the proxy ban the client behind it: its next request,
/// which no rule would drop, is refused through the proxy, while the proxy
/// and everyone else behind it are served. Checked on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strikes_through_the_proxy_ban_the_client_behind_it() {
    for serve_loop in [false, true] {
        let bans = bans(3);
        let layer = behind_proxy().ban_list(bans.clone()).build().unwrap();
        let app = counting_router(Default::default());
        let addr = if serve_loop {
            on_serve_loop(&layer, app).await
        } else {
            on_axum(&layer, app).await
        };
        for _ in 0..4 {
            send_from(
                lo(PROXY),
                addr,
                &forwarded("/", Some("198.18.0.7"), Some("masscan")),
            )
            .await
            .assert_dropped(Close::Fin);
        }
        let banned: Vec<IpAddr> = bans.bans().iter().map(|b| b.ip).collect();
        assert_eq!(
            banned,
            ["198.18.0.7".parse::<IpAddr>().unwrap()],
            "serve loop: {serve_loop}"
        );
        send_from(lo(PROXY), addr, &forwarded("/", Some("198.18.0.7"), UA))
            .await
            .assert_dropped(Close::Fin);
        send_from(lo(PROXY), addr, &forwarded("/", Some("198.18.0.8"), UA))
            .await
            .assert_ok();
        send_from(lo(PROXY), addr, &forwarded("/", None, UA))
            .await
            .assert_ok();
    }
}

/// A client banned through the proxy that then connects directly is
/// refused at accept, before a byte is read; an edge never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_banned_through_the_proxy_is_refused_at_accept_when_direct() {
    let bans = bans(1);
    let layer = behind_proxy().ban_list(bans.clone()).build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = on_axum(&layer, counting_router(Arc::clone(&hits))).await;
    send_from(
        lo(PROXY),
        addr,
        &forwarded("/", Some("127.0.0.9"), Some("masscan")),
    )
    .await
    .assert_dropped(Close::Fin);
    assert!(bans.is_banned(lo(9)));
    // Directly, with a request no rule drops: closed unread.
    refused_unread(lo(9), addr, &forwarded("/", None, UA)).await;
    // An edge is never struck or banned, whatever the app asks.
    assert!(!bans.strike(lo(PROXY)));
    bans.ban(lo(PROXY), Duration::from_secs(600));
    assert!(!bans.is_banned(lo(PROXY)));
    send_from(lo(PROXY), addr, &forwarded("/", Some("192.0.2.1"), UA))
        .await
        .assert_ok();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// The application's own strikes (failed logins) ban the client it read
/// from `ClientIp`, and the layer enforces that ban through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_driven_bans_of_a_proxied_client_are_enforced() {
    let bans = bans(5);
    let layer = behind_proxy().ban_list(bans.clone()).build().unwrap();
    let logins = Arc::new(AtomicUsize::new(0));
    let (list, seen) = (bans.clone(), Arc::clone(&logins));
    let app = Router::new().route(
        "/login",
        post(move |ClientIp(ip): ClientIp| {
            let (list, seen) = (list.clone(), Arc::clone(&seen));
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                list.strike(ip);
                axum::http::StatusCode::UNAUTHORIZED
            }
        }),
    );
    let addr = on_axum(&layer, app).await;
    let login = |client| {
        common::request(
            "POST",
            "/login",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", client), ("Content-Length", "0")],
        )
    };
    for _ in 0..5 {
        let out = send_from(lo(PROXY), addr, &login("198.51.100.7")).await;
        assert!(out.text().starts_with("HTTP/1.1 401"), "{}", out.text());
    }
    send_from(lo(PROXY), addr, &login("198.51.100.7"))
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(
        logins.load(Ordering::SeqCst),
        5,
        "the sixth never reached the app"
    );
    let out = send_from(lo(PROXY), addr, &login("198.51.100.8")).await;
    assert!(
        out.text().starts_with("HTTP/1.1 401"),
        "another client is served"
    );
}

/// Failed logins that reach the app through the proxy with no forwarding
/// header have the proxy as their `ClientIp`: the app's strikes and bans
/// of it are ignored (an edge stands for everyone behind it), and every
/// visitor behind the proxy is still served, on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_cannot_strike_or_ban_the_proxy() {
    for serve_loop in [false, true] {
        let bans = bans(3);
        let layer = behind_proxy().ban_list(bans.clone()).build().unwrap();
        let list = bans.clone();
        let app = Router::new()
            .route("/", route_get(|| async { "ok" }))
            .route(
                "/login",
                post(move |ClientIp(ip): ClientIp| {
                    let list = list.clone();
                    async move {
                        assert!(!list.strike(ip), "struck {ip}");
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }),
            );
        let addr = if serve_loop {
            on_serve_loop(&layer, app).await
        } else {
            on_axum(&layer, app).await
        };
        let login = common::request(
            "POST",
            "/login",
            Some("example.com"),
            UA,
            &[("Content-Length", "0")],
        );
        for _ in 0..6 {
            let out = send_from(lo(PROXY), addr, &login).await;
            assert!(out.text().starts_with("HTTP/1.1 401"), "{}", out.text());
        }
        bans.ban(lo(PROXY), Duration::from_secs(600));
        assert!(bans.bans().is_empty(), "{:?}", bans.bans());
        assert!(!bans.is_banned(lo(PROXY)));
        send_from(lo(PROXY), addr, &forwarded("/", Some("198.51.100.9"), UA))
            .await
            .assert_ok();
        send_from(lo(PROXY), addr, &forwarded("/", None, UA))
            .await
            .assert_ok();
    }
}

/// `only_from`: visitors through the allowed edge are judged by their real
/// address and served; any other peer is refused with zero bytes, on the
/// layer's listener, the serve loop, and by the layer alone on a server
/// with no accept hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_from_serves_the_edge_and_refuses_everyone_around_it() {
    let rules = || {
        NoResponseLayer::builder()
            .server_name("example.com")
            .trusted_proxy("127.0.0.2")
            .only_from_peer("127.0.0.2")
            .deny_ip("203.0.113.66")
    };
    let edge = lo(2);
    for side in ["listener", "serve loop", "layer alone"] {
        let layer = rules().build().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let app = counting_router(Arc::clone(&hits));
        let addr = match side {
            "listener" => on_axum(&layer, app).await,
            "serve loop" => on_serve_loop(&layer, app).await,
            _ => {
                let (tcp, addr) = bind().await;
                let app = app.layer(layer.clone());
                tokio::spawn(async move {
                    axum::serve(tcp, app.into_make_service_with_connect_info::<SocketAddr>())
                        .await
                        .unwrap();
                });
                addr
            }
        };
        send_from(edge, addr, &forwarded("/", Some("203.0.113.9"), UA))
            .await
            .assert_ok();
        // IP rules judge the visitor, not the edge.
        let out = send_from(edge, addr, &forwarded("/", Some("203.0.113.66"), UA)).await;
        if side == "layer alone" {
            assert!(out.bytes.is_empty(), "{side}: {}", out.text());
        } else {
            out.assert_dropped(Close::Fin);
        }
        for direct in [lo(3), lo(PROXY)] {
            refused_unread(direct, addr, &forwarded("/", Some("203.0.113.9"), UA)).await;
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{side}");
        let stats = layer.stats();
        let refused = stats.rule("peer_not_allowed").map(|r| r.dropped);
        assert_eq!(refused, Some(2), "{side}: {stats:?}");
    }
}

/// `trust_cloudflare_only`: Cloudflare's ranges are both trusted and the
/// only peers served.
#[test]
fn trust_cloudflare_only_trusts_and_only_serves_cloudflare() {
    let layer = NoResponseLayer::builder()
        .trust_cloudflare_only()
        .build()
        .unwrap();
    let rules = layer.rules();
    let edge: IpAddr = "173.245.48.1".parse().unwrap();
    let origin_bypass: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(rules.is_trusted_proxy(edge) && rules.peer_allowed(edge));
    assert!(!rules.peer_allowed(origin_bypass));
    let request = http::Request::builder()
        .uri("/")
        .header("host", "example.com")
        .header("cf-connecting-ip", "198.51.100.4")
        .body(())
        .unwrap();
    let through = layer.judge_and_spend(&request, Some(SocketAddr::new(edge, 443)));
    assert_eq!(through.client_ip, Some("198.51.100.4".parse().unwrap()));
    assert_eq!(through.stop(), None);
    let around = layer.judge_and_spend(&request, Some(SocketAddr::new(origin_bypass, 443)));
    assert_eq!(
        around.stop().map(|s| s.rule.as_str()),
        Some("peer_not_allowed")
    );
}

/// A trusted proxy's pooled connections are never capped as a client's;
/// a direct client still is, and a per-proxy cap is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_cap_counts_clients_not_the_proxy() {
    let layer = behind_proxy().build().unwrap();
    let (tcp, addr) = bind().await;
    let app = counting_router(Default::default()).layer(layer.clone());
    tokio::spawn(
        layer
            .serve(tcp, app)
            .max_connections_per_client(4)
            .max_connections_per_proxy(50)
            .run(),
    );
    // A proxy pool of 50 kept-alive connections, each used by two clients.
    let mut pool = Vec::new();
    for i in 0..50u8 {
        let mut stream = connect_from(lo(PROXY), addr).await.expect("connect");
        stream
            .write_all(&kept_alive(&format!("192.0.2.{i}")))
            .await
            .unwrap();
        let response = read_one_response(&mut stream).await;
        assert!(response.starts_with(b"HTTP/1.1 200"), "connection {i}");
        pool.push(stream);
    }
    for (i, stream) in pool.iter_mut().enumerate() {
        stream
            .write_all(&kept_alive(&format!("198.51.100.{i}")))
            .await
            .unwrap();
        let response = read_one_response(stream).await;
        assert!(response.starts_with(b"HTTP/1.1 200"), "reuse of {i}");
    }
    // The 51st is over the proxy's own cap: refused unread.
    refused_unread(lo(PROXY), addr, &forwarded("/", Some("192.0.2.99"), UA)).await;
    // A direct client: four connections, the fifth refused.
    let mut direct = Vec::new();
    for _ in 0..4 {
        direct.push(connect_from(lo(7), addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    refused_unread(lo(7), addr, &forwarded("/", None, UA)).await;
}

/// NAT: many people behind one untrusted address are one client, as nginx
/// judges them; their forwarding headers are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_nat_are_one_client() {
    let layer = behind_proxy()
        .rate_limit(RateLimit::per_minute(1).burst(2))
        .build()
        .unwrap();
    let addr = on_axum(&layer, counting_router(Default::default())).await;
    let nat = lo(40);
    for i in 0..3 {
        send_from(nat, addr, &forwarded("/", Some(&format!("10.0.0.{i}")), UA))
            .await
            .assert_ok();
    }
    send_from(nat, addr, &forwarded("/", Some("10.0.0.9"), UA))
        .await
        .assert_dropped(Close::Fin);
    // Someone else is not limited by them.
    send_from(lo(41), addr, &forwarded("/", None, UA))
        .await
        .assert_ok();
}

/// IPv6 clients of one /64 behind the proxy are struck and banned as one,
/// and a neighbouring /64 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_of_one_64_behind_the_proxy_share_a_ban() {
    let bans = bans(2);
    let layer = behind_proxy().ban_list(bans.clone()).build().unwrap();
    let addr = on_axum(&layer, counting_router(Default::default())).await;
    for client in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
        send_from(
            lo(PROXY),
            addr,
            &forwarded("/", Some(client), Some("masscan")),
        )
        .await
        .assert_dropped(Close::Fin);
    }
    send_from(
        lo(PROXY),
        addr,
        &forwarded("/", Some("2001:db8:1:2::abcd"), UA),
    )
    .await
    .assert_dropped(Close::Fin);
    send_from(
        lo(PROXY),
        addr,
        &forwarded("/", Some("2001:db8:1:3::1"), UA),
    )
    .await
    .assert_ok();
}

/// A reload that stops trusting the proxy applies to connections already
/// open: the next request on them is judged by the new trusted set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_the_trusted_set_reaches_open_connections() {
    let rules = |trusted: bool| {
        let builder = NoResponseLayer::builder()
            .server_name("example.com")
            .deny_ip("198.51.100.0/24");
        if trusted {
            builder.trusted_proxy("127.0.0.1")
        } else {
            builder
        }
    };
    let layer = rules(false).build().unwrap();
    let addr = on_axum(&layer, counting_router(Default::default())).await;
    let mut open = connect_from(lo(PROXY), addr).await.unwrap();
    open.write_all(&kept_alive("198.51.100.7")).await.unwrap();
    let response = read_one_response(&mut open).await;
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "untrusted: header ignored"
    );
    layer.reload(rules(true)).unwrap();
    open.write_all(&kept_alive("198.51.100.7")).await.unwrap();
    read_until_close(&mut open).await.assert_dropped(Close::Fin);
}

/// Keyed limits strike only when the key is the client itself: a route's
/// or an API key's budget is shared with innocents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_limits_strike_only_their_own_client() {
    let bans = bans(3);
    let layer = behind_proxy()
        .ban_list(bans.clone())
        .rate_limit_by("login_route", RateLimit::per_minute(2), |head| {
            (head.uri.path() == "/login").then(|| LimitKey::text("/login"))
        })
        .rate_limit_by("per_client", RateLimit::per_minute(2), |head| {
            (head.uri.path() == "/mine")
                .then_some(head.client_ip)
                .flatten()
                .map(LimitKey::ip)
        })
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", route_get(|| async { "ok" }))
        .route("/mine", route_get(|| async { "ok" }))
        .route("/", route_get(|| async { "ok" }));
    let addr = on_axum(&layer, app).await;
    // Attackers spread over many addresses use up the route's budget.
    for i in 0..6 {
        let client = format!("192.0.2.{i}");
        send_from(lo(PROXY), addr, &forwarded("/login", Some(&client), UA)).await;
    }
    // An innocent's attempts are limited, but never strike it.
    for _ in 0..4 {
        send_from(
            lo(PROXY),
            addr,
            &forwarded("/login", Some("198.51.100.9"), UA),
        )
        .await
        .assert_dropped(Close::Fin);
    }
    assert!(bans.is_empty(), "{:?}", bans.bans());
    send_from(lo(PROXY), addr, &forwarded("/", Some("198.51.100.9"), UA))
        .await
        .assert_ok();
    // Over a budget keyed by the client itself: that strikes.
    for _ in 0..5 {
        send_from(
            lo(PROXY),
            addr,
            &forwarded("/mine", Some("198.51.100.10"), UA),
        )
        .await;
    }
    assert!(bans.is_banned("198.51.100.10".parse().unwrap()));
}

/// A full keyed table judges a new key with its client's network: one
/// address spraying fresh API keys limits itself, not the honest newcomers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_spray_does_not_crowd_out_honest_newcomers() {
    let layer = behind_proxy()
        .rate_limit_by(
            "api_key",
            RateLimit::per_second(1).burst(1).max_keys(1000),
            |head| {
                head.headers
                    .get("x-api-key")
                    .map(|k| LimitKey::bytes(k.as_bytes()))
            },
        )
        .build()
        .unwrap();
    let judge = |client: &str, key: String| {
        let request = http::Request::builder()
            .uri("/")
            .header("host", "example.com")
            .header("user-agent", "curl/8.5.0")
            .header("x-forwarded-for", client)
            .header("x-api-key", key)
            .body(())
            .unwrap();
        layer.judge_and_spend(&request, Some(SocketAddr::new(lo(PROXY), 4000)))
    };
    let mut honest_refused = 0;
    for round in 0..200 {
        for spray in 0..20 {
            let _ = judge("203.0.113.5", format!("spray-{round}-{spray}"));
        }
        // Each from a network of its own, as people are.
        let honest = judge(&format!("198.51.{round}.7"), format!("honest-{round}"));
        honest_refused += usize::from(honest.stop().is_some());
    }
    assert_eq!(
        honest_refused, 0,
        "honest first requests with new keys were refused"
    );
    // The sprayer is limited once the table is full.
    let sprayed = (0..50)
        .filter(|i| judge("203.0.113.5", format!("late-{i}")).stop().is_some())
        .count();
    assert!(sprayed > 40, "the sprayer escaped: {sprayed} of 50 refused");
}

/// Two connections that share a peer address and port, to two listeners of
/// one layer: a drop on one leaves the other's request in flight alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_aborts_only_its_own_connection_when_peers_collide() {
    let layer = behind_proxy().build().unwrap();
    let app = Router::new()
        .route(
            "/slow",
            route_get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "ok"
            }),
        )
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = a.local_addr().unwrap().port();
    let b = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
    common::serve_on(layer.listener(a), app.clone());
    common::serve_on(layer.listener(b), app);
    let client = SocketAddr::new(lo(30), {
        let probe = std::net::TcpListener::bind((lo(30), 0)).unwrap();
        probe.local_addr().unwrap().port()
    });
    let from_same = || {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(client).unwrap();
        socket
    };
    let mut innocent = from_same()
        .connect(SocketAddr::new(lo(1), port))
        .await
        .unwrap();
    let mut scanner = from_same()
        .connect(SocketAddr::new(lo(2), port))
        .await
        .unwrap();
    innocent
        .write_all(&forwarded("/slow", None, UA))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    scanner
        .write_all(&forwarded("/", None, Some("masscan")))
        .await
        .unwrap();
    read_until_close(&mut scanner)
        .await
        .assert_dropped(Close::Fin);
    let out = tokio::time::timeout(PATIENCE, read_until_close(&mut innocent))
        .await
        .unwrap();
    out.assert_ok();
}

/// Served without connect info, the layer judges each request by the peer
/// its listener recorded: nothing is dropped as `client_ip_unknown`, and
/// drops still write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_s_peer_stands_in_for_missing_connect_info() {
    let layer = behind_proxy()
        .rate_limit(RateLimit::per_minute(1).burst(9))
        .build()
        .unwrap();
    let (tcp, addr) = bind().await;
    let app = counting_router(Default::default()).layer(layer.clone());
    let listener = layer.listener(tcp);
    tokio::spawn(async move { axum::serve(listener, app.into_make_service()).await });
    for _ in 0..3 {
        send_from(lo(PROXY), addr, &forwarded("/", Some("192.0.2.3"), UA))
            .await
            .assert_ok();
        send_from(lo(8), addr, &forwarded("/", None, UA))
            .await
            .assert_ok();
    }
    send_from(lo(8), addr, &forwarded("/", None, Some("masscan")))
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(
        layer.stats().rule("client_ip_unknown").map(|r| r.dropped),
        Some(0)
    );
}

/// A client banned behind the proxy loses only its own HTTP/2 streams on
/// the proxy's shared connection: 10,000 of its requests interleaved with
/// 10,000 of other clients' on four connections, on a multi-thread
/// runtime, each of its streams reset with not one frame of a response,
/// every other stream answered, and no connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_client_behind_the_proxy_loses_only_its_h2_streams() {
    let bans = bans(3);
    bans.ban("198.18.0.7".parse().unwrap(), Duration::from_secs(600));
    let layer = behind_proxy().ban_list(bans).build().unwrap();
    let addr = on_serve_loop(&layer, counting_router(Default::default())).await;
    let head = |client| {
        h2_frames::owned(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "example.com"),
            ("user-agent", "curl/8.5.0"),
            ("x-forwarded-for", client),
        ])
    };
    let leaked = h2_frames::interleave(addr, head("198.18.0.8"), head("198.18.0.7"), None).await;
    assert_eq!(leaked, 0, "dropped streams that received a response frame");
}
