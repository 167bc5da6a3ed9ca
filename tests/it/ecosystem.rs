//! The layer among other axum middleware: tower_governor keyed by the peer,
//! outside or inside the layer; axum's `MockConnectInfo` for `oneshot`
//! tests; and `ClientIp` as an extractor.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::routing::get;
use common::{Close, exchange, get as get_req, serve_layered};
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_no_response::{ClientIp, DropReason, NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

/// Two requests a client, then governor answers 429.
fn governor() -> GovernorLayer<
    tower_governor::key_extractor::PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    Body,
> {
    let config = GovernorConfigBuilder::default()
        .per_second(60)
        .burst_size(2)
        .finish()
        .unwrap();
    GovernorLayer::new(Arc::new(config))
}

/// Served with `layer.listener` and axum's `ConnectInfo<SocketAddr>`, a
/// peer-keyed governor works on either side of the layer: it serves, then
/// limits, and the layer still drops with zero bytes.
#[tokio::test]
async fn tower_governor_keys_by_the_peer_outside_or_inside_the_layer() {
    for outside in [true, false] {
        let layer = NoResponseLayer::builder()
            .server_name("example.com")
            .build()
            .unwrap();
        let routes = Router::new().route("/", get(|| async { "ok" }));
        let app = if outside {
            routes.layer(layer.clone()).layer(governor())
        } else {
            routes.layer(governor()).layer(layer.clone())
        };
        let addr = serve_layered(app, &layer).await;
        for _ in 0..2 {
            exchange(addr, &get_req(Some("example.com"), UA))
                .await
                .assert_ok();
        }
        let limited = exchange(addr, &get_req(Some("example.com"), UA)).await;
        assert!(
            limited.text().starts_with("HTTP/1.1 429"),
            "outside={outside}: {}",
            limited.text()
        );
        if !outside {
            // Inside, governor never sees what the layer drops.
            exchange(addr, &get_req(Some("evil.example"), UA))
                .await
                .assert_dropped(Close::Fin);
        }
    }
}

fn rule_of(response: &http::Response<Body>) -> Option<DropReason> {
    response.extensions().get::<DropReason>().copied()
}

fn request() -> Request<Body> {
    Request::builder()
        .uri("/")
        .header("host", "example.com")
        .body(Body::empty())
        .unwrap()
}

/// `oneshot` tests with `MockConnectInfo` drive the IP rules and the rate
/// limit as a real peer would.
#[tokio::test]
async fn mock_connect_info_drives_the_ip_rules_and_the_limiter() {
    let layer = NoResponseLayer::builder()
        .deny_ip("192.0.2.0/24")
        // nginx's burst: one request beyond the first.
        .rate_limit(RateLimit::per_minute(1).burst(1))
        .build()
        .unwrap();
    let routes = Router::new()
        .route(
            "/",
            get(|ClientIp(ip): ClientIp| async move { ip.to_string() }),
        )
        .layer(layer);
    let from = |peer: &str| {
        routes
            .clone()
            .layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap()))
    };

    let allowed = from("198.51.100.7:4000").oneshot(request()).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let body = axum::body::to_bytes(allowed.into_body(), 64).await.unwrap();
    assert_eq!(&body[..], b"198.51.100.7");

    let denied = from("192.0.2.9:4000").oneshot(request()).await.unwrap();
    assert_eq!(rule_of(&denied), Some(DropReason::IpDenied));
    assert_eq!(denied.status().as_u16(), 444);

    // The budget is the client's: a second request passes, a third is over.
    let second = from("198.51.100.7:4001").oneshot(request()).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let third = from("198.51.100.7:4002").oneshot(request()).await.unwrap();
    assert_eq!(rule_of(&third), Some(DropReason::RateLimited));
    // Another client has a budget of its own.
    let other = from("198.51.100.8:4000").oneshot(request()).await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

/// Wrapped around the whole Router and served by `axum::serve`, with the
/// allowed body unwrapped into axum's (`Body::from`): allowed requests are
/// answered, and a dropped one gets not a byte, on a new connection and
/// after a kept-alive response alike. A reload reaches a connection already
/// open, whose service was made before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_around_the_router_under_axum_serve() {
    use http::Response;
    use tokio::io::AsyncWriteExt;
    use tower_no_response::NoResponseBody;

    let layer = NoResponseLayer::builder()
        .server_name("a.test")
        .deny_user_agent("masscan")
        .build()
        .unwrap();
    let app = tower::ServiceBuilder::new()
        .map_response(|r: Response<NoResponseBody<Body>>| r.map(Body::from))
        .layer(layer.clone())
        .service(Router::new().route("/", get(|| async { "ok" })));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = layer.listener(tcp);
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .await
        .unwrap();
    });

    let allowed = exchange(addr, &get_req(Some("a.test"), UA)).await;
    assert!(allowed.text().ends_with("\r\n\r\nok"), "{}", allowed.text());
    exchange(addr, &get_req(Some("evil.test"), UA))
        .await
        .assert_dropped(Close::Fin);

    let keep_alive = b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: curl/8\r\n\r\n";
    // A connection with one allowed response behind it, kept open.
    let kept_alive = || async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(keep_alive).await.unwrap();
        let first = common::read_one_response(&mut stream).await;
        assert!(
            first.ends_with(b"ok"),
            "{}",
            String::from_utf8_lossy(&first)
        );
        stream
    };
    let mut stream = kept_alive().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\nUser-Agent: masscan\r\n\r\n")
        .await
        .unwrap();
    common::read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);

    let mut stream = kept_alive().await;
    layer
        .reload(
            NoResponseLayer::builder()
                .server_name("a.test")
                .deny_user_agent("curl"),
        )
        .unwrap();
    stream.write_all(keep_alive).await.unwrap();
    common::read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);
}

/// With the extension turned off, handlers find no `ClientIp`, while the
/// rules still judge the client behind the proxy: a denied one is dropped.
#[tokio::test]
async fn the_client_ip_extension_can_be_left_out() {
    let layer = NoResponseLayer::builder()
        .trusted_proxy("127.0.0.1")
        .deny_ip("203.0.113.66")
        .client_ip_extension(false)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|request: axum::extract::Request| async move {
                format!(
                    "has ClientIp: {}",
                    request.extensions().get::<ClientIp>().is_some()
                )
            }),
        )
        .layer(layer.clone());
    let addr = serve_layered(app, &layer).await;
    let from = |client: &'static str| {
        common::request(
            "GET",
            "/",
            Some("a.test"),
            UA,
            &[("X-Forwarded-For", client)],
        )
    };
    let out = exchange(addr, &from("203.0.113.20")).await;
    assert!(
        out.text().ends_with("has ClientIp: false"),
        "{}",
        out.text()
    );
    let denied = exchange(addr, &from("203.0.113.66")).await;
    denied.assert_dropped(Close::Fin);
}

/// The extractor gives handlers the client the rules judged, over real
/// sockets; without the layer it rejects with a 500 that names the fix.
#[tokio::test]
async fn client_ip_is_an_extractor() {
    let layer = NoResponseLayer::builder()
        .trusted_proxy("127.0.0.1")
        .build()
        .unwrap();
    let handler = get(|ClientIp(ip): ClientIp| async move { ip.to_string() });
    let app = Router::new()
        .route("/", handler.clone())
        .layer(layer.clone());
    let addr = serve_layered(app, &layer).await;
    let out = exchange(
        addr,
        &common::request(
            "GET",
            "/",
            Some("a.test"),
            UA,
            &[("X-Forwarded-For", "203.0.113.20")],
        ),
    )
    .await;
    assert!(
        out.text().ends_with("\r\n\r\n203.0.113.20"),
        "{}",
        out.text()
    );

    let bare = Router::new().route("/", handler);
    let rejected = bare.oneshot(request()).await.unwrap();
    assert_eq!(rejected.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = axum::body::to_bytes(rejected.into_body(), 1024)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("NoResponseLayer"), "{text}");
}

/// tower_governor keyed by the client the layer judged: the `ClientIp`
/// extension the layer puts in every allowed request, read by a five-line
/// key extractor.
#[derive(Clone)]
struct JudgedClient;

impl tower_governor::key_extractor::KeyExtractor for JudgedClient {
    type Key = std::net::IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<Self::Key, tower_governor::GovernorError> {
        request
            .extensions()
            .get::<ClientIp>()
            .map(|client| client.0)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

/// Inside the layer, governor keyed by `ClientIp` limits each visitor
/// behind a trusted proxy on its own: one visitor over its budget gets a
/// 429 while another, on the same proxy, is served; the layer's own rules
/// still drop with zero bytes.
#[tokio::test]
async fn governor_inside_the_layer_limits_each_client_behind_a_proxy() {
    let config = GovernorConfigBuilder::default()
        .per_second(60)
        .burst_size(2)
        .key_extractor(JudgedClient)
        .finish()
        .unwrap();
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .trusted_proxy("127.0.0.1")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(GovernorLayer::new(Arc::new(config)))
        .layer(layer.clone());
    let addr = serve_layered(app, &layer).await;
    let from = |client: &str| {
        common::request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", client)],
        )
    };
    for _ in 0..2 {
        exchange(addr, &from("192.0.2.1")).await.assert_ok();
    }
    let limited = exchange(addr, &from("192.0.2.1")).await;
    assert!(
        limited.text().starts_with("HTTP/1.1 429"),
        "{}",
        limited.text()
    );
    exchange(addr, &from("192.0.2.2")).await.assert_ok();
    exchange(addr, &get_req(Some("evil.com"), UA))
        .await
        .assert_dropped(Close::Fin);
}

/// A rule that answers with a status names itself on its response, as a
/// drop does: a `oneshot` test can tell which rule answered.
#[tokio::test]
async fn an_answered_response_names_its_rule() {
    use tower_no_response::rules::{Action, LimitKey};
    let layer = NoResponseLayer::builder()
        .deny_ip("192.0.2.0/24")
        .rate_limit_by("api_key", RateLimit::per_minute(1).burst(0), |head| {
            head.headers
                .get("x-api-key")
                .map(|k| LimitKey::bytes(k.as_bytes()))
        })
        .rule_action("api_key", Action::Respond(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
        .layer(MockConnectInfo(
            "198.51.100.7:4000".parse::<SocketAddr>().unwrap(),
        ));
    let keyed = || {
        Request::get("/")
            .header("host", "example.com")
            .header("x-api-key", "k1")
            .body(Body::empty())
            .unwrap()
    };
    let first = app.clone().oneshot(keyed()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(DropReason::of(&first), None, "the app's own response");
    let over = app.clone().oneshot(keyed()).await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(DropReason::of(&over), Some(DropReason::Custom("api_key")));
    assert!(
        tower_no_response::RequestDropped::of(&over).is_none(),
        "answered, not dropped"
    );
}
