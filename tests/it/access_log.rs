//! The access-log line: nginx's combined format, written for enforced drops
//! and answers only. `tests/fail2ban.rs` runs the real fail2ban over it.

use crate::common;

use std::io;
use std::sync::{Arc, Mutex};

use common::{Close, exchange, get, seed_rules, spawn_app};
use regex::Regex;
use tower_no_response::audit::AccessLogLayer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A whole combined-format line for a drop, field by field, the address
/// captured.
fn drop_line() -> Regex {
    Regex::new(
        r#"^(?P<host>[0-9.]+|[0-9a-fA-F:]+) - \S+ \[[^\]]+\] "[^"]*" 444 0 "[^"]*" "[^"]*"$"#,
    )
    .unwrap()
}

#[tokio::test]
async fn drops_are_logged_in_nginx_combined_format() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(AccessLogLayer::new(lines.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let layer = seed_rules()
        .dry_run_rule("user_agent")
        .rule_action(
            "host_ip_literal",
            tower_no_response::rules::Action::Respond(http::StatusCode::BAD_REQUEST),
        )
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    exchange(app.addr, &get(Some("evil.com"), Some("bad \"agent\"")))
        .await
        .assert_dropped(Close::Fin);
    // Dry-run: served, so not logged as a drop.
    exchange(app.addr, &get(Some("example.com"), Some("masscan")))
        .await
        .assert_ok();
    // Answered with 400: logged with that status, not matched by the filter.
    exchange(app.addr, &get(Some("127.0.0.1"), Some("curl"))).await;

    let lines = lines.take();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let re = drop_line();
    let caps = re
        .captures(&lines[0])
        .unwrap_or_else(|| panic!("no match: {}", lines[0]));
    assert_eq!(&caps["host"], "127.0.0.1");
    let time = Regex::new(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000\]").unwrap();
    assert!(time.is_match(&lines[0]), "{}", lines[0]);
    assert!(
        lines[0].ends_with(r#" "GET / HTTP/1.1" 444 0 "-" "bad \x22agent\x22""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#""GET / HTTP/1.1" 400 0 "#),
        "{}",
        lines[1]
    );
    assert!(!re.is_match(&lines[1]));
}

/// A `"` in the request target cannot close the quoted request field: it is
/// escaped as nginx escapes it, so the line still parses field by field
/// with the right host.
#[tokio::test]
async fn a_quote_in_the_path_is_escaped() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(AccessLogLayer::new(lines.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let layer = seed_rules().deny_path(r"/\.env").build().unwrap();
    let app = spawn_app(layer).await;
    exchange(
        app.addr,
        b"GET /.env\"x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n",
    )
    .await
    .assert_dropped(Close::Fin);
    let lines = lines.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#""GET /.env\x22x HTTP/1.1" 444 0 "#),
        "{}",
        lines[0]
    );
    let caps = drop_line()
        .captures(&lines[0])
        .unwrap_or_else(|| panic!("no match: {}", lines[0]));
    assert_eq!(&caps["host"], "127.0.0.1");
}
