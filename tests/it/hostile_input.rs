//! Hostile and malformed requests on real sockets: each edge case of the Host
//! and User-Agent headers has a decided, documented outcome, nothing panics,
//! and nothing is let through because it failed to parse.

use crate::common;

use common::{Close, exchange, request, seed_rules, spawn_app};
use tower_no_response::NoResponseLayer;

const UA: Option<&str> = Some("curl/8.5.0");

async fn assert_dropped(raw: &[u8]) {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    exchange(app.addr, raw).await.assert_dropped(Close::Fin);
    assert_eq!(app.hits(), 0, "{:?}", String::from_utf8_lossy(raw));
}

#[tokio::test]
async fn ip_literals_in_every_form_are_dropped() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    for host in [
        "127.0.0.1",
        "127.0.0.1:8444",
        "[::1]",
        "[::1]:8444",
        "[::ffff:127.0.0.1]",
        "[2001:db8::1]:443",
        "::1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "127.0.0.1.",
        // A zone identifier makes the literal unparsable: dropped as invalid.
        "[fe80::1%25eth0]",
    ] {
        exchange(app.addr, &request("GET", "/", Some(host), UA, &[]))
            .await
            .assert_dropped(Close::Fin);
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn http11_absolute_form_still_needs_a_host_header() {
    assert_dropped(b"GET http://example.com/ HTTP/1.1\r\nUser-Agent: curl\r\n\r\n").await;
    // HTTP/1.0 has no such requirement: the target names the host.
    let app = spawn_app(seed_rules().build().unwrap()).await;
    exchange(
        app.addr,
        b"GET http://example.com/ HTTP/1.0\r\nUser-Agent: curl\r\n\r\n",
    )
    .await
    .assert_ok_http10();
}

#[tokio::test]
async fn non_utf8_and_oversized_hosts_are_dropped() {
    assert_dropped(b"GET / HTTP/1.1\r\nHost: exa\xffmple.com\r\nUser-Agent: curl\r\n\r\n").await;
    let long = format!("{}.example.com", "a".repeat(10_000));
    assert_dropped(&request("GET", "/", Some(&long), UA, &[])).await;
    // 63-character labels are legal; a 254-character name is not.
    let name_254 = format!("{}.example.com", "a".repeat(242));
    assert_eq!(name_254.len(), 254);
    assert_dropped(&request("GET", "/", Some(&name_254), UA, &[])).await;
}

#[tokio::test]
async fn hostile_user_agents_are_still_judged() {
    let long = format!("{}masscan", "x".repeat(64 * 1024));
    assert_dropped(&request("GET", "/", Some("example.com"), Some(&long), &[])).await;
    assert_dropped(b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: \xfe\xffZGRAB\r\n\r\n")
        .await;
    // Two User-Agent headers: one denied value is enough.
    assert_dropped(&request(
        "GET",
        "/",
        Some("example.com"),
        UA,
        &[("User-Agent", "masscan")],
    ))
    .await;
}

#[tokio::test]
async fn malformed_forwarding_headers_never_pick_the_client() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    // Garbage left of a denied address is not walked past; a denied
    // address hidden behind garbage is not reached either, and the request
    // is judged on the last verified hop (the loopback proxy).
    for (xff, allowed) in [
        ("198.51.100.7, garbage", true),
        ("garbage, 198.51.100.7", false),
        ("198.51.100.7:99999", true),
        ("[198.51.100.7]", true),
    ] {
        let out = exchange(
            app.addr,
            &request(
                "GET",
                "/",
                Some("example.com"),
                UA,
                &[("X-Forwarded-For", xff)],
            ),
        )
        .await;
        if allowed {
            out.assert_ok();
        } else {
            out.assert_dropped(Close::Fin);
        }
    }
    // Bytes that are not UTF-8 make an entry garbage too.
    exchange(
        app.addr,
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\nX-Forwarded-For: \xff198.51.100.7\r\nConnection: close\r\n\r\n",
    )
    .await
    .assert_ok();
}

/// RFC 9113 §8.3.1: a Host header that names another authority than
/// `:authority` makes an HTTP/2 request malformed; it is dropped.
#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let app = spawn_app(seed_rules().build().unwrap()).await;
    let send = |host: Option<&'static str>| async move {
        let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .uri("http://example.com/")
            .header("user-agent", "curl");
        if let Some(host) = host {
            req = req.header("host", host);
        }
        sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
    };
    assert_eq!(send(None).await.unwrap().status(), 200);
    assert_eq!(send(Some("example.com")).await.unwrap().status(), 200);
    assert!(
        send(Some("evil.com")).await.is_err(),
        "a contradicting Host must drop"
    );
    assert_eq!(app.hits(), 2);
}

/// `GET http://allowed/` with `Host: internal-admin.corp`: judged on the
/// target it would be served, while the handler reads the Host header.
/// The disagreement is a rule of its own.
#[tokio::test]
async fn an_absolute_target_and_a_host_that_disagree_are_dropped() {
    let layer = NoResponseLayer::builder()
        .server_name("allowed.example")
        .build()
        .unwrap();
    let app = spawn_app(layer.clone()).await;
    exchange(
        app.addr,
        b"GET http://allowed.example/ HTTP/1.1\r\nHost: internal-admin.corp\r\nUser-Agent: curl\r\n\r\n",
    )
    .await
    .assert_dropped(Close::Fin);
    assert_eq!(layer.stats().rule("host_mismatch").unwrap().dropped, 1);
    exchange(
        app.addr,
        b"GET http://allowed.example/ HTTP/1.1\r\nHost: allowed.example\r\nUser-Agent: curl\r\nConnection: close\r\n\r\n",
    )
    .await
    .assert_ok();
    assert_eq!(app.hits(), 1);
}
