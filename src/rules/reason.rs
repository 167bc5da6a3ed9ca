use std::fmt;

/// Why a request was dropped: the name of the rule that matched.
///
/// The names returned by [`DropReason::as_str`] are stable. They appear as the
/// `rule` field of the 444 event and are meant to be counted and alerted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// `host_missing`: no Host header (HTTP/1.0 or HTTP/1.1) and no URI
    /// authority (HTTP/2, absolute-form), or an empty one.
    HostMissing,
    /// `host_invalid`: the host could not be read as a name or an address:
    /// two Host headers, characters outside a DNS name, a bad port.
    HostInvalid,
    /// `host_ip_literal`: the host is an IP address, as scanners send when
    /// they sweep address ranges.
    HostIpLiteral,
    /// `host_unknown`: the host is not one of the served names.
    HostUnknown,
    /// `ip_deny`: the client IP matched a deny rule before any allow rule.
    IpDenied,
    /// `client_ip_unknown`: IP rules or a rate limit are configured but the
    /// request carries no peer address, so they cannot be applied.
    ClientIpUnknown,
    /// `user_agent`: a User-Agent matched a deny pattern and no allow pattern.
    UserAgentDenied,
    /// `user_agent_empty`: the User-Agent is missing or empty.
    UserAgentEmpty,
    /// `path`: the request path matched a deny pattern.
    Path,
    /// `rate_limit`: the client is over its request rate.
    RateLimited,
    /// `rate_limit_full`: a new client, while the rate limiter already tracks
    /// as many clients as it may (see [`RateLimit::max_keys`]).
    ///
    /// [`RateLimit::max_keys`]: crate::RateLimit::max_keys
    RateLimitFull,
    /// `rate_limit_unavailable`: the shared rate-limit store (Redis) did not
    /// answer in time and the limit is set to fail closed (see
    /// [`FailurePolicy::Closed`](crate::limit::FailurePolicy::Closed)).
    RateLimitUnavailable,
    /// A custom rule, by the name it was given.
    Custom(&'static str),
    /// `accept_deny`: refused at accept by the serve loop's accept rules,
    /// before any byte was read.
    AcceptDenied,
    /// `header_timeout`: the client did not send complete request headers
    /// in time (the serve loop's header timeout).
    HeaderTimeout,
    /// `banned`: refused at accept because the client is on the ban list.
    Banned,
}

impl DropReason {
    /// The stable rule name, e.g. `"host_unknown"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HostMissing => "host_missing",
            Self::HostInvalid => "host_invalid",
            Self::HostIpLiteral => "host_ip_literal",
            Self::HostUnknown => "host_unknown",
            Self::IpDenied => "ip_deny",
            Self::ClientIpUnknown => "client_ip_unknown",
            Self::UserAgentDenied => "user_agent",
            Self::UserAgentEmpty => "user_agent_empty",
            Self::RateLimited => "rate_limit",
            Self::RateLimitFull => "rate_limit_full",
            Self::RateLimitUnavailable => "rate_limit_unavailable",
            Self::Path => "path",
            Self::Custom(name) => name,
            Self::AcceptDenied => "accept_deny",
            Self::HeaderTimeout => "header_timeout",
            Self::Banned => "banned",
        }
    }

    /// Every built-in rule, in evaluation order.
    pub const BUILTIN: [DropReason; 12] = [
        Self::HostMissing,
        Self::HostInvalid,
        Self::HostIpLiteral,
        Self::HostUnknown,
        Self::ClientIpUnknown,
        Self::IpDenied,
        Self::UserAgentDenied,
        Self::UserAgentEmpty,
        Self::Path,
        Self::RateLimited,
        Self::RateLimitFull,
        Self::RateLimitUnavailable,
    ];

    /// Reasons the serve loop gives for connections it drops itself.
    pub const CONNECTION: [DropReason; 3] = [Self::AcceptDenied, Self::HeaderTimeout, Self::Banned];

    /// The built-in rule with this name, request or connection side.
    #[must_use]
    pub fn builtin(name: &str) -> Option<DropReason> {
        Self::BUILTIN
            .into_iter()
            .chain(Self::CONNECTION)
            .find(|r| r.as_str() == name)
    }

    pub(crate) const fn builtin_index(self) -> Option<usize> {
        Some(match self {
            Self::HostMissing => 0,
            Self::HostInvalid => 1,
            Self::HostIpLiteral => 2,
            Self::HostUnknown => 3,
            Self::ClientIpUnknown => 4,
            Self::IpDenied => 5,
            Self::UserAgentDenied => 6,
            Self::UserAgentEmpty => 7,
            Self::Path => 8,
            Self::RateLimited => 9,
            Self::RateLimitFull => 10,
            Self::RateLimitUnavailable => 11,
            Self::Custom(_) | Self::AcceptDenied | Self::HeaderTimeout | Self::Banned => {
                return None;
            }
        })
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_indices_follow_the_table() {
        for (i, reason) in DropReason::BUILTIN.into_iter().enumerate() {
            assert_eq!(reason.builtin_index(), Some(i));
            assert_eq!(DropReason::builtin(reason.as_str()), Some(reason));
        }
        assert_eq!(DropReason::Custom("x").builtin_index(), None);
    }
}
