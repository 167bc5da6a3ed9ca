//! An in-process ban list, like fail2ban without the log round trip: a
//! client that earns `strikes` drops within `window` is refused at accept
//! for `ban_for`.
//!
//! Strikes are only counted for drops whose judged client IP is the TCP peer
//! itself. Behind a trusted proxy the peer is the proxy, and refusing it at
//! accept would refuse every client behind it; the real client there is only
//! known once a request is read, which is too late for an accept-time ban.
//! Bans are enforced by the crate's serve loop
//! ([`NoResponseLayer::serve`](crate::NoResponseLayer::serve)).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// When a client is banned, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct BanPolicy {
    strikes: u32,
    window: Duration,
    ban_for: Duration,
    max_clients: usize,
}

impl BanPolicy {
    /// Ban for `ban_for` after `strikes` drops within `window`.
    pub const fn new(strikes: u32, window: Duration, ban_for: Duration) -> Self {
        Self {
            strikes,
            window,
            ban_for,
            max_clients: 100_000,
        }
    }

    /// The most clients tracked (striking or banned) at once, 100,000 by
    /// default. When full, expired entries are swept; if it is still full,
    /// new strikes are not recorded: bans are a shortcut, and the rules keep
    /// judging every request that comes in.
    pub const fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    strikes: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
}

/// The shared ban list; clones share it. Give one clone to the layer
/// ([`NoResponseLayerBuilder::ban_list`](crate::NoResponseLayerBuilder::ban_list))
/// to count strikes, and one to the serve loop to refuse banned clients.
#[derive(Clone)]
pub struct BanList {
    inner: Arc<Inner>,
}

struct Inner {
    policy: BanPolicy,
    entries: DashMap<IpAddr, Entry>,
    /// Told of every ban this list makes itself, to share it with other
    /// replicas; not of bans it is given.
    on_ban: std::sync::OnceLock<Box<dyn Fn(IpAddr, Duration) + Send + Sync>>,
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
                entries: DashMap::new(),
                on_ban: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Records a drop for `ip` (canonical); bans it on the last strike.
    pub(crate) fn strike(&self, ip: IpAddr) {
        let policy = self.inner.policy;
        let now = Instant::now();
        if !self.inner.entries.contains_key(&ip) && self.inner.entries.len() >= policy.max_clients {
            self.sweep(now);
            if self.inner.entries.len() >= policy.max_clients {
                return;
            }
        }
        let mut entry = self.inner.entries.entry(ip).or_insert(Entry {
            strikes: 0,
            window_start: now,
            banned_until: None,
        });
        if entry.banned_until.is_some_and(|until| until > now) {
            return;
        }
        if now.duration_since(entry.window_start) > policy.window || entry.banned_until.is_some() {
            *entry = Entry {
                strikes: 0,
                window_start: now,
                banned_until: None,
            };
        }
        entry.strikes += 1;
        if entry.strikes >= policy.strikes {
            entry.banned_until = Some(now + policy.ban_for);
            tracing::warn!(
                target: "tower_no_response::ban",
                client_ip = %ip,
                strikes = entry.strikes,
                ban_secs = policy.ban_for.as_secs_f64(),
                "client banned"
            );
            drop(entry);
            if let Some(share) = self.inner.on_ban.get() {
                share(ip, policy.ban_for);
            }
        }
    }

    /// Bans `ip` for `ban_for` on another replica's word. Not shared again,
    /// and never shortens a ban already in force.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ban_from_peer(&self, ip: IpAddr, ban_for: Duration) {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let until = now + ban_for;
        if !self.inner.entries.contains_key(&ip)
            && self.inner.entries.len() >= self.inner.policy.max_clients
        {
            self.sweep(now);
            if self.inner.entries.len() >= self.inner.policy.max_clients {
                return;
            }
        }
        let mut entry = self.inner.entries.entry(ip).or_insert(Entry {
            strikes: 0,
            window_start: now,
            banned_until: None,
        });
        if entry.banned_until.is_some_and(|u| u >= until) {
            return;
        }
        let fresh = entry.banned_until.is_none_or(|u| u <= now);
        entry.banned_until = Some(until);
        if fresh {
            tracing::warn!(
                target: "tower_no_response::ban",
                client_ip = %ip,
                ban_secs = ban_for.as_secs_f64(),
                source = "shared",
                "client banned"
            );
        }
    }

    /// Sets the one hook told of each ban this list makes. Returns `false`
    /// if a hook was already set.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn share_with(&self, hook: Box<dyn Fn(IpAddr, Duration) + Send + Sync>) -> bool {
        self.inner.on_ban.set(hook).is_ok()
    }

    /// Whether `ip` is banned now. An expired ban is lifted here.
    #[must_use]
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let now = Instant::now();
        let Some(entry) = self.inner.entries.get(&ip).map(|e| *e) else {
            return false;
        };
        match entry.banned_until {
            Some(until) if until > now => true,
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
    fn ban_and_unban_are_events() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        struct Messages(Arc<Mutex<Vec<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Messages {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                struct Message(String);
                impl tracing::field::Visit for Message {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
                        self.0.push_str(&format!("{}={v:?} ", f.name()));
                    }
                }
                let mut m = Message(event.metadata().target().to_owned() + " ");
                event.record(&mut m);
                self.0.lock().unwrap().push(m.0);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(Messages(Arc::clone(&seen))),
        );
        let bans = BanList::new(BanPolicy::new(1, Duration::from_secs(60), Duration::ZERO));
        bans.strike(ip("192.0.2.7"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!bans.is_banned(ip("192.0.2.7")));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[0].starts_with("tower_no_response::ban message=client banned"),
            "{seen:?}"
        );
        assert!(seen[0].contains("client_ip=192.0.2.7"), "{seen:?}");
        assert!(seen[1].contains("message=client unbanned"), "{seen:?}");
    }

    #[test]
    fn memory_is_capped() {
        let bans = BanList::new(
            BanPolicy::new(5, Duration::from_secs(60), Duration::from_secs(60)).max_clients(10),
        );
        for i in 0..100u32 {
            bans.strike(IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(bans.len(), 10);
    }
}
