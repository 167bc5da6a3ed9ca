//! The request-side rules: what a request is judged on, compiled once.
//!
//! Rules run in a fixed order, and the first one that matches names the drop:
//!
//! 1. **Host**: `host_missing`, `host_invalid`, `host_ip_literal`, `host_unknown`.
//! 2. **Client IP**: `client_ip_unknown`, then `ip_deny`.
//! 3. **User-Agent**: `user_agent`, `user_agent_empty`.
//! 4. **Rate limit**: `rate_limit`, `rate_limit_full`.
//!
//! The rate limit runs last so that only requests every other rule accepted
//! count toward a client's budget, as in nginx's phase order: a scanner that
//! is dropped for its Host cannot use up a shared client's allowance.

pub(crate) mod client_ip;
pub(crate) mod host;
pub(crate) mod ip;
pub(crate) mod rate_limit;
mod reason;
pub(crate) mod user_agent;

use std::net::{IpAddr, SocketAddr};

use http::Request;

pub use client_ip::{CLOUDFLARE_RANGES, ClientIp, RealIpHeader};
pub use rate_limit::RateLimit;
pub use reason::DropReason;

use client_ip::RealIp;
use host::HostRules;
use ip::{IpAction, IpRules};
use rate_limit::{Limiter, Verdict};
use user_agent::UserAgentRules;

/// A compiled, immutable rule set. Build it with
/// [`NoResponseLayer::builder`](crate::NoResponseLayer::builder); every
/// service made by the layer shares one behind an `Arc`.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) host: HostRules,
    pub(crate) ip: IpRules,
    pub(crate) real_ip: RealIp,
    pub(crate) user_agent: UserAgentRules,
    pub(crate) rate_limit: Option<Limiter>,
}

/// The outcome of judging one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    /// The client the rules judged, when a peer address was known.
    pub client_ip: Option<IpAddr>,
    /// The rule that dropped the request, or `None` to let it through.
    pub drop: Option<DropReason>,
}

impl RuleSet {
    /// Judges a request from its head and the socket peer. Allocation-free.
    ///
    /// `peer` is the TCP peer; the client IP is derived from it and, when the
    /// peer is a trusted proxy, from the real-IP header.
    pub fn decide<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Decision {
        let client_ip = peer.map(|p| self.real_ip.resolve(p.ip(), request.headers()));
        let drop = self.first_drop(request, client_ip).err();
        Decision { client_ip, drop }
    }

    /// How many clients the rate limiter tracks now, if there is one. Idle
    /// clients are evicted on a schedule, so this rises and falls with
    /// traffic, up to [`RateLimit::max_keys`].
    #[must_use]
    pub fn rate_limited_clients(&self) -> Option<usize> {
        self.rate_limit.as_ref().map(Limiter::len)
    }

    fn first_drop<B>(
        &self,
        request: &Request<B>,
        client_ip: Option<IpAddr>,
    ) -> Result<(), DropReason> {
        let headers = request.headers();
        self.host.check(request.version(), request.uri(), headers)?;
        let needs_ip = !self.ip.is_empty() || self.rate_limit.is_some();
        let client_ip = match client_ip {
            Some(ip) if needs_ip => ip,
            None if needs_ip => return Err(DropReason::ClientIpUnknown),
            _ => return self.user_agent.check(headers),
        };
        if self.ip.first_match(client_ip) == Some(IpAction::Deny) {
            return Err(DropReason::IpDenied);
        }
        self.user_agent.check(headers)?;
        match self.rate_limit.as_ref().map(|l| l.check(client_ip)) {
            Some(Verdict::OverLimit) => Err(DropReason::RateLimited),
            Some(Verdict::TableFull) => Err(DropReason::RateLimitFull),
            Some(Verdict::Allow) | None => Ok(()),
        }
    }
}
