//! Every rule, judged on a real loopback socket: a dropped request receives
//! zero bytes and a clean FIN, and the handler is never called.

use crate::common;

use common::{Close, exchange, get, request, seed_rules, spawn_app};
use tokio::io::AsyncWriteExt;
use tower_no_response::{NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

#[tokio::test]
async fn allowed_requests_are_served() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    for host in ["example.com", "EXAMPLE.com.", "www.example.com:8444"] {
        exchange(app.addr, &get(Some(host), UA)).await.assert_ok();
    }
    exchange(
        app.addr,
        &get(Some("example.com"), Some("python-requests/2.31")),
    )
    .await
    .assert_ok();
    assert_eq!(app.hits(), 4);
}

#[tokio::test]
async fn missing_host_is_dropped() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    exchange(app.addr, &get(None, UA))
        .await
        .assert_dropped(Close::Fin);
    exchange(app.addr, b"GET / HTTP/1.0\r\nUser-Agent: curl\r\n\r\n")
        .await
        .assert_dropped(Close::Fin);
    exchange(app.addr, &get(Some(""), UA))
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn unknown_and_invalid_hosts_are_dropped() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    for host in [
        "evil.com",
        "example.com.evil.com",
        "notexample.com",
        "example.com@evil",
    ] {
        exchange(app.addr, &get(Some(host), UA))
            .await
            .assert_dropped(Close::Fin);
    }
    // Two Host headers.
    exchange(
        app.addr,
        &request("GET", "/", Some("example.com"), UA, &[("Host", "evil.com")]),
    )
    .await
    .assert_dropped(Close::Fin);
    // An absolute-form target names the host (RFC 9112), and a Host header
    // naming another is a mismatch either way round: the handler would read
    // one host while the rules judged the other.
    exchange(
        app.addr,
        &request("GET", "http://evil.com/", Some("example.com"), UA, &[]),
    )
    .await
    .assert_dropped(Close::Fin);
    exchange(
        app.addr,
        &request("GET", "http://example.com/", Some("evil.com"), UA, &[]),
    )
    .await
    .assert_dropped(Close::Fin);
    // When they agree, the request is served.
    exchange(
        app.addr,
        &request("GET", "http://example.com/", Some("Example.com"), UA, &[]),
    )
    .await
    .assert_ok();
    assert_eq!(app.hits(), 1);
}

#[tokio::test]
async fn wildcard_and_apex_names() {
    let layer = NoResponseLayer::builder()
        .server_names(["*.wild.test", ".both.test"])
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    for ok in ["a.wild.test", "a.b.wild.test", "both.test", "x.both.test"] {
        exchange(app.addr, &get(Some(ok), UA)).await.assert_ok();
    }
    for bad in ["wild.test", "evilwild.test", "xboth.test"] {
        exchange(app.addr, &get(Some(bad), UA))
            .await
            .assert_dropped(Close::Fin);
    }
}

#[tokio::test]
async fn user_agents_are_judged() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    for ua in [
        Some("masscan/1.3"),
        Some("Mozilla/5.0 zgrab/0.x"),
        Some("MASSCAN"),
        Some(""),
        None,
    ] {
        exchange(app.addr, &get(Some("example.com"), ua))
            .await
            .assert_dropped(Close::Fin);
    }
    assert_eq!(app.hits(), 0);
}

#[tokio::test]
async fn client_ip_rules_use_the_real_ip_behind_trusted_proxies() {
    let app = spawn_app(seed_rules().build().unwrap()).await;
    let via = |xff: &'static str| {
        request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", xff)],
        )
    };
    for denied in [
        "198.51.100.9",
        "203.0.113.7",
        "192.0.2.1, 198.51.100.9",
        "::ffff:198.51.100.9",
        "203.0.113.7:4711, 127.0.0.2",
    ] {
        exchange(app.addr, &via(denied))
            .await
            .assert_dropped(Close::Fin);
    }
    // The rightmost untrusted entry is the client; what it claims about
    // others to its left does not matter.
    exchange(app.addr, &via("198.51.100.9, 192.0.2.1"))
        .await
        .assert_ok();
    exchange(app.addr, &via("203.0.113.8")).await.assert_ok();
    assert_eq!(app.hits(), 2);
}

#[tokio::test]
async fn headers_from_untrusted_peers_are_ignored() {
    // Only 10.0.0.0/8 is trusted, so the loopback peer's header is ignored.
    let layer = NoResponseLayer::builder()
        .trusted_proxy("10.0.0.0/8")
        .deny_ip("198.51.100.0/24")
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    let spoofed = request(
        "GET",
        "/",
        Some("example.com"),
        UA,
        &[("X-Forwarded-For", "198.51.100.9")],
    );
    exchange(app.addr, &spoofed).await.assert_ok();
    // And the socket peer itself is judged.
    let deny_loopback = NoResponseLayer::builder()
        .trusted_proxy("10.0.0.0/8")
        .deny_ip("127.0.0.0/8")
        .build()
        .unwrap();
    let app = spawn_app(deny_loopback).await;
    exchange(
        app.addr,
        &request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", "192.0.2.1")],
        ),
    )
    .await
    .assert_dropped(Close::Fin);
}

#[tokio::test]
async fn allow_listed_ranges_then_deny_all() {
    let layer = NoResponseLayer::builder()
        .allow_ip("192.0.2.0/24")
        .deny_ip("all")
        .trusted_proxy("127.0.0.1")
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    let from = |ip: &'static str| {
        request(
            "GET",
            "/",
            Some("example.com"),
            UA,
            &[("X-Forwarded-For", ip)],
        )
    };
    exchange(app.addr, &from("192.0.2.77")).await.assert_ok();
    exchange(app.addr, &from("8.8.8.8"))
        .await
        .assert_dropped(Close::Fin);
    exchange(app.addr, &from("2001:db8::1"))
        .await
        .assert_dropped(Close::Fin);
    // The peer itself (127.0.0.1, trusted but not allowed) is denied too.
    exchange(app.addr, &get(Some("example.com"), UA))
        .await
        .assert_dropped(Close::Fin);
}

/// A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; an IPv4 deny
/// rule must still catch them.
#[tokio::test]
async fn ipv4_mapped_peers_match_ipv4_rules() {
    let Ok(tcp) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("skipped: cannot bind a dual-stack [::] listener on this machine");
        return;
    };
    let port = tcp.local_addr().unwrap().port();
    let layer = NoResponseLayer::builder()
        .deny_ip("127.0.0.1")
        .build()
        .unwrap();
    let listener = layer.listener(tcp);
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = common::counting_router(hits.clone()).layer(layer);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        eprintln!("skipped: the [::] listener does not accept IPv4 (bindv6only=1)");
        return;
    };
    stream
        .write_all(&get(Some("example.com"), UA))
        .await
        .unwrap();
    common::read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// `rate=10r/s burst=20 nodelay` admits 21 back-to-back requests and drops
/// the next 19, as nginx does. A per-minute rate keeps refills out of the
/// test; the refill side is unit-tested with a stepped clock.
#[tokio::test]
async fn rate_limit_admits_the_burst_then_drops() {
    let layer = seed_rules()
        .rate_limit(RateLimit::per_minute(1).burst(20))
        .build()
        .unwrap();
    let app = spawn_app(layer).await;
    // Requests other rules drop do not use up the budget.
    for _ in 0..30 {
        exchange(app.addr, &get(Some("example.com"), Some("masscan")))
            .await
            .assert_dropped(Close::Fin);
    }
    let mut passed = 0;
    let mut dropped = 0;
    for _ in 0..40 {
        let outcome = exchange(app.addr, &get(Some("example.com"), UA)).await;
        if outcome.bytes.is_empty() {
            outcome.assert_dropped(Close::Fin);
            dropped += 1;
        } else {
            outcome.assert_ok();
            passed += 1;
        }
    }
    assert_eq!((passed, dropped), (21, 19));
    assert_eq!(app.hits(), 21);
}

/// What a browser sends behind a proxy: more header names than the rules
/// walk, so they look their three headers up instead. Judged the same as a
/// script's few headers, for the innocent and the attacker alike.
#[tokio::test]
async fn a_browsers_many_headers_are_judged_like_a_scripts_few() {
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let browser = |host: &str, agent: &str, client: &str, more: &[(&'static str, &'static str)]| {
        let mut extra = vec![
            (
                "Sec-Ch-Ua",
                "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
            ),
            ("Sec-Ch-Ua-Mobile", "?0"),
            ("Sec-Ch-Ua-Platform", "\"Windows\""),
            ("Upgrade-Insecure-Requests", "1"),
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ("Sec-Fetch-Site", "none"),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-User", "?1"),
            ("Sec-Fetch-Dest", "document"),
            ("Accept-Encoding", "gzip, deflate, br, zstd"),
            ("Accept-Language", "en-US,en;q=0.9"),
            ("Cookie", "session=0123456789abcdef"),
        ];
        extra.extend_from_slice(more);
        let mut with_client = extra.clone();
        with_client.push(("X-Forwarded-For", client));
        request("GET", "/", Some(host), Some(agent), &with_client)
    };
    let app = spawn_app(seed_rules().build().unwrap()).await;
    // The innocent: a browser behind the trusted proxy, by either name.
    for host in ["example.com", "WWW.example.com"] {
        exchange(app.addr, &browser(host, CHROME, "192.0.2.1", &[]))
            .await
            .assert_ok();
    }
    assert_eq!(app.hits(), 2);
    // The same many headers carrying what each rule drops.
    for attack in [
        browser("evil.com", CHROME, "192.0.2.1", &[]),
        browser("example.com", "masscan/1.3", "192.0.2.1", &[]),
        browser("example.com", CHROME, "203.0.113.7", &[]),
        browser("example.com", CHROME, "192.0.2.1", &[("Host", "evil.com")]),
    ] {
        exchange(app.addr, &attack).await.assert_dropped(Close::Fin);
    }
    assert_eq!(app.hits(), 2);
}
