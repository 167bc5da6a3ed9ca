//! An in-process ban list, like fail2ban without the log round trip: a
//! client that earns `strikes` drops within `window` is banned for
//! `ban_for`.
//!
//! The client struck and banned is the judged one: the real client behind
//! trusted proxies. The layer refuses a banned client on every request,
//! through any proxy; the accept sides (the crate's serve loop, the layer's
//! listener, tonic's incoming stream) and the kernel filter refuse it
//! before a byte is read when it connects directly. An edge (a trusted
//! proxy, an `only_from_peer` peer, a PROXY protocol balancer) is never
//! struck nor refused, whatever the list holds: it carries everyone behind
//! it.
//!
//! # Setting the threshold
//!
//! - **Rate-limit drops strike.** A browser loading a page with many
//!   sub-resources can pass a per-client limit on every path, and a ban
//!   then follows within its first page load. Limit the dynamic routes
//!   only, or answer rate-limit drops with a `429` (an answer is no strike), before
//!   banning on them; see [`rate_limit`](crate::NoResponseLayerBuilder::rate_limit).
//! - **Clients retry a dropped request.** curl and browsers send an
//!   idempotent request again, once, when a reused keep-alive connection
//!   closes without an answer, so one request dropped there is dropped and
//!   logged twice, the second time on a new connection. The list strikes
//!   it once: an idempotent request (same method, Host and target) dropped
//!   again for the same client within two seconds is not counted, and a
//!   third one is. A fail2ban `maxretry` read from the access log sees both
//!   lines: allow two per request a visitor makes by mistake.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::rules::client_ip::Ipv6Prefix;

#[cfg(feature = "redis")]
mod replication;
#[cfg(feature = "crowdsec")]
mod report;
#[cfg(feature = "redis")]
pub(crate) use replication::FOREVER_MS;

/// When a client is banned, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct BanPolicy {
    strikes: u32,
    window: Duration,
    ban_for: Duration,
    max_clients: usize,
    ipv6_prefix: u8,
}

impl BanPolicy {
    /// Ban for `ban_for` after `strikes` drops within `window`.
    /// `Duration::MAX` bans for good (in practice, a century).
    pub const fn new(strikes: u32, window: Duration, ban_for: Duration) -> Self {
        Self {
            strikes,
            window,
            ban_for,
            max_clients: 100_000,
            ipv6_prefix: 64,
        }
    }

    /// The most clients tracked (striking or banned) at once, 100,000 by
    /// default. When full, expired entries are swept, at most once a second;
    /// if it is still full, one entry makes room for the new one: a client
    /// that is only striking before a banned one, and among bans the one
    /// that ends soonest. Only a few entries are looked at, so a strike
    /// costs the same however full the table is.
    pub const fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// IPv6 clients are struck and banned by this prefix, /64 by default
    /// (one customer's network, as the rate limiter keys them): an attacker
    /// with a /64 cannot fill the table from it, nor dodge a ban by moving
    /// to the next address.
    pub const fn ipv6_prefix(mut self, len: u8) -> Self {
        self.ipv6_prefix = if len > 128 { 128 } else { len };
        self
    }
}

/// A century: what a ban of `Duration::MAX` lasts, since an `Instant` that
/// far ahead cannot be represented.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often a full table is swept of what has expired.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How many entries a full table looks at to choose one to evict.
const EVICTION_SAMPLE: usize = 64;

/// `now + ban_for`, saturating at [`FOREVER`].
fn ban_end(now: Instant, ban_for: Duration) -> Instant {
    now.checked_add(ban_for.min(FOREVER))
        .unwrap_or(now + FOREVER)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    strikes: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
    /// The last dropped request struck, and when: its retry is no strike.
    last: Option<(RequestPrint, Instant)>,
}

/// A dropped request as its client would send it again: its method, Host
/// and target, hashed. Only requests a client retries on its own have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestPrint(u64);

impl RequestPrint {
    /// The print of `request`, or `None` if clients never retry it: they
    /// send an idempotent request again, once, when a reused connection
    /// closes without an answer (RFC 9110 §9.2.2), and nothing else.
    pub(crate) fn of<B>(request: &http::Request<B>) -> Option<Self> {
        use std::hash::BuildHasher;
        let method = request.method();
        if !method.is_idempotent() {
            return None;
        }
        let host = request.headers().get(http::header::HOST);
        Some(Self(foldhash::fast::FixedState::with_seed(0).hash_one((
            method,
            request.uri(),
            host,
        ))))
    }
}

/// How soon after a drop the same request again is the client's retry.
const RETRY_WINDOW: Duration = Duration::from_secs(2);

/// The shared ban list; clones share it. Give it to the layer
/// ([`NoResponseLayerBuilder::ban_list`](crate::NoResponseLayerBuilder::ban_list)):
/// the layer counts strikes and refuses banned clients on every request,
/// and every connection side made from the layer (the layer's listener for
/// `axum::serve`, the crate's serve loop, tonic's incoming stream, the
/// kernel filter) refuses a banned client that connects directly before a
/// byte is read. Keep a clone to read or change the list.
#[derive(Clone)]
pub struct BanList {
    inner: Arc<Inner>,
}

struct Inner {
    policy: BanPolicy,
    prefix: Ipv6Prefix,
    /// Read on every request and every accept; hashed like the rate
    /// limiter's table, with foldhash seeded at random.
    entries: DashMap<IpAddr, Entry, foldhash::quality::RandomState>,
    /// When the table was last swept, in milliseconds since `epoch`.
    last_sweep_ms: AtomicU64,
    /// How many sweeps ran: how a test tells that they are throttled.
    sweeps: AtomicU64,
    /// Bumped whenever a ban starts, lengthens or is lifted (not when one
    /// runs out), so a copy of the list elsewhere knows to refresh.
    generation: AtomicU64,
    epoch: Instant,
    /// Told of every ban and unban this list makes itself, to share it with
    /// other replicas; not of those it is given.
    replicas: std::sync::OnceLock<Hook>,
    /// Told of the same, to report it to a CrowdSec Local API.
    report: std::sync::OnceLock<Hook>,
    /// The rules of the layer this list serves, for its edges (trusted
    /// proxies, `only_from_peer` peers), which are never struck or banned.
    edges: arc_swap::ArcSwapOption<crate::rules::RuleSet>,
    /// The warning that the application tried to strike or ban an edge,
    /// logged once.
    warned_edge: std::sync::atomic::AtomicBool,
}

/// What a ban list tells of each ban and unban it makes itself.
pub(crate) type Hook = Box<dyn Fn(BanChange) + Send + Sync>;

/// A ban or an unban this list made, for the replicas it is shared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BanChange {
    Ban(IpAddr, Duration),
    Unban(IpAddr),
}

/// A client on the ban list, as [`BanList::bans`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ban {
    /// The client: an IPv4 address, or an IPv6 prefix (see
    /// [`BanPolicy::ipv6_prefix`]) written as its first address.
    pub ip: IpAddr,
    /// How much longer the ban lasts.
    pub remaining: Duration,
}

impl fmt::Debug for BanList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BanList")
            .field("policy", &self.inner.policy)
            .field("tracked", &self.inner.entries.len())
            .finish()
    }
}

impl BanList {
    /// An empty ban list.
    pub fn new(policy: BanPolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy,
                prefix: Ipv6Prefix::new(policy.ipv6_prefix),
                entries: DashMap::with_hasher(foldhash::quality::RandomState::default()),
                last_sweep_ms: AtomicU64::new(0),
                sweeps: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                epoch: Instant::now(),
                replicas: std::sync::OnceLock::new(),
                report: std::sync::OnceLock::new(),
                edges: arc_swap::ArcSwapOption::empty(),
                warned_edge: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The entry `ip` is tracked under: its canonical form, and for IPv6
    /// its prefix.
    fn key(&self, ip: IpAddr) -> IpAddr {
        self.inner.prefix.client(ip.to_canonical())
    }

    /// Makes room for one more entry when the table is full: a sweep at
    /// most once per [`SWEEP_EVERY`], then, if that freed nothing, one
    /// eviction chosen from a bounded sample.
    fn make_room(&self, now: Instant) {
        let inner = &self.inner;
        if inner.entries.len() < inner.policy.max_clients {
            return;
        }
        let now_ms = u64::try_from(now.duration_since(inner.epoch).as_millis()).unwrap_or(u64::MAX);
        let last = inner.last_sweep_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= SWEEP_EVERY.as_millis() as u64 || last == 0;
        if due
            && inner
                .last_sweep_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep(now);
            if inner.entries.len() < inner.policy.max_clients {
                return;
            }
        }
        // A client only striking goes before a ban; among bans, the one that
        // ends soonest.
        let victim = inner
            .entries
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|e| match e.banned_until {
                Some(until) if until > now => (1, until),
                _ => (0, e.window_start),
            })
            .map(|e| *e.key());
        if let Some(victim) = victim {
            inner.entries.remove(&victim);
        }
    }

    /// The rules whose edges this list never strikes or bans: the layer's
    /// in force, set by the layer.
    pub(crate) fn serve_rules(&self, rules: &Arc<crate::rules::RuleSet>) {
        self.inner.edges.store(Some(Arc::clone(rules)));
    }

    /// Whether `ip` is an edge of the layer this list serves; the attempt
    /// to strike or ban it is logged, once, with its cause.
    fn refuses_edge(&self, ip: IpAddr, what: &str) -> bool {
        let edge = self
            .inner
            .edges
            .load()
            .as_ref()
            .is_some_and(|rules| rules.is_edge(ip));
        if edge && !self.inner.warned_edge.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "tower_no_response::ban",
                client_ip = %ip,
                "the application asked to {what} {ip}, a trusted proxy or an only_from_peer \
                 peer, which stands for every client behind it: ignored, and never shared or \
                 reported. A request that reaches the application through a proxy without a \
                 forwarding header has the proxy as its ClientIp; strike the client only when \
                 it is not an edge (logged once)"
            );
        }
        edge
    }

    /// Counts a strike against `ip`, as each of the layer's drops does; the
    /// last strike within the window bans it for the policy's time. For the
    /// application's own signals, such as a failed login. Returns whether
    /// this strike banned the client. An edge of the layer (a trusted proxy,
    /// an `only_from_peer` peer) is never struck: `false`, and a warning
    /// logged once.
    pub fn strike(&self, ip: IpAddr) -> bool {
        self.strike_request(ip, None, false)
    }

    /// Counts a strike for a dropped request that came on a `reused`
    /// connection or a fresh one. A client sends a request dropped on a
    /// reused connection again, on a fresh one: that retry, the same
    /// request within [`RETRY_WINDOW`], is not counted.
    pub(crate) fn strike_request(
        &self,
        ip: IpAddr,
        print: Option<RequestPrint>,
        reused: bool,
    ) -> bool {
        if self.refuses_edge(ip.to_canonical(), "strike") {
            return false;
        }
        let ip = self.key(ip);
        let policy = self.inner.policy;
        let now = Instant::now();
        if !self.inner.entries.contains_key(&ip) {
            self.make_room(now);
        }
        let mut entry = self.inner.entries.entry(ip).or_insert(Entry {
            strikes: 0,
            window_start: now,
            banned_until: None,
            last: None,
        });
        if entry.banned_until.is_some_and(|until| until > now) {
            return false;
        }
        if now.duration_since(entry.window_start) > policy.window || entry.banned_until.is_some() {
            *entry = Entry {
                strikes: 0,
                window_start: now,
                banned_until: None,
                last: None,
            };
        }
        if let Some(print) = print {
            let retry = !reused
                && entry.last.is_some_and(|(last, at)| {
                    last == print && now.duration_since(at) <= RETRY_WINDOW
                });
            // Only a drop on a reused connection is retried, and only once.
            entry.last = reused.then_some((print, now));
            if retry {
                return false;
            }
        }
        entry.strikes += 1;
        if entry.strikes >= policy.strikes {
            entry.banned_until = Some(ban_end(now, policy.ban_for));
            tracing::warn!(
                target: "tower_no_response::ban",
                client_ip = %ip,
                strikes = entry.strikes,
                ban_secs = policy.ban_for.as_secs_f64(),
                "client banned"
            );
            crate::audit::export::ban_begun("strikes");
            drop(entry);
            self.inner.generation.fetch_add(1, Ordering::Relaxed);
            self.share(BanChange::Ban(ip, policy.ban_for));
            return true;
        }
        false
    }

    /// Bans `ip` for `ban_for` now, whatever its strikes; a ban already in
    /// force for longer stands. Shared with the other replicas when the list
    /// is shared. An edge of the layer is never banned (a warning is logged
    /// once), nor shared or reported.
    pub fn ban(&self, ip: IpAddr, ban_for: Duration) {
        if self.refuses_edge(ip.to_canonical(), "ban") {
            return;
        }
        if self.ban_quietly(ip, ban_for, "app") {
            self.share(BanChange::Ban(self.key(ip), ban_for));
        }
    }

    /// Lifts any ban on `ip` and forgets its strikes. Returns whether it was
    /// banned. Shared with the other replicas when the list is shared.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let ip = self.key(ip);
        let banned = self.unban_quietly(ip);
        self.share(BanChange::Unban(ip));
        banned
    }

    /// The clients banned now, for an admin endpoint.
    #[must_use]
    pub fn bans(&self) -> Vec<Ban> {
        let now = Instant::now();
        let mut bans: Vec<Ban> = self
            .inner
            .entries
            .iter()
            .filter_map(|e| {
                let until = e.banned_until.filter(|until| *until > now)?;
                Some(Ban {
                    ip: *e.key(),
                    remaining: until - now,
                })
            })
            .collect();
        bans.sort_by_key(|b| b.ip);
        bans
    }

    /// Changes whenever a ban starts, lengthens or is lifted.
    #[cfg(target_os = "linux")]
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Relaxed)
    }

    /// The IPv6 prefix a ban covers: a banned IPv6 client is its network.
    /// For the kernel filter and for reports to a CrowdSec LAPI.
    #[cfg(any(target_os = "linux", feature = "crowdsec"))]
    pub(crate) fn ipv6_prefix(&self) -> u8 {
        self.inner.policy.ipv6_prefix
    }

    fn share(&self, change: BanChange) {
        for hook in [&self.inner.replicas, &self.inner.report] {
            if let Some(tell) = hook.get() {
                tell(change);
            }
        }
    }

    /// Lifts a ban without telling anyone; whether there was one.
    fn unban_quietly(&self, key: IpAddr) -> bool {
        let now = Instant::now();
        let removed = self.inner.entries.remove(&key);
        let banned = removed.is_some_and(|(_, e)| e.banned_until.is_some_and(|u| u > now));
        if banned {
            self.inner.generation.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "tower_no_response::ban", client_ip = %key, "client unbanned");
        }
        banned
    }

    /// Bans `ip` until `ban_for` from now unless it is banned for longer
    /// already; returns whether the ban changed.
    fn ban_quietly(&self, ip: IpAddr, ban_for: Duration, source: &'static str) -> bool {
        let ip = self.key(ip);
        let now = Instant::now();
        let until = ban_end(now, ban_for);
        if !self.inner.entries.contains_key(&ip) {
            self.make_room(now);
        }
        let mut entry = self.inner.entries.entry(ip).or_insert(Entry {
            strikes: 0,
            window_start: now,
            banned_until: None,
            last: None,
        });
        if entry.banned_until.is_some_and(|u| u >= until) {
            return false;
        }
        let fresh = entry.banned_until.is_none_or(|u| u <= now);
        entry.banned_until = Some(until);
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        if fresh {
            tracing::warn!(
                target: "tower_no_response::ban",
                client_ip = %ip,
                ban_secs = ban_for.as_secs_f64(),
                source,
                "client banned"
            );
            crate::audit::export::ban_begun(source);
        }
        true
    }

    /// Whether `ip` is banned now. An expired ban is lifted here.
    #[must_use]
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let ip = self.key(ip);
        // The clock is read only for a client the list tracks: everyone
        // else, the innocent case, costs one probe.
        let Some(entry) = self.inner.entries.get(&ip).map(|e| *e) else {
            return false;
        };
        match entry.banned_until {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.inner.entries.remove(&ip);
                tracing::info!(target: "tower_no_response::ban", client_ip = %ip, "client unbanned");
                false
            }
            None => false,
        }
    }

    /// How many clients are tracked (striking or banned).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no client is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    fn sweep(&self, now: Instant) {
        self.inner.sweeps.fetch_add(1, Ordering::Relaxed);
        let window = self.inner.policy.window;
        self.inner.entries.retain(|ip, e| {
            let keep = match e.banned_until {
                Some(until) => until > now,
                None => now.duration_since(e.window_start) <= window,
            };
            if !keep && e.banned_until.is_some() {
                tracing::info!(target: "tower_no_response::ban", client_ip = %ip, "client unbanned");
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_retried_request_strikes_once() {
        let bans = BanList::new(BanPolicy::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let get = |target: &str, host: &str| {
            http::Request::get(target)
                .header("host", host)
                .body(())
                .unwrap()
        };
        let print = |target: &str| RequestPrint::of(&get(target, "example.com"));
        let (reused, fresh) = (true, false);

        // Dropped on a reused connection, then sent again on a fresh one:
        // one strike, no ban. Another request is a second strike.
        let client = ip("192.0.2.1");
        assert!(!bans.strike_request(client, print("/.env"), reused));
        assert!(!bans.strike_request(client, print("/.env"), fresh));
        assert!(!bans.is_banned(client));
        assert!(bans.strike_request(client, print("/.git/config"), fresh));

        // A retry is forgiven once: the same request a third time counts.
        let again = ip("192.0.2.2");
        bans.strike_request(again, print("/x"), reused);
        bans.strike_request(again, print("/x"), fresh);
        assert!(bans.strike_request(again, print("/x"), fresh));

        // A connection's first request is never retried by its client, and
        // nor is the same request on a reused connection: each counts.
        let first = ip("192.0.2.3");
        bans.strike_request(first, print("/y"), fresh);
        assert!(bans.strike_request(first, print("/y"), fresh));
        let kept = ip("192.0.2.4");
        bans.strike_request(kept, print("/y"), reused);
        assert!(bans.strike_request(kept, print("/y"), reused));

        // Clients never retry a POST on their own: each counts.
        let post = http::Request::post("/login").body(()).unwrap();
        assert_eq!(RequestPrint::of(&post), None);
        let poster = ip("192.0.2.5");
        bans.strike_request(poster, RequestPrint::of(&post), reused);
        assert!(bans.strike_request(poster, RequestPrint::of(&post), fresh));

        // Another client's same request is its own.
        let neighbour = ip("192.0.2.6");
        bans.strike_request(ip("192.0.2.7"), print("/z"), reused);
        assert!(!bans.strike_request(neighbour, print("/z"), fresh));
        assert!(!bans.is_banned(neighbour));

        // Prints tell method, Host and target apart.
        let head = http::Request::head("/.env")
            .header("host", "example.com")
            .body(())
            .unwrap();
        assert_ne!(RequestPrint::of(&head), print("/.env"));
        assert_ne!(
            RequestPrint::of(&get("/.env", "example.org")),
            print("/.env")
        );
        assert_ne!(print("/.env?a"), print("/.env"));
    }

    #[test]
    fn the_last_strike_bans() {
        let bans = BanList::new(BanPolicy::new(
            3,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        bans.strike(ip("192.0.2.1"));
        bans.strike(ip("192.0.2.1"));
        assert!(!bans.is_banned(ip("192.0.2.1")));
        bans.strike(ip("192.0.2.1"));
        assert!(bans.is_banned(ip("192.0.2.1")));
        assert!(bans.is_banned(ip("::ffff:192.0.2.1")), "mapped form too");
        assert!(!bans.is_banned(ip("192.0.2.2")));
    }

    #[test]
    fn bans_expire_and_windows_reset() {
        let bans = BanList::new(BanPolicy::new(2, Duration::ZERO, Duration::ZERO));
        bans.strike(ip("192.0.2.1"));
        std::thread::sleep(Duration::from_millis(5));
        // The window passed: the count starts over.
        bans.strike(ip("192.0.2.1"));
        assert!(!bans.is_banned(ip("192.0.2.1")));
        let bans = BanList::new(BanPolicy::new(1, Duration::from_secs(60), Duration::ZERO));
        bans.strike(ip("192.0.2.1"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !bans.is_banned(ip("192.0.2.1")),
            "a zero-length ban is over"
        );
        assert!(bans.is_empty(), "and forgotten");
    }

    #[test]
    fn memory_is_capped_and_strikes_keep_working_when_full() {
        let bans = BanList::new(
            BanPolicy::new(2, Duration::from_secs(60), Duration::from_secs(60)).max_clients(10),
        );
        for i in 0..100u32 {
            bans.strike(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(bans.len(), 10);
        // A full table of strikers still takes, and bans, a new client.
        bans.strike(ip("192.0.2.200"));
        bans.strike(ip("192.0.2.200"));
        assert!(bans.is_banned(ip("192.0.2.200")));
        assert_eq!(bans.len(), 10);
    }

    /// A full table of bans is swept once a second, not on every strike, so
    /// a strike's cost does not grow with the table.
    #[test]
    fn a_full_table_is_not_swept_on_every_strike() {
        let bans = BanList::new(
            BanPolicy::new(1, Duration::from_secs(60), Duration::from_secs(600))
                .max_clients(50_000),
        );
        for i in 0..50_000u32 {
            bans.strike(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        assert_eq!(bans.len(), 50_000);
        // Sweeping a full table costs a pass over all of it: once a second,
        // not once per strike.
        let started = Instant::now();
        for i in 0..2_000u32 {
            bans.strike(IpAddr::from((0x0b00_0000 + i).to_be_bytes()));
        }
        let sweeps = bans.inner.sweeps.load(Ordering::Relaxed);
        let seconds = started.elapsed().as_secs();
        assert!(sweeps >= 1, "a full table was never swept");
        assert!(
            sweeps <= seconds + 2,
            "{sweeps} sweeps in {seconds} s: one per strike, not one a second"
        );
        assert_eq!(bans.len(), 50_000);
        assert!(bans.is_banned(IpAddr::from(0x0b00_07cfu32.to_be_bytes())));
    }

    #[test]
    fn the_application_strikes_bans_lists_and_unbans() {
        let bans = BanList::new(BanPolicy::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        assert!(!bans.strike(ip("192.0.2.1")));
        assert!(bans.strike(ip("192.0.2.1")), "the second strike bans");
        bans.ban(ip("2001:db8::7"), Duration::from_secs(30));
        let listed = bans.bans();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].ip, ip("192.0.2.1"));
        assert_eq!(listed[1].ip, ip("2001:db8::"), "listed by its /64");
        assert!(listed[1].remaining <= Duration::from_secs(30));
        // A shorter ban does not shorten a longer one.
        bans.ban(ip("192.0.2.1"), Duration::from_secs(1));
        assert!(bans.bans()[0].remaining > Duration::from_secs(30));
        assert!(bans.unban(ip("192.0.2.1")));
        assert!(!bans.is_banned(ip("192.0.2.1")));
        assert!(!bans.unban(ip("192.0.2.1")), "no longer banned");
        assert_eq!(bans.bans().len(), 1);
    }

    #[test]
    fn forever_does_not_overflow() {
        let bans = BanList::new(BanPolicy::new(1, Duration::MAX, Duration::MAX));
        bans.strike(ip("192.0.2.1"));
        assert!(bans.is_banned(ip("192.0.2.1")));
    }

    #[test]
    fn ipv6_clients_are_struck_by_prefix() {
        let bans = BanList::new(BanPolicy::new(
            2,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        bans.strike(ip("2001:db8:1:2::1"));
        bans.strike(ip("2001:db8:1:2::ffff"));
        assert!(bans.is_banned(ip("2001:db8:1:2:abcd::9")), "the whole /64");
        assert!(!bans.is_banned(ip("2001:db8:1:3::1")));
        // A /64 cannot fill the table.
        for i in 0..1_000u16 {
            bans.strike(IpAddr::from([0x2001, 0xdb8, 9, 9, 0, 0, 0, i]));
        }
        assert_eq!(bans.len(), 2);
    }
}
