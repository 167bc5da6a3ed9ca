//! A layer added before the routes wraps none of them: the listener still
//! judges each connection's first request at accept, so a test with curl
//! looks right, while every later request goes unjudged. The layer says so,
//! once, at warn level; a layer in its place never does.
#![cfg(target_os = "linux")]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{exchange, get as get_req};
use tokio::net::TcpListener;
use tower_no_response::NoResponseLayer;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_warnings() {
    use tracing_subscriber::layer::SubscriberExt;
    struct Record;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Record {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            if *event.metadata().level() == tracing::Level::WARN {
                let mut message = Message(String::new());
                event.record(&mut message);
                WARNINGS.lock().unwrap().push(message.0);
            }
        }
    }
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Record));
}

fn misplaced_warnings() -> usize {
    WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.contains("wraps none of the routes"))
        .count()
}

/// Serves `app` with the layer's listener, with deferred accept so that
/// every first request is there to judge.
async fn serve(layer: &NoResponseLayer, app: Router) -> std::net::SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tower_no_response::connection::set_defer_accept(&tcp, Duration::from_secs(5)).unwrap();
    let addr = tcp.local_addr().unwrap();
    common::serve_on(layer.listener(tcp), app);
    addr
}

/// Ten visitors, a pause longer than the layer waits, ten more.
async fn visit(addr: std::net::SocketAddr) {
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        for _ in 0..10 {
            exchange(addr, &get_req(Some("example.com"), Some("curl/8.5.0")))
                .await
                .assert_ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_before_the_routes_is_reported_once_and_one_after_never() {
    record_warnings();
    let rules = || {
        NoResponseLayer::builder()
            .server_name("example.com")
            .build()
            .unwrap()
    };

    let misplaced = rules();
    let app = Router::new()
        .layer(misplaced.clone())
        .route("/", get(|| async { "ok" }));
    let addr = serve(&misplaced, app).await;
    // The first request on a connection is judged at accept all the same.
    exchange(addr, &get_req(Some("evil.com"), Some("curl/8.5.0")))
        .await
        .assert_dropped(common::Close::Fin);
    // A trial by hand: three requests with curl, a moment apart, show it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        exchange(addr, &get_req(Some("example.com"), Some("curl/8.5.0")))
            .await
            .assert_ok();
    }
    assert_eq!(misplaced_warnings(), 1, "{:?}", WARNINGS.lock().unwrap());
    // Once.
    visit(addr).await;
    visit(addr).await;
    assert_eq!(misplaced_warnings(), 1, "{:?}", WARNINGS.lock().unwrap());

    let placed = rules();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(placed.clone());
    let addr = serve(&placed, app).await;
    visit(addr).await;
    visit(addr).await;
    assert_eq!(misplaced_warnings(), 1, "a layer in its place was reported");
}
