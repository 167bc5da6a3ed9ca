//! The per-request cost of the CrowdSec rules with 100,000 decisions in
//! force: half single addresses, half ranges (some overlapping), IPv4 and
//! IPv6. The decisions come from a stand-in for the LAPI on loopback that
//! answers the stream once; the bouncer's correctness is tested against
//! the real LAPI in `tests/crowdsec.rs`.
//!
//! `cargo bench --bench crowdsec --features crowdsec`. Compare each case
//! with `without_crowdsec_v4` or `_v6` from the same run. It also prints
//! the heap the decisions hold, counted by its own allocator.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower_no_response::crowdsec::Bouncer;
use tower_no_response::{NoResponseLayer, NoResponseLayerBuilder};

#[path = "support/crowdsec_stream.rs"]
mod crowdsec_stream;

use crowdsec_stream::{DECISIONS, stand_in_lapi, stream};

/// Counts the bytes the process holds, to tell what the decisions keep
/// once the pull's own buffers are freed.
struct Counting;

static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
/// The most `LIVE` has been since the last `reset_peak`.
static PEAK: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is the system allocator's, with the same arguments.
// `realloc` is the trait's own: a new block, a copy, the old one freed,
// so a block that grows counts both sizes at its peak, as an allocator
// that cannot grow it in place holds them.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        PEAK.fetch_max(
            live + layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
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

fn reset_peak() -> isize {
    let live = live_bytes();
    PEAK.store(live, std::sync::atomic::Ordering::Relaxed);
    live
}

fn peak_bytes() -> isize {
    PEAK.load(std::sync::atomic::Ordering::Relaxed)
}

fn example_rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder()
        .server_names(["example.com", "www.example.com"])
        .deny_ip("198.51.100.0/24")
        .trusted_proxies(["127.0.0.0/8", "::1/128"])
        .deny_user_agents(["masscan", "zgrab"])
        .drop_empty_user_agent(true)
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
        let before = reset_peak();
        let bouncer = Bouncer::builder(format!("http://{lapi}/"), "bench")
            .pull_every(Duration::from_secs(3600))
            .start()
            .unwrap();
        bouncer.first_pull().await;
        // The answer's chunks and the parse are freed once the table is
        // swapped in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = live_bytes() - before;
        let peak = peak_bytes() - before;
        let mib = |n: isize| n as f64 / f64::from(1 << 20);
        eprintln!(
            "{} decisions in force hold {:.1} MiB ({} bytes each); the stream's answer was \
             {:.1} MiB, and the pull's peak above what the process held before was {:.1} MiB \
             ({:.2}x the answer)",
            bouncer.decisions(),
            mib(held),
            held / DECISIONS as isize,
            mib(body_len as isize),
            mib(peak),
            peak as f64 / body_len as f64,
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
