//! Innocent long-lived and kept-alive traffic, on both connection sides
//! (`axum::serve` with the layer's listener, and the crate's serve loop),
//! with the demo's full rule set and a header timeout far shorter than every pause
//! the clients make: none of it is dropped, and no 444 is counted. Against
//! them, Slowloris (nothing sent, half a head, a head trickled a byte at a
//! time) is still dropped at the header timeout with not one byte.

mod common;
#[path = "common/h2_frames.rs"]
mod h2_frames;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use common::{Close, PATIENCE, find, read_until_close};
use http::Request;
use http_body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower_no_response::{NoResponseBody, NoResponseLayer};

/// Far shorter than every pause an innocent client makes below.
const HEADER_TIMEOUT: Duration = Duration::from_millis(800);
/// Every pause: three header timeouts.
const PAUSE: Duration = Duration::from_millis(2400);
/// Longer than every pause an innocent client makes within a body, shorter
/// than the pauses below that are the server's own.
const BODY_TIMEOUT: Duration = Duration::from_millis(2000);

#[derive(Debug, Clone, Copy)]
enum Side {
    AxumServe,
    ServeLoop,
    /// `axum::serve` with the layer wrapped around the whole `Router`, its
    /// body handed to axum with `Body::from`.
    AxumAround,
}

struct App {
    addr: SocketAddr,
    layer: NoResponseLayer,
    /// The drop events logged before this app started, which are not its.
    since: usize,
}

impl App {
    /// Every 444 logged for a connection from `client` (its local
    /// address), under any rule, and every one the layer counted.
    fn drops_of(&self, client: SocketAddr) -> usize {
        let counted: u64 = self.layer.stats().rules.iter().map(|r| r.dropped).sum();
        let logged = drop_events().into_iter().skip(self.since);
        logged.filter(|e| e.peer == client).count() + counted as usize
    }
}

/// A drop logged, as the log line says it.
#[derive(Debug, Clone)]
struct Logged {
    rule: String,
    peer: SocketAddr,
}

static EVENTS: std::sync::Mutex<Vec<Logged>> = std::sync::Mutex::new(Vec::new());

fn drop_events() -> Vec<Logged> {
    EVENTS.lock().unwrap().clone()
}

/// Every drop event of this process, for whichever test's client it names:
/// the runtime's threads log them, so the recorder is global.
fn record_drops() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

struct Recorder;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            status: String,
            rule: String,
            peer: String,
            reason: String,
        }
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                let v = format!("{v:?}");
                match f.name() {
                    "status" => self.status = v,
                    "rule" => self.rule = v,
                    "peer_addr" => self.peer = v,
                    "reason" => self.reason = v,
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The send timeout's close, which is no 444, as `rule=send_timeout`.
        if fields.reason.contains("send_timeout") {
            if let Ok(peer) = fields.peer.parse() {
                EVENTS.lock().unwrap().push(Logged {
                    rule: "send_timeout".into(),
                    peer,
                });
            }
            return;
        }
        if event.metadata().target() != "tower_no_response::drop" {
            return;
        }
        if fields.status == "444" {
            if let Ok(peer) = fields.peer.parse() {
                EVENTS.lock().unwrap().push(Logged {
                    rule: fields.rule,
                    peer,
                });
            }
        }
    }
}

/// Waits until `n` header-timeout drops of these clients are logged: the
/// event may be written just after the close reaches the client.
async fn header_timeouts_logged(app: &App, clients: &[SocketAddr], n: usize) {
    drops_logged(app, "header_timeout", clients, n).await;
}

/// Waits until `n` drops of these clients by `rule` are logged, and no more.
async fn drops_logged(app: &App, rule: &str, clients: &[SocketAddr], n: usize) {
    let count = || {
        drop_events()
            .iter()
            .skip(app.since)
            .filter(|e| e.rule == rule && clients.contains(&e.peer))
            .count()
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} logged",
            count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(), n);
}

/// A response body fed from a channel, for events sent with pauses.
struct Events(mpsc::Receiver<Bytes>);

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}

fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/events",
            get(|| async {
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(async move {
                    for n in 0..3 {
                        if n > 0 {
                            tokio::time::sleep(PAUSE).await;
                        }
                        let _ = tx.send(Bytes::from(format!("data: {n}\n\n"))).await;
                    }
                });
                (
                    [("content-type", "text/event-stream")],
                    Body::new(Events(rx)),
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(PAUSE).await;
                "slow"
            }),
        )
        .route(
            "/upload",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/busy",
            post(|mut body: Body| async move {
                // Reads the first part, is busy elsewhere for longer than
                // the body timeout, then reads the rest.
                use http_body_util::BodyExt;
                let mut len = 0;
                let mut first = true;
                while let Some(Ok(frame)) = body.frame().await {
                    len += frame.data_ref().map_or(0, Bytes::len);
                    if std::mem::take(&mut first) {
                        tokio::time::sleep(PAUSE).await;
                    }
                }
                len.to_string()
            }),
        )
        .route("/big", get(|| async { vec![b'x'; BIG] }))
        .route("/echo", get(upgrade_to_echo))
}

const BIG: usize = 16 << 20;

/// Answers `101` and echoes whatever the upgraded connection carries.
async fn upgrade_to_echo(mut request: Request<Body>) -> http::Response<Body> {
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    http::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

async fn start(side: Side, keepalive: Option<Duration>) -> App {
    // The demo's full rule set: the seed's rules and its rate limit.
    let rules = common::seed_rules()
        .rate_limit(tower_no_response::RateLimit::per_second(10).burst(20))
        .header_timeout(HEADER_TIMEOUT)
        .body_timeout(BODY_TIMEOUT);
    let rules = match keepalive {
        Some(k) => rules.keepalive_timeout(k),
        None => rules,
    };
    on_loopback(side, rules).await
}

/// [`start_with`] on a fresh loopback port.
async fn on_loopback(side: Side, rules: tower_no_response::NoResponseLayerBuilder) -> App {
    start_with(side, rules, TcpListener::bind("127.0.0.1:0").await.unwrap()).await
}

/// Serves `routes()`, with a fallback that answers anything else `200`,
/// behind the layer `rules` make, on `tcp`.
async fn start_with(
    side: Side,
    rules: tower_no_response::NoResponseLayerBuilder,
    tcp: TcpListener,
) -> App {
    record_drops();
    let since = drop_events().len();
    let layer = rules.build().unwrap();
    let routes = routes().fallback(|| async { "ok" });
    let addr = tcp.local_addr().unwrap();
    match side {
        Side::AxumServe => common::serve_on(layer.listener(tcp), routes.layer(layer.clone())),
        Side::ServeLoop => {
            tokio::spawn(layer.serve(tcp, routes.layer(layer.clone())).run());
        }
        Side::AxumAround => {
            let app = tower::ServiceBuilder::new()
                .map_response(|r: http::Response<NoResponseBody<Body>>| r.map(Body::from))
                .layer(layer.clone())
                .service(routes);
            let app = axum::ServiceExt::<Request<Body>>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app);
            let listener = layer.listener(tcp);
            tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        }
    }
    App { addr, layer, since }
}

const SIDES: [Side; 2] = [Side::AxumServe, Side::ServeLoop];
/// [`SIDES`] and the layer wrapped around the `Router`, for the responses
/// whose end the layer reports.
const PLACEMENTS: [Side; 3] = [Side::AxumServe, Side::ServeLoop, Side::AxumAround];

/// A kept-alive client that reads responses one at a time, whatever the
/// reads split.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("the server went quiet")
            .expect("read");
        assert!(
            n > 0,
            "closed after {} bytes, which begin {:?}",
            self.buf.len(),
            String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// One response head, as text.
    async fn head(&mut self) -> String {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill().await;
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    /// One whole response with a `content-length`: its head and body.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let head = self.head().await;
        let len = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no content-length in {head}"));
        let body = self.take(len).await;
        (head, body)
    }

    /// Reads one chunk of a chunked body (its data).
    async fn chunk(&mut self) -> Vec<u8> {
        let line = loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                break line;
            }
            self.fill().await;
        };
        let len = usize::from_str_radix(line.trim(), 16).unwrap();
        let data = self.take(len + 2).await;
        data[..len].to_vec()
    }
}

/// `Expect: 100-continue`, then 30 bytes of body sent in three pieces over
/// one and a half pauses: answered with the body's length.
async fn slow_upload_after_continue(client: &mut Client, path: &str, side: Side) {
    client
        .send(&request(
            "POST",
            path,
            "Content-Length: 30\r\nExpect: 100-continue\r\n",
        ))
        .await;
    assert_status(&client.head().await, 100);
    for _ in 0..3 {
        tokio::time::sleep(PAUSE / 2).await;
        client.send(&[b'u'; 10]).await;
    }
    let (head, body) = client.response().await;
    assert_status(&head, 200);
    assert_eq!(body, b"30", "{side:?}");
}

/// An upgrade to `path`'s echo, then two words each after a pause longer
/// than the header timeout, each echoed. Returns the client's address.
async fn quiet_echo(addr: SocketAddr, path: &str, side: Side) -> SocketAddr {
    let mut client = Client::connect(addr).await;
    client
        .send(&request(
            "GET",
            path,
            "Connection: upgrade\r\nUpgrade: echo\r\n",
        ))
        .await;
    assert_status(&client.head().await, 101);
    for word in [&b"first"[..], b"after a pause"] {
        tokio::time::sleep(PAUSE).await;
        client.send(word).await;
        assert_eq!(client.take(word.len()).await, word, "{side:?}");
    }
    client.local()
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[track_caller]
fn assert_status(head: &str, status: u16) {
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}, got {head:?}"
    );
}

/// Server-sent events with pauses longer than the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_whatever_the_pause() {
    for side in PLACEMENTS {
        eprintln!("side {side:?}");
        // Pauses longer than the keep-alive timeout: a response in
        // progress is no idle connection.
        let app = start(side, Some(PAUSE / 2)).await;
        let mut client = Client::connect(app.addr).await;
        client.send(&request("GET", "/events", "")).await;
        assert_status(&client.head().await, 200);
        for n in 0..3 {
            let event = client.chunk().await;
            assert_eq!(event, format!("data: {n}\n\n").as_bytes(), "{side:?}");
        }
        assert!(client.chunk().await.is_empty(), "{side:?}: the last chunk");
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// An upgraded connection quiet for longer than the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_may_stay_quiet() {
    for side in SIDES {
        let app = start(side, None).await;
        let client = quiet_echo(app.addr, "/echo", side).await;
        assert_eq!(app.drops_of(client), 0, "{side:?}");
    }
}

/// `Expect: 100-continue`, then a body sent slowly, in pieces, over
/// several header timeouts: the `100` is no new wait for a head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_after_100_continue_is_received_whole() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut client = Client::connect(app.addr).await;
        slow_upload_after_continue(&mut client, "/upload", side).await;
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// Two pipelined requests, the first of which takes longer than the header
/// timeout to answer: the second's head, read meanwhile, is no slow head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_behind_a_slow_handler_are_answered() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut client = Client::connect(app.addr).await;
        let mut both = request("GET", "/slow", "");
        both.extend_from_slice(&request("GET", "/", ""));
        client.send(&both).await;
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"slow");
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"ok", "{side:?}");
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// A 16 MiB download whose reader pauses longer than the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_download_completes() {
    for side in PLACEMENTS {
        eprintln!("side {side:?}");
        let app = start(side, Some(PAUSE / 2)).await;
        let mut client = Client::connect(app.addr).await;
        client.send(&request("GET", "/big", "")).await;
        let head = client.head().await;
        assert_status(&head, 200);
        client.take(1 << 20).await;
        tokio::time::sleep(PAUSE).await;
        let rest = client.take(BIG - (1 << 20)).await;
        assert!(rest.iter().all(|&b| b == b'x'), "{side:?}");
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// A pooled client reuses its connection after idle gaps longer than the
/// header timeout (and shorter than the keep-alive timeout), for GETs and
/// for a POST, whose retry a client may not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_is_reused_after_idle_gaps() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut client = Client::connect(app.addr).await;
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(PAUSE).await;
            }
            client.send(&request("GET", "/", "")).await;
            let (head, body) = client.response().await;
            assert_status(&head, 200);
            assert_eq!(body, b"ok", "{side:?} round {round}");
        }
        tokio::time::sleep(PAUSE).await;
        let mut upload = request("POST", "/upload", "Content-Length: 5\r\n");
        upload.extend_from_slice(b"hello");
        client.send(&upload).await;
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"5", "{side:?}");
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// An idle kept-alive connection is closed at the keep-alive timeout, in
/// order: a FIN after its last response, no 444, nothing counted. A client
/// that begins a request and stalls is still a slow head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closes_quietly_at_the_keepalive_timeout() {
    let keepalive = Duration::from_millis(1500);
    for side in SIDES {
        let app = start(side, Some(keepalive)).await;
        let mut client = Client::connect(app.addr).await;
        client.send(&request("GET", "/", "")).await;
        let (head, _) = client.response().await;
        assert_status(&head, 200);
        let idle = tokio::time::Instant::now();
        let out = read_until_close(&mut client.stream).await;
        assert!(
            out.bytes.is_empty() && out.close == Close::Fin,
            "{side:?}: {out:?}"
        );
        let waited = idle.elapsed();
        assert!(
            waited >= keepalive - Duration::from_millis(100) && waited < PATIENCE,
            "{side:?}: closed after {waited:?}"
        );
        // Give a wrongly logged drop the time to be written.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            app.drops_of(client.local()),
            0,
            "{side:?}: an idle close is not a drop"
        );

        // After a response, the first byte of a request starts the header
        // timer: half a head is dropped with nothing written.
        let mut client = Client::connect(app.addr).await;
        client.send(&request("GET", "/", "")).await;
        client.response().await;
        client.send(b"GET / HTTP/1.1\r\nHost: exa").await;
        read_until_close(&mut client.stream)
            .await
            .assert_dropped(Close::Fin);
        header_timeouts_logged(&app, &[client.local()], 1).await;
    }
}

/// A browser opens connections ahead of need and may leave them unused
/// (`<link rel=preconnect>`, speculative sockets): nothing sent, or only
/// blank lines, or over HTTP/2 only the preface and settings. On both
/// sides such a connection is closed at the header timeout in order, with
/// not one byte of HTTP, and is neither logged nor counted as a drop, so a
/// log watcher never bans a visitor for its browser's preconnections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_preconnection_is_closed_in_order_and_not_logged() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut clients = Vec::new();
        for blank in [&b""[..], b"\r\n", b"\r\n\r\n"] {
            let mut stream = TcpStream::connect(app.addr).await.unwrap();
            stream.write_all(blank).await.unwrap();
            clients.push(stream);
        }
        let started = tokio::time::Instant::now();
        for stream in &mut clients {
            let local = stream.local_addr().unwrap();
            let out = read_until_close(stream).await;
            assert!(
                out.bytes.is_empty() && out.close == Close::Fin,
                "{side:?}: {out:?}"
            );
            // Give a wrongly logged drop the time to be written.
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(app.drops_of(local), 0, "{side:?}: {local} logged");
        }
        let waited = started.elapsed();
        assert!(
            waited >= HEADER_TIMEOUT - Duration::from_millis(100),
            "{side:?}: closed after {waited:?}"
        );

        // HTTP/2 with no stream: closed in order, with a GOAWAY, on both
        // sides.
        let stream = TcpStream::connect(app.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let started = tokio::time::Instant::now();
        let mut h2 = h2_frames::RawH2::over(stream).await;
        h2.wait_for_close().await;
        assert!(h2.closed && h2.goaway.is_some(), "{side:?}");
        let waited = started.elapsed();
        assert!(
            waited >= HEADER_TIMEOUT - Duration::from_millis(100)
                && waited < HEADER_TIMEOUT + Duration::from_secs(3),
            "{side:?}: {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(app.drops_of(local), 0, "{side:?}: HTTP/2 logged");
    }
}

/// Slowloris on both sides: nothing sent, half a head, a head trickled a
/// byte at a time. Each is closed at the header timeout, not one byte
/// written, many at once on a multi-thread runtime; the two that began a
/// head are logged as drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_still_dropped_at_the_header_timeout() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut clients = Vec::new();
        for n in 0..30 {
            let addr = app.addr;
            clients.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let local = stream.local_addr().unwrap();
                let started = tokio::time::Instant::now();
                let (mut reader, mut writer) = stream.split();
                let trickle = async {
                    match n % 3 {
                        0 => {}
                        1 => writer
                            .write_all(b"GET / HTTP/1.1\r\nHost: ex")
                            .await
                            .unwrap(),
                        _ => {
                            for &b in b"GET / HTTP/1.1\r\nHost: example.com\r\n" {
                                if writer.write_all(&[b]).await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(150)).await;
                            }
                        }
                    }
                    std::future::pending::<()>().await;
                };
                let mut bytes = Vec::new();
                let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut bytes));
                let closed = tokio::select! {
                    closed = read => closed.expect("never dropped"),
                    () = trickle => unreachable!(),
                };
                (local, n % 3, bytes, closed, started.elapsed())
            }));
        }
        let (mut begun, mut silent) = (Vec::new(), Vec::new());
        for client in clients {
            let (local, kind, bytes, closed, waited) = client.await.unwrap();
            assert!(
                bytes.is_empty(),
                "{side:?}: {}",
                String::from_utf8_lossy(&bytes)
            );
            match closed {
                Ok(_) => {}
                // A trickler may send a byte after the close, which the
                // kernel answers with a reset: never with data.
                Err(e) if kind == 2 => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                }
                Err(e) => panic!("{side:?}: {e}"),
            }
            assert!(
                waited >= HEADER_TIMEOUT - Duration::from_millis(100),
                "{waited:?}"
            );
            if kind == 0 {
                silent.push(local)
            } else {
                begun.push(local)
            }
        }
        // A client that began a head is logged; one that sent nothing is
        // closed as an unused connection is, and not logged.
        header_timeouts_logged(&app, &begun, 20).await;
        for client in silent {
            assert_eq!(app.drops_of(client), 0, "{side:?}: {client} logged");
        }
    }
}

/// An HTTP/2 connection idle between its streams for three header
/// timeouts, on both sides: each later stream is answered, the connection
/// stays open, and nothing is counted or logged as a drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_idle_between_streams_is_served() {
    for side in SIDES {
        let app = start(side, None).await;
        let stream = TcpStream::connect(app.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        for round in 0..3 {
            if round > 0 {
                tokio::time::sleep(PAUSE).await;
            }
            let request = Request::get("http://example.com/")
                .header("user-agent", "curl/8.5.0")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let response = sender
                .send_request(request)
                .await
                .unwrap_or_else(|e| panic!("{side:?}: stream {round}: {e}"));
            assert_eq!(response.status(), 200, "{side:?}: stream {round}");
        }
        assert!(!conn.is_finished(), "{side:?}: the connection was closed");
        assert_eq!(app.drops_of(local), 0, "{side:?}");
    }
}

/// A body trickled slower than the body timeout (R.U.D.Y.): dropped at the
/// body timeout after its last byte, with not one byte written, many at
/// once on a multi-thread runtime, on both sides, each logged once as
/// `body_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickle_is_dropped_at_the_body_timeout() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut clients = Vec::new();
        for n in 0..16 {
            let addr = app.addr;
            clients.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let local = stream.local_addr().unwrap();
                let (mut reader, mut writer) = stream.split();
                let framing = if n % 2 == 0 {
                    "Content-Length: 1000\r\n"
                } else {
                    "Transfer-Encoding: chunked\r\n"
                };
                writer
                    .write_all(&request("POST", "/upload", framing))
                    .await
                    .unwrap();
                let last_byte = std::sync::Mutex::new(tokio::time::Instant::now());
                let trickle = async {
                    let piece: &[u8] = if n % 2 == 0 { b"u" } else { b"1\r\nu\r\n" };
                    for _ in 0..10 {
                        if writer.write_all(piece).await.is_err() {
                            break;
                        }
                        *last_byte.lock().unwrap() = tokio::time::Instant::now();
                        tokio::time::sleep(BODY_TIMEOUT + BODY_TIMEOUT / 2).await;
                    }
                    std::future::pending::<()>().await;
                };
                let mut bytes = Vec::new();
                let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut bytes));
                let closed = tokio::select! {
                    closed = read => closed.expect("never dropped"),
                    () = trickle => unreachable!(),
                };
                let waited = last_byte.lock().unwrap().elapsed();
                (local, bytes, closed.is_ok(), waited)
            }));
        }
        let mut locals = Vec::new();
        for client in clients {
            let (local, bytes, fin, waited) = client.await.unwrap();
            assert!(
                bytes.is_empty(),
                "{side:?}: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(fin, "{side:?}: closed with FIN");
            assert!(
                waited >= BODY_TIMEOUT - Duration::from_millis(100),
                "{side:?}: dropped {waited:?} after its last byte"
            );
            locals.push(local);
        }
        drops_logged(&app, "body_timeout", &locals, locals.len()).await;
    }
}

/// An HTTP/2 request body that stalls: its stream is reset by the serve
/// loop, its connection closed under `axum::serve`, with no frame of a
/// response either way, logged as `body_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_stalls_is_dropped_at_the_body_timeout() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut h2 = h2_frames::RawH2::connect(app.addr).await;
        let local = h2.local();
        let head = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/upload"),
            (":authority", "example.com"),
            ("user-agent", "curl/8.5.0"),
            ("content-length", "100"),
        ];
        let (id, mut bytes) = h2.open(&head);
        bytes.extend(h2.data(id, b"0123456789", false));
        let started = tokio::time::Instant::now();
        h2.send(&bytes).await;
        h2.finish(&[id]).await;
        let frames = &h2.streams[&id];
        assert!(!frames.leaked(), "{side:?}: {frames:?}");
        match side {
            Side::ServeLoop => {
                assert!(frames.reset.is_some() && !h2.closed, "{side:?}: {frames:?}")
            }
            Side::AxumServe | Side::AxumAround => {
                assert!(h2.closed || frames.reset.is_some(), "{side:?}")
            }
        }
        assert!(started.elapsed() >= BODY_TIMEOUT - Duration::from_millis(100));
        drops_logged(&app, "body_timeout", &[local], 1).await;
    }
}

/// An upload that keeps sending, one byte at a time, for far longer than
/// the body timeout overall; and a handler busy elsewhere for longer than
/// the body timeout between two reads: both answered, nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_and_busy_handlers_are_not_cut() {
    for side in SIDES {
        let app = start(side, None).await;
        let mut client = Client::connect(app.addr).await;
        client
            .send(&request("POST", "/upload", "Content-Length: 20\r\n"))
            .await;
        let started = tokio::time::Instant::now();
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            client.send(b"u").await;
        }
        assert!(started.elapsed() > 2 * BODY_TIMEOUT);
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"20", "{side:?}");

        // The handler reads a part, then does not read for a PAUSE; the
        // client sends the rest meanwhile, and then nothing more.
        client
            .send(&request("POST", "/busy", "Content-Length: 30\r\n"))
            .await;
        client.send(&[b'b'; 10]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.send(&[b'b'; 20]).await;
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"30", "{side:?}");
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");
    }
}

/// One byte of a head every this long: shorter than the header timeout, so
/// a timer that each byte reset would never run out.
const TRICKLE: Duration = Duration::from_millis(300);

/// The rules for the hostile cases below: the seed's, with no rate limit
/// to stop sixty-five pipelined requests first.
fn trickle_rules() -> tower_no_response::NoResponseLayerBuilder {
    common::seed_rules().header_timeout(HEADER_TIMEOUT)
}

/// Sends `before`, reads `answers` whole responses to it, then trickles a
/// head that never ends, a byte at a time. Returns how long after the last
/// answer (or after connecting, with none) the server closed, and what it
/// sent after those answers.
async fn trickled(app: &App, before: &[u8], answers: usize) -> (Duration, common::Outcome) {
    let mut client = Client::connect(app.addr).await;
    let mut since = tokio::time::Instant::now();
    client.send(before).await;
    for _ in 0..answers {
        let (head, _) = client.response().await;
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        since = tokio::time::Instant::now();
    }
    let local = client.local();
    let Client { mut stream, buf } = client;
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    let (mut reader, mut writer) = stream.split();
    let trickle = async {
        for &b in b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(TRICKLE).await;
        }
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut bytes = Vec::new();
        let closed = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut bytes)).await;
        (closed, bytes)
    };
    let (closed, bytes) = tokio::select! {
        out = read => out,
        () = trickle => unreachable!(),
    };
    let waited = since.elapsed();
    let closed = closed.expect("the trickled head was never closed");
    let close = match closed {
        Ok(_) => Close::Fin,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Close::Reset,
        Err(e) => panic!("{e}"),
    };
    header_timeouts_logged(app, &[local], 1).await;
    (waited, common::Outcome { bytes, close })
}

/// The hostile case `case`, sent first and after an ordinary request: the
/// head trickled after it is dropped at the header timeout from the last
/// answer, with not one byte, on both sides.
async fn dropped_after(name: &str, case: &[u8], answers: usize) {
    for side in SIDES {
        for later in [false, true] {
            let app = on_loopback(side, trickle_rules()).await;
            let mut before = Vec::new();
            if later {
                before.extend_from_slice(&request("GET", "/", ""));
            }
            before.extend_from_slice(case);
            let answers = answers + usize::from(later);
            let (waited, out) = trickled(&app, &before, answers).await;
            assert!(out.bytes.is_empty(), "{name} {side:?}: {:?}", out.text());
            assert!(
                waited >= HEADER_TIMEOUT - Duration::from_millis(100)
                    && waited < HEADER_TIMEOUT + Duration::from_secs(3),
                "{name} {side:?} later={later}: closed {waited:?} after the last answer"
            );
        }
    }
}

/// The same case, then an idle pause of three header timeouts, then a
/// request: the pause is a kept-alive connection's, and the request is
/// served; nothing is dropped.
async fn innocent_after(name: &str, case: &[u8], answers: usize) {
    for side in SIDES {
        let app = on_loopback(side, trickle_rules()).await;
        let mut client = Client::connect(app.addr).await;
        client.send(case).await;
        for _ in 0..answers {
            client.response().await;
        }
        tokio::time::sleep(PAUSE).await;
        client.send(&request("GET", "/", "")).await;
        let (head, body) = client.response().await;
        assert_status(&head, 200);
        assert_eq!(body, b"ok", "{name} {side:?}");
        assert_eq!(app.drops_of(client.local()), 0, "{name} {side:?}");
    }
}

/// A head over 64 KiB, which hyper still reads (up to about 400 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_head_is_timed_to_hyper_s_limit() {
    let mut big =
        b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\nX-Big: ".to_vec();
    big.resize(100 * 1024, b'a');
    // Trickled after the big head's own bytes: the head is still open.
    for side in SIDES {
        let app = on_loopback(side, trickle_rules()).await;
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let started = tokio::time::Instant::now();
        stream.write_all(&big).await.unwrap();
        let (mut reader, mut writer) = stream.split();
        let trickle = async {
            loop {
                if writer.write_all(b"a").await.is_err() {
                    break;
                }
                tokio::time::sleep(TRICKLE).await;
            }
            std::future::pending::<()>().await;
        };
        let mut bytes = Vec::new();
        let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut bytes));
        tokio::select! {
            closed = read => { let _ = closed.expect("the long head was never closed"); }
            () = trickle => unreachable!(),
        }
        let waited = started.elapsed();
        assert!(bytes.is_empty(), "{side:?}");
        assert!(
            waited < HEADER_TIMEOUT + Duration::from_secs(3),
            "{side:?}: {waited:?}"
        );
    }
    // Whole, it is a request like any other, and later heads are timed.
    let mut whole = big.clone();
    whole.extend_from_slice(b"\r\n\r\n");
    dropped_after("long head", &whole, 1).await;
    innocent_after("long head", &whole, 1).await;
}

/// Sixty-five requests pipelined at once, all answered, then a head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_five_pipelined_requests_keep_the_timer() {
    let many = request("GET", "/", "").repeat(65);
    dropped_after("65 pipelined", &many, 65).await;
    innocent_after("65 pipelined", &many, 65).await;
}

/// Two `Transfer-Encoding` lines, the last of which is chunked: hyper
/// reads a chunked body, and so must the timers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_chunked_by_its_last_transfer_encoding_keeps_the_timer() {
    let mut post = request(
        "POST",
        "/upload",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    );
    post.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    dropped_after("two transfer-encodings", &post, 1).await;
    innocent_after("two transfer-encodings", &post, 1).await;
}

/// Methods are case-sensitive: `head` is not `HEAD`, and its response has
/// a body; `connect` is not `CONNECT`, and a `200` to it is no tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowercase_methods_are_no_head_and_no_tunnel() {
    let head = request("head", "/", "");
    dropped_after("head", &head, 1).await;
    innocent_after("head", &head, 1).await;
    let connect = b"connect example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: Mozilla/5.0\r\n\r\n";
    dropped_after("connect", connect, 1).await;
    innocent_after("connect", connect, 1).await;
}

/// A complete request and half the next, pipelined at once: the second
/// head's bound runs from the first's answer, whatever the trickle after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_half_head_is_bounded_from_the_answer_before_it() {
    let mut both = request("GET", "/", "");
    both.extend_from_slice(b"GET / HT");
    dropped_after("pipelined half head", &both, 1).await;
}

/// Part of the HTTP/2 preface, then silence: a head in progress, dropped
/// at the header timeout with not one byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_of_the_http2_preface_is_a_head_in_progress() {
    for side in SIDES {
        let app = on_loopback(side, trickle_rules()).await;
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let started = tokio::time::Instant::now();
        stream.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let out = read_until_close(&mut stream).await;
        let waited = started.elapsed();
        assert!(out.bytes.is_empty(), "{side:?}: {:?}", out.text());
        assert!(
            waited >= HEADER_TIMEOUT - Duration::from_millis(100)
                && waited < HEADER_TIMEOUT + Duration::from_secs(3),
            "{side:?}: {waited:?}"
        );
        header_timeouts_logged(&app, &[local], 1).await;
    }
}

/// A listener whose accepted sockets have a small send buffer, so that a
/// client that stops reading blocks the server's writes quickly.
async fn small_buffered_listener() -> TcpListener {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    socket2::SockRef::from(&tcp)
        .set_send_buffer_size(16 * 1024)
        .unwrap();
    tcp
}

/// A client with a small receive buffer.
async fn small_buffered_client(addr: SocketAddr) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    Client {
        stream: socket.connect(addr).await.unwrap(),
        buf: Vec::new(),
    }
}

const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that stops reading a response is closed at the send timeout,
/// logged as `send_timeout` and never as a 444; a slow but steady reader
/// (32 KiB/s, longer than the send timeout) is never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_timeout_closes_a_stopped_reader_and_spares_a_slow_one() {
    for side in SIDES {
        let rules = trickle_rules().send_timeout(SEND_TIMEOUT);
        let app = start_with(side, rules, small_buffered_listener().await).await;

        let mut stopped = small_buffered_client(app.addr).await;
        stopped.send(&request("GET", "/big", "")).await;
        assert_status(&stopped.head().await, 200);
        tokio::time::sleep(SEND_TIMEOUT * 2).await;
        let mut got = stopped.buf.len();
        let mut chunk = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(PATIENCE, async {
            loop {
                match stopped.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{side:?}: the stopped reader was never closed"
        );
        assert!(got < BIG, "{side:?}: the whole response arrived");
        drops_logged(&app, "send_timeout", &[stopped.local()], 1).await;
        assert_eq!(
            app.layer
                .stats()
                .rules
                .iter()
                .map(|r| r.dropped)
                .sum::<u64>(),
            0,
            "{side:?}: no 444"
        );

        let mut steady = small_buffered_client(app.addr).await;
        steady.send(&request("GET", "/big", "")).await;
        assert_status(&steady.head().await, 200);
        let mut got = steady.buf.len();
        let reading = tokio::time::Instant::now();
        while reading.elapsed() < SEND_TIMEOUT * 3 {
            let mut piece = [0u8; 4096];
            let n = steady.stream.read(&mut piece).await.unwrap();
            assert!(
                n > 0,
                "{side:?}: the steady reader was cut after {got} bytes"
            );
            got += n;
            tokio::time::sleep(Duration::from_millis(125)).await;
        }
        let rest = steady.take(BIG - got).await;
        assert_eq!(rest.len(), BIG - got, "{side:?}");
        assert_eq!(app.drops_of(steady.local()), 0, "{side:?}");
        assert!(
            !drop_events()
                .iter()
                .any(|e| e.rule == "send_timeout" && e.peer == steady.local()),
            "{side:?}: the steady reader was logged"
        );
    }
}

/// Connections that send all of the HTTP/2 preface and nothing more,
/// many at once on both sides: each is closed at the header timeout, none
/// logged as a drop, and an innocent request is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http2_preface_alone_is_closed_at_the_header_timeout() {
    for side in SIDES {
        let app = on_loopback(side, trickle_rules()).await;
        let mut silent = Vec::new();
        for _ in 0..40 {
            let mut stream = TcpStream::connect(app.addr).await.unwrap();
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            silent.push(stream);
        }
        let started = tokio::time::Instant::now();
        let mut client = Client::connect(app.addr).await;
        client.send(&request("GET", "/", "")).await;
        assert_status(&client.response().await.0, 200);
        for stream in &mut silent {
            let local = stream.local_addr().unwrap();
            let out = read_until_close(stream).await;
            // hyper's own SETTINGS, then the close: no response.
            assert!(out.close == Close::Fin, "{side:?}: {out:?}");
            assert_eq!(app.drops_of(local), 0, "{side:?}");
        }
        let waited = started.elapsed();
        assert!(
            waited < HEADER_TIMEOUT + Duration::from_secs(3),
            "{side:?}: {waited:?}"
        );
    }
}

/// A header block begun and never ended (`HEADERS` without `END_HEADERS`,
/// then silence): dropped at the header timeout, and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_header_block_is_dropped_at_the_header_timeout() {
    for side in SIDES {
        let app = on_loopback(side, trickle_rules()).await;
        // Raw, so that nothing the client sends (no SETTINGS ack) falls
        // inside the header block: the server's SETTINGS are acked first.
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(h2_frames::frame(0x4, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], 0x4, "{side:?}: the server's SETTINGS first");
        let mut payload = vec![0u8; usize::from(head[2])];
        stream.read_exact(&mut payload).await.unwrap();
        let block = h2_frames::header_block(&[(":method", "GET"), (":scheme", "http")]);
        let mut frames = h2_frames::frame(0x4, 0x1, 0, &[]);
        frames.extend(h2_frames::frame(0x1, 0, 1, &block));
        let started = tokio::time::Instant::now();
        stream.write_all(&frames).await.unwrap();
        let out = read_until_close(&mut stream).await;
        let waited = started.elapsed();
        // Whatever came (a SETTINGS ack), no HEADERS frame: no response.
        let mut rest = &out.bytes[..];
        while rest.len() >= 9 {
            assert_ne!(rest[3], 0x1, "{side:?}: a response head");
            let len = 9 + u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            rest = &rest[len.min(rest.len())..];
        }
        assert!(
            waited >= HEADER_TIMEOUT - Duration::from_millis(100)
                && waited < HEADER_TIMEOUT + Duration::from_secs(3),
            "{side:?}: {waited:?}"
        );
        header_timeouts_logged(&app, &[local], 1).await;
    }
}

/// HTTP/2 with no stream open for the keep-alive timeout is closed in
/// order with a GOAWAY, counted from the end of the last stream, on both
/// sides, also when a stream was in flight at the first look; a stream
/// that takes longer than the keep-alive timeout is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_closes_at_the_keepalive_timeout() {
    let keepalive = Duration::from_millis(1500);
    for (side, header_timeout) in SIDES.into_iter().flat_map(|s| [(s, true), (s, false)]) {
        let rules = if header_timeout {
            trickle_rules()
        } else {
            common::seed_rules()
        };
        let rules = rules.keepalive_timeout(keepalive);
        let app = on_loopback(side, rules).await;
        let mut h2 = h2_frames::RawH2::connect(app.addr).await;
        let local = h2.local();
        let headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "example.com"),
            (":path", "/slow"),
            ("user-agent", "curl/8.5.0"),
        ];
        // /slow answers after PAUSE, longer than the keep-alive timeout.
        let (id, frames) = h2.request(&headers, None);
        h2.send(&frames).await;
        h2.finish(&[id]).await;
        assert!(!h2.closed, "{side:?}: cut during a stream");
        assert!(h2.streams[&id].ended, "{side:?}");
        let ended = tokio::time::Instant::now();
        h2.wait_for_close().await;
        let waited = ended.elapsed();
        assert!(h2.goaway.is_some(), "{side:?}");
        assert!(
            waited >= keepalive - Duration::from_millis(150)
                && waited < keepalive + Duration::from_secs(3),
            "{side:?}: closed {waited:?} after the stream"
        );
        assert_eq!(app.drops_of(local), 0, "{side:?}");
    }
}

/// A server that stops sends GOAWAY; a client that keeps a stream open
/// past the grace (the header timeout) is closed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_is_followed_by_the_close_after_its_grace() {
    record_drops();
    let layer = trickle_rules().build().unwrap();
    let app = routes().layer(layer.clone());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(layer.serve(tcp, app).run_until(async move {
        let _ = stopped.await;
    }));
    let mut h2 = h2_frames::RawH2::connect(addr).await;
    // An upload whose body never ends.
    let (id, frames) = h2.open(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "example.com"),
        (":path", "/upload"),
        ("user-agent", "curl/8.5.0"),
    ]);
    h2.send(&frames).await;
    let data = h2.data(id, b"part", false);
    h2.send(&data).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::time::Instant::now();
    stop.send(()).unwrap();
    h2.wait_for_close().await;
    assert!(h2.goaway.is_some());
    let waited = stopping.elapsed();
    assert!(
        waited < HEADER_TIMEOUT + Duration::from_secs(3),
        "closed {waited:?} after the stop"
    );
}

/// Routes the layer does not wrap (added after it): their exchanges are
/// followed by the bytes alone. A kept-alive client pausing between them,
/// a slow upload after `100 Continue`, and an upgraded connection quiet
/// for longer than the header timeout are all served, on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outside_the_layer_keep_innocent_traffic() {
    for side in SIDES {
        record_drops();
        let since = drop_events().len();
        let layer = trickle_rules().body_timeout(BODY_TIMEOUT).build().unwrap();
        let outside = Router::new()
            .route("/outside", get(|| async { "ok" }))
            .route(
                "/outside/upload",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .route("/outside/echo", get(upgrade_to_echo));
        let app = routes().layer(layer.clone()).merge(outside);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        match side {
            Side::AxumServe => common::serve_on(layer.listener_without_early_judging(tcp), app),
            Side::ServeLoop => {
                tokio::spawn(layer.serve(tcp, app).run());
            }
            Side::AxumAround => unreachable!("routes outside the layer are a Router's"),
        }
        let app = App { addr, layer, since };

        let mut client = Client::connect(app.addr).await;
        for round in 0..2 {
            if round > 0 {
                tokio::time::sleep(PAUSE).await;
            }
            client.send(&request("GET", "/outside", "")).await;
            let (head, body) = client.response().await;
            assert_status(&head, 200);
            assert_eq!(body, b"ok", "{side:?} round {round}");
        }
        slow_upload_after_continue(&mut client, "/outside/upload", side).await;
        assert_eq!(app.drops_of(client.local()), 0, "{side:?}");

        let echo = quiet_echo(app.addr, "/outside/echo", side).await;
        assert_eq!(app.drops_of(echo), 0, "{side:?}");
    }
}
