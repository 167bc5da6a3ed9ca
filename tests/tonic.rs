//! tonic's own server with the layer and an `AbortableStream` incoming
//! stream: an allowed call succeeds, a dropped call fails at the transport
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
use tower_no_response::NoResponseLayer;
use tower_no_response::connection::AbortableIncoming;

const PATIENCE: Duration = Duration::from_secs(10);

struct Running {
    channel: Channel,
    reporter: tonic_health::server::HealthReporter,
    seen_remote: Arc<Mutex<Option<SocketAddr>>>,
}

async fn start() -> Running {
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
    let stack = ServiceBuilder::new()
        .layer(layer)
        .map_request(move |req: http::Request<tonic::body::Body>| {
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
    tokio::spawn(
        Server::builder()
            .layer(stack)
            .add_service(health)
            .serve_with_incoming(AbortableIncoming::new(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
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
