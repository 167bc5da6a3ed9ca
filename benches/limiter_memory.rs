//! Memory of the rate limiter's per-client state: bytes per tracked client,
//! and the peak while 1,000,000 distinct addresses send one request each.
//!
//! `cargo bench --bench limiter_memory`. Prints a table; exits non-zero if the
//! peak with the default cap exceeds what the cap allows, so it can guard a
//! change by hand. It is a measurement, not a timed test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use http::Request;
use tower_no_response::{NoResponseLayer, RateLimit};

struct Tracking;

static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now =
            CURRENT.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

const CLIENTS: u32 = 1_000_000;

/// Sends one request from each of `CLIENTS` distinct addresses; returns
/// (peak bytes above the start, bytes still held at the end, drops).
fn flood(limit: RateLimit) -> (isize, isize, u32) {
    let layer = NoResponseLayer::builder()
        .rate_limit(limit)
        .build()
        .unwrap();
    let request = Request::get("/")
        .header("host", "example.com")
        .body(())
        .unwrap();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut drops = 0;
    for i in 0..CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i));
        let decision = layer.judge(&request, Some(SocketAddr::new(ip, 40_000)));
        drops += u32::from(decision.stop().is_some());
    }
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let held = CURRENT.load(Ordering::Relaxed) - base;
    drop(layer);
    (peak, held, drops)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    // The harness passes `--bench`; there are no options.
    let started = Instant::now();
    let limit = RateLimit::per_second(10).burst(20);

    let (uncapped_peak, uncapped_held, _) = flood(limit.max_keys(CLIENTS as usize));
    let per_key = uncapped_held as f64 / f64::from(CLIENTS);

    let default_cap = 100_000usize;
    let (capped_peak, capped_held, capped_drops) = flood(limit);
    // The table's capacity grows in powers of two, so allow one doubling.
    let allowed = (2.0 * default_cap as f64 * per_key) as isize;

    println!("rate-limit state for {CLIENTS} distinct IPv4 clients, one request each");
    println!("| table | keys | peak MiB | held at end MiB | dropped (rate_limit_full) |");
    println!("|---|---|---|---|---|");
    println!(
        "| uncapped (max_keys = 1,000,000) | {CLIENTS} | {:.1} | {:.1} | 0 |",
        mib(uncapped_peak),
        mib(uncapped_held)
    );
    println!(
        "| default (max_keys = 100,000) | {default_cap} | {:.1} | {:.1} | {capped_drops} |",
        mib(capped_peak),
        mib(capped_held)
    );
    println!("bytes per tracked client: {per_key:.1}");
    println!(
        "bound for the default cap (2 x cap x bytes per client): {:.1} MiB",
        mib(allowed)
    );
    println!("took {:.1?}", started.elapsed());
    if capped_peak > allowed {
        println!("FAIL: the capped peak is over the bound");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
