//! Custom rules: a named predicate over the request head and client IP, for
//! anything the built-in rules do not cover (nginx's `if` and `map` on any
//! variable).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

use super::DropReason;
use crate::error::BuildError;

/// What a custom rule sees of a request: its head, never its body.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target as received.
    pub uri: &'a Uri,
    /// The HTTP version.
    pub version: Version,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The client the rules judged (the real client behind trusted proxies),
    /// when a peer address is known.
    pub client_ip: Option<IpAddr>,
}

pub(crate) type Predicate = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// A named predicate; `true` means the request matches and is dropped.
#[derive(Clone)]
pub(crate) struct CustomRule {
    pub(crate) name: &'static str,
    pub(crate) predicate: Arc<Predicate>,
}

impl fmt::Debug for CustomRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CustomRule").field(&self.name).finish()
    }
}

impl CustomRule {
    /// Rule names end up in logs, metrics labels and configuration files,
    /// so they are plain identifiers and never shadow a built-in rule.
    pub(crate) fn validate(name: &'static str, taken: &[CustomRule]) -> Result<(), BuildError> {
        let bad = |reason: &'static str| BuildError::RuleName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(bad("use lowercase letters, digits and `_`"));
        }
        if DropReason::builtin(name).is_some() {
            return Err(bad("that is the name of a built-in rule"));
        }
        if taken.iter().any(|r| r.name == name) {
            return Err(bad("a custom rule already has that name"));
        }
        Ok(())
    }
}
