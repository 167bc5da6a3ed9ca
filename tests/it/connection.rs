//! How a drop reaches the socket: close modes, keep-alive, pipelining, unread
//! bodies, unrouted paths, handler-side aborts, HTTP/2, and serving without
//! the crate's listener.

use crate::common;
use crate::h2_frames;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get as route_get;
use common::{
    Close, PATIENCE, counting_router, exchange, find, get, read_one_response, read_until_close,
    request, seed_rules, serve_with, spawn_app,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower_no_response::connection::{CloseMode, ConnectionInfo};
use tower_no_response::{ClientIp, NoResponseLayer};

const UA: Option<&str> = Some("curl/8.5.0");

fn keep_alive(host: &str, ua: &str, target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn fin_mode_closes_cleanly_and_reset_mode_resets() {
    let fin = spawn_app(seed_rules().close_mode(CloseMode::Fin).build().unwrap()).await;
    exchange(fin.addr, &get(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    let rst = spawn_app(seed_rules().close_mode(CloseMode::Reset).build().unwrap()).await;
    exchange(rst.addr, &get(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Reset);
    exchange(rst.addr, &get(Some("example.com"), Some("masscan")))
        .await
        .assert_dropped(Close::Reset);
    // An allowed request on a reset-mode server still ends with a clean FIN.
    let ok = exchange(rst.addr, &get(Some("example.com"), UA)).await;
    ok.assert_ok();
    assert_eq!(ok.close, Close::Fin);
    assert_eq!(fin.hits() + rst.hits(), 1);
}

#[tokio::test]
async fn keep_alive_then_drop_delivers_the_first_response_only() {
    for (mode, close) in [
        (CloseMode::Fin, Close::Fin),
        (CloseMode::Reset, Close::Reset),
    ] {
        let app = spawn_app(seed_rules().close_mode(mode).build().unwrap()).await;
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream
            .write_all(&keep_alive("example.com", "curl", "/"))
            .await
            .unwrap();
        let first = read_one_response(&mut stream).await;
        assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(first.ends_with(b"\r\n\r\nok"));
        stream
            .write_all(&keep_alive("example.com", "zgrab", "/"))
            .await
            .unwrap();
        read_until_close(&mut stream).await.assert_dropped(close);
        assert_eq!(app.hits(), 1);
    }
}

#[tokio::test]
async fn pipelined_allowed_then_dropped() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let mut both = keep_alive("example.com", "curl", "/");
    both.extend(keep_alive("example.com", "masscan", "/"));
    let outcome = exchange(app.addr, &both).await;
    assert_eq!(outcome.close, Close::Fin);
    let text = outcome.text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\nok"),
        "only the first response: {text:?}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1);
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn pipelined_dropped_then_allowed_gets_nothing() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let mut both = keep_alive("example.com", "masscan", "/");
    both.extend(keep_alive("example.com", "curl", "/"));
    exchange(app.addr, &both).await.assert_dropped(Close::Fin);
    assert_eq!(app.hits(), 0);
}

/// The first response is far larger than the socket buffers, so most of it
/// is still unsent when the pipelined second request is read. The drop must
/// not cut it short.
#[tokio::test]
async fn pipelined_drop_does_not_truncate_a_large_earlier_response() {
    const BIG: usize = 8 * 1024 * 1024;
    let router = Router::new().route("/big", route_get(|| async { vec![b'x'; BIG] }));
    let addr = serve_with(seed_rules().build().unwrap(), router).await;
    // A small receive window keeps most of the response in the server's hands.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut both = keep_alive("example.com", "curl", "/big");
    both.extend(keep_alive("example.com", "masscan", "/big"));
    stream.write_all(&both).await.unwrap();
    // Let the server fill the socket buffers before reading anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outcome = read_until_close(&mut stream).await;
    assert_eq!(outcome.close, Close::Fin);
    let end = find(&outcome.bytes, b"\r\n\r\n").expect("a response head") + 4;
    assert!(outcome.bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        outcome.bytes.len() - end,
        BIG,
        "the first response was cut short"
    );
}

#[tokio::test]
async fn a_dropped_request_with_an_unread_body_still_gets_a_clean_close() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let body = vec![b'a'; 64 * 1024];
    let mut req = request(
        "POST",
        "/upload",
        Some("example.com"),
        Some("zgrab"),
        &[("Content-Length", &body.len().to_string())],
    );
    req.extend_from_slice(&body);
    exchange(app.addr, &req).await.assert_dropped(Close::Fin);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn a_body_still_being_sent_does_not_hang_the_drop() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    // Announce a large body and send only the head: the layer decides on the
    // head alone and never waits for the body.
    let head = request(
        "PUT",
        "/",
        Some("evil.com"),
        UA,
        &[("Content-Length", "100000000")],
    );
    stream.write_all(&head).await.unwrap();
    read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);
}

#[tokio::test]
async fn paths_without_a_route_are_dropped_too() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hits);
    // Only `/` is routed; axum's default 404 fallback handles the rest.
    let router = Router::new().route(
        "/",
        route_get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let addr = serve_with(seed_rules().build().unwrap(), router).await;
    for path in ["/wp-login.php", "/.env", "/.git/config", "/"] {
        exchange(addr, &request("GET", path, Some("evil.com"), UA, &[]))
            .await
            .assert_dropped(Close::Fin);
    }
    // POST to a GET-only route reaches the method fallback, also judged.
    exchange(addr, &request("POST", "/", Some("evil.com"), UA, &[]))
        .await
        .assert_dropped(Close::Fin);
    // Allowed requests still get their 404.
    let allowed = exchange(addr, &request("GET", "/.env", Some("example.com"), UA, &[])).await;
    assert!(
        allowed.text().starts_with("HTTP/1.1 404"),
        "{}",
        allowed.text()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn handlers_see_the_peer_and_client_ip() {
    let router = Router::new().fallback(
        |ConnectInfo(peer): ConnectInfo<SocketAddr>, client: ClientIp| async move {
            format!("{} {}", peer.ip(), client)
        },
    );
    let layer = NoResponseLayer::builder()
        .trusted_proxy("127.0.0.1")
        .build()
        .unwrap();
    let addr = serve_with(layer, router).await;
    let out = exchange(
        addr,
        &request(
            "GET",
            "/",
            Some("a.test"),
            UA,
            &[("X-Forwarded-For", "192.0.2.5")],
        ),
    )
    .await;
    assert!(
        out.text().ends_with("\r\n\r\n127.0.0.1 192.0.2.5"),
        "{}",
        out.text()
    );
}

/// Under the crate's serve loop a handler may abort its own connection,
/// e.g. after inspecting the body, and never answer: the connection is still
/// torn down at once.
#[tokio::test]
async fn a_handler_can_abort_and_never_return() {
    let router = Router::new().fallback(
        |axum::Extension(info): axum::Extension<ConnectionInfo>| async move {
            assert!(info.handle().abort(CloseMode::Reset));
            assert!(
                !info.handle().abort(CloseMode::Fin),
                "the first abort stands"
            );
            std::future::pending::<&'static str>().await
        },
    );
    let layer = NoResponseLayer::builder().build().unwrap();
    let addr = common::serve_loop(&layer, router.layer(layer.clone())).await;
    exchange(addr, &get(Some("a.test"), UA))
        .await
        .assert_dropped(Close::Reset);
}

/// Over `axum::serve`, a drop on HTTP/2 closes the whole connection,
/// including streams that were in flight on it. The crate's own serve loop
/// will reset only the offending stream.
#[tokio::test]
async fn http2_drop_closes_the_whole_connection() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let router = Router::new()
        .route(
            "/slow",
            route_get(|| async {
                // Far longer than the test: it must fail with its connection,
                // not finish before the drop.
                tokio::time::sleep(Duration::from_secs(30)).await;
                "slow"
            }),
        )
        .fallback(|| async { "ok" });
    let addr = serve_with(seed_rules().build().unwrap(), router).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = |authority: &str, ua: &str, path: &str| {
        hyper::Request::builder()
            .uri(format!("http://{authority}{path}"))
            .header("user-agent", ua)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // An allowed request works.
    let ok = sender
        .send_request(req("example.com", "curl", "/"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.into_body().collect().await.unwrap().to_bytes(), "ok");

    let slow = tokio::spawn(sender.send_request(req("example.com", "curl", "/slow")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dropped = tokio::time::timeout(PATIENCE, sender.send_request(req("evil.com", "curl", "/")))
        .await
        .expect("the dropped stream hangs");
    assert!(
        dropped.is_err(),
        "a dropped request got a response: {dropped:?}"
    );
    let slow = tokio::time::timeout(PATIENCE, slow).await.unwrap().unwrap();
    assert!(
        slow.is_err(),
        "streams on the same connection are closed with it"
    );
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the connection stays open")
        .unwrap()
        .expect_err("the connection ends in an error");
}

/// Served without the crate's listener, the layer has no handle: it still
/// never calls the handler and never hangs, and an HTTP/1 client still
/// receives nothing, because the dropped response's body fails.
#[tokio::test]
async fn without_the_listener_drops_still_send_nothing() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = counting_router(Arc::clone(&hits)).layer(seed_rules().build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    for req in [
        get(Some("evil.com"), UA),
        get(Some("example.com"), Some("masscan")),
    ] {
        let outcome = exchange(addr, &req).await;
        assert!(outcome.bytes.is_empty(), "leaked {:?}", outcome.text());
    }
    // The peer is still known, so IP rules still apply.
    let outcome = exchange(
        addr,
        &request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", "203.0.113.7")],
        ),
    )
    .await;
    assert!(outcome.bytes.is_empty(), "leaked {:?}", outcome.text());
    exchange(addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// With no connect info at all, IP rules cannot run: the layer fails closed
/// (`client_ip_unknown`) rather than letting everyone through.
#[tokio::test]
async fn without_any_peer_address_ip_rules_fail_closed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = counting_router(Arc::clone(&hits)).layer(seed_rules().build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let outcome = exchange(addr, &get(Some("example.com"), UA)).await;
    assert!(outcome.bytes.is_empty(), "leaked {:?}", outcome.text());
    // Without IP rules or a rate limit the peer is not needed.
    let host_only = NoResponseLayer::builder()
        .server_name("example.com")
        .build()
        .unwrap();
    let app = counting_router(Arc::clone(&hits)).layer(host_only);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    exchange(addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    let outcome = exchange(addr, &get(Some("evil.com"), UA)).await;
    assert!(outcome.bytes.is_empty(), "leaked {:?}", outcome.text());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Without the listener an HTTP/2 drop resets the stream through the failing
/// body. hyper may send the response head first (a bare `:status 444`) if
/// its connection task flushes before the stream task polls the body; either
/// way no body byte is sent and the connection stays usable.
#[tokio::test]
async fn without_the_listener_http2_resets_only_the_stream() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(seed_rules().build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = |authority: &str| {
        hyper::Request::builder()
            .uri(format!("http://{authority}/"))
            .header("user-agent", "curl")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let dropped = tokio::time::timeout(PATIENCE, sender.send_request(req("evil.com")))
        .await
        .expect("hangs");
    match dropped {
        Err(e) => {
            let h2 = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<h2::Error>())
                .unwrap_or_else(|| panic!("not an h2 error: {e:?}"));
            assert!(h2.is_reset(), "expected a stream reset, got {h2:?}");
        }
        Ok(response) => {
            assert_eq!(response.status(), 444);
            let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
                .await
                .expect("body hangs");
            assert!(body.is_err(), "the body must fail, not complete");
        }
    }
    let ok = sender.send_request(req("example.com")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// hyper sends `100 Continue` only once the body is read; a dropped request's
/// body never is, so even that interim response stays unsent.
#[tokio::test]
async fn expect_continue_gets_no_interim_response() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let req = request(
        "POST",
        "/",
        Some("example.com"),
        Some("masscan"),
        &[("Content-Length", "10"), ("Expect", "100-continue")],
    );
    exchange(app.addr, &req).await.assert_dropped(Close::Fin);
}

/// The stream itself, without hyper: after an abort, plain and vectored
/// writes fail and nothing reaches the peer.
#[tokio::test]
async fn an_aborted_stream_refuses_plain_and_vectored_writes() {
    use std::io::{ErrorKind, IoSlice};
    use tower_no_response::connection::AbortableStream;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let mut stream = AbortableStream::new(server);
    let handle = stream.handle().clone();
    assert!(!handle.is_aborted());
    assert!(handle.abort(CloseMode::Fin));
    assert_eq!(handle.close_mode(), Some(CloseMode::Fin));
    let err = stream.write(b"HTTP/1.1 200 OK\r\n").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    let err = stream
        .write_vectored(&[IoSlice::new(b"HTTP/1.1 "), IoSlice::new(b"200 OK\r\n")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    assert_eq!(
        stream.flush().await.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    let mut buf = [0u8; 8];
    let err = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    drop(stream);
    read_until_close(&mut client)
        .await
        .assert_dropped(Close::Fin);
}

/// `axum::serve` cannot reset one HTTP/2 stream without a head, so the
/// layer closes the whole connection: on a multi-thread runtime, under
/// concurrent drops, not one frame of a response reaches a dropped stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_h2_drops_close_the_connection_and_leak_nothing() {
    let app = common::spawn_app(
        NoResponseLayer::builder()
            .server_name("example.com")
            .build()
            .unwrap(),
    )
    .await;
    let addr = app.addr;
    let head = |authority| {
        vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", authority),
        ]
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..50 {
                let mut h2 = h2_frames::RawH2::connect(addr).await;
                let (ok, bytes) = h2.request(&head("example.com"), None);
                h2.send(&bytes).await;
                h2.finish(&[ok]).await;
                let (dropped, bytes) = h2.request(&head("evil.example"), None);
                h2.send(&bytes).await;
                h2.finish(&[dropped]).await;
                seen.push((
                    h2.streams[&ok].clone(),
                    h2.streams[&dropped].clone(),
                    h2.closed,
                ));
            }
            seen
        }));
    }
    for client in clients {
        for (answered, dropped, closed) in client.await.unwrap() {
            assert!(answered.headers >= 1 && answered.ended, "{answered:?}");
            assert!(!dropped.leaked(), "a dropped stream received {dropped:?}");
            assert!(closed, "the connection stayed open");
        }
    }
    assert_eq!(app.hits(), 400);
}

/// `axum::serve` has no header timeout of its own: the layer's listener
/// applies the layer's. A client that sends nothing, or half a request
/// head, is dropped with no bytes, as the crate's serve loop does; a client
/// that finishes its head in time is served, on a kept-alive connection
/// too; HTTP/2 is left alone.
#[tokio::test]
async fn the_listener_drops_slow_headers_under_axum_serve() {
    use std::time::Duration;
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .header_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let app = common::spawn_app(layer).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: exa")
        .await
        .unwrap();
    common::read_until_close(&mut silent)
        .await
        .assert_dropped(Close::Fin);
    common::read_until_close(&mut half)
        .await
        .assert_dropped(Close::Fin);
    // Generous: it only has to wait for the timeout, not close on the dot.
    assert!(started.elapsed() >= Duration::from_millis(400));

    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..2 {
        kept.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n")
            .await
            .unwrap();
        let response = common::read_one_response(&mut kept).await;
        assert!(response.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(app.hits(), 2);

    // An HTTP/2 connection quiet for longer than the timeout still serves.
    let mut h2 = h2_frames::RawH2::connect(app.addr).await;
    let head = vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "example.com"),
    ];
    for _ in 0..2 {
        let (id, bytes) = h2.request(&head, None);
        h2.send(&bytes).await;
        h2.finish(&[id]).await;
        assert!(h2.streams[&id].ended && h2.streams[&id].headers >= 1);
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(!h2.closed);
}
