//! What a store that shares a ban list between replicas needs of it: a
//! hook told of each ban and unban this replica makes, and a way to apply
//! another replica's without sharing them again.

use std::net::IpAddr;
use std::time::Duration;

use super::{BanList, FOREVER, Hook};

/// [`FOREVER`] in milliseconds, for stores that keep ban expiries.
pub(crate) const FOREVER_MS: u64 = FOREVER.as_secs() * 1000;

impl BanList {
    /// Sets the one hook told of each ban and unban this list makes.
    /// Returns `false` if a hook was already set.
    pub(crate) fn share_with(&self, hook: Hook) -> bool {
        self.inner.replicas.set(hook).is_ok()
    }

    /// Lifts a ban on another replica's word. Not shared again.
    pub(crate) fn unban_from_peer(&self, ip: IpAddr) {
        self.unban_quietly(self.key(ip));
    }

    /// Bans `ip` for `ban_for` on another replica's word. Not shared again,
    /// and never shortens a ban already in force.
    pub(crate) fn ban_from_peer(&self, ip: IpAddr, ban_for: Duration) {
        self.ban_quietly(ip, ban_for, "shared");
    }
}

#[cfg(test)]
mod tests {
    use super::super::BanPolicy;
    use super::*;

    #[test]
    fn a_replica_s_endless_ban_does_not_overflow() {
        let bans = BanList::new(BanPolicy::new(1, Duration::MAX, Duration::MAX));
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        bans.ban_from_peer(ip, Duration::MAX);
        assert!(bans.is_banned(ip));
    }
}
