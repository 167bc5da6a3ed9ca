//! tonic over TLS behind the TLS gate: a tonic client that names a served
//! name gets its answer over h2, and its call carries the ClientHello; a
//! ClientHello for an unknown name, or with no name, gets not one byte.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_no_response::tls::ClientHello;
use tower_no_response::{NoResponseLayer, TimedBody};

const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    client: Arc<ClientConfig>,
    seen: Arc<Mutex<Option<ClientHello>>>,
}

async fn start() -> Running {
    let cert = rcgen::generate_simple_self_signed(vec!["grpc.example.com".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let layer = NoResponseLayer::builder()
        .server_names(["grpc.example.com"])
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let record = {
        let seen = Arc::clone(&seen);
        ServiceBuilder::new()
            .map_request(move |req: http::Request<TimedBody<tonic::body::Body>>| {
                *seen.lock().unwrap() = req.extensions().get::<ClientHello>().cloned();
                req
            })
            .into_inner()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gate = layer.tls_gate().build().unwrap();
    let incoming = layer.incoming(listener).tls(Arc::new(server), gate);
    let stack = ServiceBuilder::new()
        .layer(layer.grpc())
        .layer(record)
        .into_inner();
    tokio::spawn(
        Server::builder()
            .layer(stack)
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    Running {
        addr,
        client: Arc::new(client),
        seen,
    }
}

/// A tonic channel over TLS to `addr`, asking for `name`.
async fn channel(running: &Running, name: &'static str) -> tonic::transport::Channel {
    let (addr, client) = (running.addr, Arc::clone(&running.client));
    Endpoint::from_shared(format!("http://{name}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let client = Arc::clone(&client);
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let tls = tokio_rustls::TlsConnector::from(client)
                    .connect(ServerName::try_from(name).unwrap(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_name_is_answered_and_its_call_carries_the_client_hello() {
    let running = start().await;
    let mut client = HealthClient::new(channel(&running, "grpc.example.com").await);
    let answer = tokio::time::timeout(
        PATIENCE,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer.into_inner().status, 1, "SERVING");
    let hello = running
        .seen
        .lock()
        .unwrap()
        .clone()
        .expect("the ClientHello");
    assert_eq!(hello.server_name(), Some(&b"grpc.example.com"[..]));
    assert!(
        hello.ja4().as_str().starts_with("t13d"),
        "{:?}",
        hello.ja4()
    );
    assert_eq!(hello.alpn_protocols().collect::<Vec<_>>(), [&b"h2"[..]]);
}

/// The first bytes a rustls client sends for `name`, or with no name.
fn client_hello(running: &Running, name: Option<&str>) -> Vec<u8> {
    let mut config = (*running.client).clone();
    config.enable_sni = name.is_some();
    let server_name = ServerName::try_from(name.unwrap_or("grpc.example.com").to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_no_name_get_not_one_byte_and_others_carry_on() {
    let running = start().await;
    for name in [Some("scan.example.net"), None] {
        let mut tcp = TcpStream::connect(running.addr).await.unwrap();
        tcp.write_all(&client_hello(&running, name)).await.unwrap();
        let mut got = Vec::new();
        // A reset after the close is as good as a FIN here: what counts
        // is that nothing came before it.
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
            .await
            .expect("the server closed");
        assert!(got.is_empty(), "{name:?}: {} bytes", got.len());
    }
    // A silent connection, pending at the gate, holds up no one.
    let _silent = TcpStream::connect(running.addr).await.unwrap();
    let mut client = HealthClient::new(channel(&running, "grpc.example.com").await);
    let answer = tokio::time::timeout(
        PATIENCE,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .unwrap();
    assert!(answer.is_ok());
}
