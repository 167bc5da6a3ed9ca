//! The rate limiter's table: each client's key and state side by side in
//! one 32-byte slot, so that finding a client touches one cache line.
//!
//! With tens of thousands of clients the table is larger than a core's
//! cache and every lookup misses. A general hash map keeps a separate array
//! of control bytes and misses twice, on that array and on the entry; here
//! a slot holds the key, the state and the empty mark together, and is
//! aligned so that it never straddles two lines.
//!
//! The slots are open-addressed with linear probing, in shards behind a
//! read-write lock each. Lookups and state updates (a compare-and-swap on
//! the slot's state) share the lock; only adding a client, and the sweep,
//! take it exclusively. Keys are hashed with foldhash, seeded at random per
//! table, so addresses an attacker picks cannot be aimed at one shard or one
//! probe run.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// The state that marks an empty slot. A client's state is a time in
/// nanoseconds since the limiter started, which never comes near it.
const EMPTY: u64 = u64::MAX;
/// A power of two; the shard is taken from the hash's top bits.
const SHARDS: usize = 64;
/// The fewest slots a shard allocates.
const MIN_SLOTS: usize = 16;

#[repr(align(32))]
struct Slot<K> {
    key: K,
    state: AtomicU64,
}

impl<K: Default> Slot<K> {
    fn empty() -> Self {
        Self {
            key: K::default(),
            state: AtomicU64::new(EMPTY),
        }
    }
}

struct Shard<K> {
    /// A power of two long, or empty; never more than seven eighths full,
    /// so every probe run ends at an empty slot.
    slots: Box<[Slot<K>]>,
    len: usize,
}

/// Keeps each shard's lock on a cache line of its own.
#[repr(align(64))]
struct Padded<T>(T);

pub(super) struct SlotTable<K> {
    shards: Box<[Padded<RwLock<Shard<K>>>]>,
    hasher: foldhash::quality::RandomState,
}

impl<K: Copy + Default + Eq + Hash> SlotTable<K> {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Padded(RwLock::new(Shard {
                        slots: Box::new([]),
                        len: 0,
                    }))
                })
                .collect(),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    fn locate(&self, key: &K) -> (&RwLock<Shard<K>>, u64) {
        let hash = self.hasher.hash_one(key);
        let shard = usize::try_from(hash >> (64 - SHARDS.trailing_zeros())).unwrap_or(0);
        (&self.shards[shard].0, hash)
    }

    /// Calls `f` with the state of `key`, if the table holds it.
    pub(super) fn with_state<R>(&self, key: &K, f: impl FnOnce(&AtomicU64) -> R) -> Option<R> {
        let (shard, hash) = self.locate(key);
        // Nothing panics while holding a lock, so a poisoned one is sound.
        let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
        shard.find(key, hash).map(|i| f(&shard.slots[i].state))
    }

    /// Calls `f` with the state of `key`, added first (with state `0`) if
    /// the table does not hold it; `f` is told whether it was added.
    pub(super) fn with_state_or_add<R>(&self, key: &K, f: impl FnOnce(&AtomicU64, bool) -> R) -> R {
        let (shard, hash) = self.locate(key);
        let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
        let (index, added) = match shard.find(key, hash) {
            Some(index) => (index, false),
            None => (shard.add(*key, hash, &self.hasher), true),
        };
        f(&shard.slots[index].state, added)
    }

    /// Keeps the clients whose state `keep` accepts (it may be asked more
    /// than once about one); returns how many were removed.
    pub(super) fn retain(&self, mut keep: impl FnMut(u64) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.0.write().unwrap_or_else(PoisonError::into_inner);
            // A shard whose every client stays is left as it is, rather
            // than rebuilt on every sweep.
            let stays = |slot: &Slot<K>| {
                let state = slot.state.load(Ordering::Relaxed);
                state == EMPTY || keep(state)
            };
            if shard.slots.iter().all(stays) {
                continue;
            }
            let before = shard.len;
            let size = shard.slots.len();
            shard.rebuild(size, &self.hasher, &mut keep);
            removed += before - shard.len;
        }
        removed
    }

    /// Gives back the memory of slots no client needs.
    pub(super) fn shrink_to_fit(&self) {
        for shard in &self.shards {
            let mut shard = shard.0.write().unwrap_or_else(PoisonError::into_inner);
            let size = slots_for(shard.len);
            if size < shard.slots.len() {
                shard.rebuild(size, &self.hasher, &mut |_| true);
            }
        }
    }
}

/// The slots that hold `len` clients at most seven eighths full.
fn slots_for(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (len * 8 / 7 + 1).next_power_of_two().max(MIN_SLOTS)
}

impl<K: Copy + Default + Eq + Hash> Shard<K> {
    fn find(&self, key: &K, hash: u64) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        // Truncating the hash keeps its low bits, all the mask wants.
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            // Slots fill and empty only under the write lock, so under
            // either lock this reads a settled mark.
            if slot.state.load(Ordering::Relaxed) == EMPTY {
                return None;
            }
            if slot.key == *key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key` with state `0`, growing first if it would make the shard
    /// more than seven eighths full; returns its slot.
    fn add(&mut self, key: K, hash: u64, hasher: &impl BuildHasher) -> usize {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            let size = (self.slots.len() * 2).max(MIN_SLOTS);
            self.rebuild(size, hasher, &mut |_| true);
        }
        self.place(key, hash, 0)
    }

    fn place(&mut self, key: K, hash: u64, state: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i].state.load(Ordering::Relaxed) != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            key,
            state: AtomicU64::new(state),
        };
        self.len += 1;
        i
    }

    /// Moves the clients `keep` accepts into `size` fresh slots.
    fn rebuild(
        &mut self,
        size: usize,
        hasher: &impl BuildHasher,
        keep: &mut impl FnMut(u64) -> bool,
    ) {
        let fresh: Box<[Slot<K>]> = (0..size).map(|_| Slot::empty()).collect();
        let old = std::mem::replace(&mut self.slots, fresh);
        self.len = 0;
        for slot in old.iter() {
            let state = slot.state.load(Ordering::Relaxed);
            if state != EMPTY && keep(state) {
                self.place(slot.key, hasher.hash_one(slot.key), state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_slot_is_one_aligned_half_line() {
        assert_eq!(std::mem::size_of::<Slot<(u64, u64)>>(), 32);
        assert_eq!(std::mem::align_of::<Slot<(u64, u64)>>(), 32);
    }

    #[test]
    fn adds_finds_grows_and_sweeps() {
        let table = SlotTable::<(u64, u64)>::new();
        assert_eq!(
            table.with_state(&(1, 1), |s| s.load(Ordering::Relaxed)),
            None
        );
        for i in 0..10_000u64 {
            let added = table.with_state_or_add(&(i, !i), |s, added| {
                s.store(i, Ordering::Relaxed);
                added
            });
            assert!(added);
        }
        assert!(!table.with_state_or_add(&(7, !7), |_, added| added));
        for i in 0..10_000u64 {
            assert_eq!(
                table.with_state(&(i, !i), |s| s.load(Ordering::Relaxed)),
                Some(i),
                "{i}"
            );
        }
        assert_eq!(table.with_state(&(7, 7), |_| ()), None);
        // Keep the even states: the odd are gone, the rest still found.
        assert_eq!(table.retain(|state| state % 2 == 0), 5_000);
        for i in 0..10_000u64 {
            let found = table.with_state(&(i, !i), |s| s.load(Ordering::Relaxed));
            assert_eq!(found, (i % 2 == 0).then_some(i), "{i}");
        }
        table.shrink_to_fit();
        assert_eq!(
            table.with_state(&(9_998, !9_998), |s| s.load(Ordering::Relaxed)),
            Some(9_998)
        );
        assert_eq!(table.retain(|_| false), 5_000);
        table.shrink_to_fit();
        assert!(
            table
                .shards
                .iter()
                .all(|s| s.0.read().unwrap().slots.is_empty())
        );
    }

    /// Threads that add, find and update the same keys at once lose no
    /// update and add no key twice.
    #[test]
    fn concurrent_updates_are_all_counted() {
        let table = Arc::new(SlotTable::<(u64, u64)>::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut added = 0;
                    for round in 0..50 {
                        for key in 0..500u64 {
                            let bump = |s: &AtomicU64| s.fetch_add(1, Ordering::AcqRel);
                            if table.with_state(&(key, round % 3), bump).is_none() {
                                table.with_state_or_add(&(key, round % 3), |s, new| {
                                    bump(s);
                                    added += usize::from(new);
                                });
                            }
                        }
                    }
                    added
                })
            })
            .collect();
        let added: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(added, 1_500, "each key added once");
        let mut total = 0;
        for key in 0..500u64 {
            for group in 0..3 {
                total += table
                    .with_state(&(key, group), |s| s.load(Ordering::Relaxed))
                    .unwrap();
            }
        }
        assert_eq!(total, 4 * 50 * 500);
    }
}
