//! What a shared (Redis) rate limit adds to each request, on loopback.
//!
//! ```text
//! cargo bench --bench shared_limit_latency --features redis
//! TNR_REDIS_URL=redis://127.0.0.1:6379/ cargo bench --bench shared_limit_latency --features redis
//! ```
//!
//! Serves the same app twice, once with the in-process limiter and once with
//! the budget in Redis, and sends keep-alive HTTP/1.1 requests to each in
//! alternating rounds (A B A B ...) from one connection, timing each request
//! from write to the last byte of the response. Also times the store's check
//! alone. Prints p50 and p99 for each, and the difference. Without
//! `TNR_REDIS_URL` it starts `redis-server` on a free loopback port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_no_response::limit::{RateLimitStore, SharedRateLimit};
use tower_no_response::redis::RedisStore;
use tower_no_response::{NoResponseLayer, RateLimit};

const ROUNDS: usize = 6;
const PER_ROUND: usize = 5_000;

/// Never reached: the bench times the check, not a refusal.
fn limit() -> RateLimit {
    RateLimit::per_second(1_000_000).burst(1_000_000)
}

async fn serve(layer: NoResponseLayer) -> SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = layer.listener(tcp);
    let app = Router::new().fallback(|| async { "ok" }).layer(layer);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// One keep-alive request; the response is small and ends with `ok`.
async fn round_trip(stream: &mut TcpStream, buf: &mut [u8]) -> Duration {
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n";
    let started = Instant::now();
    stream.write_all(REQUEST).await.unwrap();
    let mut seen = 0;
    loop {
        let n = stream.read(&mut buf[seen..]).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        seen += n;
        if buf[..seen].ends_with(b"\r\n\r\nok") {
            return started.elapsed();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn report(name: &str, samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let (p50, p99) = (percentile(samples, 0.50), percentile(samples, 0.99));
    println!(
        "| {name} | {} | {:.1} | {:.1} |",
        samples.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    (p50, p99)
}

struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn redis_url() -> (String, Server) {
    if let Ok(url) = std::env::var("TNR_REDIS_URL") {
        return (url, Server(None));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install redis-server), or set TNR_REDIS_URL");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (format!("redis://127.0.0.1:{port}/"), Server(Some(child)))
}

fn main() {
    // One worker thread, as a small replica would run; the client shares it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, _server) = redis_url();
    runtime.block_on(async move {
        let local = serve(
            NoResponseLayer::builder()
                .rate_limit(limit())
                .build()
                .unwrap(),
        )
        .await;
        let store = RedisStore::new(&url)
            .unwrap()
            .key_prefix(format!("tnr-bench:{}:", std::process::id()));
        let shared = serve(
            NoResponseLayer::builder()
                .rate_limit(limit())
                .shared_rate_limit(SharedRateLimit::new(store.clone()))
                .build()
                .unwrap(),
        )
        .await;
        let mut buf = vec![0u8; 4096];
        let mut to_local = TcpStream::connect(local).await.unwrap();
        let mut to_shared = TcpStream::connect(shared).await.unwrap();
        to_local.set_nodelay(true).unwrap();
        to_shared.set_nodelay(true).unwrap();
        // Warm both paths (connections, the script cache) before timing.
        for _ in 0..500 {
            round_trip(&mut to_local, &mut buf).await;
            round_trip(&mut to_shared, &mut buf).await;
        }
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let ip = "192.0.2.1".parse().unwrap();
        for _ in 0..ROUNDS {
            for _ in 0..PER_ROUND {
                a.push(round_trip(&mut to_local, &mut buf).await);
            }
            for _ in 0..PER_ROUND {
                b.push(round_trip(&mut to_shared, &mut buf).await);
            }
            for _ in 0..PER_ROUND {
                let started = Instant::now();
                store.check(ip, &limit()).await.unwrap();
                c.push(started.elapsed());
            }
        }
        println!("redis: {url}");
        println!("| path | requests | p50 µs | p99 µs |");
        println!("|---|---:|---:|---:|");
        let (a50, a99) = report("request, in-process limiter", &mut a);
        let (b50, b99) = report("request, limit in Redis", &mut b);
        report("RedisStore::check alone", &mut c);
        println!(
            "| added by Redis | | {:.1} | {:.1} |",
            (b50.as_secs_f64() - a50.as_secs_f64()) * 1e6,
            (b99.as_secs_f64() - a99.as_secs_f64()) * 1e6
        );
    });
}
