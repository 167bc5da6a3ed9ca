//! Redis (or Valkey) as the store shared by every replica: one rate-limit
//! budget per client, and one ban list (feature `redis`; `rediss://` needs
//! feature `redis-tls`).
//!
//! With several replicas behind a load balancer, in-process limits multiply:
//! a client spreading its requests over N replicas gets N budgets, and a ban
//! on one replica means nothing to the others. [`RedisStore`] keeps both in
//! the Redis every replica already reaches: one server, a managed service
//! over TLS, or a Redis Cluster.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_no_response::ban::{BanList, BanPolicy};
//! use tower_no_response::limit::{FailurePolicy, SharedRateLimit};
//! use tower_no_response::redis::RedisStore;
//! use tower_no_response::{NoResponseLayer, RateLimit};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
//! # Managed Redis: TLS and clusters
//!
//! Managed services (ElastiCache with in-transit encryption, Memorystore,
//! Azure Cache for Redis, Upstash, and their Valkey counterparts) are usually
//! reachable only over TLS, and often run as a cluster. With feature
//! `redis-tls`, a `rediss://` URL connects over rustls (ring; no OpenSSL):
//!
//! - the server's certificate is verified against the system's roots by
//!   default, which covers services with publicly trusted certificates;
//! - [`RedisStoreBuilder::ca_file`] verifies it against a private CA instead
//!   (a self-hosted server, or a service that hands out its own CA);
//! - [`RedisStoreBuilder::client_cert_files`] presents a client certificate,
//!   for servers that require mutual TLS (`tls-auth-clients yes`);
//! - a password or an ACL user goes in the URL:
//!   `rediss://user:password@host:6380/`; it is masked in every error and
//!   log line.
//!
//! [`RedisStoreBuilder::cluster`] takes a Redis Cluster's seed nodes (one is
//! enough; give several so that one down at start does not matter) and finds
//! the rest. Each check is one script on one key, so it runs on the primary
//! that owns the client's slot; a ban is one script on its key, and its
//! announcement reaches subscribers on every node; the catch-up scan of
//! stored bans visits every primary. While a primary is down or stalls and
//! no replica has taken over, checks for the clients in its slots get the
//! failure policy, and that primary's circuit opens alone (see *Outages*
//! below): the clients on the other primaries keep their shared budget.
//! With Redis's default `cluster-require-full-coverage yes`, the whole
//! cluster refuses commands once it marks the primary failed (after
//! `cluster-node-timeout`), so from then on every check does. When the
//! primary is back, the connection finds it again.
//!
//! ```no_run
//! # #[cfg(feature = "redis-tls")]
//! # fn run() -> Result<(), tower_no_response::BuildError> {
//! use tower_no_response::redis::RedisStore;
//!
//! let store = RedisStore::builder()
//!     .cluster([
//!         "rediss://default:secret@node-1.cache.example:6379/",
//!         "rediss://default:secret@node-2.cache.example:6379/",
//!     ])
//!     .ca_file("/etc/ssl/cache-ca.pem") // leave out for publicly trusted certificates
//!     .client_cert_files("/etc/ssl/replica.pem", "/etc/ssl/replica.key") // mutual TLS only
//!     .build()?
//!     .key_prefix("shop:444:");
//! # Ok(()) }
//! ```
//!
//! A service that puts a proxy in front of its cluster (one endpoint that
//! routes by itself) is one server: use [`RedisStoreBuilder::url`]. Valkey
//! speaks the same protocol, scripts and cluster bus, and works unchanged:
//! point the URL at it.
//!
//! TLS files are read, and their PEM checked, when the store is built; a
//! missing file, a file without a certificate or key, or TLS files given for
//! a `redis://` URL are refused with [`BuildError::StoreTls`] naming the
//! file. If the program has not installed a process-wide rustls crypto
//! provider, building a TLS store installs ring's.
//!
//! # How it works
//!
//! - **One budget.** Each check is one Lua script, run atomically by Redis:
//!   GCRA with the same `rate` and `burst` meaning as the in-process limiter,
//!   so nginx's `rate=10r/s burst=20 nodelay` figures (21 of 40 back-to-back
//!   requests pass) hold across any number of replicas. Time comes from the
//!   Redis server's clock, so replicas whose clocks disagree still agree on
//!   the budget. A client's state is one key, `{prefix}rl:{ip}`, holding its
//!   theoretical arrival time; it expires on its own once the budget has
//!   refilled, so idle clients cost nothing.
//! - **Outages.** Every check waits at most `timeout` (100 ms by default). A
//!   request whose check fails or is slow gets the failure policy:
//!   `FailurePolicy::Open` (the default) judges it by this replica's own
//!   in-process limiter at the same rate, so a per-replica limit still holds,
//!   and `Closed` drops it as `rate_limit_unavailable`. One failure affects
//!   only its own request; `open_after` failures in a row (5 by default) mark
//!   Redis down. While it stays down only one request every `retry_every`
//!   (500 ms) tries it; the others get the policy at once, so an outage costs
//!   no latency. The connection is remade in the background. Each transition
//!   is one event on target `tower_no_response::rate_limit`: `rate-limit
//!   store unavailable; failing open` (warn) and `rate-limit store available
//!   again` (info).
//! - **One circuit per primary.** On a cluster, failures are counted per
//!   primary: the one that owns the client's key's hash slot, found from
//!   `CLUSTER SLOTS` (read after first use, then every 5 s in the
//!   background; the last good map is kept while a read fails). A primary
//!   that stalls is marked down alone, and answers from the healthy ones
//!   neither reset its count nor are lost with it. The events above carry a
//!   `part` field naming the primary, `host:port`. Until the first map is
//!   read, the cluster has one circuit.
//! - **Local pre-check.** With `local_precheck(true)` each replica first
//!   checks its own in-process limiter with the same rate. A client over the
//!   limit on one replica alone is over it in total, so an obvious flood is
//!   dropped without a round trip.
//! - **Shared bans.** [`RedisStore::share_bans`] writes each ban this replica
//!   makes as `{prefix}ban:{ip}` with the ban's TTL and announces it on the
//!   channel `{prefix}bans`; every replica sharing its list applies the bans
//!   it hears of, and reads the ones still in force whenever it
//!   (re)subscribes, so a replica started later, or one that lost its
//!   connection, catches up. Bans are still enforced at accept from the
//!   local list, without a round trip.
//! - **Key prefix.** Replicas that share a budget use the same prefix;
//!   services that must not share one use different prefixes.
//! - **Cost.** One round trip per allowed request: on loopback about 48 µs
//!   at the median and 73 µs at p99 on the project's machine, and one Redis
//!   core serves the checks of tens of thousands of requests per second (see
//!   the performance report, `benches/README.md`, and `benches/fleet.sh`).
//!   Requests that an earlier rule drops never reach Redis.
//!
//! Try it with the demo: two instances on two ports, one Redis, one budget
//! per client IP.
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
//! `--redis-fail closed` drops requests while Redis is unreachable;
//! `--redis rediss://HOST:PORT/ --redis-ca FILE` (feature `redis-tls`) and
//! `--redis-cluster URL,URL,...` reach a managed or clustered Redis.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::BuildError;
use crate::limit::{RateLimit, RateLimitStore, StoreError, StoreFuture, StoreVerdict};

mod bans;
mod connect;
mod slots;

pub use connect::RedisStoreBuilder;
#[cfg(test)]
use connect::mask_password;
use connect::{Backend, Connection, LazyConnection};
use slots::Slots;

/// GCRA in microseconds. KEYS[1]: the client's key. ARGV[1]: the interval,
/// ARGV[2]: the capacity. Returns `{1, 0}` to allow, `{0, wait}` to refuse.
/// Numbers are formatted by hand: Lua's default would round a microsecond
/// timestamp to 14 digits. One key per call, so on a cluster the script runs
/// on the primary that owns the client's slot.
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

/// A Redis or Valkey server, or cluster, shared by every replica. Clones
/// share one connection.
///
/// The connection is made on first use and remade after a failure, in the
/// background; requests never wait longer than the
/// [`SharedRateLimit::timeout`](crate::limit::SharedRateLimit::timeout).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    shown: String,
    prefix: String,
    script: redis::Script,
    publish: redis::Script,
    connection: LazyConnection,
    /// On a cluster, which primary holds each client's key.
    slots: Option<Arc<Slots>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisStore({})", self.inner.shown)
    }
}

impl RedisStore {
    /// A store at one server: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS verified against the system roots (feature
    /// `redis-tls`), or `unix:///path`. Nothing is connected yet.
    /// [`RedisStore::builder`] adds a cluster, a CA file and client
    /// certificates.
    ///
    /// # Errors
    /// [`BuildError::StoreUrl`], naming the URL (password masked), when it
    /// cannot be parsed or needs a feature that is off.
    pub fn new(url: &str) -> Result<Self, BuildError> {
        Self::builder().url(url).build()
    }

    /// A builder for a cluster, or for TLS with a CA file or client
    /// certificates.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    fn from_backend(backend: Backend, shown: String, prefix: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                script: redis::Script::new(GCRA),
                publish: redis::Script::new(bans::PUBLISH),
                connection: LazyConnection::new(),
                slots: matches!(backend, Backend::Cluster { .. })
                    .then(|| Arc::new(Slots::new(&prefix))),
                backend,
                shown,
                prefix,
            }),
        }
    }

    /// Prefixes every key and channel, `tower_no_response:` by default.
    /// Replicas that share a budget must use the same prefix; services that
    /// must not share one use different prefixes. On a cluster, a prefix
    /// with a hash tag (`{shop}:`) puts every key in one slot, on one node:
    /// leave braces out to spread clients over the cluster.
    #[must_use]
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        // A fresh connection too: clones made before keep theirs.
        Self::from_backend(
            self.inner.backend.clone(),
            self.inner.shown.clone(),
            prefix.into(),
        )
    }

    /// The connection, made lazily so that building the layer needs neither
    /// a runtime nor a reachable server.
    fn connection(&self) -> Result<Connection, String> {
        self.inner
            .connection
            .get_or_init(|| self.inner.backend.connect())
            .clone()
    }

    fn key(&self, kind: &str, ip: IpAddr) -> String {
        format!("{}{kind}:{ip}", self.inner.prefix)
    }

    fn channel(&self) -> String {
        format!("{}bans", self.inner.prefix)
    }
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

    /// On a cluster, the primary (`host:port`) that owns the key's slot, so
    /// that each primary gets its own circuit; `None` for one server, and
    /// until the cluster's slot map has first been read.
    fn part_of(&self, key: IpAddr) -> Option<Arc<str>> {
        let slots = self.inner.slots.as_ref()?;
        slots.owner_of(key, || self.connection())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let error = RedisStore::builder()
            .cluster(["redis://u:hunter2@a:1/", "redis://u:hunter2@b:x/"])
            .build()
            .unwrap_err()
            .to_string();
        assert!(!error.contains("hunter2"), "{error}");
        assert!(format!("{:?}", RedisStore::builder().url("redis://u:hunter2@a/")).contains("***"));
    }

    #[test]
    fn malformed_urls_are_refused_by_name() {
        let error = RedisStore::new("http://example.com/").unwrap_err();
        assert!(error.to_string().contains("http://example.com/"), "{error}");
        let error = RedisStore::builder()
            .cluster(["redis://a:1/", "nonsense"])
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("nonsense"), "{error}");
        let error = RedisStore::builder().cluster(Vec::<String>::new()).build();
        assert!(error.is_err());
    }

    #[test]
    fn a_cluster_takes_one_scheme() {
        if !cfg!(feature = "redis-tls") {
            return;
        }
        let error = RedisStore::builder()
            .cluster(["redis://a:1/", "rediss://b:2/"])
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("mixes"), "{error}");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn tls_without_the_feature_is_refused_by_name() {
        let error = RedisStore::new("rediss://db:6380/")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("rediss://db:6380/") && error.contains("redis-tls"),
            "{error}"
        );
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn tls_files_are_checked_at_build() {
        let error = RedisStore::builder()
            .url("rediss://db:6380/")
            .ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let error = RedisStore::builder()
            .url("rediss://db:6380/")
            .ca_pem("not a certificate")
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("CA PEM") && error.contains("no PEM certificate"),
            "{error}"
        );
        let error = RedisStore::builder()
            .url("redis://db:6379/")
            .ca_pem("x")
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("rediss://"), "{error}");
        assert!(RedisStore::new("rediss://db:6380/").is_ok());
    }
}
