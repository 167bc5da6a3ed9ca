//! TLS in the serve loop: a drop closes the TCP stream with no application
//! byte and no alert, and handshakes never hold up the accept loop. The
//! certificate is generated at test time; no key is committed.

use crate::common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use common::{PATIENCE, seed_rules};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// A TCP stream that counts the raw bytes it reads once `counting` is set,
/// and remembers whether the peer ended with a clean EOF.
struct Counted {
    inner: TcpStream,
    counting: Arc<AtomicBool>,
    bytes: Arc<AtomicUsize>,
    eof: Arc<AtomicBool>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = buf.filled().len() - before;
            if n == 0 {
                self.eof.store(true, Ordering::SeqCst);
            } else if self.counting.load(Ordering::SeqCst) {
                self.bytes.fetch_add(n, Ordering::SeqCst);
            }
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Tls {
    addr: SocketAddr,
    connector: TlsConnector,
}

async fn start() -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    // Session tickets would arrive after the handshake and blur the count.
    server.send_tls13_tickets = 0;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = seed_rules().build().unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    tokio::spawn(layer.serve(listener, app).tls(Arc::new(server)).run());
    Tls {
        addr,
        connector: TlsConnector::from(Arc::new(client)),
    }
}

struct Client {
    tls: TlsStream<Counted>,
    counting: Arc<AtomicBool>,
    bytes: Arc<AtomicUsize>,
    eof: Arc<AtomicBool>,
}

async fn connect(server: &Tls) -> Client {
    let (counting, bytes, eof) = Default::default();
    let raw = Counted {
        inner: TcpStream::connect(server.addr).await.unwrap(),
        counting: Arc::clone(&counting),
        bytes: Arc::clone(&bytes),
        eof: Arc::clone(&eof),
    };
    let name = ServerName::try_from("example.com").unwrap();
    let tls = server.connector.connect(name, raw).await.unwrap();
    Client {
        tls,
        counting,
        bytes,
        eof,
    }
}

fn request(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

#[tokio::test]
async fn allowed_requests_are_served_over_tls() {
    let server = start().await;
    let mut client = connect(&server).await;
    client.tls.write_all(&request("example.com")).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.tls.read_to_end(&mut response))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}

#[tokio::test]
async fn a_drop_sends_no_record_and_no_alert() {
    let server = start().await;
    let mut client = connect(&server).await;
    // Everything the server sends from here on is counted, encrypted or not.
    client.counting.store(true, Ordering::SeqCst);
    client.tls.write_all(&request("evil.com")).await.unwrap();
    let mut plain = Vec::new();
    let outcome = tokio::time::timeout(PATIENCE, client.tls.read_to_end(&mut plain))
        .await
        .expect("the server neither answered nor closed");
    assert!(plain.is_empty());
    assert_eq!(
        client.bytes.load(Ordering::SeqCst),
        0,
        "the server wrote after the handshake"
    );
    assert!(
        client.eof.load(Ordering::SeqCst),
        "expected a plain TCP close"
    );
    // Without a close_notify alert, rustls reports the cut as unexpected.
    let err = outcome.expect_err("a TLS close_notify would have ended cleanly");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others() {
    let server = start().await;
    // Connects and never sends a ClientHello.
    let _stalled = TcpStream::connect(server.addr).await.unwrap();
    let mut client = tokio::time::timeout(PATIENCE, connect(&server))
        .await
        .expect("the accept loop waited on a handshake");
    client.tls.write_all(&request("example.com")).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.tls.read_to_end(&mut response))
        .await
        .unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200 OK"));
}
