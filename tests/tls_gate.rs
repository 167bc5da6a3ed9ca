//! The TLS gate on real sockets: real clients (`openssl s_client`, curl,
//! rustls) and hand-made hostile ClientHellos against the crate's serve
//! loop, and the gate in a plain tokio-rustls accept loop. Every byte the
//! server sends is counted by a relay between client and server, which also
//! tells a FIN from an RST.
//!
//! Without `openssl` or `curl` on the machine their tests say so and pass,
//! unless `TNR_REQUIRE_TLS_TOOLS` is set, as in CI, where they fail.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Close, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tower_no_response::NoResponseLayer;
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::tls::{ClientHello, Ja4, SniRefusal, TlsGate};

// --- the server ------------------------------------------------------------

/// The certificate for the served names, made once per test binary, and
/// its files for the command-line clients.
struct Pki {
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
    cert_file: PathBuf,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec![
            "example.com".to_owned(),
            "www.example.com".to_owned(),
        ])
        .unwrap();
        let dir = std::env::temp_dir().join(format!("tnr-tls-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert_file = dir.join("cert.pem");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        Pki {
            cert: cert.cert.der().clone(),
            key: cert.signing_key.serialize_der(),
            cert_file,
        }
    })
}

fn server_config() -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki().key.clone()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki().cert.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn client_config(sni: bool) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki().cert.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_sni = sni;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The served names, a trusted proxy at 127.0.0.2 (clients come from
/// 127.0.0.1), and a short header timeout.
fn layer_with(bans: Option<BanList>) -> NoResponseLayer {
    let builder = NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .trusted_proxies(["127.0.0.2"])
        .header_timeout(Duration::from_secs(2));
    match bans {
        Some(bans) => builder.ban_list(bans),
        None => builder,
    }
    .build()
    .unwrap()
}

/// `/` answers `ok`; `/hello` the ClientHello the gate handed the app.
fn app(layer: &NoResponseLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/hello",
            get(|hello: Option<axum::Extension<ClientHello>>| async move {
                match hello {
                    Some(axum::Extension(hello)) => format!(
                        "sni={} ja4={} alpn={}",
                        String::from_utf8_lossy(hello.server_name().unwrap_or(b"-")),
                        hello.ja4(),
                        hello
                            .alpn_protocols()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    None => "no ClientHello".to_owned(),
                }
            }),
        )
        .layer(layer.clone())
}

/// The serve loop over TLS, with `gate` (the layer's own when `None`).
async fn serve(layer: &NoResponseLayer, gate: Option<TlsGate>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut serve = layer.serve(listener, app(layer)).tls(server_config());
    if let Some(gate) = gate {
        serve = serve.tls_gate(Some(gate));
    }
    tokio::spawn(serve.run());
    addr
}

// --- what the client saw ---------------------------------------------------

/// Everything the server sent to one client, and how it closed.
#[derive(Debug)]
struct Seen {
    bytes: Vec<u8>,
    close: Close,
    /// The client's identity toward the server: the peer in the log.
    peer: Peer,
    /// The client's socket, held so that its port stays its own until the
    /// test has read the log.
    _held: Option<tokio::net::tcp::OwnedReadHalf>,
}

/// A client as the log names it. Tests in this file run at once, each
/// with its own server, and the kernel may hand the same ephemeral port to
/// connections toward different servers: so the port is reserved by an
/// explicit bind, and only lines written since the connect count.
#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    /// The log's length when the client connected.
    since: usize,
}

/// A connection to `server` from `source` on a port no other socket
/// shares while this one lives, and its identity in the log.
async fn connect_from(source: IpAddr, server: SocketAddr) -> (TcpStream, Peer) {
    let since = log().lock().unwrap().len();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let addr = stream.local_addr().unwrap();
    (stream, Peer { addr, since })
}

async fn connect(server: SocketAddr) -> (TcpStream, Peer) {
    connect_from(IpAddr::from([127, 0, 0, 1]), server).await
}

/// A relay for one connection between a client program and `server`: it
/// passes every byte both ways and records what the server sent.
async fn relay(server: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let (upstream, peer) = connect(server).await;
        let (mut client_read, mut client_write) = client.into_split();
        let (mut up_read, mut up_write) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
            let _ = up_write.shutdown().await;
        });
        let mut bytes = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let close = tokio::time::timeout(PATIENCE * 2, async {
            loop {
                match up_read.read(&mut buf).await {
                    Ok(0) => return Close::Fin,
                    Ok(n) => {
                        bytes.extend_from_slice(&buf[..n]);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            // The client left; keep counting what comes.
                        }
                    }
                    Err(_) => return Close::Reset,
                }
            }
        })
        .await
        .expect("the server neither closed nor was left by the client");
        let _ = client_write.shutdown().await;
        Seen {
            bytes,
            close,
            peer,
            _held: Some(up_read),
        }
    });
    (addr, task)
}

/// Sends `wire` from 127.0.0.1 in pieces of `piece` bytes, a pause between
/// them, and records every byte the server sends until it closes.
async fn send_raw(server: SocketAddr, wire: &[u8], piece: usize, pause: Duration) -> Seen {
    let (mut stream, peer) = connect(server).await;
    stream.set_nodelay(true).unwrap();
    for chunk in wire.chunks(piece.max(1)) {
        if stream.write_all(chunk).await.is_err() {
            break;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let outcome = common::read_until_close(&mut stream).await;
    Seen {
        bytes: outcome.bytes,
        close: outcome.close,
        peer,
        _held: Some(stream.into_split().0),
    }
}

// --- the log ---------------------------------------------------------------

/// Every event, as fmt writes it, from every thread: the serve loop's
/// tasks run on the runtime's workers.
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .init();
        log
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The 444 lines logged for connections from `peer`, waiting a moment for
/// one to appear.
async fn drops_of(peer: Peer) -> Vec<String> {
    for _ in 0..50 {
        let lines = logged_lines(peer, "action=drop ");
        if !lines.is_empty() {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// The lines about `peer` since it connected that contain `needle`.
fn logged_lines(peer: Peer, needle: &str) -> Vec<String> {
    let name = format!("peer_addr={} ", peer.addr);
    let log = log().lock().unwrap();
    String::from_utf8_lossy(&log[peer.since..])
        .lines()
        .filter(|l| l.contains(&name) && l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Every drop logged, from any test, that contains `needle`.
fn logged_drops(needle: &str) -> Vec<String> {
    let log = log().lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(needle) && l.contains("action=drop "))
        .map(str::to_owned)
        .collect()
}

#[track_caller]
fn assert_zero_bytes(seen: &Seen, what: &str) {
    assert!(
        seen.bytes.is_empty(),
        "{what}: the server wrote {} bytes: {:02x?}",
        seen.bytes.len(),
        &seen.bytes[..seen.bytes.len().min(32)]
    );
}

// --- real clients ----------------------------------------------------------

/// Whether a command-line tool is here; when it is not, a test that needs
/// it passes with a note, unless CI requires the tools.
fn tool(name: &str) -> bool {
    let found = std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || std::process::Command::new(name)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TNR_REQUIRE_TLS_TOOLS").is_none(),
            "TNR_REQUIRE_TLS_TOOLS is set but `{name}` is not installed"
        );
        eprintln!("skipped: `{name}` is not installed");
    }
    found
}

/// `openssl s_client` through a relay, with `args`, sending `input` once
/// connected; its output and what the server sent.
async fn s_client(server: SocketAddr, args: &[&str], input: &str) -> (String, Seen) {
    let (relay_addr, seen) = relay(server).await;
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(relay_addr.to_string())
        .args(args)
        .args(["-ign_eof", "-CAfile"])
        .arg(&pki().cert_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(PATIENCE * 2, child.wait_with_output())
        .await
        .expect("s_client finished")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, seen.await.unwrap())
}

/// curl through a relay: its exit code, body and what the server sent.
async fn curl(server: SocketAddr, host: &str, path: &str, extra: &[&str]) -> (i32, String, Seen) {
    let (relay_addr, seen) = relay(server).await;
    let port = relay_addr.port();
    let url = format!("https://{host}:{port}{path}");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15", "--cacert"])
        .arg(&pki().cert_file)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(&url)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        seen.await.unwrap(),
    )
}

/// A custom rule reads the ClientHello from the request's extensions: a
/// client whose User-Agent claims a browser over a TLS stack that is not
/// one is dropped with zero bytes; the same client, honest, is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_rule_sees_the_client_hello() {
    if !tool("curl") {
        return;
    }
    log();
    // curl's fingerprints, one per ALPN offer.
    let probe = serve(&layer_with(None), None).await;
    let mut curl_ja4s: Vec<Ja4> = Vec::new();
    for alpn in ["--http1.1", "--http2"] {
        let (code, body, _) = curl(probe, "example.com", "/hello", &[alpn]).await;
        assert_eq!(code, 0, "{body}");
        let ja4 = body.split(' ').nth(1).unwrap().trim_start_matches("ja4=");
        curl_ja4s.push(ja4.parse().unwrap());
    }

    let layer = NoResponseLayer::builder()
        .server_names(["example.com"])
        .custom_rule("browser_claim_mismatch", move |head| {
            let claims_chrome = head
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|ua| ua.to_str().ok())
                .is_some_and(|ua| ua.contains("Chrome/"));
            let hello = head.extensions.get::<ClientHello>();
            claims_chrome && hello.is_some_and(|hello| curl_ja4s.contains(&hello.ja4()))
        })
        .build()
        .unwrap();
    let server = serve(&layer, None).await;
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
                  (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36";
    // After the handshake the client hears nothing more: over HTTP/1.1 an
    // empty reply (curl's 52), over HTTP/2 the stream reset with no
    // response head (curl's 92).
    for (alpn, silent) in [("--http1.1", 52), ("--http2", 92)] {
        let (code, body, seen) = curl(server, "example.com", "/", &[alpn, "-A", chrome]).await;
        assert_eq!((code, body.as_str()), (silent, ""), "{alpn}");
        let drops = drops_of(seen.peer).await;
        assert!(
            drops[0].contains("rule=browser_claim_mismatch"),
            "{drops:?}"
        );
        let (code, body, seen) = curl(server, "example.com", "/", &[alpn]).await;
        assert_eq!((code, body.as_str()), (0, "ok"), "{alpn}");
        assert!(drops_of(seen.peer).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_by_address_or_unknown_name_gets_nothing_and_the_served_name_a_200() {
    if !tool("openssl") {
        return;
    }
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;

    // By address: s_client sends no server name for an IP literal.
    let (text, seen) = s_client(server, &[], "").await;
    assert_zero_bytes(&seen, "by address");
    assert!(text.contains("SSL handshake has read 0 bytes"), "{text}");
    assert!(text.contains("no peer certificate available"), "{text}");
    let drops = drops_of(seen.peer).await;
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert!(drops[0].contains("rule=tls_sni_missing"), "{drops:?}");
    assert!(drops[0].contains(" sni=- "), "{drops:?}");
    assert!(drops[0].contains(" ja4=t13i"), "{drops:?}");

    let (text, seen) = s_client(server, &["-servername", "scan.example.net"], "").await;
    assert_zero_bytes(&seen, "unknown name");
    assert!(text.contains("SSL handshake has read 0 bytes"), "{text}");
    let drops = drops_of(seen.peer).await;
    assert!(drops[0].contains("rule=tls_sni_unknown"), "{drops:?}");
    assert!(drops[0].contains(" sni=scan.example.net "), "{drops:?}");

    // The served name: the certificate, verified, then a 200.
    let request = "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
    let (text, seen) = s_client(server, &["-servername", "example.com"], request).await;
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(seen.bytes.len() > 500, "only {} bytes", seen.bytes.len());
    assert!(drops_of(seen.peer).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unrecognized_name_alert_is_all_that_is_sent_when_chosen() {
    if !tool("openssl") {
        return;
    }
    log();
    let layer = layer_with(None);
    let gate = layer
        .tls_gate()
        .sni_refusal(SniRefusal::UnrecognizedNameAlert)
        .build()
        .unwrap();
    let server = serve(&layer, Some(gate)).await;
    let (text, seen) = s_client(server, &["-servername", "scan.example.net"], "").await;
    assert_eq!(seen.bytes, [21, 3, 3, 0, 2, 2, 112], "one alert record");
    assert_eq!(seen.close, Close::Fin);
    assert!(text.contains("unrecognized name"), "{text}");
    assert!(text.contains("no peer certificate available"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_by_name_is_served_over_both_alpns_and_a_denied_fingerprint_gets_nothing() {
    if !tool("curl") {
        return;
    }
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;

    let (code, body, _) = curl(server, "example.com", "/hello", &["--http1.1"]).await;
    assert_eq!(code, 0, "{body}");
    assert!(body.starts_with("sni=example.com ja4=t1"), "{body}");
    assert!(body.ends_with("alpn=http/1.1"), "{body}");
    let (code, body, _) = curl(server, "www.example.com", "/hello", &["--http2"]).await;
    assert_eq!(code, 0, "{body}");
    assert!(body.starts_with("sni=www.example.com "), "{body}");
    assert!(body.ends_with("alpn=h2,http/1.1"), "{body}");
    let ja4 = body
        .split(' ')
        .nth(1)
        .unwrap()
        .trim_start_matches("ja4=")
        .to_owned();

    // By address: curl sends no server name.
    let (code, _, seen) = curl(server, "127.0.0.1", "/", &[]).await;
    assert_ne!(code, 0);
    assert_zero_bytes(&seen, "curl by address");

    // curl's own fingerprint, denied: nothing, and the log names it.
    let gate = layer
        .tls_gate()
        .deny_tls_fingerprint([ja4.as_str()])
        .build()
        .unwrap();
    let denying = serve(&layer, Some(gate)).await;
    let (code, _, seen) = curl(denying, "www.example.com", "/", &["--http2"]).await;
    assert_ne!(code, 0);
    assert_zero_bytes(&seen, "denied fingerprint");
    let drops = drops_of(seen.peer).await;
    assert!(drops[0].contains("rule=tls_fingerprint"), "{drops:?}");
    assert!(drops[0].ends_with(&format!(" ja4={ja4}")), "{drops:?}");

    // The same pattern with an allow exception for curl's `a` part, and in
    // dry-run: served.
    let a = ja4.split('_').next().unwrap();
    let gate = layer
        .tls_gate()
        .deny_tls_fingerprint([ja4.as_str()])
        .allow_tls_fingerprint([format!("{a}_*_*")])
        .build()
        .unwrap();
    let excepted = serve(&layer, Some(gate)).await;
    let (code, body, _) = curl(excepted, "www.example.com", "/", &[]).await;
    assert_eq!((code, body.as_str()), (0, "ok"));
    let gate = layer
        .tls_gate()
        .deny_tls_fingerprint([ja4.as_str()])
        .dry_run(true)
        .build()
        .unwrap();
    let trial = serve(&layer, Some(gate)).await;
    let (code, body, seen) = curl(trial, "www.example.com", "/", &[]).await;
    assert_eq!((code, body.as_str()), (0, "ok"));
    let would = logged_lines(seen.peer, "action=drop ");
    assert!(would.is_empty(), "a dry-run match is no drop: {would:?}");
    let trial_lines = logged_lines(seen.peer, "action=would_drop");
    assert!(
        trial_lines
            .iter()
            .any(|l| l.contains("rule=tls_fingerprint")),
        "no would_drop line: {trial_lines:?}"
    );
}

// --- innocent traffic ------------------------------------------------------

/// A TLS client with rustls, from `source`, with or without a server name.
async fn rustls_get(server: SocketAddr, source: IpAddr, sni: bool, host: &str) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(sni));
    let name = ServerName::try_from("example.com").unwrap();
    let mut tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A load balancer that re-encrypts to the origin often sends no server
/// name, and has its own fingerprint: as a trusted proxy it is never judged
/// at the ClientHello, and the Host rules judge what it carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_without_a_server_name_is_served() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    let proxy: IpAddr = "127.0.0.2".parse().unwrap();
    let text = rustls_get(server, proxy, false, "example.com").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    // The Host rule still judges each request the proxy carries.
    let text = rustls_get(server, proxy, false, "scan.example.net").await;
    assert!(text.is_empty(), "{text}");
    // The same client, not a proxy, is refused at the ClientHello.
    let client: IpAddr = "127.0.0.1".parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(client, 0)).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(false));
    let refused = connector
        .connect(ServerName::try_from("example.com").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
}

/// A client that opens a connection and sends nothing, as a browser's
/// unused preconnection, is closed in order after the timeout and not
/// logged; one that sent part of a ClientHello is a `header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_closed_quietly_and_a_stalled_hello_times_out() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    let started = std::time::Instant::now();
    let silent = send_raw(server, &[], 1, Duration::ZERO).await;
    assert_zero_bytes(&silent, "silent");
    assert_eq!(silent.close, Close::Fin);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert!(drops_of(silent.peer).await.is_empty());

    let stalled = send_raw(
        server,
        &hello(Some("example.com"))[..40],
        40,
        Duration::ZERO,
    )
    .await;
    assert_zero_bytes(&stalled, "stalled");
    let drops = drops_of(stalled.peer).await;
    assert!(drops[0].contains("rule=header_timeout"), "{drops:?}");
}

// --- hostile ClientHellos --------------------------------------------------

/// A real ClientHello from rustls, with a server name or none.
fn hello(name: Option<&str>) -> Vec<u8> {
    let config = client_config(name.is_some());
    let server_name = ServerName::try_from(name.unwrap_or("example.com").to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

/// `wire` (one record holding a ClientHello) with its first extension
/// sent a second time, last: a hello rustls answers with an alert.
fn first_extension_twice(wire: &[u8]) -> Vec<u8> {
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + usize::from(wire[at]);
    at += 2 + usize::from(u16::from_be_bytes([wire[at], wire[at + 1]]));
    at += 1 + usize::from(wire[at]);
    let extensions = at + 2;
    let first_len = usize::from(u16::from_be_bytes([
        wire[extensions + 2],
        wire[extensions + 3],
    ]));
    let first = wire[extensions..extensions + 4 + first_len].to_vec();
    let mut out = wire.to_vec();
    out.extend_from_slice(&first);
    let grow = |bytes: &mut [u8]| {
        let n = bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b)) + first.len();
        for (i, b) in bytes.iter_mut().rev().enumerate() {
            *b = (n >> (8 * i)) as u8;
        }
    };
    grow(&mut out[at..at + 2]);
    grow(&mut out[6..9]);
    grow(&mut out[3..5]);
    out
}

/// `wire`'s handshake message re-cut into records of `size` bytes.
fn refragment(wire: &[u8], size: usize) -> Vec<u8> {
    let message = &wire[5..];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_hellos_are_judged_whole() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    for (size, piece) in [(8, 7), (50, 1), (300, 100)] {
        // The served name, cut into records and sent in pieces: the
        // handshake goes on, and the server's first bytes are a handshake
        // record.
        let good = refragment(&hello(Some("example.com")), size);
        let mut stream = TcpStream::connect(server).await.unwrap();
        stream.set_nodelay(true).unwrap();
        for chunk in good.chunks(piece) {
            stream.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut first = [0u8; 1];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut first))
            .await
            .expect("a ServerHello")
            .unwrap();
        assert_eq!(first[0], 22, "records of {size}, pieces of {piece}");

        let bad = refragment(&hello(Some("scan.example.net")), size);
        let seen = send_raw(server, &bad, piece, Duration::from_millis(1)).await;
        assert_zero_bytes(&seen, "fragmented unknown name");
        assert!(drops_of(seen.peer).await[0].contains("rule=tls_sni_unknown"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_first_bytes_get_nothing() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    let good = hello(Some("example.com"));
    // Longer than any ClientHello rustls takes: a message of 65,536 bytes.
    let oversized = vec![22, 3, 1, 0, 4, 1, 1, 0, 0];
    let mut twice_unknown = hello(Some("scan.example.net"));
    twice_unknown.extend_from_slice(&hello(Some("scan.example.net")));
    let sslv2 = [
        0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
    ];
    let mut one_byte_records = Vec::new();
    for b in &good[5..] {
        one_byte_records.extend_from_slice(&[22, 3, 1, 0, 1, *b]);
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
            "tls_client_hello_invalid",
        ),
        ("SSLv2-style", sslv2.to_vec(), "tls_client_hello_invalid"),
        (
            "garbage",
            (0..=255u8).rev().collect(),
            "tls_client_hello_invalid",
        ),
        ("oversized", oversized, "tls_client_hello_invalid"),
        (
            "zero-length record",
            vec![22, 3, 1, 0, 0],
            "tls_client_hello_invalid",
        ),
        (
            "not a ClientHello",
            vec![22, 3, 3, 0, 4, 2, 0, 0, 0],
            "tls_client_hello_invalid",
        ),
        (
            "a byte per record",
            one_byte_records,
            "tls_client_hello_invalid",
        ),
        ("two unknown hellos", twice_unknown, "tls_sni_unknown"),
        (
            "an extension twice",
            first_extension_twice(&good),
            "tls_client_hello_invalid",
        ),
    ];
    for (what, wire, rule) in cases {
        let seen = send_raw(server, &wire, 4096, Duration::ZERO).await;
        assert_zero_bytes(&seen, what);
        let drops = drops_of(seen.peer).await;
        assert_eq!(drops.len(), 1, "{what}: {drops:?}");
        assert!(
            drops[0].contains(&format!("rule={rule} ")),
            "{what}: {drops:?}"
        );
    }
    // Truncated, then closed by the client: nothing sent, nothing logged.
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(&good[..good.len() / 2]).await.unwrap();
    stream.shutdown().await.unwrap();
    let outcome = common::read_until_close(&mut stream).await;
    assert!(outcome.bytes.is_empty());
}

/// Many refused ClientHellos at once, on a multi-thread runtime, each
/// client recording every byte: not one is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refusals_write_nothing() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    let wires = [
        hello(Some("scan.example.net")),
        hello(None),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    let mut tasks = Vec::new();
    for n in 0..300 {
        let wire = wires[n % wires.len()].clone();
        tasks.push(tokio::spawn(async move {
            send_raw(server, &wire, 4096, Duration::ZERO).await
        }));
    }
    for task in tasks {
        let seen = task.await.unwrap();
        assert_zero_bytes(&seen, "concurrent");
    }
    // And the served name still gets through.
    let text = rustls_get(server, "127.0.0.1".parse().unwrap(), true, "example.com").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
}

/// A client banned after it connected, before its ClientHello, is refused
/// at the ClientHello; each refusal by a client's own doing strikes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_apply_at_the_client_hello_and_refusals_strike() {
    log();
    let bans = BanList::new(BanPolicy::new(
        2,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let layer = layer_with(Some(bans.clone()));
    let server = serve(&layer, None).await;
    let source: IpAddr = "127.0.0.3".parse().unwrap();
    let connect = || async { connect_from(source, server).await.0 };
    // A malformed hello does not strike: a plain-HTTP request sent to the
    // TLS port by mistake looks like that.
    for _ in 0..3 {
        let mut stream = connect().await;
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(common::read_until_close(&mut stream).await.bytes.is_empty());
    }
    assert!(!bans.is_banned(source));
    // Two unknown names do: banned.
    for _ in 0..2 {
        let mut stream = connect().await;
        stream
            .write_all(&hello(Some("scan.example.net")))
            .await
            .unwrap();
        assert!(common::read_until_close(&mut stream).await.bytes.is_empty());
    }
    assert!(bans.is_banned(source));
    bans.unban(source);

    // Connected, then banned, then the served name: refused as banned.
    let (mut stream, peer) = connect_from(source, server).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bans.ban(source, Duration::from_secs(60));
    stream.write_all(&hello(Some("example.com"))).await.unwrap();
    assert!(common::read_until_close(&mut stream).await.bytes.is_empty());
    let drops = drops_of(peer).await;
    assert!(drops[0].contains("rule=banned"), "{drops:?}");
}

// --- the gate in a plain tokio-rustls loop ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_in_a_tokio_rustls_accept_loop() {
    log();
    let layer = layer_with(None);
    let gate = layer.tls_gate().build().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let app = app(&layer);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (gate, acceptor, app) = (gate.clone(), acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Some(admitted) = gate.admit(tcp, peer).await else {
                    return;
                };
                let (stream, hello) = admitted.into_parts();
                let info = tower_no_response::connection::ConnectionInfo::new(
                    peer,
                    stream.handle().clone(),
                );
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |mut request| {
                    request.extensions_mut().insert(hello.clone());
                    request.extensions_mut().insert(info.clone());
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let text = rustls_get(server, "127.0.0.1".parse().unwrap(), true, "example.com").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let seen = send_raw(server, &hello(None), 4096, Duration::ZERO).await;
    assert_zero_bytes(&seen, "no server name");
    assert!(drops_of(seen.peer).await[0].contains("rule=tls_sni_missing"));
}

// --- a browser -------------------------------------------------------------

/// Debian's Chromium, headless, loads a page by name over TLS through the
/// gate (h2, its own fingerprint and extensions, GREASE and all), and not
/// one of its connections is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_by_name_through_the_gate() {
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
        return;
    };
    log();
    let layer = NoResponseLayer::builder()
        .server_names(["browser.example.com"])
        .header_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = serve(&layer, None).await;
    let profile = std::env::temp_dir().join(format!(
        "tnr-tls-chromium-{}-{}",
        std::process::id(),
        server.port()
    ));
    let run = tokio::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            // The certificate is the test's own.
            "--ignore-certificate-errors",
            "--host-resolver-rules=MAP browser.example.com 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args([
            "--dump-dom",
            &format!("https://browser.example.com:{}/hello", server.port()),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium loads the page within 60 s")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("sni=browser.example.com ja4=t13d") && dom.contains("alpn=h2,http/1.1"),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = logged_drops("sni=browser.example.com");
    assert!(refused.is_empty(), "{refused:?}");
}

/// The first request inside TLS is judged before hyper has the connection,
/// as on plaintext: a middleware outside the layer never sees a request a
/// rule drops, and the client gets no record after the handshake, not even
/// a close_notify. Without early judging, the layer drops it as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_inside_tls_is_judged_before_hyper() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    log();
    for early in [true, false] {
        let layer = layer_with(None);
        let outside = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&outside);
        let app = tower::ServiceBuilder::new()
            .map_request(move |r: http::Request<hyper::body::Incoming>| {
                seen.fetch_add(1, Ordering::SeqCst);
                r
            })
            .service(app(&layer));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(
            layer
                .serve(listener, app)
                .tls(server_config())
                .judge_early(early)
                .run(),
        );
        let text = rustls_get(server, "127.0.0.1".parse().unwrap(), true, "example.com").await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        let text = rustls_get(
            server,
            "127.0.0.1".parse().unwrap(),
            true,
            "scan.example.net",
        )
        .await;
        assert!(text.is_empty(), "early {early}: {text}");
        let expected = if early { 1 } else { 2 };
        assert_eq!(outside.load(Ordering::SeqCst), expected, "early {early}");
    }
}

/// Behind an L4 balancer that sends the PROXY protocol, the gate judges the
/// client the header names, before any TLS byte is written; the balancer
/// itself is never refused.
#[cfg(feature = "proxy-protocol")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_balancer_the_gate_judges_the_client_its_header_names() {
    let balancer: IpAddr = "127.0.0.9".parse().unwrap();
    let minute = Duration::from_secs(60);
    let bans = BanList::new(BanPolicy::new(1, minute, minute));
    bans.ban("192.0.2.66".parse().unwrap(), minute);
    let layer = NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .proxy_protocol_from("127.0.0.9")
        .ban_list(bans)
        .header_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = serve(&layer, None).await;
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").into_bytes();
    // A banned client and one whose hello names no served name: nothing.
    for (client, name) in [("192.0.2.66", "example.com"), ("192.0.2.67", "other.test")] {
        let (mut tcp, _) = connect_from(balancer, server).await;
        let wire = [header(client), hello(Some(name))].concat();
        let _ = tcp.write_all(&wire).await;
        let outcome = common::read_until_close(&mut tcp).await;
        assert!(outcome.bytes.is_empty(), "{client}: {:?}", outcome.text());
    }
    // A client the rules let through completes its handshake and is served.
    let (mut tcp, _) = connect_from(balancer, server).await;
    tcp.write_all(&header("192.0.2.68")).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(true));
    let name = ServerName::try_from("example.com").unwrap();
    let mut tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("the handshake completes behind the balancer");
    tls.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200 OK") && response.ends_with("ok"),
        "{response}"
    );
    // The refusals name the clients, never the balancer.
    let lines = logged_drops("");
    for client in ["192.0.2.66", "192.0.2.67"] {
        assert!(
            lines.iter().any(|l| l.contains(client)),
            "{client}: {lines:?}"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("127.0.0.9")), "{lines:?}");
}

/// A request dropped inside TLS names its connection's ClientHello in the
/// 444 event, as the gate's own refusals do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_inside_tls_names_the_client_hello() {
    log();
    let layer = layer_with(None);
    let server = serve(&layer, None).await;
    let response = rustls_get(server, "127.0.0.1".parse().unwrap(), true, "unserved.test").await;
    assert!(response.is_empty(), "{response}");
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = logged_drops("host=unserved.test");
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("sni=example.com") && l.contains("ja4=t13")),
        "{lines:?}"
    );
}
