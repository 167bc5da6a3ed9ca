//! A ban and its end are events on `tower_no_response::ban`, seen by a
//! thread-local subscriber on the thread that strikes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use tower::ServiceExt;
use tower_no_response::NoResponseLayer;
use tower_no_response::ban::{BanList, BanPolicy};
use tracing_subscriber::layer::SubscriberExt;

struct Messages(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Messages {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        if event.metadata().target() != "tower_no_response::ban" {
            return;
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0.lock().unwrap().push(m.0);
    }
}

#[tokio::test]
async fn ban_and_unban_are_events() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(Messages(Arc::clone(&seen))),
    );
    let bans = BanList::new(BanPolicy::new(1, Duration::from_secs(60), Duration::ZERO));
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .ban_list(bans.clone())
        .build()
        .unwrap();
    let peer = SocketAddr::from(([192, 0, 2, 7], 4000));
    let request = http::Request::builder()
        .uri("/")
        .header("host", "evil.example")
        .extension(ConnectInfo(peer))
        .body(Body::empty())
        .unwrap();
    let app = Router::new().fallback(|| async { "ok" }).layer(layer);
    let dropped = app.oneshot(request).await.unwrap();
    assert_eq!(dropped.status().as_u16(), 444);
    // A ban of zero length is over at once, and lifted when next asked.
    std::thread::sleep(Duration::from_millis(5));
    assert!(!bans.is_banned(peer.ip()));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("message=client banned"), "{seen:?}");
    assert!(seen[0].contains("client_ip=192.0.2.7"), "{seen:?}");
    assert!(seen[1].contains("message=client unbanned"), "{seen:?}");
}
