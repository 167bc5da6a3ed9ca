//! One ban list for every replica: bans written as keys that expire with
//! them, announced on a channel, and read back by a scan of every primary
//! whenever a replica (re)subscribes.

use std::future::poll_fn;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use redis::Value;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};

use super::RedisStore;
use super::connect::Connection;
use crate::ban::{BanChange, BanList};
use crate::limit::StoreError;

/// Stores or deletes a ban and announces it. KEYS[1]: the ban's key.
/// ARGV[1]: its TTL in milliseconds, or `-` to unban; ARGV[2]: the channel;
/// ARGV[3]: the announcement. Returns how many subscribers heard it.
pub(super) const PUBLISH: &str = r"
if ARGV[1] == '-' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return redis.call('PUBLISH', ARGV[2], ARGV[3])
";

/// Keys per SCAN page.
const SCAN_COUNT: u32 = 1000;

impl RedisStore {
    /// Shares `bans` with every replica that shares a list through a store
    /// with the same address and prefix: bans made here are written to Redis
    /// with their TTL and announced; bans announced or stored by others are
    /// applied here. Runs on the current tokio runtime until it shuts down.
    ///
    /// On a cluster, each ban key lives on the primary that owns its slot,
    /// announcements reach every node, and the catch-up scan visits every
    /// primary.
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
            // Each failure moves to the next seed node, so a cluster with
            // one node down still delivers announcements.
            let mut node = 0;
            loop {
                if let Err(error) = reader.follow_bans(&bans, node).await {
                    tracing::warn!(
                        target: "tower_no_response::ban",
                        store = ?reader,
                        %error,
                        "lost the shared ban list; retrying in 1 s"
                    );
                }
                node += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(())
    }

    /// Writes a ban as a key that expires with it, or deletes an unbanned
    /// one, and announces the change to every replica: one script, so one
    /// round trip, routed on a cluster to the key's primary, from which the
    /// announcement still reaches every node.
    async fn publish(&self, change: BanChange) -> Result<(), String> {
        let mut conn = self.connection()?;
        let (ip, ms) = match change {
            // Redis refuses an expiry past what a 64-bit millisecond clock
            // holds; a century is as good as forever.
            BanChange::Ban(ip, ban_for) => (
                ip,
                u64::try_from(ban_for.as_millis())
                    .unwrap_or(u64::MAX)
                    .clamp(1, crate::ban::FOREVER_MS)
                    .to_string(),
            ),
            BanChange::Unban(ip) => (ip, "-".to_owned()),
        };
        let announcement = format!("{ip} {ms}");
        self.inner
            .publish
            .key(self.key("ban", ip))
            .arg(ms)
            .arg(self.channel())
            .arg(announcement)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Subscribes through the `node`th client (modulo their number), reads
    /// the bans in force, then applies announcements until the subscription
    /// breaks.
    async fn follow_bans(&self, bans: &BanList, node: usize) -> Result<(), String> {
        let clients = self.inner.backend.subscribers();
        let client = &clients[node % clients.len()];
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
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

    /// Applies every ban still stored, with its remaining TTL.
    async fn load_bans(&self, bans: &BanList) -> Result<(), String> {
        let mut conn = self.connection()?;
        // SCAN's MATCH is a glob: a prefix with `*`, `?`, `[` or `\\` in it
        // must match only itself.
        let stem = format!("{}ban:", self.inner.prefix);
        let scan = Scan {
            pattern: format!("{}*", glob_escape(&stem)),
        };
        let apply = |keys: &[String], ttls: Vec<i64>| {
            for (key, ttl) in keys.iter().zip(ttls) {
                let ip = key.strip_prefix(stem.as_str()).map(str::parse::<IpAddr>);
                if let (Some(Ok(ip)), Ok(ms)) = (ip, u64::try_from(ttl)) {
                    bans.ban_from_peer(ip, Duration::from_millis(ms));
                }
            }
        };
        match &mut conn {
            Connection::Single(_) => {
                let mut cursor = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = scan
                        .page(cursor)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    if !keys.is_empty() {
                        let ttls = ttls(&keys)
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| e.to_string())?;
                        apply(&keys, ttls);
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
            Connection::Cluster(cluster) => {
                // SCAN walks one node's keys. The first page goes to every
                // primary at once; each answer names its node, and that
                // node's later pages and TTLs go to it by address.
                let first = cluster
                    .route_command(
                        scan.page(0),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let Value::Map(pages) = first else {
                    return Err(format!("SCAN on every primary answered {first:?}"));
                };
                for (node, page) in pages {
                    let node: String = redis::from_redis_value(node).map_err(|e| e.to_string())?;
                    let (host, port) = node
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                        .ok_or_else(|| format!("SCAN answered for an unknown node {node:?}"))?;
                    let at = || SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port,
                    };
                    let (mut next, mut keys): (u64, Vec<String>) =
                        redis::from_redis_value(page).map_err(|e| e.to_string())?;
                    loop {
                        if !keys.is_empty() {
                            let values = cluster
                                .route_pipeline(ttls(&keys), 0, keys.len(), at())
                                .await
                                .map_err(|e| e.to_string())?;
                            let ttls = values
                                .into_iter()
                                .map(redis::from_redis_value)
                                .collect::<Result<Vec<i64>, _>>()
                                .map_err(|e| e.to_string())?;
                            apply(&keys, ttls);
                        }
                        if next == 0 {
                            break;
                        }
                        let page = cluster
                            .route_command(scan.page(next), RoutingInfo::SingleNode(at()))
                            .await
                            .map_err(|e| e.to_string())?;
                        (next, keys) = redis::from_redis_value(page).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// The SCAN over this store's ban keys.
struct Scan {
    pattern: String,
}

impl Scan {
    fn page(&self, cursor: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        cmd
    }
}

/// One round trip for the TTLs of a whole page.
fn ttls(keys: &[String]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(key);
    }
    pipe
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

/// `"<ip> <milliseconds>"`, as [`RedisStore::publish`] writes it.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_are_matched_literally() {
        assert_eq!(glob_escape("app:ban:"), "app:ban:");
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
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
