//! Custom rules: a named predicate over the request head and client IP, for
//! anything the built-in rules do not cover (nginx's `if` and `map` on any
//! variable).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use std::collections::hash_map::RandomState;

use http::{Extensions, HeaderMap, Method, Uri, Version};

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
    /// The TCP peer: the client itself when it connects directly, or the
    /// proxy in front of it. `None` when no peer address is known.
    pub peer: Option<SocketAddr>,
    /// The request's extensions: what layers outside this one put there,
    /// such as the user an authentication layer found.
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(
        request: &'a http::Request<B>,
        peer: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            peer,
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
            client_ip,
            extensions: request.extensions(),
        }
    }
}

/// What a keyed rate limit counts a request under: a client address, an API
/// key, a user id, a route. Keys from bytes are hashed to 128 bits with a
/// key chosen at random per process, so clients cannot aim at each other's
/// budgets, and a key costs the same whatever its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey(pub(crate) u128);

impl LimitKey {
    /// The budget of a client address (IPv4 as its mapped IPv6 form).
    #[must_use]
    pub fn ip(ip: IpAddr) -> Self {
        Self(match ip.to_canonical() {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        })
    }

    /// The budget of whatever `bytes` name: a header value, a token.
    #[must_use]
    pub fn bytes(bytes: &[u8]) -> Self {
        use std::hash::BuildHasher;
        static KEYS: std::sync::LazyLock<(RandomState, RandomState)> =
            std::sync::LazyLock::new(|| (RandomState::new(), RandomState::new()));
        let (high, low) = &*KEYS;
        Self(u128::from(high.hash_one(bytes)) << 64 | u128::from(low.hash_one(bytes)))
    }

    /// The budget of a text, such as a user name.
    #[must_use]
    pub fn text(text: &str) -> Self {
        Self::bytes(text.as_bytes())
    }
}

impl From<IpAddr> for LimitKey {
    fn from(ip: IpAddr) -> Self {
        Self::ip(ip)
    }
}

impl From<u64> for LimitKey {
    /// A numeric id, such as a user's, as its own budget.
    fn from(id: u64) -> Self {
        Self(u128::from(id) | 1 << 127)
    }
}

pub(crate) type KeyFn = dyn Fn(&RequestHead<'_>) -> Option<LimitKey> + Send + Sync;

/// A named rate limit's key: which budget a request counts against, if any.
#[derive(Clone)]
pub(crate) struct KeyedRule {
    pub(crate) name: &'static str,
    pub(crate) key: Arc<KeyFn>,
}

impl fmt::Debug for KeyedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyedRule").field(&self.name).finish()
    }
}

pub(crate) type Predicate = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

std::thread_local! {
    /// What the custom rule that last matched on this thread said of its
    /// match, by rule name: CrowdSec's scenario. Set by the rule's
    /// predicate, taken by the event of that rule's stop or dry-run hit,
    /// which is written on the same thread in the same call.
    static DETAIL: std::cell::RefCell<Option<(&'static str, Arc<str>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Notes what `rule` matched on, for the event of its match.
#[cfg_attr(not(feature = "crowdsec"), allow(dead_code))]
pub(crate) fn note_detail(rule: &'static str, detail: Arc<str>) {
    DETAIL.with(|d| *d.borrow_mut() = Some((rule, detail)));
}

/// Forgets any detail noted before a judgement begins.
pub(crate) fn clear_detail() {
    // The common case, nothing noted, costs a read.
    DETAIL.with(|d| {
        if d.borrow().is_some() {
            *d.borrow_mut() = None;
        }
    });
}

/// The detail `rule` noted for its match, if it is the last one noted.
pub(crate) fn take_detail(rule: &str) -> Option<Arc<str>> {
    DETAIL.with(|d| {
        let mut d = d.borrow_mut();
        match d.as_ref() {
            Some((noted, _)) if *noted == rule => d.take().map(|(_, detail)| detail),
            _ => None,
        }
    })
}

/// A custom rule's judgement of a bare TCP peer, before a byte of its
/// request is read, and the peers it refuses listed for the kernel filter.
pub(crate) trait PeerRule: Send + Sync + fmt::Debug {
    /// Whether a connection from `peer` is refused.
    #[cfg_attr(
        not(any(feature = "server", feature = "axum", feature = "tonic")),
        allow(dead_code)
    )]
    fn refuses(&self, peer: IpAddr) -> bool;

    /// Changes whenever the list of [`nets`](Self::nets) does.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn generation(&self) -> u64;

    /// The networks refused, the longest lasting first, at most `limit`,
    /// each with when it runs out.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn nets(&self, limit: usize) -> Vec<(ipnet::IpNet, std::time::Instant)>;
}

/// A named predicate; `true` means the request matches and is dropped.
#[derive(Clone)]
pub(crate) struct CustomRule {
    pub(crate) name: &'static str,
    pub(crate) predicate: Arc<Predicate>,
    /// The same rule for a peer that connects directly, judged at accept;
    /// `None` for rules that need the request. Read by the connection
    /// sides only.
    pub(crate) peer: Option<Arc<dyn PeerRule>>,
    /// What the rule does unless `rule_action` says otherwise; `None` is a
    /// drop. Part of the rule, so a reload from a document keeps it.
    pub(crate) action: Option<super::Action>,
    /// Whether a request whose judged client is an edge (a trusted proxy's
    /// own request, with no forwarding header) is never matched: the edge
    /// is everyone behind it, so a rule that judges identities spares it.
    pub(crate) spares_edges: bool,
}

impl fmt::Debug for CustomRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CustomRule").field(&self.name).finish()
    }
}

impl CustomRule {
    /// Rule names end up in logs, metrics labels and configuration files,
    /// so they are plain identifiers and never shadow a built-in rule.
    pub(crate) fn validate(
        call: &'static str,
        name: &'static str,
        taken: &[&'static str],
    ) -> Result<(), BuildError> {
        let bad = |reason: &'static str| BuildError::RuleName {
            call,
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
        if taken.contains(&name) {
            return Err(bad("a custom rule or keyed limit already has that name"));
        }
        Ok(())
    }
}
