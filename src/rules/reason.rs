use std::fmt;

/// Why a request was dropped: the name of the rule that matched.
///
/// The names returned by [`DropReason::as_str`] are stable. They appear as the
/// `rule` field of the 444 event and are meant to be counted and alerted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// `peer_not_allowed`: the TCP peer is outside the
    /// [`only_from_peer`](crate::NoResponseLayerBuilder::only_from_peer) ranges and is
    /// not a trusted proxy: a client that reached the origin around the CDN
    /// or load balancer in front of it.
    PeerNotAllowed,
    /// `host_missing`: no Host header (HTTP/1.0 or HTTP/1.1) and no URI
    /// authority (HTTP/2, absolute-form), or an empty one.
    HostMissing,
    /// `host_invalid`: the host could not be read as a name or an address:
    /// two Host headers, characters outside a DNS name, a bad port.
    HostInvalid,
    /// `host_mismatch`: the request target names a host (absolute form, or
    /// HTTP/2's `:authority`) and the Host header names another. The rules
    /// would judge one while the application reads the other.
    HostMismatch,
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
    /// as many clients as it may (see [`RateLimit::max_keys`]), whose network
    /// (IPv4 /24, IPv6 /48), judged as one, is over the rate.
    ///
    /// [`RateLimit::max_keys`]: crate::RateLimit::max_keys
    RateLimitFull,
    /// `rate_limit_unavailable`: the shared rate-limit store (Redis) did not
    /// answer in time and the limit is set to fail closed (see
    /// [`FailurePolicy::Closed`](crate::limit::FailurePolicy::Closed)).
    RateLimitUnavailable,
    /// A rule named in code: a [custom rule](crate::NoResponseLayerBuilder::custom_rule)
    /// or a [keyed limit](crate::NoResponseLayerBuilder::rate_limit_by), by
    /// the name it was given, and CrowdSec's rules, `crowdsec` and
    /// `crowdsec_other`. Match one by its name:
    /// `DropReason::Custom("api_key")`, or `reason.as_str() == "api_key"`.
    Custom(&'static str),
    /// `accept_deny`: refused at accept by the serve loop's accept rules,
    /// before any byte was read.
    AcceptDenied,
    /// `header_timeout`: the client did not send complete request headers
    /// in time (the serve loop's header timeout).
    HeaderTimeout,
    /// `body_timeout`: the client sent nothing of its request body for the
    /// body timeout while the server waited for it, before any response.
    BodyTimeout,
    /// `banned`: refused at accept because the client is on the ban list.
    Banned,
    /// `connection_limit`: refused at accept because the serve loop holds
    /// as many connections as it may, overall or from this client.
    ConnectionLimit,
    /// `tls_sni_missing`: a TLS ClientHello without a server name (SNI), as
    /// clients send when they connect by address, while the Host rules drop
    /// requests by address (a served-names list, or `drop_ip_literal_host`).
    /// Judged by the TLS gate (feature `rustls`), before any byte is written.
    TlsSniMissing,
    /// `tls_sni_ip_literal`: a ClientHello whose server name is an IP
    /// address, while the Host rules drop those.
    TlsSniIpLiteral,
    /// `tls_sni_unknown`: a ClientHello whose server name is not one of the
    /// served names, or not a name at all.
    TlsSniUnknown,
    /// `tls_fingerprint`: a ClientHello whose JA4 fingerprint matched a deny
    /// pattern of the TLS gate and no allow pattern.
    TlsFingerprint,
    /// `tls_client_hello_invalid`: the first bytes on a TLS port were not a
    /// TLS ClientHello: plain HTTP, an SSLv2-style hello, garbage, or
    /// lengths that do not add up.
    TlsClientHelloInvalid,
    /// `proxy_protocol_invalid`: a connection from a load balancer listed
    /// in [`proxy_protocol_from`](crate::NoResponseLayerBuilder::proxy_protocol_from)
    /// that did not begin with a whole, valid PROXY protocol header within
    /// the header timeout, or a PROXY header from any other peer, which is
    /// not believed. Refused before any byte is written; never a strike.
    ProxyProtocolInvalid,
}

impl DropReason {
    /// The rule that dropped or answered `response`, as the layer's service
    /// returned it; `None` for a response of the inner service. For tests
    /// that call the service directly (`oneshot`): a rule's `429` or `403`
    /// carries its rule as a drop's `444` does.
    ///
    /// ```
    /// # async fn run(app: axum::Router) {
    /// use tower::ServiceExt;
    /// use tower_no_response::DropReason;
    ///
    /// let request = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
    /// let response = app.oneshot(request).await.unwrap();
    /// if response.status() == 429 {
    ///     assert_eq!(DropReason::of(&response), Some(DropReason::Custom("api_key")));
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn of<B>(response: &http::Response<B>) -> Option<Self> {
        response.extensions().get::<Self>().copied()
    }

    /// The stable rule name, e.g. `"host_unknown"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PeerNotAllowed => "peer_not_allowed",
            Self::HostMissing => "host_missing",
            Self::HostInvalid => "host_invalid",
            Self::HostMismatch => "host_mismatch",
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
            Self::BodyTimeout => "body_timeout",
            Self::Banned => "banned",
            Self::ConnectionLimit => "connection_limit",
            Self::TlsSniMissing => "tls_sni_missing",
            Self::TlsSniIpLiteral => "tls_sni_ip_literal",
            Self::TlsSniUnknown => "tls_sni_unknown",
            Self::TlsFingerprint => "tls_fingerprint",
            Self::TlsClientHelloInvalid => "tls_client_hello_invalid",
            Self::ProxyProtocolInvalid => "proxy_protocol_invalid",
        }
    }

    /// Every built-in rule, in evaluation order.
    pub const BUILTIN: [DropReason; 14] = [
        Self::PeerNotAllowed,
        Self::HostMissing,
        Self::HostInvalid,
        Self::HostMismatch,
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

    /// Reasons the connection sides give for connections they drop
    /// themselves.
    pub const CONNECTION: [DropReason; 5] = [
        Self::AcceptDenied,
        Self::HeaderTimeout,
        Self::Banned,
        Self::ConnectionLimit,
        Self::ProxyProtocolInvalid,
    ];

    /// Reasons the TLS gate gives for connections it drops at the
    /// ClientHello.
    pub const TLS: [DropReason; 5] = [
        Self::TlsSniMissing,
        Self::TlsSniIpLiteral,
        Self::TlsSniUnknown,
        Self::TlsFingerprint,
        Self::TlsClientHelloInvalid,
    ];

    /// The built-in rule with this name, request or connection side.
    #[must_use]
    pub fn builtin(name: &str) -> Option<DropReason> {
        Self::BUILTIN
            .into_iter()
            .chain(Self::CONNECTION)
            .chain([Self::BodyTimeout])
            .chain(Self::TLS)
            .find(|r| r.as_str() == name)
    }

    /// Whether a drop by this rule is the client's own doing, and so counts
    /// as a strike toward a ban. A full limiter table, an unreachable store
    /// or an unknown peer say nothing about the client, and a peer outside
    /// `only_from_peer` is refused whatever it does.
    #[must_use]
    pub const fn strikes(self) -> bool {
        !matches!(
            self,
            Self::PeerNotAllowed
                | Self::ClientIpUnknown
                | Self::RateLimitFull
                | Self::RateLimitUnavailable
                | Self::AcceptDenied
                | Self::HeaderTimeout
                | Self::Banned
                | Self::ConnectionLimit
                | Self::TlsClientHelloInvalid
                | Self::ProxyProtocolInvalid
        )
    }

    pub(crate) const fn builtin_index(self) -> Option<usize> {
        Some(match self {
            Self::PeerNotAllowed => 0,
            Self::HostMissing => 1,
            Self::HostInvalid => 2,
            Self::HostMismatch => 3,
            Self::HostIpLiteral => 4,
            Self::HostUnknown => 5,
            Self::ClientIpUnknown => 6,
            Self::IpDenied => 7,
            Self::UserAgentDenied => 8,
            Self::UserAgentEmpty => 9,
            Self::Path => 10,
            Self::RateLimited => 11,
            Self::RateLimitFull => 12,
            Self::RateLimitUnavailable => 13,
            Self::Custom(_)
            | Self::AcceptDenied
            | Self::HeaderTimeout
            | Self::BodyTimeout
            | Self::Banned
            | Self::ConnectionLimit
            | Self::TlsSniMissing
            | Self::TlsSniIpLiteral
            | Self::TlsSniUnknown
            | Self::TlsFingerprint
            | Self::TlsClientHelloInvalid
            | Self::ProxyProtocolInvalid => {
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

/// A rule, as a per-rule setting names it
/// ([`rule_action`](crate::NoResponseLayerBuilder::rule_action),
/// [`dry_run_rule`](crate::NoResponseLayerBuilder::dry_run_rule)): a
/// built-in rule by its [`DropReason`], checked by the compiler, or any rule
/// by its name, a custom rule's or a keyed limit's included, checked by
/// [`build`](crate::NoResponseLayerBuilder::build).
///
/// ```
/// use http::StatusCode;
/// use tower_no_response::rules::Action;
/// use tower_no_response::{DropReason, NoResponseLayer, RateLimit};
///
/// let layer = NoResponseLayer::builder()
///     .rate_limit(RateLimit::per_second(10))
///     .rule_action(DropReason::RateLimited, Action::Respond(StatusCode::TOO_MANY_REQUESTS))
///     .custom_rule("trace_method", |head| head.method == http::Method::TRACE)
///     .dry_run_rule("trace_method")
///     .build()?;
/// # Ok::<(), tower_no_response::BuildError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleName(std::borrow::Cow<'static, str>);

impl RuleName {
    /// The name, as events and counters show it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<DropReason> for RuleName {
    fn from(reason: DropReason) -> Self {
        Self(std::borrow::Cow::Borrowed(reason.as_str()))
    }
}

impl From<&str> for RuleName {
    fn from(name: &str) -> Self {
        Self(std::borrow::Cow::Owned(name.to_owned()))
    }
}

impl From<String> for RuleName {
    fn from(name: String) -> Self {
        Self(std::borrow::Cow::Owned(name))
    }
}

impl From<&String> for RuleName {
    fn from(name: &String) -> Self {
        Self::from(name.as_str())
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builder calls and variant names that people reach for when they mean a
/// built-in rule, beside its own name.
const ALIASES: [(&str, DropReason); 23] = [
    ("only_from", DropReason::PeerNotAllowed),
    ("only_from_peer", DropReason::PeerNotAllowed),
    ("only_from_peers", DropReason::PeerNotAllowed),
    ("drop_missing_host", DropReason::HostMissing),
    ("drop_ip_literal_host", DropReason::HostIpLiteral),
    ("server_name", DropReason::HostUnknown),
    ("server_names", DropReason::HostUnknown),
    ("deny_ip", DropReason::IpDenied),
    ("deny_ips", DropReason::IpDenied),
    ("allow_ip", DropReason::IpDenied),
    ("allow_ips", DropReason::IpDenied),
    ("ip_rule", DropReason::IpDenied),
    ("deny_user_agent", DropReason::UserAgentDenied),
    ("deny_user_agents", DropReason::UserAgentDenied),
    ("allow_user_agent", DropReason::UserAgentDenied),
    ("allow_user_agents", DropReason::UserAgentDenied),
    ("drop_empty_user_agent", DropReason::UserAgentEmpty),
    ("deny_path", DropReason::Path),
    ("deny_paths", DropReason::Path),
    ("path_denied", DropReason::Path),
    ("rate_limit_exceeded", DropReason::RateLimited),
    ("max_keys", DropReason::RateLimitFull),
    ("shared_rate_limit", DropReason::RateLimitUnavailable),
];

/// Lowercase, without `_`, `-` or spaces: `IpDenied`, `ip_denied` and
/// `ip-denied` are one spelling.
fn squash(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The number of single-character edits between two short names.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The rule among `known` most likely meant by `name`: the one a builder
/// call or a variant name stands for, or the closest by a few typos.
pub(crate) fn suggest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let wanted = squash(name);
    let builtin = DropReason::BUILTIN.into_iter().find(|reason| {
        squash(&format!("{reason:?}")) == wanted
            || ALIASES
                .iter()
                .any(|(alias, r)| r == reason && squash(alias) == wanted)
    });
    if let Some(reason) = builtin.filter(|r| known.contains(&r.as_str())) {
        return Some(reason.as_str());
    }
    let limit = wanted.chars().count().div_ceil(3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edits(&wanted, &squash(k)), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
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

    #[test]
    fn a_wrong_name_suggests_the_rule_meant() {
        let known: Vec<&'static str> = DropReason::BUILTIN
            .iter()
            .map(|r| r.as_str())
            .chain(["login"])
            .collect();
        let cases = [
            ("deny_ip", Some("ip_deny")),
            ("IpDenied", Some("ip_deny")),
            ("ip_denied", Some("ip_deny")),
            ("rate_limited", Some("rate_limit")),
            ("user_agent_denied", Some("user_agent")),
            ("deny_user_agent", Some("user_agent")),
            ("pathz", Some("path")),
            ("logni", Some("login")),
            ("host-unknown", Some("host_unknown")),
            ("something_else_entirely", None),
        ];
        for (name, meant) in cases {
            assert_eq!(suggest(name, &known), meant, "{name}");
        }
    }

    #[test]
    fn only_the_client_s_doing_strikes() {
        let not_the_client = [
            DropReason::PeerNotAllowed,
            DropReason::ClientIpUnknown,
            DropReason::RateLimitFull,
            DropReason::RateLimitUnavailable,
        ];
        for reason in DropReason::BUILTIN {
            assert_eq!(
                reason.strikes(),
                !not_the_client.contains(&reason),
                "{reason}"
            );
        }
        assert!(DropReason::Custom("scanner").strikes());
        assert!(DropReason::CONNECTION.iter().all(|r| !r.strikes()));
    }
}
