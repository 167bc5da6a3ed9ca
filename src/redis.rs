//! Redis (or Valkey) as the store shared by every replica: one rate-limit
//! budget per client, and one ban list (feature `redis`).
//!
//! # Rate limit
//!
//! [`RedisStore`] implements [`RateLimitStore`] with GCRA in one Lua script
//! per check, run atomically by the server on the server's clock, so replicas
//! whose clocks disagree still share one budget. The state of a client is one
//! key, `{prefix}rl:{ip}`, holding its theoretical arrival time; it expires on
//! its own once the client's budget has refilled, so idle clients cost
//! nothing.
//!
//! # Bans
//!
//! [`RedisStore::share_bans`] makes a [`BanList`] cluster-wide: each ban this
//! replica makes is written as `{prefix}ban:{ip}` with the ban's TTL and
//! announced on the channel `{prefix}bans`. Every replica that shares its list
//! applies the bans it hears of, and reads the ones still in force whenever
//! it (re)subscribes, so a replica that starts late or lost its connection
//! catches up. Bans are still enforced at accept from the local list, with
//! no round trip.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_no_response::ban::{BanList, BanPolicy};
//! use tower_no_response::redis::RedisStore;
//! use tower_no_response::limit::SharedRateLimit;
//! use tower_no_response::{NoResponseLayer, RateLimit};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::new("redis://127.0.0.1:6379/")?.key_prefix("shop:444:");
//! let bans = BanList::new(BanPolicy::new(
//!     20,
//!     Duration::from_secs(60),
//!     Duration::from_secs(600),
//! ));
//! store.share_bans(&bans)?;
//! let layer = NoResponseLayer::builder()
//!     .server_names(["shop.example"])
//!     .rate_limit(RateLimit::per_second(10).burst(20))
//!     .shared_rate_limit(SharedRateLimit::new(store.clone()).local_precheck(true))
//!     .ban_list(bans.clone())
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! # Many replicas, one policy (Redis)
//!
//! With several replicas behind a load balancer, in-process limits multiply: a
//! client spreading its requests over N replicas gets N budgets, and a ban on one
//! replica means nothing to the others. Feature `redis` keeps both in Redis (or
//! Valkey), which every replica already reaches:
//!
//! ```rust,no_run
//! # #[cfg(feature = "redis")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_no_response::ban::{BanList, BanPolicy};
//! use tower_no_response::redis::RedisStore;
//! use tower_no_response::limit::{FailurePolicy, SharedRateLimit};
//! use tower_no_response::{NoResponseLayer, RateLimit};
//!
//! let store = RedisStore::new("redis://10.0.0.5:6379/")?.key_prefix("shop:444:");
//! let bans = BanList::new(BanPolicy::new(20, Duration::from_secs(60), Duration::from_secs(600)));
//! store.share_bans(&bans)?; // inside the tokio runtime
//! let layer = NoResponseLayer::builder()
//!     .server_names(["shop.example"])
//!     .rate_limit(RateLimit::per_second(10).burst(20))
//!     .shared_rate_limit(
//!         SharedRateLimit::new(store)
//!             .timeout(Duration::from_millis(50))
//!             .on_failure(FailurePolicy::Open)
//!             .local_precheck(true),
//!     )
//!     .ban_list(bans.clone())
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! - **One budget.** Each check is one Lua script, run atomically by Redis: GCRA
//!   with the same `rate` and `burst` meaning as the in-process limiter, so
//!   nginx's `rate=10r/s burst=20 nodelay` figures (21 of 40 back-to-back
//!   requests pass) hold across any number of replicas. Time comes from the
//!   Redis server's clock, so replicas whose clocks disagree still agree on the
//!   budget. A client's state is one key, `{prefix}rl:{ip}`, that expires on its
//!   own once the budget has refilled.
//! - **Outages.** Every check waits at most `timeout` (100 ms by default). A
//!   request whose check fails or is slow gets the failure policy:
//!   `FailurePolicy::Open` (the default) judges it by this replica's own
//!   in-process limiter at the same rate, so a per-replica limit still holds,
//!   and `Closed` drops it as `rate_limit_unavailable`. One failure affects
//!   only its own request; `open_after` failures in a row (5 by default) mark
//!   Redis down. While it stays down only one request every `retry_every`
//!   (500 ms) tries it; the others get the policy at once, so an outage costs
//!   no latency. The connection is remade
//!   in the background. Each transition is one event on target
//!   `tower_no_response::rate_limit`: `rate-limit store unavailable; failing
//!   open` (warn) and `rate-limit store available again` (info).
//! - **Local pre-check.** With `local_precheck(true)` each replica first checks
//!   its own in-process limiter with the same rate. A client over the limit on
//!   one replica alone is over it in total, so an obvious flood is dropped
//!   without a round trip.
//! - **Shared bans.** `share_bans` writes each ban this replica makes as
//!   `{prefix}ban:{ip}` with the ban's TTL and announces it on the channel
//!   `{prefix}bans`; every replica sharing its list applies the bans it hears
//!   of, and reads the ones still in force whenever it (re)subscribes, so a
//!   replica started later catches up. Bans are still enforced at accept from
//!   the local list, without a round trip.
//! - **Key prefix.** Replicas that share a budget use the same prefix;
//!   services that must not share one use different prefixes.
//! - **Cost.** One loopback round trip per allowed request: about 48 µs at the
//!   median and 73 µs at p99 on the project's machine (see
//!   the performance report, `benches/README.md`). Requests that an earlier rule drops never
//!   reach Redis.
//!
//! Try it with the demo: two instances on two ports, one Redis, one budget per
//! client IP.
//!
//! ```sh
//! redis-server --port 6379 --save '' &
//! cargo run --example nginx_444 --features redis -- --listen 127.0.0.1:8444 --redis redis://127.0.0.1:6379/ &
//! cargo run --example nginx_444 --features redis -- --listen 127.0.0.1:8445 --redis redis://127.0.0.1:6379/ &
//! for i in $(seq 40); do curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: example.com' -A curl \
//!   http://127.0.0.1:$((8444 + i % 2))/; done | sort | uniq -c
//! # about 21 x 200 (the burst, shared); the rest are dropped: curl prints 000
//! ```
//!
//! `--redis-fail closed` drops requests while Redis is unreachable.

use std::fmt;
use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_core::Stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::ban::{BanChange, BanList};
use crate::error::BuildError;
use crate::limit::{RateLimit, RateLimitStore, StoreError, StoreFuture, StoreVerdict};

/// GCRA in microseconds. KEYS[1]: the client's key. ARGV[1]: the interval,
/// ARGV[2]: the capacity. Returns `{1, 0}` to allow, `{0, wait}` to refuse.
/// Numbers are formatted by hand: Lua's default would round a microsecond
/// timestamp to 14 digits.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - capacity * interval - now
if wait > 0 then return {0, string.format('%.0f', wait)} end
local ttl = math.ceil((next_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl)
return {1, '0'}
";

/// A Redis or Valkey server shared by every replica. Clones share one
/// connection.
///
/// The connection is made on first use and remade after a failure, in the
/// background; requests never wait longer than the
/// [`SharedRateLimit::timeout`](crate::limit::SharedRateLimit::timeout).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    shown: String,
    prefix: String,
    script: redis::Script,
    manager: OnceLock<Result<ConnectionManager, String>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisStore({})", self.inner.shown)
    }
}

impl RedisStore {
    /// A store at `url`: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS where the `redis` crate was built with it, or
    /// `unix:///path`. Nothing is connected yet.
    ///
    /// # Errors
    /// [`BuildError::StoreUrl`], naming the URL (password masked), when it
    /// cannot be parsed.
    pub fn new(url: &str) -> Result<Self, BuildError> {
        let shown = mask_password(url);
        let client = redis::Client::open(url).map_err(|e| BuildError::StoreUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                shown,
                prefix: "tower_no_response:".to_owned(),
                script: redis::Script::new(GCRA),
                manager: OnceLock::new(),
            }),
        })
    }

    /// Prefixes every key and channel, `tower_no_response:` by default.
    /// Replicas that share a budget must use the same prefix; services that
    /// must not share one use different prefixes.
    #[must_use]
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: self.inner.client.clone(),
                shown: self.inner.shown.clone(),
                prefix: prefix.into(),
                script: redis::Script::new(GCRA),
                manager: OnceLock::new(),
            }),
        }
    }

    /// The connection, made lazily so that building the layer needs neither
    /// a runtime nor a reachable server.
    fn connection(&self) -> Result<ConnectionManager, String> {
        self.inner
            .manager
            .get_or_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_connection_timeout(Some(Duration::from_secs(1)));
                ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    fn key(&self, kind: &str, ip: IpAddr) -> String {
        format!("{}{kind}:{ip}", self.inner.prefix)
    }

    fn channel(&self) -> String {
        format!("{}bans", self.inner.prefix)
    }

    /// Shares `bans` with every replica that shares a list through a store
    /// with the same address and prefix: bans made here are written to Redis
    /// with their TTL and announced; bans announced or stored by others are
    /// applied here. Runs on the current tokio runtime until it shuts down.
    ///
    /// # Errors
    /// When called outside a tokio runtime, or when `bans` is already shared.
    pub fn share_bans(&self, bans: &BanList) -> Result<(), StoreError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::new("share_bans needs a tokio runtime"))?;
        // Bounded: a flood of bans must not grow memory; a ban that cannot
        // be queued is still enforced here.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<BanChange>(1024);
        let shared = bans.share_with(Box::new(move |change| {
            if tx.try_send(change).is_err() {
                tracing::warn!(
                    target: "tower_no_response::ban",
                    ?change,
                    "ban not shared: the queue to the store is full"
                );
            }
        }));
        if !shared {
            return Err(StoreError::new("this ban list is already shared"));
        }
        let writer = self.clone();
        runtime.spawn(async move {
            while let Some(change) = rx.recv().await {
                if let Err(error) = writer.publish(change).await {
                    tracing::warn!(
                        target: "tower_no_response::ban",
                        ?change,
                        store = ?writer,
                        %error,
                        "ban not shared"
                    );
                }
            }
        });
        let reader = self.clone();
        let bans = bans.clone();
        runtime.spawn(async move {
            loop {
                if let Err(error) = reader.follow_bans(&bans).await {
                    tracing::warn!(
                        target: "tower_no_response::ban",
                        store = ?reader,
                        %error,
                        "lost the shared ban list; retrying in 1 s"
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(())
    }

    /// Writes a ban as a key that expires with it, or deletes an unbanned
    /// one, and announces the change to every replica.
    async fn publish(&self, change: BanChange) -> Result<(), String> {
        match change {
            BanChange::Ban(ip, ban_for) => self.publish_ban(ip, ban_for).await,
            BanChange::Unban(ip) => {
                let mut conn = self.connection()?;
                redis::pipe()
                    .cmd("DEL")
                    .arg(self.key("ban", ip))
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(format!("{ip} -"))
                    .ignore()
                    .exec_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn publish_ban(&self, ip: IpAddr, ban_for: Duration) -> Result<(), String> {
        let mut conn = self.connection()?;
        // Redis refuses an expiry past what a 64-bit millisecond clock holds;
        // a century is as good as forever.
        let ms = u64::try_from(ban_for.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, crate::ban::FOREVER_MS);
        redis::pipe()
            .cmd("SET")
            .arg(self.key("ban", ip))
            .arg(1)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.channel())
            .arg(format!("{ip} {ms}"))
            .ignore()
            .exec_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// Subscribes, reads the bans in force, then applies announcements until
    /// the subscription breaks.
    async fn follow_bans(&self, bans: &BanList) -> Result<(), String> {
        let mut pubsub = self
            .inner
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| e.to_string())?;
        pubsub
            .subscribe(self.channel())
            .await
            .map_err(|e| e.to_string())?;
        // Subscribed first, so a ban made during the scan is heard of too.
        self.load_bans(bans).await?;
        let mut messages = pubsub.into_on_message();
        while let Some(message) = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx)).await {
            let payload = message.get_payload_bytes();
            match parse_announcement(payload) {
                Some(BanChange::Ban(ip, ban_for)) => bans.ban_from_peer(ip, ban_for),
                Some(BanChange::Unban(ip)) => bans.unban_from_peer(ip),
                None => tracing::warn!(
                    target: "tower_no_response::ban",
                    payload = %String::from_utf8_lossy(payload),
                    "ignored a malformed ban announcement"
                ),
            }
        }
        Err("the subscription closed".to_owned())
    }

    async fn load_bans(&self, bans: &BanList) -> Result<(), String> {
        let mut conn = self.connection()?;
        // SCAN's MATCH is a glob: a prefix with `*`, `?`, `[` or `\\` in it
        // must match only itself.
        let stem = format!("{}ban:", self.inner.prefix);
        let pattern = format!("{}*", glob_escape(&stem));
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                // One round trip for the TTLs of the whole page.
                let mut ttls = redis::pipe();
                for key in &keys {
                    ttls.cmd("PTTL").arg(key);
                }
                let ttls: Vec<i64> = ttls
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                for (key, ttl) in keys.iter().zip(ttls) {
                    let ip = key.strip_prefix(stem.as_str()).map(str::parse::<IpAddr>);
                    if let (Some(Ok(ip)), Ok(ms)) = (ip, u64::try_from(ttl)) {
                        bans.ban_from_peer(ip, Duration::from_millis(ms));
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// `text` as a Redis glob that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RateLimitStore for RedisStore {
    fn check(&self, key: IpAddr, limit: &RateLimit) -> StoreFuture {
        let store = self.clone();
        let interval = u64::try_from(limit.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let capacity = limit.capacity();
        Box::pin(async move {
            let mut conn = store.connection().map_err(StoreError::new)?;
            let (allowed, wait): (u8, u64) = store
                .inner
                .script
                .key(store.key("rl", key))
                .arg(interval)
                .arg(capacity)
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::new)?;
            Ok(if allowed == 1 {
                StoreVerdict::Allow
            } else {
                StoreVerdict::Limited {
                    retry_after: Duration::from_micros(wait),
                }
            })
        })
    }
}

/// `"<ip> <milliseconds>"`, as [`RedisStore::publish_ban`] writes it.
/// `IP MS` announces a ban for `MS` milliseconds; `IP -`, an unban.
fn parse_announcement(payload: &[u8]) -> Option<BanChange> {
    let text = std::str::from_utf8(payload).ok()?;
    let (ip, ms) = text.split_once(' ')?;
    let ip = ip.parse().ok()?;
    if ms == "-" {
        return Some(BanChange::Unban(ip));
    }
    Some(BanChange::Ban(ip, Duration::from_millis(ms.parse().ok()?)))
}

/// `redis://user:secret@host/` as `redis://user:***@host/`, for errors and
/// logs.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_are_matched_literally() {
        assert_eq!(glob_escape("app:ban:"), "app:ban:");
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn passwords_never_reach_errors() {
        assert_eq!(
            mask_password("redis://user:hunter2@db:6379/0"),
            "redis://user:***@db:6379/0"
        );
        assert_eq!(mask_password("redis://:hunter2@db/"), "redis://:***@db/");
        assert_eq!(mask_password("redis://db:6379/"), "redis://db:6379/");
        let error = RedisStore::new("redis://u:hunter2@db:notaport/").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("redis://u:***@db:notaport/"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn malformed_urls_are_refused_by_name() {
        let error = RedisStore::new("http://example.com/").unwrap_err();
        assert!(error.to_string().contains("http://example.com/"), "{error}");
    }

    #[test]
    fn announcements_round_trip_and_junk_is_refused() {
        assert_eq!(
            parse_announcement(b"2001:db8::1 1500"),
            Some(BanChange::Ban(
                "2001:db8::1".parse().unwrap(),
                Duration::from_millis(1500)
            ))
        );
        assert_eq!(
            parse_announcement(b"192.0.2.1 -"),
            Some(BanChange::Unban("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(parse_announcement(b"192.0.2.1"), None);
        assert_eq!(parse_announcement(b"192.0.2.1 -5"), None);
        assert_eq!(parse_announcement(b"\xff\xfe 5"), None);
    }
}
