//! Memory of the rate limiter's per-client state: bytes per tracked client,
//! and the peak while 1,000,000 distinct addresses send one request each.
//! Then crowd-out: under a strict limit, while a spray of 1,000,000
//! addresses keeps the table full, how many newcomers from other networks
//! are wrongly limited, and how many sprayed addresses get a second request
//! through.
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
    let request = Request::get("/")
        .header("host", "example.com")
        .body(())
        .unwrap();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let layer = NoResponseLayer::builder()
        .rate_limit(limit)
        .build()
        .unwrap();
    let mut drops = 0;
    for i in 0..CLIENTS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0B00_0000 + i));
        let decision = layer.judge_and_spend(&request, Some(SocketAddr::new(ip, 40_000)));
        drops += u32::from(decision.stop().is_some());
    }
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let held = CURRENT.load(Ordering::Relaxed) - base;
    drop(layer);
    (peak, held, drops)
}

/// One spray: its name, and the address of its `i`th request.
type Spray = (&'static str, fn(u32) -> IpAddr);

const SPRAYS: [Spray; 3] = [
    ("IPv6, 1M /64s across one /32 (65,536 /48s)", |i| {
        let slash48 = u128::from(i % 65_536);
        let slash64 = u128::from(i / 65_536);
        IpAddr::from(std::net::Ipv6Addr::from(
            (0x2001_0db8u128 << 96) | (slash48 << 80) | (slash64 << 64) | 1,
        ))
    }),
    ("IPv4, 1M addresses in 10.0.0.0/12 (4,096 /24s)", |i| {
        IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i))
    }),
    ("IPv4, 1M addresses in 1M distinct /24s", |i| {
        IpAddr::V4(Ipv4Addr::from(0x0100_0000 + (i << 8) + 1))
    }),
];

const NEWCOMERS: u32 = 10_000;

/// A spray under one request a minute, then newcomers from networks the
/// spray did not use, then sprayed addresses again. Returns (newcomers
/// limited, sprayed addresses let through again, peak bytes).
fn crowd_out(address: fn(u32) -> IpAddr) -> (u32, u32, isize) {
    let request = Request::get("/")
        .header("host", "example.com")
        .body(())
        .unwrap();
    // From before the layer, which allocates its sketch once its table is
    // full.
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let layer = NoResponseLayer::builder()
        .rate_limit(RateLimit::per_minute(1))
        .build()
        .unwrap();
    let judge = |ip: IpAddr| layer.judge_and_spend(&request, Some(SocketAddr::new(ip, 40_000)));
    for i in 0..CLIENTS {
        let _ = judge(address(i));
    }
    // Newcomers: one /24 each in 172.16.0.0/12, which no spray touches.
    let limited = (0..NEWCOMERS)
        .filter(|j| {
            let ip = IpAddr::V4(Ipv4Addr::from(0xAC10_0000 + (j << 8) + 7));
            judge(ip).stop().is_some()
        })
        .count() as u32;
    // Sprayed addresses, spread over the spray, each trying again at once.
    let step = CLIENTS / NEWCOMERS;
    let again = (0..NEWCOMERS)
        .filter(|k| judge(address(k * step + 3)).stop().is_none())
        .count() as u32;
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop(layer);
    (limited, again, peak)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    // The harness passes `--bench`; there are no options.
    let started = Instant::now();
    let limit = RateLimit::per_second(10).burst(20);

    let (uncapped_peak, uncapped_held, _) = flood(limit.max_keys(CLIENTS as usize));
    // This table never fills, so it never allocates its overflow sketch:
    // all it holds is its clients.
    let per_key = uncapped_held as f64 / f64::from(CLIENTS);

    let default_cap = 100_000usize;
    let (capped_peak, capped_held, capped_drops) = flood(limit);
    // The table's capacity grows in powers of two, so allow one doubling;
    // the overflow sketch, allocated once the table is full, is fixed: 4
    // rows of 2 x cap (rounded up to a power of two) cells of 8 bytes.
    let sketch = 4 * (2 * default_cap).next_power_of_two() as isize * 8;
    let allowed = (2.0 * default_cap as f64 * per_key) as isize + sketch;

    println!("rate-limit state for {CLIENTS} distinct IPv4 clients, one request each");
    println!("| table | keys | peak MiB | held at end MiB | dropped (rate_limit_full) |");
    println!("|---|---|---|---|---|");
    println!(
        "| uncapped (max_keys = 1,000,000) | {CLIENTS} | {:.1} | {:.1} | 0 |",
        mib(uncapped_peak),
        mib(uncapped_held)
    );
    println!(
        "| default (max_keys = 100,000) | {default_cap} | {:.1} | {:.1} | {capped_drops} (judged by /24 once full) |",
        mib(capped_peak),
        mib(capped_held)
    );
    println!("bytes per tracked client: {per_key:.1}");
    println!(
        "bound for the default cap (2 x cap x bytes per client, plus the {:.0} MiB overflow \
         sketch): {:.1} MiB",
        mib(sketch),
        mib(allowed)
    );
    println!();
    println!(
        "crowd-out: one request a minute, default cap; {CLIENTS} spraying, then {NEWCOMERS} \
         newcomers from other networks, then {NEWCOMERS} sprayed addresses again"
    );
    println!("| spray | newcomers wrongly limited | sprayed let through again | peak MiB |");
    println!("|---|---|---|---|");
    let mut escaped = 0;
    for (name, address) in SPRAYS {
        let (limited, again, peak) = crowd_out(address);
        escaped += again;
        println!(
            "| {name} | {limited} ({:.2}%) | {again} | {:.1} |",
            f64::from(limited) * 100.0 / f64::from(NEWCOMERS),
            mib(peak)
        );
    }
    println!("took {:.1?}", started.elapsed());
    if escaped > 0 {
        println!("FAIL: sprayed addresses escaped their limit");
        return ExitCode::FAILURE;
    }
    if capped_peak > allowed {
        println!("FAIL: the capped peak is over the bound");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
