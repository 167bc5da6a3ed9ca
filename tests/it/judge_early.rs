//! `Serve::judge_early`: a connection's first request is judged before hyper
//! sees it. Dropped requests send nothing and are counted once; everything
//! else reaches hyper and the layer intact, with the bytes already read.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Close, PATIENCE, counting_router, exchange, get, read_until_close};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_no_response::connection::CloseMode;
use tower_no_response::rules::Action;
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

struct App {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Requests hyper handed to the service (the layer included): an early
    /// drop never gets there.
    dispatched: Arc<AtomicUsize>,
    layer: NoResponseLayer,
}

impl App {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn dispatched(&self) -> usize {
        self.dispatched.load(Ordering::SeqCst)
    }

    fn dropped(&self, rule: &str) -> u64 {
        self.layer.stats().rule(rule).unwrap().dropped
    }
}

async fn start(rules: NoResponseLayerBuilder) -> App {
    start_with(rules, None).await
}

async fn start_with(rules: NoResponseLayerBuilder, header_timeout: Option<Duration>) -> App {
    let rules = match header_timeout {
        Some(timeout) => rules.header_timeout(timeout),
        None => rules,
    };
    let layer = rules.build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let dispatched = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dispatched);
    let app = ServiceBuilder::new()
        .map_request(move |request: http::Request<_>| {
            counter.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(counting_router(Arc::clone(&hits)).layer(layer.clone()));
    let addr = common::serve_loop(&layer, app).await;
    App {
        addr,
        hits,
        dispatched,
        layer,
    }
}

fn rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_name("example.com")
        .deny_user_agent("masscan")
}

/// Connects, waits so the request cannot be there at accept, then sends it:
/// the path where the connection's task waits for the first bytes.
async fn late_exchange(addr: SocketAddr, bytes: &[u8]) -> common::Outcome {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = stream.write_all(bytes).await;
    read_until_close(&mut stream).await
}

#[tokio::test]
async fn a_dropped_first_request_sends_nothing_and_is_counted_once() {
    let app = start(rules()).await;
    for bytes in [
        get(Some("evil.example"), UA),
        get(Some("example.com"), Some("masscan")),
    ] {
        exchange(app.addr, &bytes).await.assert_dropped(Close::Fin);
        late_exchange(app.addr, &bytes)
            .await
            .assert_dropped(Close::Fin);
    }
    assert_eq!(app.hits(), 0);
    assert_eq!(app.dispatched(), 0, "hyper never had them");
    // Counted once each, as the layer would have.
    assert_eq!(app.dropped("host_unknown"), 2);
    assert_eq!(app.dropped("user_agent"), 2);
}

#[tokio::test]
async fn allowed_requests_reach_the_service_whole() {
    let app = start(rules()).await;
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    late_exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    // A head that arrives in pieces is not complete at the first read: the
    // bytes read so far go on to hyper, which reads the rest.
    let bytes = get(Some("example.com"), UA);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(&bytes[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(&bytes[10..]).await.unwrap();
    read_until_close(&mut stream).await.assert_ok();
    // A body in the first read is the service's too.
    let post = b"POST / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    exchange(app.addr, post).await.assert_ok();
    assert_eq!(app.hits(), 4);
    assert_eq!(app.dispatched(), 4);
}

#[tokio::test]
async fn later_requests_on_the_connection_are_the_layer_s() {
    let app = start(rules()).await;
    let mut both = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n".to_vec();
    both.extend(get(Some("evil.example"), UA));
    let out = exchange(app.addr, &both).await;
    let text = out.text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n\r\nok"),
        "nothing after the first answer: {text:?}"
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(app.dispatched(), 2, "the second went through hyper");
    assert_eq!(app.dropped("host_unknown"), 1);
}

/// The rate limit is the layer's alone, so a request judged early and then
/// by the layer is counted against its budget once.
#[tokio::test]
async fn the_rate_limit_counts_each_request_once() {
    let app = start(rules().rate_limit(RateLimit::per_minute(1).burst(1))).await;
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(app.dropped("rate_limit"), 1);
    assert_eq!(app.dispatched(), 3, "the rate limit is the layer's");
}

/// A rule in dry-run, or one that answers with a status, is the layer's to
/// apply: early judging lets such requests through to it.
#[tokio::test]
async fn dry_run_and_status_answers_are_left_to_the_layer() {
    let app = start(rules().dry_run_rule("host_unknown")).await;
    exchange(app.addr, &get(Some("evil.example"), UA))
        .await
        .assert_ok();
    assert_eq!(
        app.layer.stats().rule("host_unknown").unwrap().would_drop,
        1
    );

    let app =
        start(rules().rule_action("user_agent", Action::Respond(StatusCode::FORBIDDEN))).await;
    let out = exchange(app.addr, &get(Some("example.com"), Some("masscan"))).await;
    assert!(out.text().starts_with("HTTP/1.1 403"), "{}", out.text());
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn the_layer_s_close_mode_applies() {
    let app = start(rules().close_mode(CloseMode::Reset)).await;
    exchange(app.addr, &get(Some("evil.example"), UA))
        .await
        .assert_dropped(Close::Reset);
    late_exchange(app.addr, &get(Some("evil.example"), UA))
        .await
        .assert_dropped(Close::Reset);
}

/// While the task waits for a first byte, the header timeout still holds.
#[tokio::test]
async fn a_silent_client_is_dropped_at_the_header_timeout() {
    let app = start_with(rules(), Some(Duration::from_millis(500))).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();
    read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < PATIENCE / 2,
        "{waited:?}"
    );
}

/// Graceful shutdown does not wait for a client that never sends a byte.
#[tokio::test]
async fn shutdown_does_not_wait_for_silent_clients() {
    let layer = rules().build().unwrap();
    let app = counting_router(Arc::new(AtomicUsize::new(0))).layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(layer.serve(listener, app).run_until(async move {
        let _ = stopped.await;
    }));
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("shutdown waited for a silent client")
        .unwrap()
        .unwrap();
    read_until_close(&mut idle).await.assert_dropped(Close::Fin);
}

/// Whatever arrives first, the early judge neither panics nor hangs, and a
/// head it cannot read goes on to hyper, which answers or closes as usual
/// (an HTTP/2 preface gets hyper's SETTINGS).
#[tokio::test]
async fn hostile_first_bytes_never_break_the_loop() {
    let app = start_with(rules(), Some(Duration::from_secs(2))).await;
    let many_headers: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: exa\xffmple.com\r\nUser-Agent: \xfe\xff\r\n\r\n".to_vec(),
        b"GET http://[::1 HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
        b"\0\0\0\0\0\0\0\0\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: example.com\r\nHost: evil.example\r\n\r\n".to_vec(),
        format!("GET / HTTP/1.1\r\nHost: evil.example\r\n{many_headers}\r\n").into_bytes(),
        format!(
            "GET /{} HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            "a".repeat(8000)
        )
        .into_bytes(),
        b"\r\n\r\n\r\n".to_vec(),
    ];
    // And some deterministic noise.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in [1, 7, 64, 700, 4096, 5000] {
        let noise = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect();
        inputs.push(noise);
    }
    for input in &inputs {
        // Half-closed after the bytes, so an incomplete head ends too.
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let _ = stream.write_all(input).await;
        let _ = stream.shutdown().await;
        let out = read_until_close(&mut stream).await;
        let text = out.text();
        let h2 = input.starts_with(b"PRI * HTTP/2.0");
        assert!(
            h2 || out.bytes.is_empty() || text.starts_with("HTTP/1.1 4"),
            "only a drop or hyper's own 4xx, got {text:?}"
        );
    }
    assert_eq!(app.hits(), 0, "none of them is a request to serve");
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
}

/// The serve loop with `TCP_DEFER_ACCEPT`, counting the requests served.
#[cfg(target_os = "linux")]
async fn serve_deferred(layer: &NoResponseLayer, hits: &Arc<AtomicUsize>) -> SocketAddr {
    let app = counting_router(Arc::clone(hits)).layer(layer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        layer
            .serve(listener, app)
            .defer_accept(Duration::from_secs(5))
            .run(),
    );
    addr
}

/// With `TCP_DEFER_ACCEPT` the kernel hands over a connection once its
/// request is there: a drop costs no wait, and a client slow to send is
/// still served once it does.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_accept_drops_at_once_and_still_serves_slow_senders() {
    let layer = rules().build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve_deferred(&layer, &hits).await;
    for _ in 0..50 {
        exchange(addr, &get(Some("evil.example"), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    assert_eq!(layer.stats().rule("host_unknown").unwrap().dropped, 50);
    late_exchange(addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let started = Instant::now();
    late_exchange(addr, &get(Some("example.com"), Some("masscan")))
        .await
        .assert_dropped(Close::Fin);
    assert!(started.elapsed() < PATIENCE);
}

/// The layer's listener for `axum::serve` judges a first request that is
/// already there at accept: a drop never reaches axum or hyper. With
/// `TCP_DEFER_ACCEPT` every request is there at accept.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_listener_judges_at_accept_too() {
    let layer = rules()
        .header_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let dispatched = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&dispatched);
    let app = axum::Router::new()
        // Slower than the header timeout: a head read at accept must count
        // as read, or the timer would drop the request mid-answer.
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .fallback(|| async { "ok" })
        .layer(layer.clone())
        .layer(tower::ServiceBuilder::new().map_request(
            move |request: http::Request<axum::body::Body>| {
                counter.fetch_add(1, Ordering::SeqCst);
                request
            },
        ));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tower_no_response::connection::set_defer_accept(&tcp, Duration::from_secs(5)).unwrap();
    let addr = tcp.local_addr().unwrap();
    common::serve_on(layer.listener(tcp), app);
    for _ in 0..20 {
        exchange(addr, &get(Some("evil.example"), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    assert_eq!(dispatched.load(Ordering::SeqCst), 0, "axum never had them");
    assert_eq!(layer.stats().rule("host_unknown").unwrap().dropped, 20);
    exchange(addr, &get(Some("example.com"), UA))
        .await
        .assert_ok();
    let slow = common::request("GET", "/slow", Some("example.com"), UA, &[]);
    let out = exchange(addr, &slow).await;
    let text = out.text();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("slow"),
        "{text}"
    );
    assert_eq!(dispatched.load(Ordering::SeqCst), 2);
}

/// With the layer on one nested router only, the listener that does not
/// judge at accept leaves the other routes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_on_part_of_the_app_judges_only_that_part() {
    let layer = rules().build().unwrap();
    let app = axum::Router::new()
        .nest(
            "/admin",
            axum::Router::new()
                .fallback(|| async { "ok" })
                .layer(layer.clone()),
        )
        .fallback(|| async { "ok" });
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    common::serve_on(layer.listener_without_early_judging(tcp), app);
    let public = common::request("GET", "/", Some("example.com"), Some("masscan"), &[]);
    exchange(addr, &public).await.assert_ok();
    let admin = common::request("GET", "/admin/x", Some("example.com"), Some("masscan"), &[]);
    exchange(addr, &admin).await.assert_dropped(Close::Fin);
}

/// Set by an authentication layer outside the rules.
#[derive(Clone)]
struct User;

/// A custom rule may read what outer layers add, which is not there at
/// accept: judging early runs the built-in rules only, so an authenticated
/// first request is never dropped on a new connection, on either side.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_rules_are_left_to_the_layer_which_sees_the_outer_layers() {
    let layer = rules()
        .custom_rule("anonymous_admin", |head| {
            head.uri.path().starts_with("/admin") && head.extensions.get::<User>().is_none()
        })
        .build()
        .unwrap();
    let app = axum::Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone())
        .layer(tower::ServiceBuilder::new().map_request(
            |mut request: http::Request<axum::body::Body>| {
                if request.headers().contains_key(http::header::AUTHORIZATION) {
                    request.extensions_mut().insert(User);
                }
                request
            },
        ));
    let own = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own_addr = own.local_addr().unwrap();
    tokio::spawn(
        layer
            .serve(own, app.clone())
            .defer_accept(Duration::from_secs(5))
            .run(),
    );
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tower_no_response::connection::set_defer_accept(&tcp, Duration::from_secs(5)).unwrap();
    let axum_addr = tcp.local_addr().unwrap();
    common::serve_on(layer.listener(tcp), app);
    let signed_in = common::request(
        "GET",
        "/admin/users",
        Some("example.com"),
        UA,
        &[("Authorization", "Bearer x")],
    );
    let anonymous = common::request("GET", "/admin/users", Some("example.com"), UA, &[]);
    for addr in [own_addr, axum_addr] {
        for _ in 0..10 {
            exchange(addr, &signed_in).await.assert_ok();
            exchange(addr, &anonymous).await.assert_dropped(Close::Fin);
        }
    }
    assert_eq!(layer.stats().rule("anonymous_admin").unwrap().dropped, 20);
    // The built-in rules still judge at accept.
    exchange(own_addr, &get(Some("evil.example"), UA))
        .await
        .assert_dropped(Close::Fin);
}

/// With `TCP_DEFER_ACCEPT` the serve loop judges each first request on the
/// bare socket, before the runtime knows of it. Hundreds of drops at once on
/// a multi-thread runtime, in each close mode, write not one byte and close
/// as the mode says; the served name and a banned User-Agent are told apart
/// on the same sockets, and the loop serves on.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drops_on_the_bare_socket_write_nothing_in_each_close_mode() {
    for (mode, close) in [
        (CloseMode::Fin, Close::Fin),
        (CloseMode::Reset, Close::Reset),
    ] {
        let layer = rules().close_mode(mode).build().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let addr = serve_deferred(&layer, &hits).await;
        let mut tasks = Vec::new();
        for n in 0..300 {
            tasks.push(tokio::spawn(async move {
                let request = match n % 3 {
                    0 => get(Some("evil.example"), UA),
                    1 => get(Some("example.com"), Some("masscan")),
                    _ => get(Some("example.com"), UA),
                };
                (n, exchange(addr, &request).await)
            }));
        }
        for task in tasks {
            let (n, outcome) = task.await.unwrap();
            if n % 3 == 2 {
                outcome.assert_ok();
            } else {
                outcome.assert_dropped(close);
            }
        }
        assert_eq!(hits.load(Ordering::SeqCst), 100, "{mode:?}");
        assert_eq!(layer.stats().rule("host_unknown").unwrap().dropped, 100);
        assert_eq!(layer.stats().rule("user_agent").unwrap().dropped, 100);
    }
}

/// A backlog of connections all dropped at accept does not hold the thread:
/// each accept loop (the crate's serve loop and the layer's listener for
/// `axum::serve`) spends the task's budget on each accept and yields, as the
/// runtime's own accept does, so other tasks run before the backlog is
/// drained. On one thread, a loop that never yielded would drain all 300
/// first; under a flood it would starve every connection it had let in.
#[tokio::test(flavor = "current_thread")]
async fn a_backlog_of_drops_does_not_hold_the_thread() {
    for axum_serve in [false, true] {
        let layer = rules().build().unwrap();
        // A backlog long enough to hold them all.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        // Queued in the kernel, each with its request, before the loop runs.
        let request = get(Some("evil.example"), UA);
        let clients: Vec<std::net::TcpStream> = (0..300)
            .map(|_| {
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                std::io::Write::write_all(&mut client, &request).unwrap();
                client
            })
            .collect();
        let app = counting_router(Arc::new(AtomicUsize::new(0))).layer(layer.clone());
        if axum_serve {
            common::serve_on(layer.listener(listener), app);
        } else {
            tokio::spawn(layer.serve(listener, app).run());
        }
        let dropped = || layer.stats().rule("host_unknown").unwrap().dropped;
        // Looks once the loop has begun dropping, between two of its polls.
        let seen = loop {
            if dropped() > 0 {
                break dropped();
            }
            tokio::task::yield_now().await;
        };
        assert!(
            seen < 300,
            "axum::serve {axum_serve}: the loop drained {seen} before another task ran"
        );
        // And the whole backlog is dropped in the end.
        let started = Instant::now();
        while dropped() < 300 {
            assert!(started.elapsed() < PATIENCE, "not every drop was made");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(clients);
    }
}
