//! A harness for instruction counts under callgrind: it runs one operation
//! a given number of times, in-process, with no network and no timing, so
//! `benches/callgrind.sh` can subtract two runs and report instructions per
//! operation, stable across machines.
//!
//! ```text
//! cargo run --release --example callgrind -- MODE N
//! ```
//!
//! - `decision`: the layer's judgement of an allowed request, with the
//!   demo's rule set and the rate limiter;
//! - `decision_browser`: the same for what a browser sends (sixteen
//!   headers, a 111-byte User-Agent);
//! - `decision_every_rule` (feature `crowdsec`): `decision` with the
//!   rules that judge identities against big tables added: a peer scope
//!   (`only_from_peers`), a ban list holding 10,000 bans, and 100,000
//!   CrowdSec decisions served by a stand-in LAPI on loopback;
//! - `with`: an allowed request through an axum app (one route, the
//!   request's path) with the layer added by `Router::layer`, which axum
//!   applies to each route (boxing it);
//! - `around`: the same, with the layer wrapped around the whole `Router`
//!   as a tower layer, its responses turned into axum's as `axum::serve`
//!   requires (`Body::from`, which unwraps an allowed body);
//! - `around_bare`: the same, without the `ClientIp` extension
//!   (`client_ip_extension(false)`);
//! - `governor`: the same app with `tower_governor` alone (added with
//!   `Router::layer`, keyed by the leftmost `X-Forwarded-For`), the peer
//!   users pick for rate limiting;
//! - `governor_around`: tower_governor wrapped around the whole `Router`;
//! - `without`: the same app without either;
//! - `e2e_without`, `e2e_axum`, `e2e_serve_loop`: an allowed keep-alive
//!   request end to end over a real loopback socket, server and client in
//!   one thread: `axum::serve` with axum's `TcpListener` and no crate, then
//!   the same routes with the layer added by `Router::layer` and served
//!   with the layer's listener (the demo's way), then with the crate's
//!   serve loop; the layer with the demo's rules, a rate limit and a
//!   header timeout, so every connection timer runs; `e2e_axum_around`
//!   is `e2e_axum` with the layer wrapped around the whole `Router`;
//! - `around_fallback`, `without_fallback`: `around` and `without` with an
//!   app that answers from its fallback alone, as the harness's app was in
//!   earlier rounds. Its requests end with three extensions, the most the
//!   request's first table holds, so a fourth (`ClientIp`) pays for the
//!   table's growth; a routed app's requests outgrow it on their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use tower::{Service, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::SmartIpKeyExtractor;
use tower_no_response::{NoResponseBody, NoResponseLayer, NoResponseLayerBuilder, RateLimit};

fn layer() -> NoResponseLayer {
    rules().build().expect("the demo's rules build")
}

fn rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_ip("198.51.100.0/24")
        .deny_ip("203.0.113.7")
        .trusted_proxies(["127.0.0.0/8", "::1/128"])
        .deny_user_agents(["masscan", "zgrab"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
        // Never reached, so every request stays allowed, yet the limiter
        // does its work on each.
        .rate_limit(RateLimit::per_second(1_000_000_000).burst(1_000_000_000))
}

/// tower_governor keyed by the leftmost `X-Forwarded-For`, with a limit
/// never reached.
fn governor() -> GovernorLayer<SmartIpKeyExtractor, governor::middleware::NoOpMiddleware, Body> {
    let config = GovernorConfigBuilder::default()
        .per_nanosecond(1)
        .burst_size(1_000_000_000)
        .key_extractor(SmartIpKeyExtractor)
        .finish()
        .expect("a valid governor configuration");
    GovernorLayer::new(std::sync::Arc::new(config))
}

/// The layer wrapped around the whole `app`, answering with axum's own
/// response type, as `axum::serve` takes it: an allowed body is unwrapped,
/// not boxed again (`Body::from`).
fn wrapped(
    layer: NoResponseLayer,
    app: Router,
) -> impl Service<
    Request<Body>,
    Response = axum::response::Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::ServiceBuilder::new()
        .map_response(|r: http::Response<NoResponseBody<Body>>| r.map(Body::from))
        .layer(layer)
        .service(app)
}

/// tower_governor wrapped around the whole `app`; its body is axum's
/// already.
fn governor_wrapped(
    app: Router,
) -> impl Service<Request<Body>, Response = axum::response::Response, Error = Infallible> {
    tower::ServiceBuilder::new()
        .map_response(axum::response::IntoResponse::into_response)
        .layer(governor())
        .service(app)
}

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

fn request() -> Request<Body> {
    Request::get("/index.html")
        .header("host", "www.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )
        .header("accept", "*/*")
        .header("x-forwarded-for", "192.0.2.1")
        .extension(ConnectInfo(PEER))
        .body(Body::empty())
        .expect("a valid request")
}

/// What a browser sends behind one proxy: sixteen headers and a long
/// User-Agent, where the harness's `request` has four.
fn browser_request() -> Request<Body> {
    let headers = [
        ("host", "www.example.com"),
        ("connection", "keep-alive"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Windows\""),
        ("upgrade-insecure-requests", "1"),
        (
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
             (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
             image/webp,*/*;q=0.8",
        ),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-dest", "document"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.9"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("x-forwarded-for", "192.0.2.1"),
    ];
    headers
        .iter()
        .fold(Request::get("/index.html"), |r, (k, v)| r.header(*k, *v))
        .extension(ConnectInfo(PEER))
        .body(Body::empty())
        .expect("a valid request")
}

/// The measured loop: `benches/callgrind.sh` counts instructions only
/// inside the functions named `measure_*`, after a warm-up outside them has
/// paid for lazy start-up work (such as the rate limiter's clock
/// calibration, which runs for a fixed time and so for a varying number of
/// instructions).
#[inline(never)]
fn measure_requests<S, B>(runtime: &tokio::runtime::Runtime, app: &mut S, n: u64)
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>,
{
    runtime.block_on(serve_n(app, n));
}

#[inline(never)]
fn measure_e2e_requests(
    runtime: &tokio::runtime::Runtime,
    client: &mut tokio::net::TcpStream,
    n: u64,
) {
    runtime.block_on(e2e::requests(client, n));
}

/// A server on a loopback socket and a kept-alive client of it.
mod e2e {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: */*\r\n\r\n";

    /// Serves `app` as `mode` says and connects to it.
    pub(super) async fn serve(mode: &str, app: Router) -> TcpStream {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let layer = super::rules()
            .header_timeout(Duration::from_secs(10))
            .build()
            .expect("the demo's rules build");
        match mode {
            "e2e_without" => {
                tokio::spawn(async move {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    axum::serve(tcp, app).await
                });
            }
            "e2e_axum" => {
                let app = app.layer(layer.clone());
                tokio::spawn(async move {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    axum::serve(layer.listener(tcp), app).await
                });
            }
            "e2e_axum_around" => {
                let app = super::wrapped(layer.clone(), app);
                tokio::spawn(async move {
                    let app = axum::ServiceExt::<http::Request<axum::body::Body>>::into_make_service_with_connect_info::<SocketAddr>(app);
                    axum::serve(layer.listener(tcp), app).await
                });
            }
            _ => {
                let app = app.layer(layer.clone());
                tokio::spawn(layer.serve(tcp, app).run());
            }
        }
        let client = TcpStream::connect(addr).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        client
    }

    /// `n` requests on `client`, each answered whole before the next.
    pub(super) async fn requests(client: &mut TcpStream, n: u64) {
        let mut buf = [0u8; 1024];
        for _ in 0..n {
            client.write_all(REQUEST).await.expect("write");
            let mut got = 0;
            // The answer ends with its two-byte body.
            while !buf[..got].ends_with(b"\r\n\r\nok") {
                let read = client.read(&mut buf[got..]).await.expect("read");
                assert!(
                    read > 0,
                    "closed: {:?}",
                    String::from_utf8_lossy(&buf[..got])
                );
                got += read;
            }
        }
    }
}

#[inline(never)]
fn measure_decisions(layer: &NoResponseLayer, request: &Request<Body>, n: u64) {
    for _ in 0..n {
        let judgement = layer.judge_and_spend(request, Some(PEER));
        assert!(judgement.stop().is_none());
    }
}

async fn serve_n<S, B>(app: &mut S, n: u64)
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible>,
{
    for _ in 0..n {
        let response = ServiceExt::<Request<Body>>::ready(&mut *app)
            .await
            .map_err(|never: Infallible| never)
            .expect("infallible")
            .call(request())
            .await
            .expect("infallible");
        assert_eq!(response.status(), 200);
    }
}

/// Iterations run before the measured ones, uncounted.
const WARM_UP: u64 = 100;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!(
            "usage: callgrind decision|decision_browser|decision_every_rule|with|around|around_bare|around_fallback|governor|governor_around|without|without_fallback|e2e_without|e2e_axum|e2e_axum_around|e2e_serve_loop|client_hello|rustls_server_hello N"
        );
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let app = || Router::new().route("/index.html", axum::routing::get(|| async { "ok" }));
    let fallback_app = || Router::new().fallback(|| async { "ok" });
    match mode.as_str() {
        "decision" | "decision_browser" => {
            let layer = layer();
            let request = if mode == "decision" {
                request()
            } else {
                browser_request()
            };
            let _entered = runtime.enter();
            let _warm_up = layer.judge_and_spend(&request, Some(PEER));
            measure_decisions(&layer, &request, n);
        }
        #[cfg(feature = "crowdsec")]
        "decision_every_rule" => {
            let (layer, _bouncer) = every_rule::layer(&runtime);
            let request = request();
            let _entered = runtime.enter();
            let _warm_up = layer.judge_and_spend(&request, Some(PEER));
            measure_decisions(&layer, &request, n);
        }
        "with" => {
            let mut app = app().layer(layer());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "around" => {
            let mut app = wrapped(layer(), app());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "around_bare" => {
            let layer = rules()
                .client_ip_extension(false)
                .build()
                .expect("the demo's rules build");
            let mut app = wrapped(layer, app());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "governor" => {
            let mut app = app().layer(governor());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "governor_around" => {
            let mut app = governor_wrapped(app());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        #[cfg(feature = "rustls")]
        "client_hello" | "rustls_server_hello" => {
            let (hello, config) = tls::hello_and_server();
            if mode == "client_hello" {
                tls::measure_client_hellos(&hello, n);
            } else {
                tls::measure_rustls_server_hellos(&hello, &config, n);
            }
        }
        "around_fallback" => {
            let mut app = wrapped(layer(), fallback_app());
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "without_fallback" => {
            let mut app = fallback_app();
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "without" => {
            let mut app = app();
            runtime.block_on(serve_n(&mut app, WARM_UP));
            measure_requests(&runtime, &mut app, n);
        }
        "e2e_without" | "e2e_axum" | "e2e_axum_around" | "e2e_serve_loop" => {
            let mut client = runtime.block_on(e2e::serve(&mode, app()));
            runtime.block_on(e2e::requests(&mut client, WARM_UP));
            measure_e2e_requests(&runtime, &mut client, n);
        }
        other => {
            eprintln!("unknown mode {other:?}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// The TLS gate's read of a ClientHello, against what rustls does with the
/// same ClientHello as a server (its whole first flight: key exchange,
/// certificate, signature).
#[cfg(feature = "rustls")]
mod tls {
    use std::sync::Arc;

    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig, ServerConnection};
    use tower_no_response::tls::ClientHello;

    /// A rustls client's ClientHello for example.com, and a server for it.
    pub fn hello_and_server() -> (Vec<u8>, Arc<ServerConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from("example.com").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        (wire, Arc::new(server))
    }

    #[inline(never)]
    pub fn measure_client_hellos(wire: &[u8], n: u64) {
        for _ in 0..n {
            let hello = ClientHello::parse(std::hint::black_box(wire));
            std::hint::black_box(hello.unwrap().unwrap().ja4());
        }
    }

    #[inline(never)]
    pub fn measure_rustls_server_hellos(wire: &[u8], config: &Arc<ServerConfig>, n: u64) {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut server = ServerConnection::new(Arc::clone(config)).unwrap();
            server.read_tls(&mut std::hint::black_box(wire)).unwrap();
            server.process_new_packets().unwrap();
            out.clear();
            while server.wants_write() {
                server.write_tls(&mut out).unwrap();
            }
            std::hint::black_box(&out);
        }
    }
}

#[cfg(feature = "crowdsec")]
#[path = "../benches/support/crowdsec_stream.rs"]
mod crowdsec_stream;

/// The demo's rules with every rule that judges an identity against a big
/// table: a peer scope, a ban list and CrowdSec's decisions, each holding
/// what a busy site's would, none of them matching the measured client.
#[cfg(feature = "crowdsec")]
mod every_rule {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use tower_no_response::NoResponseLayer;
    use tower_no_response::ban::{BanList, BanPolicy};
    use tower_no_response::crowdsec::Bouncer;

    use super::crowdsec_stream;

    /// Bans in the ban list, spread over 10.0.0.0/8.
    const BANS: u32 = 10_000;

    /// The layer, and the bouncer that keeps its decisions.
    pub fn layer(runtime: &tokio::runtime::Runtime) -> (NoResponseLayer, Bouncer) {
        let bouncer = runtime.block_on(async {
            let (body, _, _) = crowdsec_stream::stream();
            let lapi = crowdsec_stream::stand_in_lapi(body).await;
            let bouncer = Bouncer::builder(format!("http://{lapi}/"), "callgrind")
                .pull_every(Duration::from_secs(3600))
                .start()
                .expect("the bouncer starts");
            bouncer.first_pull().await;
            bouncer
        });
        assert_eq!(bouncer.decisions(), crowdsec_stream::DECISIONS);
        let bans = BanList::new(BanPolicy::new(5, Duration::from_secs(60), Duration::MAX));
        for i in 0..BANS {
            let ip = Ipv4Addr::from(0x0a00_0000 | (i * 997));
            bans.ban(IpAddr::V4(ip), Duration::from_secs(3600));
        }
        assert_eq!(bans.len() as u32, BANS);
        let layer = super::rules()
            .only_from_peers(["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
            .ban_list(bans)
            .crowdsec(&bouncer)
            .build()
            .expect("the rules build");
        (layer, bouncer)
    }
}
