//! The parsers: what a request says about its host and its client, read
//! from bytes without allocating. Nothing here judges anything; the rules
//! and the audit output build on it.

pub(crate) mod addr;
pub(crate) mod forwarded;
pub(crate) mod host;
