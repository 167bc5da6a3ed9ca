//! Which primary of a Redis Cluster holds a client's key, so that each
//! primary gets its own circuit: one that stalls is marked down alone, while
//! the clients on the others keep their shared budget.
//!
//! A key's hash slot is Redis's own: CRC16 (XMODEM) of the key, or of its
//! hash tag, modulo 16384. The slot's owner comes from `CLUSTER SLOTS`, read
//! in the background and kept as the last good answer; until the first
//! answer, keys have no part and share the store-wide circuit.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::connect::Connection;

/// The number of hash slots in every Redis Cluster.
const SLOTS: u16 = 16384;

/// How often the slot map is read again while the store is in use, so that
/// a failover or a resharding is followed.
const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The longest one read of the slot map may take: the node asked may be the
/// one that stalls, and the last good map is kept meanwhile.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// CRC16 with the XMODEM parameters (polynomial 0x1021, initial value 0, no
/// reflection), as Redis Cluster hashes keys.
const fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    let mut i = 0;
    while i < bytes.len() {
        crc ^= (bytes[i] as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// Feeds formatted text to the CRC, so that a key's slot is found without
/// building the key.
struct Crc(u16);

impl fmt::Write for Crc {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = crc16(self.0, s.as_bytes());
        Ok(())
    }
}

/// How the rate-limit keys `{prefix}rl:{ip}` hash, worked out once from the
/// prefix: neither `rl:` nor an address holds a brace, so only the prefix
/// can open a hash tag.
#[derive(Debug, Clone, Copy)]
enum KeyHash {
    /// The prefix holds a non-empty hash tag: every key has this slot.
    Tagged(u16),
    /// The whole key is hashed; this is the CRC of `{prefix}rl:`.
    Whole(u16),
}

impl KeyHash {
    fn of(prefix: &str) -> Self {
        if let Some(open) = prefix.find('{') {
            let after = &prefix[open + 1..];
            // Redis takes the first `}` after the first `{`; an empty tag
            // counts as none.
            if let Some(close) = after.find('}').filter(|&close| close > 0) {
                return Self::Tagged(crc16(0, &after.as_bytes()[..close]) % SLOTS);
            }
        }
        Self::Whole(crc16(crc16(0, prefix.as_bytes()), b"rl:"))
    }

    fn slot(self, ip: IpAddr) -> u16 {
        match self {
            Self::Tagged(slot) => slot,
            Self::Whole(state) => {
                let mut crc = Crc(state);
                // Writing to the CRC cannot fail.
                let _ = write!(crc, "{ip}");
                crc.0 % SLOTS
            }
        }
    }
}

/// Slot ranges and the primary (`host:port`) that serves each, sorted by
/// their first slot.
#[derive(Debug, Default)]
struct SlotMap {
    ranges: Vec<(u16, u16, Arc<str>)>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&Arc<str>> {
        let after = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, node) = self.ranges.get(after.checked_sub(1)?)?;
        (slot <= *last).then_some(node)
    }

    /// The answer to `CLUSTER SLOTS`: for each range, its first and last
    /// slot, then the primary as `[host, port, id, ...]`, then replicas.
    fn parse(value: &Value) -> Result<Self, String> {
        let bad = || format!("unexpected CLUSTER SLOTS answer: {value:?}");
        let Value::Array(entries) = value else {
            return Err(bad());
        };
        let mut ranges = Vec::with_capacity(entries.len());
        let mut names: Vec<Arc<str>> = Vec::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return Err(bad());
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(node))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad());
            };
            let host = match node.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err(bad()),
            };
            let Some(Value::Int(port)) = node.get(1) else {
                return Err(bad());
            };
            let (Ok(first), Ok(last)) = (u16::try_from(*first), u16::try_from(*last)) else {
                return Err(bad());
            };
            if first > last || last >= SLOTS {
                return Err(bad());
            }
            let name = format!("{host}:{port}");
            // One shared name per node, so that its circuit is found by
            // comparing a pointer's worth of text.
            let name = match names.iter().find(|known| ***known == *name) {
                Some(known) => Arc::clone(known),
                None => {
                    let name: Arc<str> = name.into();
                    names.push(Arc::clone(&name));
                    name
                }
            };
            ranges.push((first, last, name));
        }
        ranges.sort_unstable_by_key(|(first, _, _)| *first);
        Ok(Self { ranges })
    }
}

/// The slot map of one cluster store, read again in the background.
pub(super) struct Slots {
    hash: KeyHash,
    map: ArcSwapOption<SlotMap>,
    /// Milliseconds since `epoch` before which the map is not read again.
    next_read_ms: AtomicU64,
    reading: AtomicBool,
    epoch: Instant,
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots")
            .field("hash", &self.hash)
            .field("map", &self.map.load().as_deref())
            .finish_non_exhaustive()
    }
}

impl Slots {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            hash: KeyHash::of(prefix),
            map: ArcSwapOption::empty(),
            next_read_ms: AtomicU64::new(0),
            reading: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// The primary that holds the rate-limit key of `ip`, as far as the
    /// last map read says. When the map is due, a read is started through
    /// `connect` (never waited for).
    pub(super) fn owner_of(
        self: &Arc<Self>,
        ip: IpAddr,
        connect: impl FnOnce() -> Result<Connection, String>,
    ) -> Option<Arc<str>> {
        self.refresh_if_due(connect);
        let map = self.map.load();
        map.as_deref()?.owner(self.hash.slot(ip)).cloned()
    }

    fn refresh_if_due(self: &Arc<Self>, connect: impl FnOnce() -> Result<Connection, String>) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now < self.next_read_ms.load(Ordering::Relaxed)
            || self.reading.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let every = u64::try_from(REFRESH_EVERY.as_millis()).unwrap_or(u64::MAX);
        self.next_read_ms
            .store(now.saturating_add(every), Ordering::Relaxed);
        let (Ok(runtime), Ok(Connection::Cluster(mut cluster))) =
            (tokio::runtime::Handle::try_current(), connect())
        else {
            self.reading.store(false, Ordering::Release);
            return;
        };
        let slots = Reading(Arc::clone(self));
        runtime.spawn(async move {
            let slots = &slots.0;
            let read = cluster.route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            );
            match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok(value)) => match SlotMap::parse(&value) {
                    Ok(map) => slots.map.store(Some(Arc::new(map))),
                    Err(error) => tracing::debug!(
                        target: "tower_no_response::rate_limit",
                        error,
                        "slot map not updated"
                    ),
                },
                // The last good map stays; the next read is due soon.
                Ok(Err(error)) => tracing::debug!(
                    target: "tower_no_response::rate_limit",
                    %error,
                    "slot map not updated"
                ),
                Err(_) => tracing::debug!(
                    target: "tower_no_response::rate_limit",
                    "slot map not updated: no answer within {READ_TIMEOUT:?}"
                ),
            }
        });
    }
}

/// Marks the read over when its task ends, however it ends: a task dropped
/// with its runtime must not stop every later read.
struct Reading(Arc<Slots>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_xmodem() {
        // The check value of CRC-16/XMODEM, which Redis Cluster uses.
        assert_eq!(crc16(0, b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags_follow_redis() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let whole = |key: &str| crc16(0, key.as_bytes()) % SLOTS;
        assert_eq!(KeyHash::of("shop:").slot(ip), whole("shop:rl:192.0.2.7"));
        assert_eq!(KeyHash::of("{shop}:").slot(ip), whole("shop"));
        assert_eq!(KeyHash::of("a{shop}b{x}:").slot(ip), whole("shop"));
        // An empty tag, or one never closed, is no tag.
        assert_eq!(KeyHash::of("{}:").slot(ip), whole("{}:rl:192.0.2.7"));
        assert_eq!(KeyHash::of("{shop:").slot(ip), whole("{shop:rl:192.0.2.7"));
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        assert_eq!(KeyHash::of("p:").slot(v6), whole("p:rl:2001:db8::"));
    }

    #[test]
    fn the_map_finds_each_slot_owner() {
        let node = |name: &str| -> Value {
            let (host, port) = name.split_once(':').unwrap();
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port.parse().unwrap()),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range =
            |first, last, name| Value::Array(vec![Value::Int(first), Value::Int(last), node(name)]);
        let answer = Value::Array(vec![
            range(10923, 16383, "10.0.0.3:6379"),
            range(0, 5460, "10.0.0.1:6379"),
            range(5461, 10922, "10.0.0.2:6379"),
        ]);
        let map = SlotMap::parse(&answer).unwrap();
        let owner = |slot| map.owner(slot).map(|n| n.to_string());
        assert_eq!(owner(0).as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(owner(5460).as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(owner(5461).as_deref(), Some("10.0.0.2:6379"));
        assert_eq!(owner(16383).as_deref(), Some("10.0.0.3:6379"));
        let gap = SlotMap::parse(&Value::Array(vec![range(100, 200, "10.0.0.1:1")])).unwrap();
        assert_eq!(gap.owner(99), None);
        assert_eq!(gap.owner(201), None);
        assert!(SlotMap::parse(&Value::Array(vec![range(5, 16384, "a:1")])).is_err());
        assert!(SlotMap::parse(&Value::Int(1)).is_err());
    }
}
