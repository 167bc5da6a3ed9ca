//! What the TLS gate adds to a handshake: its read of a ClientHello (parse
//! and JA4), beside what rustls does as a server with the same ClientHello
//! (its whole first flight: key exchange, certificate, signature). Compare
//! the two from the same run; `benches/callgrind.sh` prints the same pair
//! in instructions, and `benches/load.sh` (rows f and g) the server CPU per
//! refused ClientHello against nginx and per full handshake with and
//! without the gate.
//!
//! `cargo bench --bench tls_gate --features rustls`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig, ServerConnection};
use tower_no_response::tls::ClientHello;

/// A rustls client's ClientHello for example.com, and a server for it.
fn hello_and_server() -> (Vec<u8>, Arc<ServerConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["example.com".to_owned()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from("example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    (wire, Arc::new(server))
}

fn bench(c: &mut Criterion) {
    let (wire, config) = hello_and_server();
    let mut group = c.benchmark_group("client_hello");
    group.bench_function("gate_parse_and_ja4", |b| {
        b.iter(|| {
            let hello = ClientHello::parse(black_box(&wire)).unwrap().unwrap();
            black_box(hello.ja4())
        });
    });
    group.bench_function("rustls_server_first_flight", |b| {
        let mut out = Vec::with_capacity(4096);
        b.iter(|| {
            let mut server = ServerConnection::new(Arc::clone(&config)).unwrap();
            server.read_tls(&mut black_box(&wire[..])).unwrap();
            server.process_new_packets().unwrap();
            out.clear();
            while server.wants_write() {
                server.write_tls(&mut out).unwrap();
            }
            black_box(out.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
