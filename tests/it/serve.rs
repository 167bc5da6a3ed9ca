//! The crate's own serve loop: HTTP/1 drops send nothing, an HTTP/2 drop
//! resets only its stream, accept-time refusals, the header timeout against
//! a one-byte-a-second client, and graceful shutdown.

use crate::common;
use crate::h2_frames;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Close, PATIENCE, exchange, get as get_req, read_until_close, seed_rules};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tower_no_response::connection::CloseMode;
use tower_no_response::server::{AcceptRules, Http2Drop, Serve};
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder};

const UA: Option<&str> = Some("curl/8.5.0");

/// `/slow` says it has started, then waits until released; every other
/// path answers `ok`.
fn app_with(release: Arc<Notify>, started: Arc<Notify>, layer: &NoResponseLayer) -> Router {
    Router::new()
        .route(
            "/slow",
            get(move || {
                let (release, started) = (Arc::clone(&release), Arc::clone(&started));
                async move {
                    started.notify_one();
                    release.notified().await;
                    "slow"
                }
            }),
        )
        .fallback(|| async { "ok" })
        .layer(layer.clone())
}

async fn start(
    configure: impl FnOnce(Serve<Router>) -> Serve<Router>,
) -> (SocketAddr, Arc<Notify>) {
    start_with(seed_rules(), configure).await
}

async fn start_with(
    rules: NoResponseLayerBuilder,
    configure: impl FnOnce(Serve<Router>) -> Serve<Router>,
) -> (SocketAddr, Arc<Notify>) {
    let layer = rules.build().unwrap();
    let release = Arc::new(Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app_with(Arc::clone(&release), Arc::new(Notify::new()), &layer);
    let server = configure(layer.serve(listener, app));
    tokio::spawn(server.run());
    (addr, release)
}

async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn h2_req(authority: &str, path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::builder()
        .uri(format!("http://{authority}{path}"))
        .header("user-agent", "curl")
        .body(Empty::new())
        .unwrap()
}

fn reset_reason(e: &hyper::Error) -> Option<h2::Reason> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
}

#[tokio::test]
async fn http1_drops_send_nothing() {
    let (addr, _) = start(|s| s).await;
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    exchange(addr, &get_req(Some("example.com"), Some("masscan")))
        .await
        .assert_dropped(Close::Fin);
}

/// nginx's behaviour on HTTP/2: the dropped stream is reset with CANCEL,
/// the stream in flight beside it completes, and the connection stays up.
#[tokio::test]
async fn http2_drop_resets_only_its_stream() {
    let (addr, release) = start(|s| s).await;
    let mut sender = h2(addr).await;
    let slow = tokio::spawn(sender.send_request(h2_req("example.com", "/slow")));
    let dropped = tokio::time::timeout(PATIENCE, sender.send_request(h2_req("evil.com", "/")))
        .await
        .expect("the dropped stream hangs");
    let err = dropped.expect_err("a dropped request got a response");
    assert_eq!(reset_reason(&err), Some(h2::Reason::CANCEL), "{err:?}");
    release.notify_one();
    let slow = tokio::time::timeout(PATIENCE, slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.into_body().collect().await.unwrap().to_bytes(), "slow");
    let again = sender
        .send_request(h2_req("example.com", "/"))
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test]
async fn http2_reset_reason_can_be_internal_error() {
    let (addr, _) = start(|s| s.http2_drop(Http2Drop::ResetStreamInternalError)).await;
    let mut sender = h2(addr).await;
    let err = sender
        .send_request(h2_req("evil.com", "/"))
        .await
        .unwrap_err();
    assert_eq!(
        reset_reason(&err),
        Some(h2::Reason::INTERNAL_ERROR),
        "{err:?}"
    );
}

/// Caddy's `abort`: the whole connection goes, with the stream beside it.
#[tokio::test]
async fn http2_whole_connection_mode() {
    let (addr, _release) = start(|s| s.http2_drop(Http2Drop::CloseConnection)).await;
    let mut sender = h2(addr).await;
    let slow = tokio::spawn(sender.send_request(h2_req("example.com", "/slow")));
    tokio::task::yield_now().await;
    let dropped = tokio::time::timeout(PATIENCE, sender.send_request(h2_req("evil.com", "/")))
        .await
        .expect("hangs");
    assert!(dropped.is_err());
    let slow = tokio::time::timeout(PATIENCE, slow).await.unwrap().unwrap();
    assert!(slow.is_err(), "the stream beside it must go too");
}

#[tokio::test]
async fn refused_at_accept_before_any_read() {
    let rules = AcceptRules::deny(["127.0.0.0/8"]).unwrap();
    let (addr, _) = start_with(seed_rules().close_mode(CloseMode::Reset), |s| {
        s.accept_rules(rules)
    })
    .await;
    // Nothing is sent: the refusal cannot depend on the request.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Reset);
    let err = AcceptRules::deny(["10.0.0.0/8", "bogus"]).unwrap_err();
    assert!(err.to_string().contains("\"bogus\""), "{err}");
}

/// On the signal, the server stops accepting, lets the request in flight
/// finish, and returns.
#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let layer = seed_rules().build().unwrap();
    let app = app_with(Arc::clone(&release), Arc::clone(&started), &layer);
    let server = tokio::spawn(
        layer
            .serve(listener, app)
            .run_until(async { stop_rx.await.unwrap() }),
    );
    let in_flight = tokio::spawn(exchange(
        addr,
        b"GET /slow HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\nConnection: close\r\n\r\n",
    ));
    started.notified().await;
    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished(), "a request is still in flight");
    release.notify_one();
    let out = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(out.text().ends_with("\r\n\r\nslow"), "{}", out.text());
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// fail2ban without the log: three drops within the window and the client
/// is refused at accept, even for a request that would pass; after the ban
/// it is served again.
#[tokio::test]
async fn repeat_offenders_are_banned_at_accept() {
    use tower_no_response::ban::{BanList, BanPolicy};

    let bans = BanList::new(BanPolicy::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(2),
    ));
    // The client is the peer itself: no proxy is trusted here.
    let layer = direct_rules().ban_list(bans.clone()).build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let addr = common::serve_loop(&layer, app).await;

    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    for _ in 0..3 {
        exchange(addr, &get_req(Some("evil.com"), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    assert!(bans.is_banned("127.0.0.1".parse().unwrap()));
    // Banned: refused before the request is read, however good it is.
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    // The bound only guards against a ban that never ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = exchange(addr, &get_req(Some("example.com"), UA)).await;
        if !out.bytes.is_empty() {
            out.assert_ok();
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ban never ended"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Behind a trusted proxy the peer is the proxy: drops ban the client
/// behind it, never the proxy, or every client behind it would be refused.
#[tokio::test]
async fn drops_behind_a_proxy_ban_the_client_not_the_proxy() {
    use tower_no_response::ban::{BanList, BanPolicy};

    let bans = BanList::new(BanPolicy::new(
        1,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let layer = seed_rules().ban_list(bans.clone()).build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let addr = common::serve_loop(&layer, app).await;
    exchange(
        addr,
        &common::request(
            "GET",
            "/",
            Some("evil.com"),
            UA,
            &[("X-Forwarded-For", "192.0.2.50")],
        ),
    )
    .await
    .assert_dropped(Close::Fin);
    let banned: Vec<_> = bans.bans().iter().map(|b| b.ip).collect();
    assert_eq!(banned, ["192.0.2.50".parse::<std::net::IpAddr>().unwrap()]);
    // The proxy itself, and another client behind it, are still served.
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    let through = |client| {
        common::request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", client)],
        )
    };
    exchange(addr, &through("192.0.2.51")).await.assert_ok();
    // The banned client is refused through the proxy, on a request that
    // would otherwise pass.
    exchange(addr, &through("192.0.2.50"))
        .await
        .assert_dropped(Close::Fin);
}

/// Zero bytes on the serve loop's per-stream path, checked as an attacker
/// would on a multi-thread runtime: 10,000 dropped requests interleaved with
/// 10,000 allowed ones on four shared h2c connections, frame by frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_h2_drops_leak_not_one_frame() {
    let (addr, _release) = start(|s| s).await;
    let head = |authority| {
        h2_frames::owned(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", authority),
            ("user-agent", "curl/8.5.0"),
        ])
    };
    let leaked = h2_frames::interleave(addr, head("example.com"), head("evil.com"), None).await;
    assert_eq!(leaked, 0, "{leaked} dropped requests received frames");
}

/// Bans after `strikes` drops within a minute, for a minute.
fn bans_after(strikes: u32) -> tower_no_response::ban::BanList {
    use tower_no_response::ban::{BanList, BanPolicy};
    BanList::new(BanPolicy::new(
        strikes,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ))
}

/// The seed's rules for clients that connect directly: no trusted proxy.
fn direct_rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_user_agents(["masscan", "zgrab"])
        .drop_empty_user_agent(true)
}

/// Serves `layer` with the crate's loop; returns its address.
async fn serve_layer(layer: NoResponseLayer) -> SocketAddr {
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    common::serve_loop(&layer, app).await
}

/// Connects from `from`, one of the loopback range's many addresses.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    try_connect_from(from, addr).await.unwrap()
}

async fn try_connect_from(from: [u8; 4], addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    socket.connect(addr).await
}

/// A connection refused at accept with a reset: the reset may come before
/// the client's connect returns, or on its first read.
async fn assert_refused_with_reset(from: [u8; 4], addr: SocketAddr) {
    match try_connect_from(from, addr).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(mut stream) => read_until_close(&mut stream)
            .await
            .assert_dropped(Close::Reset),
    }
}

async fn exchange_from(from: [u8; 4], addr: SocketAddr, request: &[u8]) -> common::Outcome {
    let mut stream = connect_from(from, addr).await;
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, request).await;
    read_until_close(&mut stream).await
}

/// Behind a trusted proxy, requests whose real-IP header does not resolve
/// fall back to the peer, the proxy. Their drops must not strike it: a ban
/// would refuse every client behind it.
#[tokio::test]
async fn a_trusted_proxy_is_never_banned() {
    let bans = bans_after(3);
    let layer = seed_rules()
        .real_ip_header(tower_no_response::rules::RealIpHeader::XRealIp)
        .ban_list(bans.clone())
        .build()
        .unwrap();
    let addr = serve_layer(layer).await;
    // Two X-Real-IP headers: no single client, so the peer stands.
    let unresolved = common::request(
        "GET",
        "/",
        Some("evil.com"),
        UA,
        &[("X-Real-IP", "192.0.2.1"), ("X-Real-IP", "192.0.2.2")],
    );
    for _ in 0..3 {
        exchange(addr, &unresolved).await.assert_dropped(Close::Fin);
    }
    assert!(bans.is_empty(), "the proxy was struck");
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
}

/// A full limiter table is not the client's doing: a newcomer judged with
/// its network, and dropped because the network is over the rate, is not
/// struck.
#[tokio::test]
async fn only_the_client_s_own_behaviour_strikes() {
    use tower_no_response::RateLimit;
    use tower_no_response::rules::Action;
    let bans = bans_after(3);
    // One request a minute: the first client's entry stays in the one
    // slot, so the second finds the table full.
    let layer = direct_rules()
        .rate_limit(RateLimit::per_minute(1).max_keys(1))
        .rule_action("rate_limit", Action::Drop)
        .ban_list(bans.clone())
        .build()
        .unwrap();
    let addr = serve_layer(layer).await;
    // 127.0.0.2 takes the one slot; 127.0.0.3 finds the table full and is
    // judged with 127.0.0.0/24, whose one request a minute it spends.
    exchange_from([127, 0, 0, 2], addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    exchange_from([127, 0, 0, 3], addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
    for _ in 0..3 {
        exchange_from([127, 0, 0, 3], addr, &get_req(Some("example.com"), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    assert!(
        !bans.is_banned("127.0.0.3".parse().unwrap()),
        "an innocent client was banned for a full table"
    );
    // Its own misbehaviour does strike.
    for _ in 0..3 {
        exchange_from([127, 0, 0, 3], addr, &get_req(Some("evil.com"), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    assert!(bans.is_banned("127.0.0.3".parse().unwrap()));
}

/// A ban reaches the banned client's live connections: an HTTP/2
/// connection serves it nothing more, and neither does a kept-alive
/// HTTP/1 connection opened before the ban.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_reach_live_connections() {
    let bans = bans_after(3);
    let layer = direct_rules().ban_list(bans.clone()).build().unwrap();
    let addr = serve_layer(layer).await;

    // Kept alive from before the ban, on another source address.
    let mut kept = connect_from([127, 0, 0, 9], addr).await;
    let keep_alive = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut kept, keep_alive)
        .await
        .unwrap();
    let first = common::read_one_response(&mut kept).await;
    assert!(first.starts_with(b"HTTP/1.1 200"));

    // HTTP/2 from the same address: three dropped streams earn the ban.
    let stream = connect_from([127, 0, 0, 9], addr).await;
    let mut h2 = h2_frames::RawH2::over(stream).await;
    let head = |authority| {
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", authority),
            ("user-agent", "curl/8.5.0"),
        ]
    };
    for _ in 0..3 {
        let (id, bytes) = h2.request(&head("evil.com"), None);
        h2.send(&bytes).await;
        h2.finish(&[id]).await;
    }
    assert!(bans.is_banned("127.0.0.9".parse().unwrap()));
    let (id, bytes) = h2.request(&head("example.com"), None);
    h2.send(&bytes).await;
    h2.finish(&[id]).await;
    assert!(!h2.streams[&id].leaked(), "{:?}", h2.streams[&id]);
    assert!(h2.closed, "the banned client's connection stayed open");

    tokio::io::AsyncWriteExt::write_all(&mut kept, keep_alive)
        .await
        .unwrap();
    read_until_close(&mut kept).await.assert_dropped(Close::Fin);
}

/// An h2c client that sends the preface and its settings and then nothing
/// is closed once the header timeout passes, with no response, and logged
/// as `header_timeout`; before, it stayed open for good.
#[tokio::test]
async fn http2_without_a_request_is_closed_at_the_header_timeout() {
    let layer = direct_rules()
        .header_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let addr = serve_layer(layer).await;
    let started = tokio::time::Instant::now();
    let mut h2 = h2_frames::RawH2::connect(addr).await;
    h2.finish(&[]).await;
    h2.wait_for_close().await;
    assert!(h2.closed);
    assert!(h2.streams.values().all(|s| !s.leaked()));
    // Generous: it only has to close, not close on the dot.
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// The idle timeout closes a kept-alive HTTP/1 connection and an HTTP/2
/// connection with nothing in flight, as nginx's `keepalive_timeout` does.
#[tokio::test]
async fn idle_connections_are_closed() {
    let layer = direct_rules().build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        layer
            .serve(listener, app)
            .idle_timeout(Duration::from_millis(300))
            .run(),
    );
    let mut kept = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut kept,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n",
    )
    .await
    .unwrap();
    let first = common::read_one_response(&mut kept).await;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    // Then nothing: the server closes, writing nothing more.
    let rest = read_until_close(&mut kept).await;
    assert!(rest.bytes.is_empty(), "{}", rest.text());

    let mut h2 = h2_frames::RawH2::connect(addr).await;
    let head = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "example.com"),
        ("user-agent", "curl/8.5.0"),
    ];
    let (id, bytes) = h2.request(&head, None);
    h2.send(&bytes).await;
    h2.finish(&[id]).await;
    assert!(h2.streams[&id].ended);
    h2.wait_for_close().await;
    assert!(h2.closed);
}

/// Connection caps, overall and per client, refuse at accept with the
/// close mode, and free their slot when a connection ends.
#[tokio::test]
async fn connection_caps_refuse_at_accept() {
    let layer = direct_rules().close_mode(CloseMode::Reset).build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        layer
            .serve(listener, app)
            .max_connections(3)
            .max_connections_per_client(2)
            .run(),
    );
    // Two from one client fill its share; a third from it is refused.
    // The loop accepts in the order clients connect, so no wait is needed.
    let a1 = connect_from([127, 0, 0, 21], addr).await;
    let a2 = connect_from([127, 0, 0, 21], addr).await;
    assert_refused_with_reset([127, 0, 0, 21], addr).await;
    // Another client gets the last overall slot; a fourth is refused.
    let b1 = connect_from([127, 0, 0, 22], addr).await;
    assert_refused_with_reset([127, 0, 0, 23], addr).await;
    // A closed connection gives its slot back.
    drop((a1, a2, b1));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let out = exchange_from([127, 0, 0, 23], addr, &get_req(Some("example.com"), UA)).await;
        if !out.bytes.is_empty() {
            out.assert_ok();
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The application drives the ban list from its own signals: three failed
/// logins ban the client, which is then refused at accept; an admin lists
/// the bans and lifts one, from handlers too.
#[tokio::test]
async fn handlers_strike_list_and_unban() {
    use axum::extract::{Query, State};
    use tower_no_response::ClientIp;
    use tower_no_response::ban::BanList;

    let bans = bans_after(3);
    let layer = direct_rules().ban_list(bans.clone()).build().unwrap();
    let app = Router::new()
        .route(
            "/login",
            get(
                |State(bans): State<BanList>,
                 ClientIp(ip): ClientIp,
                 Query(q): Query<Vec<(String, String)>>| async move {
                    let password = q
                        .iter()
                        .find(|(k, _)| k == "password")
                        .map(|(_, v)| v.as_str());
                    if password == Some("letmein") {
                        return "welcome";
                    }
                    bans.strike(ip);
                    "denied"
                },
            ),
        )
        .route(
            "/admin/bans",
            get(|State(bans): State<BanList>| async move {
                bans.bans()
                    .iter()
                    .map(|b| b.ip.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        )
        .route(
            "/admin/unban",
            get(
                |State(bans): State<BanList>, Query(q): Query<Vec<(String, String)>>| async move {
                    let ip = q[0].1.parse().unwrap();
                    if bans.unban(ip) {
                        "unbanned"
                    } else {
                        "not banned"
                    }
                },
            ),
        )
        .with_state(bans.clone())
        .layer(layer.clone());
    let addr = common::serve_loop(&layer, app).await;

    let client = [127, 0, 0, 41];
    let admin = [127, 0, 0, 42];
    let login = |password: &str| {
        common::request(
            "GET",
            &format!("/login?password={password}"),
            Some("example.com"),
            UA,
            &[],
        )
    };
    for _ in 0..3 {
        let out = exchange_from(client, addr, &login("guess")).await;
        assert!(out.text().ends_with("denied"), "{}", out.text());
    }
    // Banned now: refused before a byte is read, however good the request.
    exchange_from(client, addr, &login("letmein"))
        .await
        .assert_dropped(Close::Fin);
    let bans_listed = exchange_from(
        admin,
        addr,
        &common::request("GET", "/admin/bans", Some("example.com"), UA, &[]),
    )
    .await;
    assert!(
        bans_listed.text().ends_with("127.0.0.41"),
        "{}",
        bans_listed.text()
    );
    let unbanned = exchange_from(
        admin,
        addr,
        &common::request(
            "GET",
            "/admin/unban?ip=127.0.0.41",
            Some("example.com"),
            UA,
            &[],
        ),
    )
    .await;
    assert!(unbanned.text().ends_with("unbanned"), "{}", unbanned.text());
    let welcome = exchange_from(client, addr, &login("letmein")).await;
    assert!(welcome.text().ends_with("welcome"), "{}", welcome.text());
}

/// One authority spelled two ways is one authority: the scheme's default
/// port and one trailing dot are not a mismatch, on HTTP/1 and HTTP/2, under
/// the serve loop and `axum::serve`. A real mismatch still drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authority_spelled_two_ways_is_not_a_mismatch() {
    let layer = seed_rules().build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let mut sides = Vec::new();
    for serve_loop in [true, false] {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        sides.push(tcp.local_addr().unwrap());
        if serve_loop {
            tokio::spawn(layer.serve(tcp, app.clone()).run());
        } else {
            common::serve_on(layer.listener(tcp), app.clone());
        }
    }
    let same = [
        ("http://example.com:80/", "example.com"),
        ("http://example.com/", "example.com:80"),
        ("http://example.com./", "example.com"),
        ("http://example.com/", "example.com."),
        ("http://EXAMPLE.com.:80/", "example.COM"),
        ("https://example.com:443/", "example.com"),
    ];
    let different = [
        ("http://example.com:8080/", "example.com"),
        ("https://example.com:80/", "example.com"),
        ("http://example.com/", "www.example.com"),
    ];
    for addr in sides {
        for (target, host) in same {
            let raw = format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl\r\nConnection: close\r\n\r\n"
            );
            let out = exchange(addr, raw.as_bytes()).await;
            assert!(
                out.text().ends_with("ok"),
                "{target} {host}: {}",
                out.text()
            );
        }
        for (target, host) in different {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl\r\n\r\n");
            exchange(addr, raw.as_bytes())
                .await
                .assert_dropped(Close::Fin);
        }

        // HTTP/2: `:authority` with its default port, `host` without.
        let mut h2 = h2_frames::RawH2::connect(addr).await;
        for (authority, host) in [
            ("example.com:80", "example.com"),
            ("example.com", "example.com."),
        ] {
            let head = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", authority),
                ("host", host),
                ("user-agent", "curl/8.5.0"),
            ];
            let (id, bytes) = h2.request(&head, None);
            h2.send(&bytes).await;
            h2.finish(&[id]).await;
            let frames = &h2.streams[&id];
            assert!(
                frames.ended && frames.reset.is_none() && frames.headers >= 1,
                "{addr} {authority} {host}: {frames:?}"
            );
        }
        assert!(!h2.closed);
    }
    let mismatches = layer.stats().rule("host_mismatch").unwrap().dropped;
    assert_eq!(mismatches, 2 * different.len() as u64);
}

/// curl and browsers send an idempotent request again, once, on a new
/// connection, when a kept-alive one closes without an answer: a request
/// dropped there is struck once for both, on both connection sides, while
/// the same request a third time, or dropped on a fresh connection, counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_drop_strikes_once() {
    use tokio::io::AsyncWriteExt;
    use tower_no_response::ban::{BanList, BanPolicy};

    let keep_alive = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n\r\n")
            .into_bytes()
    };
    let env = common::request("GET", "/.env", Some("example.com"), UA, &[]);
    let client: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    for serve_loop in [false, true] {
        let bans = BanList::new(BanPolicy::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let layer = direct_rules()
            .deny_path(r"^/\.env")
            .ban_list(bans.clone())
            .build()
            .unwrap();
        let app = Router::new()
            .fallback(|| async { "ok" })
            .layer(layer.clone());
        let addr = if serve_loop {
            common::serve_loop(&layer, app).await
        } else {
            common::serve_layered(app, &layer).await
        };

        // Served, then dropped on the same kept-alive connection, then sent
        // again on a new one: one strike, no ban.
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(&keep_alive("/")).await.unwrap();
        let served = common::read_one_response(&mut kept).await;
        assert!(
            served.starts_with(b"HTTP/1.1 200"),
            "serve loop: {serve_loop}"
        );
        kept.write_all(&keep_alive("/.env")).await.unwrap();
        read_until_close(&mut kept).await.assert_dropped(Close::Fin);
        exchange(addr, &env).await.assert_dropped(Close::Fin);
        assert!(!bans.is_banned(client), "serve loop: {serve_loop}");
        exchange(addr, &get_req(Some("example.com"), UA))
            .await
            .assert_ok();

        // The same request once more is no retry: the second strike bans.
        exchange(addr, &env).await.assert_dropped(Close::Fin);
        assert!(bans.is_banned(client), "serve loop: {serve_loop}");

        // Two drops on fresh connections are two strikes.
        bans.unban(client);
        exchange(addr, &env).await.assert_dropped(Close::Fin);
        exchange(addr, &env).await.assert_dropped(Close::Fin);
        assert!(bans.is_banned(client), "serve loop: {serve_loop}");
    }
}
