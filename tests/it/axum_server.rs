//! The TLS gate as axum-server's acceptor, before its `RustlsAcceptor`: a
//! served name is answered and its handler reads the ClientHello; a
//! ClientHello for an unknown name gets not one byte; and a request the
//! layer drops inside TLS closes the connection with no record written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tower_no_response::NoResponseLayer;
use tower_no_response::tls::ClientHello;

const PATIENCE: Duration = Duration::from_secs(10);

async fn start() -> (SocketAddr, Arc<ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];

    let layer = NoResponseLayer::builder()
        .server_names(["example.com"])
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/",
            get(
                |axum::Extension(hello): axum::Extension<ClientHello>| async move {
                    format!(
                        "sni={}",
                        String::from_utf8_lossy(hello.server_name().unwrap_or(b"-"))
                    )
                },
            ),
        )
        .layer(layer.clone());
    let gate = layer.tls_gate().build().unwrap();
    let acceptor =
        RustlsAcceptor::new(RustlsConfig::from_config(Arc::new(server))).acceptor(gate.acceptor());
    let handle = axum_server::Handle::new();
    let serving = axum_server::bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .acceptor(acceptor)
        .handle(handle.clone())
        .serve(app.into_make_service_with_connect_info::<SocketAddr>());
    tokio::spawn(serving);
    let addr = handle.listening().await.unwrap();
    (addr, Arc::new(client))
}

/// Connects by name and sends one request with this Host; the plain
/// response, and how many raw bytes came after the handshake.
async fn get_over_tls(addr: SocketAddr, client: Arc<ClientConfig>, host: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("example.com").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut response))
        .await
        .expect("the server answered or closed");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_before_axum_servers_rustls() {
    let (addr, client) = start().await;
    let text = get_over_tls(addr, Arc::clone(&client), "example.com").await;
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("sni=example.com"), "{text}");

    // Dropped by the Host rule inside TLS: the connection is aborted by its
    // handle, and the client reads nothing, not even a close_notify.
    let text = get_over_tls(addr, Arc::clone(&client), "scan.example.net").await;
    assert!(text.is_empty(), "{text}");

    // An unknown name at the ClientHello: not one byte.
    let mut config = (*client).clone();
    config.alpn_protocols.clear();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("scan.example.net").unwrap(),
    )
    .unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&wire).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("the server closed");
    assert!(got.is_empty(), "{} bytes", got.len());
}
