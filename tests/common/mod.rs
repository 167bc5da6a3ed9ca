//! A raw TCP client that counts the bytes it receives and tells a FIN from an
//! RST, and helpers to run an axum app behind the layer on loopback.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_no_response::NoResponseLayer;

/// Generous: these bound a hang, they do not time anything.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How the server ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A clean end of stream.
    Fin,
    /// A connection reset.
    Reset,
}

#[derive(Debug)]
pub struct Outcome {
    pub bytes: Vec<u8>,
    pub close: Close,
}

impl Outcome {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Asserts a 444: not one byte, and the expected close.
    #[track_caller]
    pub fn assert_dropped(&self, close: Close) {
        assert!(
            self.bytes.is_empty(),
            "expected no bytes, got {} bytes: {:?}",
            self.bytes.len(),
            self.text()
        );
        assert_eq!(self.close, close, "wrong close");
    }

    /// Asserts an HTTP/1.1 `200` with body `ok`.
    #[track_caller]
    pub fn assert_ok(&self) {
        self.assert_ok_as("HTTP/1.1");
    }

    /// Asserts an HTTP/1.0 `200` with body `ok`.
    #[track_caller]
    pub fn assert_ok_http10(&self) {
        self.assert_ok_as("HTTP/1.0");
    }

    #[track_caller]
    fn assert_ok_as(&self, version: &str) {
        let text = self.text();
        assert!(
            text.starts_with(&format!("{version} 200 OK\r\n")),
            "expected 200, got {text:?}"
        );
        assert!(
            text.ends_with("\r\n\r\nok"),
            "expected body ok, got {text:?}"
        );
    }
}

/// Reads until the server closes; panics if it never does.
pub async fn read_until_close(stream: &mut TcpStream) -> Outcome {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let close = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Close::Fin,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Close::Reset,
                Err(e) => panic!("unexpected read error: {e}"),
            }
        }
    })
    .await
    .expect("the server neither answered nor closed the connection: it hangs");
    Outcome { bytes, close }
}

/// Sends `request` on a new connection and reads until the server closes.
/// Write errors are ignored: a server that drops may close before the
/// client has finished sending.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_until_close(&mut stream).await
}

/// A `GET /` with the given Host and User-Agent (`None` leaves the header
/// out), and `Connection: close` so that allowed requests end too.
pub fn get(host: Option<&str>, user_agent: Option<&str>) -> Vec<u8> {
    request("GET", "/", host, user_agent, &[])
}

pub fn request(
    method: &str,
    target: &str,
    host: Option<&str>,
    user_agent: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\n");
    if let Some(h) = host {
        r.push_str(&format!("Host: {h}\r\n"));
    }
    if let Some(ua) = user_agent {
        r.push_str(&format!("User-Agent: {ua}\r\n"));
    }
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("Connection: close\r\n\r\n");
    r.into_bytes()
}

/// Reads exactly one response with a Content-Length body from a kept-alive
/// connection.
pub async fn read_one_response(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = find(&data, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().expect("content-length"))
                    .expect("response without content-length");
                if data.len() >= end + 4 + len {
                    assert_eq!(data.len(), end + 4 + len, "extra bytes after the response");
                    return;
                }
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed mid-response after {:?}",
                String::from_utf8_lossy(&data)
            );
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("response timed out");
    data
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A running app: its address and how many requests reached the handlers.
pub struct App {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl App {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Every path answers `200 ok` and counts the hit.
pub fn counting_router(hits: Arc<AtomicUsize>) -> Router {
    Router::new().fallback(move || {
        let hits = Arc::clone(&hits);
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    })
}

/// Serves `router` behind `layer` with the layer's listener on loopback.
pub async fn serve_with(layer: NoResponseLayer, router: Router) -> SocketAddr {
    serve_layered(router.layer(layer.clone()), &layer).await
}

/// Serves `app`, which holds `layer` already (with middleware around it,
/// say), with the layer's listener and axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_layered(app: Router, layer: &NoResponseLayer) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("local addr");
    serve_on(layer.listener(tcp), app);
    addr
}

/// Serves `app` with `listener` (one of the layer's) and axum's
/// `ConnectInfo<SocketAddr>`, in the background.
pub fn serve_on(listener: tower_no_response::server::NoResponseListener, app: Router) {
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
}

pub async fn spawn_app(layer: NoResponseLayer) -> App {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve_with(layer, counting_router(Arc::clone(&hits))).await;
    App { addr, hits }
}

/// The seed's rule set, as in `examples/nginx_444.rs`, without the rate limit.
pub fn seed_rules() -> tower_no_response::NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_ip("198.51.100.0/24")
        .deny_ip("203.0.113.7")
        .trusted_proxies(["127.0.0.0/8", "::1/128"])
        .deny_user_agents(["masscan", "zgrab"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
}

/// Serves `app` with the crate's serve loop on a loopback port, in the
/// background, with the layer's defaults.
#[cfg(feature = "server")]
pub async fn serve_loop<S, B>(layer: &NoResponseLayer, app: S) -> SocketAddr
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower_no_response::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower_no_response::BoxError>,
{
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("local addr");
    tokio::spawn(layer.serve(tcp, app).run());
    addr
}
