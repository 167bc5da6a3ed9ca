//! The CrowdSec bouncer against a real Local API (Debian's `crowdsec`,
//! offline, on loopback), driven with the real `cscli`: decisions added
//! while the app runs drop their clients with zero bytes within a pull,
//! through the trusted proxy and by range; deleted ones lift; other types
//! get their answer; an outage keeps the decisions, which refresh once the
//! LAPI is back; a banned direct peer is refused at accept. Against them,
//! innocent clients beside the banned ones, and everyone behind a proxy
//! that a decision names, are served.
//!
//! Without `crowdsec` on the machine the test says so and passes, unless
//! `TNR_REQUIRE_CROWDSEC` is set, as in CI, where it fails.

#[path = "common/certs.rs"]
mod certs;
mod common;
#[path = "common/crowdsec_lapi.rs"]
mod crowdsec_lapi;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Close, Outcome, PATIENCE, exchange, read_until_close, request};
use crowdsec_lapi::Lapi;
use tokio::net::{TcpSocket, TcpStream};
use tower_no_response::NoResponseLayer;
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::crowdsec::Bouncer;

const PULL: Duration = Duration::from_millis(300);

/// Every 444 event of this process: its rule, client and detail.
static EVENTS: std::sync::Mutex<Vec<(String, String, String)>> = std::sync::Mutex::new(Vec::new());

fn record_events() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        struct Recorder;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                #[derive(Default)]
                struct Fields(String, String, String);
                impl tracing::field::Visit for Fields {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        let v = format!("{v:?}");
                        match f.name() {
                            "rule" => self.0 = v,
                            "client_ip" => self.1 = v,
                            "detail" => self.2 = v,
                            _ => {}
                        }
                    }
                }
                if event.metadata().target() == "tower_no_response::drop" {
                    let mut fields = Fields::default();
                    event.record(&mut fields);
                    EVENTS.lock().unwrap().push((fields.0, fields.1, fields.2));
                }
            }
        }
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Whether a 444 event of `rule` for `client` carried `detail`.
fn logged(rule: &str, client: &str, detail: &str) -> bool {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .any(|(r, c, d)| r == rule && c == client && d == detail)
}

/// A bouncer of `lapi` pulling every [`PULL`], once its first pull has
/// answered.
async fn pulled(lapi: &Lapi) -> Bouncer {
    let bouncer = Bouncer::builder(lapi.url(), lapi.key.clone())
        .pull_every(PULL)
        .start()
        .unwrap();
    tokio::time::timeout(PATIENCE, bouncer.first_pull())
        .await
        .expect("the first pull answers");
    bouncer
}

fn via_proxy(client: &str) -> Vec<u8> {
    request(
        "GET",
        "/",
        Some("example.com"),
        Some("curl/8"),
        &[("X-Forwarded-For", client)],
    )
}

async fn ask(addr: SocketAddr, client: &str) -> Outcome {
    exchange(addr, &via_proxy(client)).await
}

fn dropped(out: &Outcome) -> bool {
    out.bytes.is_empty() && out.close == Close::Fin
}

/// Asks until `check` holds, and returns how long that took; panics after
/// the test's patience.
async fn until(addr: SocketAddr, client: &str, check: fn(&Outcome) -> bool) -> Duration {
    let started = tokio::time::Instant::now();
    loop {
        let out = ask(addr, client).await;
        if check(&out) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{client}: still {}",
            out.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn served(out: &Outcome) -> bool {
    out.text().starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_drop_their_clients_and_spare_everyone_else() {
    record_events();
    let Some(mut lapi) = Lapi::start() else {
        return;
    };
    lapi.ban("--ip", "192.0.2.7", "crowdsecurity/http-probing");
    // Not the seed rules' denied 198.51.100.0/24: this range is CrowdSec's
    // alone.
    lapi.ban(
        "--range",
        "192.0.2.128/25",
        "crowdsecurity/http-bad-user-agent",
    );
    lapi.decide("captcha", "192.0.2.9");
    // The proxy itself is named by a decision: everyone behind it is still
    // judged by their own address.
    lapi.ban("--ip", "127.0.0.1", "crowdsecurity/ssh-bf");

    let bouncer = pulled(&lapi).await;
    let layer = common::seed_rules().crowdsec(&bouncer).build().unwrap();
    let app = common::spawn_app(layer.clone()).await;
    assert_eq!(bouncer.decisions(), 4, "{bouncer:?}");

    ask(app.addr, "192.0.2.7").await.assert_dropped(Close::Fin);
    assert!(logged(
        "crowdsec",
        "192.0.2.7",
        "crowdsecurity/http-probing"
    ));
    ask(app.addr, "192.0.2.200")
        .await
        .assert_dropped(Close::Fin);
    let other = ask(app.addr, "192.0.2.9").await;
    assert!(other.text().starts_with("HTTP/1.1 403"), "{}", other.text());
    assert!(logged(
        "crowdsec_other",
        "192.0.2.9",
        "manual 'captcha' from 'tnr-test'"
    ));
    for innocent in ["192.0.2.8", "192.0.2.127", "192.0.3.128", "2001:db8::1"] {
        ask(app.addr, innocent).await.assert_ok();
    }
    // The proxy's own request, with no forwarding header: the proxy is an
    // edge, which a decision on it does not drop.
    exchange(app.addr, &common::get(Some("example.com"), Some("curl/8")))
        .await
        .assert_ok();

    // Added while the app runs: dropped within a pull or two.
    lapi.ban("--ip", "192.0.2.8", "crowdsecurity/http-crawl-non_statics");
    let took = until(app.addr, "192.0.2.8", dropped).await;
    assert!(took < PULL * 4 + Duration::from_secs(1), "{took:?}");
    // Deleted: served again.
    lapi.delete_ip("192.0.2.7");
    until(app.addr, "192.0.2.7", served).await;

    // An outage keeps what is in force.
    lapi.kill();
    tokio::time::sleep(PULL * 4).await;
    ask(app.addr, "192.0.2.8").await.assert_dropped(Close::Fin);
    ask(app.addr, "192.0.2.130")
        .await
        .assert_dropped(Close::Fin);
    ask(app.addr, "192.0.2.7").await.assert_ok();
    // Back: a decision made since applies, the old ones hold.
    lapi.restart();
    lapi.ban("--ip", "192.0.2.10", "crowdsecurity/http-probing");
    until(app.addr, "192.0.2.10", dropped).await;
    ask(app.addr, "192.0.2.8").await.assert_dropped(Close::Fin);
    ask(app.addr, "192.0.2.11").await.assert_ok();

    let stats = layer.stats();
    let rule = stats.rule("crowdsec").expect("the rule is listed");
    assert!(rule.dropped >= 7, "{stats:?}");
    assert_eq!(stats.rule("crowdsec_other").unwrap().responded, 1);
}

/// A client that connects directly and is banned is refused at accept,
/// before it sends a byte; one that is not stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_direct_peer_is_refused_at_accept() {
    record_events();
    let Some(lapi) = Lapi::start() else {
        return;
    };
    lapi.ban("--ip", "127.0.0.9", "crowdsecurity/ssh-bf");
    let bouncer = pulled(&lapi).await;
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .crowdsec(&bouncer)
        .build()
        .unwrap();
    let app = common::spawn_app(layer.clone()).await;
    let connect_from = |source: &'static str| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(app.addr).await.unwrap()
    };
    let mut banned = connect_from("127.0.0.9").await;
    // No header timeout is set: only a refusal at accept closes it.
    read_until_close(&mut banned)
        .await
        .assert_dropped(Close::Fin);
    let mut innocent: TcpStream = connect_from("127.0.0.8").await;
    let waited =
        tokio::time::timeout(Duration::from_millis(500), read_until_close(&mut innocent)).await;
    assert!(waited.is_err(), "an innocent peer was closed: {waited:?}");
    assert_eq!(layer.stats().rule("crowdsec").unwrap().dropped, 1);
    assert_eq!(app.hits(), 0);
    assert!(logged("crowdsec", "127.0.0.9", "crowdsecurity/ssh-bf"));
}

/// With the rule in dry-run nothing is refused at accept or dropped: the
/// matches are counted as would-drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dry_run_nobody_is_refused() {
    let Some(lapi) = Lapi::start() else {
        return;
    };
    lapi.ban("--ip", "192.0.2.7", "crowdsecurity/http-probing");
    let bouncer = pulled(&lapi).await;
    let layer = common::seed_rules()
        .crowdsec(&bouncer)
        .dry_run_rule("crowdsec")
        .build()
        .unwrap();
    let app = common::spawn_app(layer.clone()).await;
    ask(app.addr, "192.0.2.7").await.assert_ok();
    assert_eq!(layer.stats().rule("crowdsec").unwrap().would_drop, 1);
}

/// A ban the crate's own ban list makes is reported to the LAPI as a
/// decision, which `cscli` lists and another replica's bouncer, which never
/// saw the client, enforces; an IPv6 client's ban covers its /64 there as
/// here. Its neighbours are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_made_here_is_reported_and_enforced_by_every_bouncer() {
    let Some(lapi) = Lapi::start() else {
        return;
    };
    let (machine, password) = lapi.machine();
    let bans = BanList::new(BanPolicy::new(
        2,
        Duration::from_secs(60),
        Duration::from_secs(600),
    ));
    let bouncer = Bouncer::builder(lapi.url(), lapi.key.clone())
        .pull_every(PULL)
        .report_bans_as(machine, password)
        .start()
        .unwrap();
    bouncer.report_bans(&bans).unwrap();
    assert!(bouncer.report_bans(&bans).is_err(), "reported twice");
    let unreporting = Bouncer::builder(lapi.url(), lapi.key.clone())
        .start()
        .unwrap();
    assert!(
        unreporting
            .report_bans(&BanList::new(BanPolicy::new(
                1,
                Duration::from_secs(1),
                Duration::from_secs(1)
            )))
            .is_err()
    );

    let layer = common::seed_rules()
        .ban_list(bans.clone())
        .crowdsec(&bouncer)
        .build()
        .unwrap();
    let app = common::spawn_app(layer).await;
    let bad_host = |client: &str| {
        request(
            "GET",
            "/",
            Some("evil.com"),
            Some("curl/8"),
            &[("X-Forwarded-For", client)],
        )
    };
    for client in ["192.0.2.50", "2001:db8:5:6::1"] {
        for _ in 0..2 {
            exchange(app.addr, &bad_host(client))
                .await
                .assert_dropped(Close::Fin);
        }
        assert!(bans.is_banned(client.parse().unwrap()), "{client}");
    }

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let listed = lapi.decisions();
        let ours = |value: &str| {
            listed
                .iter()
                .any(|(origin, v)| origin == "tower-no-response" && v == value)
        };
        if ours("192.0.2.50") && ours("2001:db8:5:6::/64") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reported: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let replica = Bouncer::builder(lapi.url(), lapi.add_bouncer("tnr-replica"))
        .pull_every(PULL)
        .start()
        .unwrap();
    tokio::time::timeout(PATIENCE, replica.first_pull())
        .await
        .expect("the replica's first pull answers");
    let other = common::spawn_app(common::seed_rules().crowdsec(&replica).build().unwrap()).await;
    ask(other.addr, "192.0.2.50")
        .await
        .assert_dropped(Close::Fin);
    ask(other.addr, "2001:db8:5:6::99")
        .await
        .assert_dropped(Close::Fin);
    ask(other.addr, "192.0.2.51").await.assert_ok();
    ask(other.addr, "2001:db8:5:7::1").await.assert_ok();
}

/// Over HTTPS, the bouncer checks the LAPI's certificate against its CA and
/// may identify itself with a client certificate in the bouncers' unit
/// instead of a key. A certificate outside that unit, or a LAPI whose
/// certificate a stranger's CA must vouch for, pulls nothing, and everyone
/// is served meanwhile.
#[cfg(feature = "crowdsec-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_a_client_certificate_stands_for_the_key() {
    let tls = crowdsec_lapi::TlsFiles::make();
    let Some(lapi) = Lapi::start_tls(&tls) else {
        return;
    };
    assert!(lapi.url().starts_with("https://"));
    lapi.ban("--ip", "192.0.2.7", "crowdsecurity/http-probing");

    let by_certificate = Bouncer::builder(lapi.url(), "")
        .ca_file(&tls.ca)
        .client_cert_files(&tls.bouncer_cert, &tls.bouncer_key)
        .pull_every(PULL)
        .start()
        .unwrap();
    let by_key = Bouncer::builder(lapi.url(), lapi.key.clone())
        .ca_file(&tls.ca)
        .pull_every(PULL)
        .start()
        .unwrap();
    for bouncer in [&by_certificate, &by_key] {
        tokio::time::timeout(PATIENCE, bouncer.first_pull())
            .await
            .expect("the first pull over https answers");
        assert_eq!(bouncer.decisions(), 1);
    }
    let app = common::spawn_app(
        common::seed_rules()
            .crowdsec(&by_certificate)
            .build()
            .unwrap(),
    )
    .await;
    ask(app.addr, "192.0.2.7").await.assert_dropped(Close::Fin);
    ask(app.addr, "192.0.2.8").await.assert_ok();

    let outsider = Bouncer::builder(lapi.url(), "")
        .ca_file(&tls.ca)
        .client_cert_files(&tls.outsider_cert, &tls.outsider_key)
        .pull_every(PULL)
        .start()
        .unwrap();
    let misled = Bouncer::builder(lapi.url(), lapi.key.clone())
        .ca_file(&tls.stranger_ca)
        .pull_every(PULL)
        .start()
        .unwrap();
    tokio::time::sleep(PULL * 4).await;
    assert!(!outsider.has_pulled() && !misled.has_pulled());
    let app = common::spawn_app(common::seed_rules().crowdsec(&misled).build().unwrap()).await;
    ask(app.addr, "192.0.2.7").await.assert_ok();

    // Files are checked when the bouncer starts.
    let missing = Bouncer::builder(lapi.url(), "k")
        .ca_file("/nonexistent/ca.pem")
        .start();
    let error = missing.unwrap_err().to_string();
    assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    let plain = Bouncer::builder("http://127.0.0.1:1/", "k")
        .ca_file(&tls.ca)
        .start();
    assert!(plain.unwrap_err().to_string().contains("https://"));
}

/// With the kernel filter on, CrowdSec's bans on addresses and ranges
/// reach the kernel: those peers get no handshake at all, a decision added
/// later follows within a pull, and a trusted proxy that a decision names
/// is still let in, for the clients behind it.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_filter_refuses_crowdsec_bans_before_the_handshake() {
    let Some(lapi) = Lapi::start() else {
        return;
    };
    lapi.ban("--ip", "127.0.0.9", "crowdsecurity/ssh-bf");
    lapi.ban("--range", "127.0.1.0/24", "crowdsecurity/ssh-bf");
    lapi.ban("--ip", "127.0.0.5", "crowdsecurity/ssh-bf");
    let bouncer = pulled(&lapi).await;
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .trusted_proxy("127.0.0.5")
        .crowdsec(&bouncer)
        .build()
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let filter = layer.kernel_filter(&tcp).unwrap();
    assert!(filter.loaded().v4_ranges >= 2, "{:?}", filter.loaded());
    common::serve_on(
        layer.listener(tcp),
        axum::Router::new()
            .fallback(|| async { "ok" })
            .layer(layer.clone()),
    );
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let handshake = |source: [u8; 4]| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
            .await
            .ok()
            .map(|connected| connected.expect("an answered connect succeeds"))
    };
    assert!(handshake([127, 0, 0, 9]).await.is_none(), "banned address");
    assert!(handshake([127, 0, 1, 7]).await.is_none(), "banned range");
    let mut innocent = handshake([127, 0, 0, 8]).await.expect("an innocent peer");
    tokio::io::AsyncWriteExt::write_all(
        &mut innocent,
        &common::get(Some("example.com"), Some("curl/8")),
    )
    .await
    .unwrap();
    read_until_close(&mut innocent).await.assert_ok();
    let mut proxy = handshake([127, 0, 0, 5]).await.expect("the trusted proxy");
    tokio::io::AsyncWriteExt::write_all(&mut proxy, &via_proxy("192.0.2.1"))
        .await
        .unwrap();
    read_until_close(&mut proxy).await.assert_ok();

    lapi.ban("--ip", "127.0.0.10", "crowdsecurity/ssh-bf");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while handshake([127, 0, 0, 10]).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new ban never reached the kernel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A LAPI that is down when the app starts: by default everyone is served
/// until the first pull answers; with `BeforeFirstPull::Drop` every request
/// is dropped until then. Once the LAPI is up, both apply its decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_first_pull_the_chosen_policy_holds() {
    use tower_no_response::crowdsec::BeforeFirstPull;

    let Some(mut lapi) = Lapi::start() else {
        return;
    };
    lapi.ban("--ip", "192.0.2.7", "crowdsecurity/http-probing");
    lapi.kill();
    let serving = Bouncer::builder(lapi.url(), lapi.key.clone())
        .pull_every(PULL)
        .start()
        .unwrap();
    let closed = Bouncer::builder(lapi.url(), lapi.key.clone())
        .pull_every(PULL)
        .before_first_pull(BeforeFirstPull::Drop)
        .start()
        .unwrap();
    let open_app =
        common::spawn_app(common::seed_rules().crowdsec(&serving).build().unwrap()).await;
    let closed_app =
        common::spawn_app(common::seed_rules().crowdsec(&closed).build().unwrap()).await;
    tokio::time::sleep(PULL * 3).await;
    assert!(!serving.has_pulled() && !closed.has_pulled());
    ask(open_app.addr, "192.0.2.7").await.assert_ok();
    ask(open_app.addr, "192.0.2.8").await.assert_ok();
    ask(closed_app.addr, "192.0.2.8")
        .await
        .assert_dropped(Close::Fin);

    lapi.restart();
    for bouncer in [&serving, &closed] {
        tokio::time::timeout(PATIENCE, bouncer.first_pull())
            .await
            .expect("the first pull answers once the LAPI is up");
    }
    for app in [&open_app, &closed_app] {
        ask(app.addr, "192.0.2.7").await.assert_dropped(Close::Fin);
        ask(app.addr, "192.0.2.8").await.assert_ok();
    }
}

/// CrowdSec keeps IPv4 and IPv6 apart: IPv6 ranges that cover the
/// IPv4-mapped block (`::/8` from bogon lists, `::ffff:0:0/96`, `::/0`)
/// cover no IPv4 client, as `cscli` itself answers, and the layer drops
/// none, at accept or behind the proxy, while an IPv6 client in them is
/// dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_range_drops_no_ipv4_client() {
    record_events();
    let Some(lapi) = Lapi::start() else {
        return;
    };
    for range in ["::/8", "::ffff:0:0/96", "::/0"] {
        lapi.ban("--range", range, "crowdsecurity/bogons");
    }
    // What CrowdSec itself says of an IPv4 client.
    let listed = lapi.cscli(&["decisions", "list", "--ip", "127.0.0.1", "-o", "raw"]);
    assert!(
        !listed.contains("bogons"),
        "cscli covers 127.0.0.1: {listed}"
    );
    let bouncer = pulled(&lapi).await;
    let layer = common::seed_rules().crowdsec(&bouncer).build().unwrap();
    let app = common::spawn_app(layer.clone()).await;
    assert_eq!(bouncer.decisions(), 3, "{bouncer:?}");
    // A direct IPv4 client, and IPv4 clients behind the proxy.
    let direct =
        common::exchange(app.addr, &common::get(Some("example.com"), Some("curl/8"))).await;
    direct.assert_ok();
    for client in ["192.0.2.1", "10.1.2.3", "203.0.113.200"] {
        ask(app.addr, client).await.assert_ok();
    }
    // An IPv6 client the ranges do cover.
    ask(app.addr, "2001:db8::1")
        .await
        .assert_dropped(Close::Fin);
    assert!(logged("crowdsec", "2001:db8::1", "crowdsecurity/bogons"));
    assert_eq!(app.hits(), 4);
}
