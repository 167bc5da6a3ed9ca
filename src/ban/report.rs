//! What a CrowdSec Local API needs of a ban list to be told of its bans:
//! a hook, and how it keys IPv6 clients.

use super::{BanList, Hook};

impl BanList {
    /// Sets the hook told of each ban and unban this list makes, for a
    /// report to a CrowdSec LAPI. Returns `false` if one was already set.
    pub(crate) fn report_to(&self, hook: Hook) -> bool {
        self.inner.report.set(hook).is_ok()
    }

    /// The IPv6 prefix a ban covers: a banned IPv6 client is its network.
    pub(crate) fn ipv6_prefix_len(&self) -> u8 {
        self.inner.policy.ipv6_prefix
    }
}
