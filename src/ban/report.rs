//! What a CrowdSec Local API needs of a ban list to be told of its bans:
//! a hook.

use super::{BanList, Hook};

impl BanList {
    /// Sets the hook told of each ban and unban this list makes, for a
    /// report to a CrowdSec LAPI. Returns `false` if one was already set.
    pub(crate) fn report_to(&self, hook: Hook) -> bool {
        self.inner.report.set(hook).is_ok()
    }
}
