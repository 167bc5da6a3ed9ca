//! The fail2ban filter in `contrib/fail2ban`, run by the real
//! `fail2ban-regex` (Debian's `fail2ban`) over an access log the app wrote
//! while real clients were dropped, answered and served over loopback:
//! every 444 line matches, with the judged client as the host, and nothing
//! else does (a 429 answer, a request the app served, a dry-run match, an
//! idle keep-alive close, an unused preconnection).
//!
//! Without `fail2ban-regex` on the machine the test says so and passes,
//! unless `TNR_REQUIRE_FAIL2BAN` is set, as in CI, where it fails.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{Close, exchange, read_until_close, request};
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tower_no_response::DropReason;
use tower_no_response::audit::AccessLogLayer;
use tower_no_response::rules::Action;
use tracing_subscriber::layer::SubscriberExt;

const FILTER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/fail2ban/filter.d/tower-no-response.conf"
);

/// `fail2ban-regex`, or `None` when it is not installed and not required.
fn fail2ban_regex() -> Option<&'static str> {
    let found = Command::new("fail2ban-regex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("fail2ban-regex");
    }
    assert!(
        std::env::var_os("TNR_REQUIRE_FAIL2BAN").is_none(),
        "TNR_REQUIRE_FAIL2BAN is set but fail2ban-regex is not installed"
    );
    eprintln!("skipped: fail2ban-regex is not installed (Debian's fail2ban)");
    None
}

/// A request through the trusted proxy on loopback, for `client`.
fn via_proxy(client: &str, host: &str, user_agent: &str, target: &str) -> Vec<u8> {
    request(
        "GET",
        target,
        Some(host),
        Some(user_agent),
        &[("X-Forwarded-For", client)],
    )
}

/// A connection from a loopback address of our choosing.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_filter_matches_every_444_and_nothing_else() {
    let Some(binary) = fail2ban_regex() else {
        return;
    };
    let log = std::env::temp_dir().join(format!("tnr-fail2ban-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let subscriber = tracing_subscriber::registry().with(AccessLogLayer::new(Mutex::new(file)));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let layer = common::seed_rules()
        .deny_path(r"/\.env")
        .dry_run_rule(DropReason::Path)
        .rate_limit(tower_no_response::RateLimit::per_second(1).burst(2))
        .rule_action(
            DropReason::RateLimited,
            Action::Respond(StatusCode::TOO_MANY_REQUESTS),
        )
        .header_timeout(Duration::from_millis(500))
        .keepalive_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let app = common::spawn_app(layer).await;
    let addr = app.addr;

    // The drops, each logged as a 444 under the client fail2ban must ban.
    let mut expected = Vec::new();
    exchange(addr, &common::get(Some("evil.com"), Some("curl/8")))
        .await
        .assert_dropped(Close::Fin);
    expected.push("127.0.0.1");
    exchange(
        addr,
        &via_proxy("192.0.2.10", "example.com", "masscan", "/"),
    )
    .await
    .assert_dropped(Close::Fin);
    expected.push("192.0.2.10");
    exchange(addr, &via_proxy("2001:db8::7", "example.com", "", "/"))
        .await
        .assert_dropped(Close::Fin);
    expected.push("2001:db8::7");
    // A quote in the target is escaped: it cannot end the request field.
    let forged = "/x\"-\"";
    exchange(addr, &via_proxy("192.0.2.11", "evil.com", "curl/8", forged))
        .await
        .assert_dropped(Close::Fin);
    expected.push("192.0.2.11");
    // A head begun and not finished: logged under the peer.
    let mut slow = connect_from("127.0.0.3", addr).await;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: exa")
        .await
        .unwrap();
    read_until_close(&mut slow).await.assert_dropped(Close::Fin);
    expected.push("127.0.0.3");

    // What must never match.
    let mut answered = 0;
    for _ in 0..6 {
        let out = exchange(addr, &via_proxy("192.0.2.20", "example.com", "curl/8", "/")).await;
        if out.text().starts_with("HTTP/1.1 429") {
            answered += 1;
        } else {
            out.assert_ok();
        }
    }
    assert!(answered >= 3, "{answered} answers of 429");
    exchange(
        addr,
        &via_proxy("192.0.2.30", "example.com", "curl/8", "/.env"),
    )
    .await
    .assert_ok();
    exchange(addr, &via_proxy("192.0.2.40", "example.com", "curl/8", "/"))
        .await
        .assert_ok();
    // Kept alive, then left idle past the keep-alive timeout.
    let mut idle = connect_from("127.0.0.5", addr).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\r\n")
        .await
        .unwrap();
    let out = read_until_close(&mut idle).await;
    assert!(out.text().starts_with("HTTP/1.1 200"), "{}", out.text());
    // Opened and never used, as a browser's preconnection.
    let mut unused = connect_from("127.0.0.6", addr).await;
    read_until_close(&mut unused)
        .await
        .assert_dropped(Close::Fin);
    // The events are written as the drops happen; let the last one land.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let written = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), expected.len() + answered, "{written}");

    let matched = run(binary, &["-o", "ip"], &log);
    let hosts: Vec<&str> = matched.lines().collect();
    assert_eq!(hosts, expected, "the log was:\n{written}");

    let summary = run(binary, &[], &log);
    let want = format!(
        "Lines: {} lines, 0 ignored, {} matched, {answered} missed",
        lines.len(),
        expected.len()
    );
    assert!(
        summary.contains(&want),
        "{summary}\nthe log was:\n{written}"
    );
    let _ = std::fs::remove_file(&log);
}

/// The example filter in the `audit` docs is the shipped one.
#[test]
fn the_docs_give_the_shipped_expression() {
    let filter = std::fs::read_to_string(FILTER).unwrap();
    let failregex = filter
        .lines()
        .find_map(|l| l.strip_prefix("failregex = "))
        .expect("a failregex line");
    for doc in ["src/audit/mod.rs", "src/audit/access_log.rs"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
        assert!(
            text.contains(&format!("failregex = {failregex}")),
            "{doc} does not give `failregex = {failregex}`"
        );
    }
}

fn run(binary: &str, args: &[&str], log: &Path) -> String {
    let out = Command::new(binary)
        .args(args)
        .arg(log)
        .arg(FILTER)
        .output()
        .expect("fail2ban-regex runs");
    assert!(
        out.status.success(),
        "fail2ban-regex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
