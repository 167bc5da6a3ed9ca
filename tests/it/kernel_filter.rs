//! The kernel filter on a real listening socket: a banned or denied client's
//! connection attempts get no SYN-ACK and time out, while every other client
//! is served; bans and unbans reach the kernel; dropping the handle detaches
//! the program. Clients connect from several loopback addresses
//! (127.0.0.0/8 is all loopback on Linux).
#![cfg(target_os = "linux")]

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Close, PATIENCE, counting_router, get, read_until_close};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tower_no_response::NoResponseLayer;
use tower_no_response::ban::{BanList, BanPolicy};
use tower_no_response::server::KernelFilter;

const UA: Option<&str> = Some("curl/8.5.0");

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A connection from `source`, or `None` when no SYN-ACK came within a
/// second (the kernel answers a loopback SYN at once otherwise).
async fn connect_from(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
        .await
        .ok()
        .map(|connected| connected.expect("a connect that is answered succeeds"))
}

async fn served_from(source: IpAddr, to: SocketAddr) -> bool {
    let Some(mut stream) = connect_from(source, to).await else {
        return false;
    };
    stream
        .write_all(&get(Some("example.com"), UA))
        .await
        .unwrap();
    let out = read_until_close(&mut stream).await;
    out.assert_ok();
    true
}

async fn wait_for(filter: &KernelFilter, what: &str, done: impl Fn(&KernelFilter) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done(filter) {
        assert!(Instant::now() < deadline, "{what}: {:?}", filter.loaded());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_and_denied_clients_get_no_handshake() {
    let bans = BanList::new(BanPolicy::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .deny_ip("127.0.0.9")
        .ban_list(bans.clone())
        .build()
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::new(from(1), tcp.local_addr().unwrap().port());
    let filter = layer.kernel_filter(&tcp).unwrap();
    assert_eq!(
        filter.loaded().v4_ranges,
        1,
        "the denied address: {:?}",
        filter.loaded()
    );
    let app = counting_router(Default::default()).layer(layer.clone());
    common::serve_on(layer.listener(tcp), app);

    assert!(
        served_from(from(1), addr).await,
        "an ordinary client is served"
    );
    assert!(served_from(from(2), addr).await, "not banned yet");
    assert!(
        connect_from(from(9), addr).await.is_none(),
        "denied: no handshake"
    );

    bans.ban(from(2), Duration::from_secs(60));
    wait_for(&filter, "the ban reaches the kernel", |f| {
        f.loaded().v4_ranges == 2
    })
    .await;
    assert!(
        connect_from(from(2), addr).await.is_none(),
        "banned: no handshake"
    );
    assert!(served_from(from(1), addr).await, "others still served");

    bans.unban(from(2));
    wait_for(&filter, "the unban reaches the kernel", |f| {
        f.loaded().v4_ranges == 1
    })
    .await;
    assert!(served_from(from(2), addr).await, "unbanned: served again");

    // Detached with the handle: the denied client is accepted again, and the
    // layer drops its request without a byte.
    drop(filter);
    let deadline = Instant::now() + PATIENCE;
    let stream = loop {
        if let Some(stream) = connect_from(from(9), addr).await {
            break stream;
        }
        assert!(Instant::now() < deadline, "the program was never detached");
    };
    drop(stream);
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from(9), 0)).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(&get(Some("example.com"), UA))
        .await
        .unwrap();
    read_until_close(&mut stream)
        .await
        .assert_dropped(Close::Fin);
}

/// Many banned clients: the kernel holds them all, and refuses each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_bans_load_and_each_is_refused() {
    let bans = BanList::new(BanPolicy::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    for i in 0..600u32 {
        let [_, _, b, c] = (i * 3 + 10).to_be_bytes();
        bans.ban(
            IpAddr::V4(Ipv4Addr::new(127, 1, b, c)),
            Duration::from_secs(60),
        );
    }
    let layer = NoResponseLayer::builder().ban_list(bans).build().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let filter = layer.kernel_filter(&tcp).unwrap();
    assert_eq!(filter.loaded().v4_ranges, 600);
    assert!(filter.loaded().instructions > 3000);
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
    tokio::spawn(async move {
        loop {
            let _ = tcp.accept().await;
        }
    });
    for i in [0u32, 1, 299, 599] {
        let [_, _, b, c] = (i * 3 + 10).to_be_bytes();
        let banned = IpAddr::V4(Ipv4Addr::new(127, 1, b, c));
        assert!(
            connect_from(banned, addr).await.is_none(),
            "{banned} got a handshake"
        );
        let [_, _, b, c] = (i * 3 + 11).to_be_bytes();
        let neighbour = IpAddr::V4(Ipv4Addr::new(127, 1, b, c));
        assert!(
            connect_from(neighbour, addr).await.is_some(),
            "{neighbour} was refused"
        );
    }
}

/// A connection from an IPv6 `source`, or `None` when no SYN-ACK came
/// within a second.
async fn connect_from_v6(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v6().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(1), socket.connect(to))
        .await
        .ok()
        .map(|connected| connected.expect("a connect that is answered succeeds"))
}

/// A ban of an IPv6 /64 that holds a trusted proxy refuses the rest of it
/// in the kernel, never the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_64_never_refuses_the_trusted_proxy_inside_it() {
    let bans = BanList::new(BanPolicy::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let layer = NoResponseLayer::builder()
        .trusted_proxy("::1")
        .ban_list(bans.clone())
        .build()
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let filter = layer.kernel_filter(&tcp).unwrap();
    tokio::spawn(async move {
        loop {
            let _ = tcp.accept().await;
        }
    });
    let proxy: IpAddr = "::1".parse().unwrap();
    bans.ban("::5".parse().unwrap(), Duration::from_secs(60));
    wait_for(&filter, "the ban reaches the kernel", |f| {
        f.loaded().v6_prefixes == 1
    })
    .await;
    assert_eq!(filter.loaded().kept, 1, "{:?}", filter.loaded());
    for _ in 0..3 {
        assert!(
            connect_from_v6(proxy, addr).await.is_some(),
            "the trusted proxy got no handshake"
        );
    }
}

/// `only_from` in the kernel: peers outside it get no handshake; the
/// allowed edge and the trusted proxy are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_from_refuses_every_other_peer_before_the_handshake() {
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .trusted_proxy("127.0.0.1")
        .only_from_peer("127.0.0.2")
        .build()
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::new(from(1), tcp.local_addr().unwrap().port());
    let filter = layer.kernel_filter(&tcp).unwrap();
    let loaded = filter.loaded();
    assert!(loaded.only_from && loaded.kept == 1, "{loaded:?}");
    let app = counting_router(Default::default()).layer(layer.clone());
    common::serve_on(layer.listener(tcp), app);
    assert!(served_from(from(1), addr).await, "the trusted proxy");
    assert!(served_from(from(2), addr).await, "the only_from peer");
    assert!(
        connect_from(from(3), addr).await.is_none(),
        "around the edge: no handshake"
    );
    drop(filter);
}

/// A load balancer that sends the PROXY protocol is an edge: a denied block
/// that contains it refuses the rest of the block in the kernel, never the
/// balancer, whose clients are judged by their header.
#[cfg(feature = "proxy-protocol")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_block_never_refuses_the_balancer_inside_it() {
    let layer = NoResponseLayer::builder()
        .server_name("example.com")
        .deny_ip("127.0.0.0/28")
        .proxy_protocol_from("127.0.0.9")
        .build()
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::new(from(1), tcp.local_addr().unwrap().port());
    let filter = layer.kernel_filter(&tcp).unwrap();
    let app = counting_router(Default::default()).layer(layer.clone());
    common::serve_on(layer.listener(tcp), app);
    assert!(
        connect_from(from(3), addr).await.is_none(),
        "a denied peer: no handshake"
    );
    let mut stream = connect_from(from(9), addr)
        .await
        .expect("the balancer gets its handshake");
    stream
        .write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 80\r\n")
        .await
        .unwrap();
    stream
        .write_all(&get(Some("example.com"), UA))
        .await
        .unwrap();
    read_until_close(&mut stream).await.assert_ok();
    drop(filter);
}
