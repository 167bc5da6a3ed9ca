//! tonic's own server with the layer's gRPC half and its incoming stream: an allowed call succeeds, a dropped call fails at the transport
//! level (its stream reset with CANCEL, nothing from the server), and a call
//! in flight on the same channel carries on. `Request::remote_addr()` keeps
//! working.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpConnectInfo;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_no_response::{NoResponseLayer, TimedBody};

const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    channel: Channel,
    reporter: tonic_health::server::HealthReporter,
    seen_remote: Arc<Mutex<Option<SocketAddr>>>,
}

async fn start() -> Running {
    start_with(true).await
}

/// `grpc`: the layer's gRPC half; otherwise the plain layer.
async fn start_with(grpc: bool) -> Running {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // Calls carrying `x-scanner` are dropped: a stand-in for any rule.
    let layer = NoResponseLayer::builder()
        .custom_rule("scanner", |head| head.headers.contains_key("x-scanner"))
        .build()
        .unwrap();
    let seen_remote = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&seen_remote);
    let record = ServiceBuilder::new()
        .map_request(move |req: http::Request<TimedBody<tonic::body::Body>>| {
            // What `tonic::Request::remote_addr()` reads.
            let remote = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            *seen.lock().unwrap() = remote;
            req
        })
        .into_inner();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = layer.incoming(listener);
    if grpc {
        let stack = ServiceBuilder::new()
            .layer(layer.grpc())
            .layer(record)
            .into_inner();
        let server = Server::builder().layer(stack).add_service(health);
        tokio::spawn(server.serve_with_incoming(incoming));
    } else {
        let stack = ServiceBuilder::new()
            .layer(layer)
            .layer(record)
            .into_inner();
        let server = Server::builder().layer(stack).add_service(health);
        tokio::spawn(server.serve_with_incoming(incoming));
    }
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        addr,
        channel,
        reporter,
        seen_remote,
    }
}

fn check(scanner: bool) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if scanner {
        req.metadata_mut().insert("x-scanner", "1".parse().unwrap());
    }
    req
}

#[tokio::test]
async fn allowed_calls_succeed_and_see_the_remote_address() {
    let running = start().await;
    let mut client = HealthClient::new(running.channel.clone());
    let reply = client.check(check(false)).await.unwrap();
    assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
    let remote = running
        .seen_remote
        .lock()
        .unwrap()
        .expect("no TcpConnectInfo");
    assert_eq!(remote.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
}

#[tokio::test]
async fn a_dropped_call_fails_in_transport_and_its_neighbour_completes() {
    let running = start().await;
    let mut client = HealthClient::new(running.channel.clone());
    // A streaming call, in flight on the same channel the whole time.
    let mut watch = client
        .watch(tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap().status, ServingStatus::Serving as i32);

    let status = tokio::time::timeout(PATIENCE, client.check(check(true)))
        .await
        .expect("the dropped call hangs")
        .expect_err("a dropped call got an answer");
    // No grpc-status came from the server: the client made this one up from
    // the stream reset, whose reason is CANCEL.
    let mut source = std::error::Error::source(&status);
    let mut reason = None;
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            reason = h2.reason();
        }
        source = err.source();
    }
    assert_eq!(reason, Some(h2::Reason::CANCEL), "{status:?}");
    assert!(status.metadata().get("grpc-status").is_none(), "{status:?}");

    // The neighbour still works: a status change reaches the watch stream.
    running
        .reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.unwrap().status, ServingStatus::NotServing as i32);
    // And new calls on the channel are served.
    let reply = client.check(check(false)).await.unwrap();
    assert_eq!(reply.get_ref().status, ServingStatus::NotServing as i32);
}

use crate::h2_frames;

/// The promise is zero bytes, and a race that leaks shows only on a
/// multi-thread runtime under load: 10,000 dropped calls interleaved with
/// 10,000 allowed ones on four shared connections, each checked frame by
/// frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_dropped_calls_leak_not_one_frame() {
    let running = start().await;
    let authority = running.addr.to_string();
    let (allowed, body) = h2_frames::grpc_health_check(&authority, &[]);
    let (dropped, _) = h2_frames::grpc_health_check(&authority, &[("x-scanner", "1")]);
    let leaked = h2_frames::interleave(
        running.addr,
        h2_frames::owned(&allowed),
        h2_frames::owned(&dropped),
        Some(body),
    )
    .await;
    assert_eq!(leaked, 0, "{leaked} dropped calls received frames");
}

/// Given the plain layer, tonic would hand hyper a response; the layer
/// closes the whole connection instead, so a drop still leaks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_layer_closes_the_connection_and_leaks_nothing() {
    let running = start_with(false).await;
    let addr = running.addr;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..50 {
                let mut h2 = h2_frames::RawH2::connect(addr).await;
                let authority = addr.to_string();
                let (allowed_head, body) = h2_frames::grpc_health_check(&authority, &[]);
                let (id, bytes) = h2.request(&allowed_head, Some(&body));
                h2.send(&bytes).await;
                h2.finish(&[id]).await;
                let answered = h2.streams[&id].clone();
                let (dropped_head, _) =
                    h2_frames::grpc_health_check(&authority, &[("x-scanner", "1")]);
                let (id, bytes) = h2.request(&dropped_head, Some(&body));
                h2.send(&bytes).await;
                h2.finish(&[id]).await;
                outcomes.push((answered, h2.streams[&id].clone(), h2.closed));
            }
            outcomes
        }));
    }
    for client in clients {
        for (answered, dropped, closed) in client.await.unwrap() {
            assert!(answered.headers >= 1 && answered.ended, "{answered:?}");
            assert!(!dropped.leaked(), "a dropped call received {dropped:?}");
            assert!(closed, "the connection stayed open: {dropped:?}");
        }
    }
}

/// tonic ignores its own `tcp_nodelay` for an incoming stream, so the
/// layer's stream sets it, unless told not to.
#[tokio::test]
async fn the_incoming_stream_sets_tcp_nodelay() {
    use futures_core::Stream;
    let layer = NoResponseLayer::builder().build().unwrap();
    for (nodelay, expected) in [(None, true), (Some(false), false)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = layer.incoming(listener);
        if let Some(on) = nodelay {
            incoming = incoming.tcp_nodelay(on);
        }
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_next(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(accepted.get_ref().nodelay().unwrap(), expected);
    }
}

/// `only_from` at tonic's accept: a peer around the edge is closed before
/// tonic reads a byte (nothing written, not even a SETTINGS frame), while a
/// call through the edge succeeds.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_from_refuses_other_peers_before_tonic_reads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_reporter, health) = tonic_health::server::health_reporter();
    let layer = NoResponseLayer::builder()
        .only_from_peer("127.0.0.1")
        .build()
        .unwrap();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::builder().layer(layer.grpc()).add_service(health);
    tokio::spawn(server.serve_with_incoming(layer.incoming(listener)));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(check(false))
        .await
        .expect("a call from the allowed peer");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stream = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let _ = stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("the refused connection hangs");
    assert!(read.is_ok() || got.is_empty(), "{read:?}");
    assert!(
        got.is_empty(),
        "{} bytes reached the refused peer",
        got.len()
    );
    assert_eq!(
        layer.stats().rule("peer_not_allowed").map(|r| r.dropped),
        Some(1)
    );
}

/// A gRPC server under a short header timeout and body timeout: a channel
/// idle between calls for longer than both is served, and a call whose
/// request body stalls is dropped at the body timeout, its stream reset
/// with no frame of an answer while the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_timeout_drops_a_stalled_call_and_spares_an_idle_channel() {
    const BODY_TIMEOUT: Duration = Duration::from_millis(1000);
    let (_reporter, health) = tonic_health::server::health_reporter();
    let layer = NoResponseLayer::builder()
        .header_timeout(Duration::from_millis(500))
        .body_timeout(BODY_TIMEOUT)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder().layer(layer.grpc()).add_service(health);
    tokio::spawn(server.serve_with_incoming(layer.incoming(listener)));

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    for round in 0..2 {
        if round > 0 {
            tokio::time::sleep(2 * BODY_TIMEOUT).await;
        }
        let reply = client.check(check(false)).await.unwrap();
        assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
    }

    let mut h2 = h2_frames::RawH2::connect(addr).await;
    let (head, message) = h2_frames::grpc_health_check("localhost", &[]);
    // Two of the message's five bytes, then nothing.
    let (stalled, mut bytes) = h2.open(&head);
    bytes.extend(h2.data(stalled, &message[..2], false));
    let started = tokio::time::Instant::now();
    h2.send(&bytes).await;
    h2.finish(&[stalled]).await;
    let frames = &h2.streams[&stalled];
    assert!(!frames.leaked(), "{frames:?}");
    assert_eq!(frames.reset, Some(u32::from(h2::Reason::CANCEL)));
    assert!(started.elapsed() >= BODY_TIMEOUT - Duration::from_millis(100));
    // The same connection still serves a whole call.
    let (next, bytes) = h2.request(&head, Some(&message));
    h2.send(&bytes).await;
    h2.finish(&[next]).await;
    assert!(h2.streams[&next].headers >= 1 && !h2.closed);
}
