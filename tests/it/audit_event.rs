//! The 444 event: one per drop, on the documented target, with every field.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Close, exchange, get, request, seed_rules, spawn_app};
use tower_no_response::NoResponseLayer;
use tower_no_response::audit::DROP_EVENT_TARGET;
use tower_no_response::connection::CloseMode;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

type Fields = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Fields>>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != DROP_EVENT_TARGET {
            return;
        }
        assert_eq!(*event.metadata().level(), tracing::Level::INFO);
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

impl Capture {
    fn take(&self) -> Vec<Fields> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// `#[tokio::test]` runs every task on this thread, so the thread's default
/// subscriber sees the server's events.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    (capture, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn every_drop_emits_one_event_with_all_fields() {
    let (capture, _guard) = capture();
    let app = spawn_app(seed_rules().close_mode(CloseMode::Reset).build().unwrap()).await;
    let req = request(
        "POST",
        "/wp-login.php?x=1",
        Some("example.com"),
        Some("masscan/1.3"),
        &[("X-Forwarded-For", "192.0.2.44")],
    );
    exchange(app.addr, &req).await.assert_dropped(Close::Reset);
    let events = capture.take();
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["message"], "dropped request");
    assert_eq!(e["status"], "444");
    assert_eq!(e["rule"], "user_agent");
    assert_eq!(e["client_ip"], "192.0.2.44");
    assert!(e["peer_addr"].starts_with("127.0.0.1:"), "{e:?}");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["host"], "example.com");
    assert_eq!(e["uri"], "/wp-login.php?x=1");
    assert_eq!(e["user_agent"], "masscan/1.3");
    assert_eq!(e["close"], "reset");
    assert_eq!(e["action"], "drop");
    assert_eq!(e["version"], "HTTP/1.1");
    assert_eq!(e["referer"], "-");
    assert_eq!(e["detail"], "-");
}

#[tokio::test]
async fn dry_run_and_respond_events_say_what_was_done() {
    let (capture, _guard) = capture();
    let layer = seed_rules()
        .dry_run_rule("user_agent")
        .rule_action(
            "host_unknown",
            tower_no_response::rules::Action::Respond(http::StatusCode::FORBIDDEN),
        )
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    exchange(
        app.addr,
        &request(
            "GET",
            "/",
            Some("example.com"),
            Some("zgrab"),
            &[("Referer", "http://ref.test/")],
        ),
    )
    .await
    .assert_ok();
    let events = capture.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["message"], "request would be dropped (dry-run)");
    assert_eq!(events[0]["action"], "would_drop");
    assert_eq!(events[0]["rule"], "user_agent");
    assert_eq!(events[0]["status"], "444");
    assert_eq!(events[0]["close"], "none");
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
    assert_eq!(events[0]["referer"], "http://ref.test/");

    let out = exchange(app.addr, &get(Some("evil.com"), Some("curl"))).await;
    assert!(out.text().starts_with("HTTP/1.1 403"), "{}", out.text());
    let events = capture.take();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["message"], "answered request");
    assert_eq!(events[0]["action"], "respond");
    assert_eq!(events[0]["status"], "403");
    assert_eq!(events[0]["close"], "none");
}

#[tokio::test]
async fn each_rule_is_named_and_allowed_requests_emit_nothing() {
    let (capture, _guard) = capture();
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let ua = Some("curl/8");
    let cases: [(Vec<u8>, &str); 6] = [
        (get(None, ua), "host_missing"),
        (get(Some("127.0.0.1"), ua), "host_ip_literal"),
        (get(Some("evil.com"), ua), "host_unknown"),
        (get(Some("bad host"), ua), "host_invalid"),
        (
            request(
                "GET",
                "/",
                Some("example.com"),
                ua,
                &[("X-Forwarded-For", "203.0.113.7")],
            ),
            "ip_deny",
        ),
        (get(Some("example.com"), None), "user_agent_empty"),
    ];
    for (req, rule) in &cases {
        exchange(app.addr, req).await.assert_dropped(Close::Fin);
        let events = capture.take();
        assert_eq!(events.len(), 1, "{rule}: {events:?}");
        assert_eq!(events[0]["rule"], *rule);
        assert_eq!(events[0]["close"], "fin");
    }
    exchange(app.addr, &get(Some("example.com"), ua))
        .await
        .assert_ok();
    assert!(capture.take().is_empty());
}

#[tokio::test]
async fn hostile_header_bytes_are_escaped_and_missing_values_are_dashes() {
    let (capture, _guard) = capture();
    let app = spawn_app(seed_rules().build().unwrap()).await;
    exchange(
        app.addr,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: zgrab\"\xff\\\r\n\r\n",
    )
    .await
    .assert_dropped(Close::Fin);
    exchange(app.addr, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .assert_dropped(Close::Fin);
    let events = capture.take();
    assert_eq!(events[0]["user_agent"], "zgrab\\x22\\xFF\\x5C");
    assert_eq!(events[1]["rule"], "host_missing");
    assert_eq!(events[1]["host"], "-");
    assert_eq!(events[1]["user_agent"], "-");
}

#[tokio::test]
async fn rate_limit_drops_are_named() {
    let (capture, _guard) = capture();
    let layer = NoResponseLayer::builder()
        .rate_limit(tower_no_response::RateLimit::per_minute(1))
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    exchange(app.addr, &get(Some("a.test"), None))
        .await
        .assert_ok();
    exchange(app.addr, &get(Some("a.test"), None))
        .await
        .assert_dropped(Close::Fin);
    let events = capture.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["rule"], "rate_limit");
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
}
