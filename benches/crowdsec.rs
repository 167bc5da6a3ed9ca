//! The per-request cost of the CrowdSec rules with 100,000 decisions in
//! force: half single addresses, half ranges (some overlapping), IPv4 and
//! IPv6. The decisions come from a stand-in for the LAPI on loopback that
//! answers the stream once; the bouncer's correctness is tested against
//! the real LAPI in `tests/crowdsec.rs`.
//!
//! `cargo bench --bench crowdsec --features crowdsec`. Compare each case
//! with `without_crowdsec_v4` or `_v6` from the same run. It also prints
//! the heap the decisions hold, counted by its own allocator.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_no_response::crowdsec::Bouncer;
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder};

const DECISIONS: usize = 100_000;

/// Counts the bytes the process holds, to tell what the decisions keep
/// once the pull's own buffers are freed.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is the system allocator's, with the same arguments.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn example_rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_ip("198.51.100.0/24")
        .trusted_proxies(["127.0.0.0/8", "::1/128"])
        .deny_user_agents(["masscan", "zgrab"])
        .drop_empty_user_agent(true)
}

/// A decision stream answer with `DECISIONS` decisions, spread with a
/// fixed generator so every run holds the same table; with an address
/// banned on its own and one inside a banned range.
fn stream() -> (String, String, String) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::from(r#"{"deleted":null,"new":["#);
    let (mut lone, mut member) = (String::new(), String::new());
    for id in 0..DECISIONS {
        let r = next();
        let (scope, value) = match id % 4 {
            0 => (
                "Ip",
                format!(
                    "{}.{}.{}.{}",
                    11 + (r % 200) as u8,
                    (r >> 8) as u8,
                    (r >> 16) as u8,
                    (r >> 24) as u8
                ),
            ),
            1 => (
                "Ip",
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    (r >> 16) as u16,
                    (r >> 32) as u16,
                    r as u16
                ),
            ),
            2 => (
                "Range",
                format!(
                    "{}.{}.{}.0/24",
                    11 + (r % 200) as u8,
                    (r >> 8) as u8,
                    (r >> 16) as u8
                ),
            ),
            _ => (
                "Range",
                format!("2001:db8:{:x}::/{}", (r >> 16) as u16, 48 + (r % 16)),
            ),
        };
        if id == 0 {
            lone.clone_from(&value);
        }
        if id == 2 {
            member = value.replace(".0/24", ".77");
        }
        if id > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"duration":"4h","id":{id},"origin":"crowdsec","scenario":"crowdsecurity/http-probing","scope":"{scope}","type":"ban","value":"{value}"}}"#
        );
    }
    out.push_str("]}");
    (out, lone, member)
}

/// Answers the first pull with `body` and every later one with no change.
async fn stand_in_lapi(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.unwrap_or(0);
            let startup = String::from_utf8_lossy(&head[..n]).contains("startup=true");
            let answer = if startup {
                body.as_str()
            } else {
                r#"{"deleted":null,"new":null}"#
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    addr
}

fn req(xff: &str) -> Request<()> {
    Request::get("/index.html")
        .header("host", "www.example.com")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        )
        .header("x-forwarded-for", xff)
        .body(())
        .unwrap()
}

fn bench_crowdsec(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (body, lone, member) = stream();
    let body_len = body.len();
    let (with, without) = runtime.block_on(async {
        let lapi = stand_in_lapi(body).await;
        let before = live_bytes();
        let bouncer = Bouncer::builder(format!("http://{lapi}/"), "bench")
            .pull_every(Duration::from_secs(3600))
            .start()
            .unwrap();
        bouncer.first_pull().await;
        // The body and the parse are freed once the table is swapped in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = live_bytes() - before;
        eprintln!(
            "{} decisions in force hold {:.1} MiB ({} bytes each), the stream's answer having been {:.1} MiB",
            bouncer.decisions(),
            held as f64 / f64::from(1 << 20),
            held / DECISIONS as isize,
            body_len as f64 / f64::from(1 << 20),
        );
        assert_eq!(bouncer.decisions(), DECISIONS);
        (
            example_rules().crowdsec(&bouncer).build().unwrap(),
            example_rules().build().unwrap(),
        )
    });
    let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let mut g = c.benchmark_group("crowdsec_100k");
    let rules = without.rules();
    for (name, client) in [
        ("without_crowdsec_v4", "192.0.2.10"),
        ("without_crowdsec_v6", "2001:db9::1"),
    ] {
        let request = req(client);
        g.bench_function(name, |b| {
            b.iter(|| black_box(rules.judge(black_box(&request), Some(proxy))));
        });
    }
    let rules = with.rules();
    for (name, client) in [
        ("allowed_v4", "192.0.2.10"),
        ("allowed_v6", "2001:db9::1"),
        ("banned_address", lone.as_str()),
        ("banned_range", member.as_str()),
    ] {
        let request = req(client);
        assert!(
            rules.judge(&request, Some(proxy)).stop().is_some() == name.starts_with("banned"),
            "{name}: {client}"
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(rules.judge(black_box(&request), Some(proxy))));
        });
    }
    g.finish();
    drop(runtime);
}

criterion_group!(benches, bench_crowdsec);
criterion_main!(benches);
