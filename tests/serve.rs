//! The crate's own serve loop: HTTP/1 drops send nothing, an HTTP/2 drop
//! resets only its stream, accept-time refusals, the header timeout against
//! a one-byte-a-second client, and graceful shutdown.

mod common;
#[path = "common/h2_frames.rs"]
mod h2_frames;

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
use tower_no_response::server::{AcceptRules, Http2Drop, Serve};
use tower_no_response::{CloseMode, NoResponseLayer, NoResponseLayerBuilder};

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
    let layer = seed_rules().ban_list(bans.clone()).build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(layer.serve(listener, app).run());

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

/// Behind a trusted proxy the peer is the proxy: drops must not ban it, or
/// every client behind it would be refused.
#[tokio::test]
async fn drops_behind_a_proxy_do_not_ban_the_proxy() {
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(layer.serve(listener, app).run());
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
    assert!(
        bans.is_empty(),
        "a proxied client must not strike the proxy"
    );
    exchange(addr, &get_req(Some("example.com"), UA))
        .await
        .assert_ok();
}

/// Zero bytes on the serve loop's per-stream path, checked as an attacker
/// would on a multi-thread runtime: 10,000 dropped requests interleaved with
/// 10,000 allowed ones on four shared h2c connections, frame by frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_h2_drops_leak_not_one_frame() {
    const CONNECTIONS: usize = 4;
    const BATCHES: usize = 50;
    const PAIRS: usize = 50;
    let (addr, _release) = start(|s| s).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(tokio::spawn(async move {
            let mut h2 = h2_frames::RawH2::connect(addr).await;
            let head = |authority| {
                vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", authority),
                    ("user-agent", "curl/8.5.0"),
                ]
            };
            let (allowed_head, dropped_head) = (head("example.com"), head("evil.com"));
            let (mut allowed, mut dropped) = (Vec::new(), Vec::new());
            for _ in 0..BATCHES {
                let (mut batch, mut ids) = (Vec::new(), Vec::new());
                for _ in 0..PAIRS {
                    let (id, bytes) = h2.request(&dropped_head, None);
                    batch.extend(bytes);
                    dropped.push(id);
                    ids.push(id);
                    let (id, bytes) = h2.request(&allowed_head, None);
                    batch.extend(bytes);
                    allowed.push(id);
                    ids.push(id);
                }
                h2.send(&batch).await;
                h2.finish(&ids).await;
                assert!(!h2.closed, "the connection closed: {:?}", h2.goaway);
            }
            (h2, allowed, dropped)
        }));
    }
    let (mut leaked, mut total) = (0, 0);
    for client in clients {
        let (h2, allowed, dropped) = client.await.unwrap();
        for id in &dropped {
            let frames = &h2.streams[id];
            total += 1;
            leaked += usize::from(frames.leaked());
            assert_eq!(frames.reset, Some(0x8), "stream {id}: {frames:?}");
        }
        for id in &allowed {
            let frames = &h2.streams[id];
            assert!(
                frames.headers >= 1 && frames.ended && frames.reset.is_none(),
                "allowed stream {id}: {frames:?}"
            );
        }
    }
    assert_eq!(total, CONNECTIONS * BATCHES * PAIRS);
    assert_eq!(
        leaked, 0,
        "{leaked} of {total} dropped requests received frames"
    );
}
