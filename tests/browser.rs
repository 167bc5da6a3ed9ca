//! A real browser, Debian's Chromium headless, loads a page and its
//! sub-resources over kept-alive connections from both connection sides
//! (`axum::serve` with the layer's listener, and the crate's serve loop),
//! and through Debian's HAProxy sending the PROXY protocol to the listener,
//! under the demo's full rule set and a header timeout far shorter than the
//! page's pauses. Every resource arrives, connections are reused, one of
//! them after sitting idle longer than the header timeout, and not one 444
//! is logged or counted.
//!
//! Without `chromium` (or `haproxy`) on the machine the test says so and
//! passes, unless `TNR_REQUIRE_CHROMIUM` (`TNR_REQUIRE_HAPROXY`) is set, as
//! in CI, where it fails.

mod common;
#[cfg(feature = "proxy-protocol")]
#[path = "common/haproxy.rs"]
mod haproxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_no_response::NoResponseLayer;
use tower_no_response::connection::ConnectionInfo;

const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
/// How long `/slow.js` takes: the connections that served the first
/// resources sit idle meanwhile, for three header timeouts.
const PAUSE: Duration = Duration::from_millis(2400);
/// Images in the page, and as many more that `/slow.js` adds once it runs.
const IMAGES: usize = 6;

/// Each request the app answered: its connection (the TCP peer), path, and
/// when it arrived and was answered.
type Seen = Arc<Mutex<Vec<(SocketAddr, String, Instant, Instant)>>>;

/// The page; it preconnects to a second served name on the same port that
/// it never fetches from, as pages do for a CDN or an API host they may
/// need: the browser opens that connection and leaves it unused, with no
/// byte sent, for longer than the header timeout.
fn page(port: u16) -> String {
    let images: String = (0..IMAGES)
        .map(|n| format!("<img src=\"/img/{n}.svg\" width=8 height=8>"))
        .collect();
    format!(
        "<!doctype html><html><head><title>page</title>\
         <link rel=preconnect href=\"http://www.example.com:{port}\">\
         <link rel=stylesheet href=/style.css><script src=/app.js></script></head>\
         <body>{images}<p id=result>pending</p><script src=/slow.js></script></body></html>"
    )
}

/// Runs after the pause: more images, fetched on the connections that sat
/// idle, and a result line once the page has loaded.
const SLOW_JS: &str = r#"
for (let n = 100; n < 100 + IMAGES; n++) {
  const img = document.createElement("img");
  img.src = "/img/" + n + ".svg";
  document.body.appendChild(img);
}
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  const styled = getComputedStyle(document.body).marginLeft === "3px";
  document.getElementById("result").textContent =
    "loaded " + loaded + " of " + images.length + " styled " + styled + " script " + window.appRan;
});
"#;

const SVG: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>"#;

fn routes(seen: Seen) -> Router {
    let record = move |request: Request, next: Next| {
        let seen = Arc::clone(&seen);
        async move {
            let peer = request
                .extensions()
                .get::<ConnectionInfo>()
                .map(ConnectionInfo::peer_addr)
                .or_else(|| {
                    request
                        .extensions()
                        .get::<axum::extract::ConnectInfo<SocketAddr>>()
                        .map(|c| c.0)
                })
                .expect("every side names the peer");
            let path = request.uri().path().to_owned();
            let arrived = Instant::now();
            let response = next.run(request).await;
            seen.lock()
                .unwrap()
                .push((peer, path, arrived, Instant::now()));
            response
        }
    };
    Router::new()
        .route(
            "/",
            get(|request: Request| async move {
                let port = request.uri().port_u16().or_else(|| {
                    let host = request.headers().get("host")?.to_str().ok()?;
                    host.rsplit_once(':')?.1.parse().ok()
                });
                ([("content-type", "text/html")], page(port.expect("a port")))
            }),
        )
        .route(
            "/style.css",
            get(|| async { ([("content-type", "text/css")], "body { margin-left: 3px }") }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [("content-type", "text/javascript")],
                    "window.appRan = true;",
                )
            }),
        )
        .route(
            "/slow.js",
            get(|| async {
                tokio::time::sleep(PAUSE).await;
                let js = SLOW_JS.replace("IMAGES", &IMAGES.to_string());
                ([("content-type", "text/javascript")], js)
            }),
        )
        .route(
            "/img/{name}",
            get(|Path(_): Path<String>| async {
                ([("content-type", "image/svg+xml")], SVG).into_response()
            }),
        )
        .layer(middleware::from_fn(record))
}

#[derive(Debug, Clone, Copy)]
enum Side {
    AxumServe,
    ServeLoop,
    /// `axum::serve` behind Debian's HAProxy in `mode tcp`, which sends
    /// the PROXY protocol header.
    #[cfg(feature = "proxy-protocol")]
    BehindHaproxy,
}

#[cfg(not(feature = "proxy-protocol"))]
const SIDES: [Side; 2] = [Side::AxumServe, Side::ServeLoop];
#[cfg(feature = "proxy-protocol")]
const SIDES: [Side; 3] = [Side::AxumServe, Side::ServeLoop, Side::BehindHaproxy];

/// Whatever must outlive the test's server: HAProxy, in front of it.
#[cfg(feature = "proxy-protocol")]
type Front = Option<haproxy::Haproxy>;
#[cfg(not(feature = "proxy-protocol"))]
type Front = ();

/// Every 444 this test binary logs, whatever the rule.
static LOGGED_DROPS: AtomicUsize = AtomicUsize::new(0);

fn count_logged_drops() {
    use tracing_subscriber::layer::SubscriberExt;
    struct Count;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "tower_no_response::drop" {
                LOGGED_DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Count));
}

/// Where the browser connects, the layer, and what must outlive the test;
/// `None` when the side needs a program that is not installed and not
/// required.
async fn start(side: Side, seen: Seen) -> Option<(SocketAddr, NoResponseLayer, Front)> {
    // The demo's full rule set: the seed's rules and its rate limit.
    let rules = common::seed_rules()
        .rate_limit(tower_no_response::RateLimit::per_second(10).burst(20))
        .header_timeout(HEADER_TIMEOUT);
    #[cfg(feature = "proxy-protocol")]
    let rules = rules.proxy_protocol_from(haproxy::BALANCER);
    let layer = rules.build().unwrap();
    let app = routes(seen).layer(layer.clone());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    #[cfg_attr(not(feature = "proxy-protocol"), allow(clippy::let_unit_value))]
    let front = Front::default();
    match side {
        Side::AxumServe => common::serve_on(layer.listener(tcp), app),
        Side::ServeLoop => {
            tokio::spawn(layer.serve(tcp, app).run());
        }
        #[cfg(feature = "proxy-protocol")]
        Side::BehindHaproxy => {
            common::serve_on(layer.listener(tcp), app);
            let haproxy = haproxy::Haproxy::start(addr, haproxy::Version::V2, false)?;
            return Some((haproxy.addr, layer, Some(haproxy)));
        }
    }
    Some((addr, layer, front))
}

/// Chromium's printed DOM once the page has loaded, or `None` when there is
/// no Chromium here and none is required.
async fn chromium_loads(url: &str, profile: &std::path::Path) -> Option<String> {
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(binary) = binary else {
        assert!(
            std::env::var_os("TNR_REQUIRE_CHROMIUM").is_none(),
            "TNR_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipped: chromium is not installed");
        return None;
    };
    let run = tokio::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            // The served name, on loopback: an IP literal would be dropped
            // by the Host rules, as it should be.
            "--host-resolver-rules=MAP example.com 127.0.0.1, MAP www.example.com 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium loads the page within 60 s")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_over_kept_alive_connections_on_both_sides() {
    count_logged_drops();
    for side in SIDES {
        let seen = Seen::default();
        let Some((addr, layer, _front)) = start(side, Arc::clone(&seen)).await else {
            continue;
        };
        let profile = std::env::temp_dir().join(format!(
            "tnr-chromium-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let url = format!("http://example.com:{}/", addr.port());
        let Some(dom) = chromium_loads(&url, &profile).await else {
            return;
        };
        let _ = std::fs::remove_dir_all(&profile);

        let expected = format!("loaded {0} of {0} styled true script true", IMAGES * 2);
        assert!(
            dom.contains(&expected),
            "{side:?}: the page did not load whole: {dom}"
        );
        let seen = seen.lock().unwrap().clone();
        let requests = seen.len();
        let mut by_connection: HashMap<SocketAddr, Vec<(Instant, Instant)>> = HashMap::new();
        for (peer, _, arrived, answered) in &seen {
            by_connection
                .entry(*peer)
                .or_default()
                .push((*arrived, *answered));
        }
        assert!(
            by_connection.len() < requests,
            "{side:?}: {requests} requests on {} connections: none kept alive",
            by_connection.len()
        );
        // A connection that answered before the pause and again after it
        // sat idle for longer than the header timeout.
        let reused_after_idle = by_connection.values_mut().any(|times| {
            times.sort();
            times
                .windows(2)
                .any(|w| w[1].0.saturating_duration_since(w[0].1) > HEADER_TIMEOUT * 2)
        });
        assert!(
            reused_after_idle,
            "{side:?}: no connection was reused after an idle gap: {seen:?}"
        );
        let counted: u64 = layer.stats().rules.iter().map(|r| r.dropped).sum();
        assert_eq!(
            counted, 0,
            "{side:?}: drops counted for an innocent browser"
        );
        assert_eq!(
            LOGGED_DROPS.load(Ordering::Relaxed),
            0,
            "{side:?}: drops logged for an innocent browser"
        );
    }
}
