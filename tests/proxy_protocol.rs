//! Behind an L4 load balancer: the PROXY protocol header names the client on
//! every connection side, the balancer alone may send one, and what it
//! sends wrong is dropped with zero bytes. First with headers this test
//! writes (every case, on every side, also under many concurrent drops on
//! a multi-thread runtime), then behind Debian's HAProxy, with both
//! versions of the header.

mod common;
#[path = "common/h2_frames.rs"]
mod h2_frames;
#[path = "common/haproxy.rs"]
mod haproxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::{Close, Outcome, read_until_close};
use haproxy::{BALANCER, Haproxy, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::{ClientIp, NoResponseLayer};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
/// A client the rules deny, as the header names it.
const DENIED: &str = "127.0.0.5";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    AxumServe,
    ServeLoop,
    Tonic,
}

const HTTP_SIDES: [Side; 2] = [Side::AxumServe, Side::ServeLoop];

/// Every 444 event this binary logs (rule, client IP, peer address), and
/// every access-log line, whatever the thread.
#[derive(Default)]
struct Logged {
    events: Mutex<Vec<(String, String, String)>>,
    lines: Mutex<Vec<u8>>,
}

fn logged() -> &'static Logged {
    static LOGGED: OnceLock<&'static Logged> = OnceLock::new();
    LOGGED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let logged: &'static Logged = Box::leak(Box::default());
        struct Capture(&'static Logged);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if event.metadata().target() != "tower_no_response::drop" {
                    return;
                }
                #[derive(Default)]
                struct Fields(String, String, String);
                impl tracing::field::Visit for Fields {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        let v = format!("{v:?}").trim_matches('"').to_owned();
                        match f.name() {
                            "rule" => self.0 = v,
                            "client_ip" => self.1 = v,
                            "peer_addr" => self.2 = v,
                            _ => {}
                        }
                    }
                    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                        self.record_debug(f, &v);
                    }
                }
                let mut fields = Fields::default();
                event.record(&mut fields);
                let Fields(rule, client, peer) = fields;
                self.0.events.lock().unwrap().push((rule, client, peer));
            }
        }
        struct Lines(&'static Logged);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lines.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::registry().with(Capture(logged)).with(
            tower_no_response::audit::AccessLogLayer::new(move || Lines(logged)),
        );
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logged
    })
}

/// The events logged for `client`, by rule.
fn events_for(client: &str) -> Vec<(String, String)> {
    logged()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, ip, _)| ip == client)
        .map(|(rule, _, peer)| (rule.clone(), peer.clone()))
        .collect()
}

fn rules() -> tower_no_response::NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_name("example.com")
        .deny_ip(DENIED)
        .deny_ip("198.51.100.0/24")
        .deny_user_agent("masscan")
        .proxy_protocol_from(BALANCER)
        .header_timeout(HEADER_TIMEOUT)
}

/// Answers `ok <client> <connect-info>`, counting what it answered.
fn app(hits: Arc<AtomicUsize>) -> Router {
    Router::new().route(
        "/",
        get(
            move |ClientIp(client): ClientIp, ConnectInfo(peer): ConnectInfo<SocketAddr>| {
                hits.fetch_add(1, Ordering::Relaxed);
                async move { format!("ok {client} {}", peer.ip()) }
            },
        ),
    )
}

struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn serve(side: Side, layer: NoResponseLayer) -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    match side {
        Side::AxumServe => {
            common::serve_on(layer.listener(tcp), app(Arc::clone(&hits)).layer(layer));
        }
        Side::ServeLoop => {
            // The serve loop gives the client as `ConnectionInfo`; the app
            // reads axum's `ConnectInfo`, so the loop's info is put there.
            let app = app(Arc::clone(&hits))
                .layer(axum::middleware::from_fn(
                    |mut request: axum::extract::Request, next: axum::middleware::Next| async move {
                        let peer = request
                            .extensions()
                            .get::<tower_no_response::connection::ConnectionInfo>()
                            .map(|info| info.peer_addr())
                            .expect("the serve loop's info");
                        request.extensions_mut().insert(ConnectInfo(peer));
                        next.run(request).await
                    },
                ))
                .layer(layer.clone());
            tokio::spawn(layer.serve(tcp, app).run());
        }
        Side::Tonic => {
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter
                .set_service_status("", tonic_health::ServingStatus::Serving)
                .await;
            let counted = Arc::clone(&hits);
            let count = tower::ServiceBuilder::new()
                .map_request(move |request: http::Request<_>| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    request
                })
                .into_inner();
            let stack = tower::ServiceBuilder::new()
                .layer(layer.grpc())
                .layer(count)
                .into_inner();
            let server = tonic::transport::Server::builder()
                .layer(stack)
                .add_service(health);
            tokio::spawn(server.serve_with_incoming(layer.incoming(tcp)));
        }
    }
    Server { addr, hits }
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.expect("connect")
}

/// Sends `bytes` from `from` and reads until the server closes.
async fn send_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut stream = connect_from(from, addr).await;
    let _ = stream.write_all(bytes).await;
    read_until_close(&mut stream).await
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").into_bytes()
}

/// Version 2, `PROXY` (or `LOCAL`) over TCP/IPv4, with a TLV the crate
/// does not use.
fn v2(client: [u8; 4], local: bool) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(if local { 0x20 } else { 0x21 });
    out.push(0x11);
    let tlv = [0x02, 0, 11];
    let len = 12 + tlv.len() + 11;
    out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    out.extend_from_slice(&client);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&40000u16.to_be_bytes());
    out.extend_from_slice(&443u16.to_be_bytes());
    out.extend_from_slice(&tlv);
    out.extend_from_slice(b"example.com");
    out
}

const GET: &[u8] =
    b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n";

fn with_get(header: Vec<u8>) -> Vec<u8> {
    [header, GET.to_vec()].concat()
}

#[track_caller]
fn assert_served_as(outcome: &Outcome, client: &str) {
    let text = outcome.text();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with(&format!("ok {client} {client}")),
        "expected the app to see {client} as client and connect info: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_names_the_client_for_every_rule_and_for_the_app() {
    logged();
    for side in HTTP_SIDES {
        let server = serve(side, rules().build().unwrap()).await;
        let addr = server.addr;
        // Both versions, sent with the request or ahead of it.
        let served = send_from(BALANCER, addr, &with_get(v1("192.0.2.10"))).await;
        assert_served_as(&served, "192.0.2.10");
        let served = send_from(BALANCER, addr, &with_get(v2([192, 0, 2, 11], false))).await;
        assert_served_as(&served, "192.0.2.11");
        let mut stream = connect_from(BALANCER, addr).await;
        stream.write_all(&v1("192.0.2.12")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream.write_all(GET).await.unwrap();
        assert_served_as(&read_until_close(&mut stream).await, "192.0.2.12");
        // A client the rules deny, named by the header, is dropped whole.
        for header in [v1("198.51.100.7"), v2([198, 51, 100, 8], false)] {
            send_from(BALANCER, addr, &with_get(header))
                .await
                .assert_dropped(Close::Fin);
        }
        // The header's client, not the balancer, is named in the event and
        // the access log.
        let events = events_for("198.51.100.7");
        assert!(
            events
                .iter()
                .any(|(rule, peer)| rule == "ip_deny" && peer.starts_with("198.51.100.7:")),
            "{side:?}: {events:?}"
        );
        let lines = String::from_utf8(logged().lines.lock().unwrap().clone()).unwrap();
        assert!(
            lines
                .lines()
                .any(|l| l.starts_with("198.51.100.8 ") && l.contains(" 444 0 ")),
            "{side:?}: {lines}"
        );
        assert_eq!(server.hits.load(Ordering::Relaxed), 3, "{side:?}");
    }
}

/// A CDN in front of the L4 balancer: the header names the CDN's edge, a
/// trusted proxy, whose forwarding header names the client. Forwarding
/// headers are believed only from an address the header named that is a
/// trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_read_after_the_header_from_a_trusted_proxy_only() {
    for side in HTTP_SIDES {
        let layer = rules().trusted_proxy("192.0.2.200").build().unwrap();
        let server = serve(side, layer).await;
        let forwarded = |client: &str| {
            let mut bytes = v1(client);
            bytes.extend_from_slice(
                b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
                  X-Forwarded-For: 203.0.113.50\r\nConnection: close\r\n\r\n",
            );
            bytes
        };
        let through_cdn = send_from(BALANCER, server.addr, &forwarded("192.0.2.200")).await;
        let text = through_cdn.text();
        assert!(
            text.ends_with("ok 203.0.113.50 192.0.2.200"),
            "{side:?}: {text:?}"
        );
        let not_trusted = send_from(BALANCER, server.addr, &forwarded("192.0.2.201")).await;
        assert_served_as(&not_trusted, "192.0.2.201");
        // Nor is the balancer's own address a way around: it is believed
        // for the PROXY header alone, not for forwarding headers.
        let mut own = b"PROXY UNKNOWN\r\n".to_vec();
        own.extend_from_slice(&forwarded("x")[v1("x").len()..]);
        assert_served_as(&send_from(BALANCER, server.addr, &own).await, BALANCER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancers_own_connections_are_served_as_the_balancer() {
    for side in HTTP_SIDES {
        let server = serve(side, rules().build().unwrap()).await;
        // LOCAL (a health check) and UNKNOWN name no client.
        let served = send_from(
            BALANCER,
            server.addr,
            &with_get(v2([198, 51, 100, 9], true)),
        )
        .await;
        assert_served_as(&served, BALANCER);
        let served = send_from(
            BALANCER,
            server.addr,
            &with_get(b"PROXY UNKNOWN\r\n".to_vec()),
        )
        .await;
        assert_served_as(&served, BALANCER);
    }
}

/// What the balancer may send wrong, and a header from anyone else.
fn bad_openings() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("no header", BALANCER, GET.to_vec()),
        (
            "a broken header",
            BALANCER,
            with_get(b"PROXY TCP4 1.2.3\r\n".to_vec()),
        ),
        ("a datagram's header", BALANCER, {
            let mut header = v2([192, 0, 2, 1], false);
            header[13] = 0x12;
            with_get(header)
        }),
        (
            "a v1 header from another peer",
            "127.0.0.3",
            with_get(v1("192.0.2.20")),
        ),
        (
            "a v2 header from another peer",
            "127.0.0.3",
            with_get(v2([192, 0, 2, 21], false)),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_broken_or_forged_header_is_dropped_with_zero_bytes_on_every_side() {
    logged();
    for side in [Side::AxumServe, Side::ServeLoop, Side::Tonic] {
        let server = serve(side, rules().build().unwrap()).await;
        for (what, from, bytes) in bad_openings() {
            let outcome = send_from(from, server.addr, &bytes).await;
            assert!(
                outcome.bytes.is_empty(),
                "{side:?}, {what}: {:?}",
                outcome.text()
            );
        }
        // A forged header split across writes is still seen.
        let mut stream = connect_from("127.0.0.3", server.addr).await;
        stream.write_all(b"PRO").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = stream.write_all(&with_get(v1("192.0.2.22"))[3..]).await;
        let outcome = read_until_close(&mut stream).await;
        assert!(outcome.bytes.is_empty(), "{side:?}: {:?}", outcome.text());
        assert_eq!(server.hits.load(Ordering::Relaxed), 0, "{side:?}");
    }
    let events = logged().events.lock().unwrap().clone();
    let forged = events
        .iter()
        .filter(|(rule, ip, _)| rule == "proxy_protocol_invalid" && ip == "127.0.0.3")
        .count();
    assert!(forged >= 3 * 3, "each forged header is logged: {events:?}");
    // The peer that is not a balancer is served without a header.
    for side in HTTP_SIDES {
        let server = serve(side, rules().build().unwrap()).await;
        let served = send_from("127.0.0.3", server.addr, GET).await;
        assert_served_as(&served, "127.0.0.3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_not_finished_within_the_header_timeout_is_dropped() {
    for side in [Side::AxumServe, Side::ServeLoop, Side::Tonic] {
        let server = serve(side, rules().build().unwrap()).await;
        for partial in [
            &b"PROXY TCP4 192.0.2.1"[..],
            &v2([192, 0, 2, 1], false)[..20],
            &b""[..],
        ] {
            let started = Instant::now();
            let outcome = send_from(BALANCER, server.addr, partial).await;
            assert!(outcome.bytes.is_empty(), "{side:?}: {:?}", outcome.text());
            let took = started.elapsed();
            assert!(
                took >= HEADER_TIMEOUT - Duration::from_millis(100)
                    && took < Duration::from_secs(8),
                "{side:?}: closed after {took:?}"
            );
        }
        // Meanwhile other connections are accepted and served.
        if side != Side::Tonic {
            let mut slow = connect_from(BALANCER, server.addr).await;
            slow.write_all(b"PROXY TCP4").await.unwrap();
            let served = send_from(BALANCER, server.addr, &with_get(v1("192.0.2.30"))).await;
            assert_served_as(&served, "192.0.2.30");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_banned_behind_the_balancer_is_refused_at_accept_and_its_neighbour_served() {
    logged();
    for side in [Side::AxumServe, Side::ServeLoop, Side::Tonic] {
        let minute = Duration::from_secs(60);
        let bans = BanList::new(BanPolicy::new(1, minute, minute));
        bans.ban("192.0.2.66".parse().unwrap(), Duration::from_secs(60));
        let server = serve(side, rules().ban_list(bans.clone()).build().unwrap()).await;
        // Refused before a byte of the request is read: nothing but the
        // header is sent, and the connection ends at once.
        let started = Instant::now();
        let mut stream = connect_from(BALANCER, server.addr).await;
        stream.write_all(&v1("192.0.2.66")).await.unwrap();
        read_until_close(&mut stream)
            .await
            .assert_dropped(Close::Fin);
        assert!(started.elapsed() < HEADER_TIMEOUT, "{side:?}");
        assert_eq!(server.hits.load(Ordering::Relaxed), 0, "{side:?}");
        if side != Side::Tonic {
            let served = send_from(BALANCER, server.addr, &with_get(v1("192.0.2.67"))).await;
            assert_served_as(&served, "192.0.2.67");
        }
        // The balancer is an edge: never banned, whatever its clients do.
        assert!(!bans.is_banned(BALANCER.parse().unwrap()));
    }
    assert!(
        events_for("192.0.2.66")
            .iter()
            .any(|(rule, _)| rule == "banned"),
        "the refusal names the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_drops_behind_the_balancer_leak_no_byte() {
    for side in [Side::AxumServe, Side::ServeLoop, Side::Tonic] {
        let minute = Duration::from_secs(60);
        let bans = BanList::new(BanPolicy::new(1, minute, minute));
        bans.ban("192.0.2.99".parse().unwrap(), minute);
        let server = serve(side, rules().ban_list(bans).build().unwrap()).await;
        let mut drops = tokio::task::JoinSet::new();
        for n in 0..60u8 {
            let addr = server.addr;
            drops.spawn(async move {
                let (from, bytes) = match n % 5 {
                    1 => (BALANCER, GET.to_vec()),
                    2 => ("127.0.0.3", with_get(v2([192, 0, 2, n], false))),
                    3 => (BALANCER, with_get(b"PROXY TCP9 x\r\n".to_vec())),
                    // A request the rules deny: an HTTP/1 request, which
                    // tonic's server does not read.
                    4 if side != Side::Tonic => {
                        (BALANCER, with_get(v1(&format!("198.51.100.{n}"))))
                    }
                    _ => (BALANCER, with_get(v1("192.0.2.99"))),
                };
                (n, send_from(from, addr, &bytes).await)
            });
        }
        while let Some(done) = drops.join_next().await {
            let (n, outcome) = done.unwrap();
            assert!(
                outcome.bytes.is_empty(),
                "{side:?} #{n}: {:?}",
                outcome.text()
            );
        }
        assert_eq!(server.hits.load(Ordering::Relaxed), 0, "{side:?}");
    }
}

#[test]
fn a_malformed_balancer_is_refused_at_build_naming_it() {
    let error = NoResponseLayer::builder()
        .proxy_protocol_from("10.0.0.0/33")
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("10.0.0.0/33") && error.contains("proxy_protocol_from"),
        "{error}"
    );
}

// Behind Debian's HAProxy.

/// A GET through HAProxy from the loopback address `from`.
async fn through(haproxy: &Haproxy, from: &str, user_agent: &str) -> Outcome {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
    );
    send_from(from, haproxy.addr, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_each_client_is_judged_as_itself() {
    logged();
    let mut n = 0;
    for version in [Version::V1, Version::V2] {
        for side in HTTP_SIDES {
            // Each case's clients are its own, as are their log lines.
            n += 1;
            let denied = format!("127.0.1.{n}");
            let scanner = format!("127.0.2.{n}");
            let scanner = scanner.as_str();
            let minute = Duration::from_secs(60);
            let bans = BanList::new(BanPolicy::new(2, minute, minute));
            let layer = rules()
                .deny_ip("127.0.1.0/24")
                .ban_list(bans.clone())
                .build()
                .unwrap();
            let server = serve(side, layer).await;
            let Some(haproxy) = Haproxy::start(server.addr, version, false) else {
                return;
            };
            let case = format!("{side:?} behind HAProxy {version:?}");
            // A denied client gets nothing; its neighbour is served.
            let dropped = through(&haproxy, &denied, "curl/8").await;
            assert!(dropped.bytes.is_empty(), "{case}: {:?}", dropped.text());
            assert_served_as(&through(&haproxy, "127.0.0.1", "curl/8").await, "127.0.0.1");
            // A scanner struck twice is banned, then refused at accept;
            // the neighbour is still served, and HAProxy never banned.
            for _ in 0..2 {
                let outcome = through(&haproxy, scanner, "masscan").await;
                assert!(outcome.bytes.is_empty(), "{case}: {:?}", outcome.text());
            }
            assert!(bans.is_banned(scanner.parse().unwrap()), "{case}");
            let refused = through(&haproxy, scanner, "curl/8").await;
            assert!(refused.bytes.is_empty(), "{case}: {:?}", refused.text());
            assert_served_as(&through(&haproxy, "127.0.0.1", "curl/8").await, "127.0.0.1");
            assert!(!bans.is_banned(BALANCER.parse().unwrap()), "{case}");
            assert_eq!(server.hits.load(Ordering::Relaxed), 2, "{case}");
            // Each drop names the client, as its own address and port.
            let events = events_for(scanner);
            for rule in ["user_agent", "banned"] {
                assert!(
                    events
                        .iter()
                        .any(|(r, peer)| r == rule && peer.starts_with(&format!("{scanner}:"))),
                    "{case}: {rule}: {events:?}"
                );
            }
            // The access log names the client of each drop: the denied
            // one, and the scanner, struck twice then refused.
            let lines = String::from_utf8(logged().lines.lock().unwrap().clone()).unwrap();
            assert!(
                lines.lines().any(|l| l.starts_with(&format!("{denied} "))),
                "{case}: {lines}"
            );
            let scanner_lines = lines
                .lines()
                .filter(|l| l.starts_with(&format!("{scanner} ")))
                .count();
            assert_eq!(scanner_lines, 3, "{case}: {lines}");
            drop(haproxy);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxys_health_checks_are_served_as_haproxy() {
    for version in [Version::V1, Version::V2] {
        for side in HTTP_SIDES {
            let checks = Arc::new(Mutex::new(Vec::<IpAddr>::new()));
            let seen = Arc::clone(&checks);
            let layer = rules().build().unwrap();
            let app = Router::new()
                .route(
                    "/health",
                    get(move |ClientIp(client): ClientIp| {
                        seen.lock().unwrap().push(client);
                        async { "up" }
                    }),
                )
                .layer(layer.clone());
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            match side {
                Side::ServeLoop => {
                    tokio::spawn(layer.serve(tcp, app).run());
                }
                _ => common::serve_on(layer.listener(tcp), app),
            }
            let Some(haproxy) = Haproxy::start(addr, version, true) else {
                return;
            };
            let started = Instant::now();
            while checks.lock().unwrap().len() < 2 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{side:?} {version:?}: no health check served"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Version 2's checks say LOCAL, served as the balancer;
            // version 1's name HAProxy's own addresses.
            let balancer: IpAddr = BALANCER.parse().unwrap();
            assert!(
                checks.lock().unwrap().iter().all(|ip| *ip == balancer),
                "{side:?} {version:?}: {:?}",
                checks.lock().unwrap()
            );
            drop(haproxy);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_behind_haproxy_serves_calls() {
    for version in [Version::V1, Version::V2] {
        // tonic's client names the host by address.
        let layer = NoResponseLayer::builder()
            .deny_ip(DENIED)
            .proxy_protocol_from(BALANCER)
            .build()
            .unwrap();
        let server = serve(Side::Tonic, layer).await;
        let Some(haproxy) = Haproxy::start(server.addr, version, false) else {
            return;
        };
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", haproxy.addr))
            .unwrap()
            .connect()
            .await
            .expect("connects through HAProxy");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        for _ in 0..3 {
            let answer = client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .expect("served through HAProxy");
            assert_eq!(answer.into_inner().status, 1, "{version:?}: serving");
        }
        assert_eq!(server.hits.load(Ordering::Relaxed), 3, "{version:?}");
        // A client the rules deny gets no answer to its call.
        let stream = connect_from(DENIED, haproxy.addr).await;
        let mut h2 = h2_frames::RawH2::over(stream).await;
        let authority = "example.com";
        let (head, body) = h2_frames::grpc_health_check(authority, &[]);
        let (id, bytes) = h2.request(&head, Some(&body));
        h2.send(&bytes).await;
        h2.finish(&[id]).await;
        let frames = h2.streams.get(&id).cloned().unwrap_or_default();
        assert!(
            !frames.leaked(),
            "{version:?}: the denied client's call was answered: {frames:?}"
        );
        assert_eq!(server.hits.load(Ordering::Relaxed), 3, "{version:?}");
    }
}

/// A reload from a document, which cannot name balancers, keeps those the
/// code set: forgetting them would hand every header to the server.
#[cfg(feature = "serde")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_a_document_keeps_the_balancers() {
    let layer = rules().build().unwrap();
    let server = serve(Side::AxumServe, layer.clone()).await;
    let doc = r#"server_names = ["example.com"]"#;
    layer
        .reload_config(tower_no_response::config::RuleConfig::from_toml(doc).unwrap())
        .unwrap();
    let served = send_from(BALANCER, server.addr, &with_get(v1("192.0.2.40"))).await;
    assert_served_as(&served, "192.0.2.40");
    assert!(layer.rules().is_edge(BALANCER.parse().unwrap()));
}
