//! The allowed-path decision must not allocate: it runs on every request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use http::Request;
use tower_no_response::rules::Verdict;
use tower_no_response::{NoResponseLayer, RateLimit};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; the counter is a const-initialised
// thread-local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn deciding_an_allowed_request_allocates_nothing() {
    let layer = NoResponseLayer::builder()
        .server_names(["example.com", "*.example.com"])
        .deny_ip("198.51.100.0/24")
        .trusted_proxies(["127.0.0.0/8"])
        .deny_user_agents(["masscan", "zgrab"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
        .rate_limit(RateLimit::per_minute(1_000).burst(1_000))
        .build()
        .unwrap();
    let request = Request::get("/")
        .header("host", "WWW.Example.com:443")
        .header("user-agent", "Mozilla/5.0")
        .header("x-forwarded-for", "192.0.2.1, 10.0.0.1")
        .body(())
        .unwrap();
    let proxy: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    // The first request from a client creates its rate-limit entry, and the
    // regex engine fills its per-thread cache on first use.
    assert_eq!(
        layer.judge_and_spend(&request, Some(proxy)).verdict,
        Verdict::Pass
    );
    let rules = layer.rules();
    let n = allocations_in(|| {
        for _ in 0..100 {
            // The rules alone, and with the rate limiter as the layer runs it.
            let judged = rules.judge(&request, Some(proxy));
            assert!(matches!(judged.verdict, Verdict::RateLimit(_)));
            assert_eq!(
                layer.judge_and_spend(&request, Some(proxy)).verdict,
                Verdict::Pass
            );
        }
    });
    assert_eq!(
        n, 0,
        "the allowed path allocated {n} times in 100 decisions"
    );
}
