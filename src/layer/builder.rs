use std::sync::Arc;
use std::time::Duration;

use super::NoResponseLayer;
use crate::ban::BanList;
use crate::error::BuildError;
use crate::limit::{RateLimit, SharedRateLimit};
use crate::rules::client_ip::{CLOUDFLARE_RANGES, RealIp, RealIpHeader};
use crate::rules::custom::{CustomRule, KeyedRule, LimitKey, RequestHead};
use crate::rules::host::{HostRules, ServerNames};
use crate::rules::ip::{IpAction, IpRules, IpSet, parse_cidrs};
use crate::rules::path::PathRules;
use crate::rules::patterns;
use crate::rules::policy::{self, Action, Policies};
use crate::rules::user_agent::UserAgentRules;
use crate::rules::{CloseMode, DropReason, MAX_RULES, RuleName, RuleSet};

/// Configures a [`NoResponseLayer`]. Each value is checked where it is
/// given, and [`build`](Self::build) refuses the first bad one, in the order
/// of the calls, by name. Every list has a singular call and a plural one
/// that takes any iterator: `deny_ip` and `deny_ips`, `server_name` and
/// `server_names`.
///
/// ```
/// use tower_no_response::{NoResponseLayer, RateLimit};
/// use tower_no_response::connection::CloseMode;
///
/// let layer = NoResponseLayer::builder()
///     .server_names(["example.com", "www.example.com"])
///     .deny_user_agents(["masscan", "zgrab"])
///     .allow_user_agent("python-requests")
///     .drop_empty_user_agent(true)
///     .deny_ip("198.51.100.0/24")
///     .deny_ip("203.0.113.7")
///     .trusted_proxies(["127.0.0.0/8", "::1"])
///     .rate_limit(RateLimit::per_second(10).burst(20))
///     .close_mode(CloseMode::Fin)
///     .build()?;
/// # Ok::<(), tower_no_response::BuildError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct NoResponseLayerBuilder {
    server_names: Vec<String>,
    drop_missing_host: bool,
    drop_ip_literal_host: bool,
    deny_user_agents: Vec<String>,
    allow_user_agents: Vec<String>,
    drop_empty_user_agent: bool,
    ip_rules: Vec<(String, IpAction)>,
    trusted_proxies: Vec<String>,
    only_from_peers: Vec<String>,
    proxy_protocol_from: Vec<String>,
    real_ip_header: RealIpHeader,
    real_ip_non_recursive: bool,
    rate_limit: Option<RateLimit>,
    shared_rate_limit: Option<(u32, SharedRateLimit)>,
    deny_paths: Vec<String>,
    custom_rules: Vec<CustomRule>,
    keyed_limits: Vec<(KeyedRule, RateLimit)>,
    /// Names checked at build, when every custom rule is known, so a typo
    /// is an error, not a silent no-op; each with its call's number.
    dry_run_rules: Vec<(u32, RuleName)>,
    dry_run_all: bool,
    actions: Vec<(u32, RuleName, Action)>,
    ban_list: Option<BanList>,
    close_mode: CloseMode,
    header_timeout: Option<Duration>,
    /// `None` is the default, [`DEFAULT_KEEPALIVE_TIMEOUT`].
    keepalive_timeout: Option<Duration>,
    body_timeout: Option<Duration>,
    /// `None` is the default, [`DEFAULT_SEND_TIMEOUT`].
    send_timeout: Option<Duration>,
    /// Off by default, so that `Default` leaves the extension on.
    no_client_ip_extension: bool,
    /// How many checked calls were made: each one's number orders errors.
    calls: u32,
    /// The first value refused where it was given, with its call's number.
    refused: Option<(u32, BuildError)>,
    /// The IP rule that matches every IPv4 (first) or IPv6 (second) client,
    /// as it was written: any IP rule of that family after it is dead.
    ip_catch_all: [Option<String>; 2],
}

/// nginx's default `keepalive_timeout`.
const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// nginx's default `send_timeout`.
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

impl NoResponseLayerBuilder {
    /// Serves `name`, like nginx `server_name`. Takes an exact name,
    /// `*.example.com` (any subdomain) or `.example.com` (the apex and any
    /// subdomain). Case, port and a trailing dot are ignored when comparing.
    ///
    /// Once any name is served, every other Host is dropped (`host_unknown`),
    /// as are a missing Host (`host_missing`) and an IP literal
    /// (`host_ip_literal`): the served names act as nginx's named servers, and
    /// everything else falls to a `default_server` that returns 444.
    ///
    /// A name takes no port: the Host's port is ignored, so
    /// `example.com` serves `example.com:8080` too.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.note(ServerNames::default().add(&name));
        self.server_names.push(name);
        self
    }

    /// Serves each of `names`; see [`server_name`](Self::server_name).
    pub fn server_names<I>(self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        names.into_iter().fold(self, Self::server_name)
    }

    /// Drops a request without a Host (rule `host_missing`), even when no
    /// names are served.
    pub fn drop_missing_host(mut self, drop: bool) -> Self {
        self.drop_missing_host = drop;
        self
    }

    /// Drops a request whose Host is an IP address (rule `host_ip_literal`),
    /// even when no names are served. Every form browsers accept counts:
    /// `192.0.2.1`, `[2001:db8::1]:443`, `3221225985`, `0xc0.0.2.1`.
    pub fn drop_ip_literal_host(mut self, drop: bool) -> Self {
        self.drop_ip_literal_host = drop;
        self
    }

    /// Drops a request whose User-Agent matches `pattern` (rule `user_agent`),
    /// like nginx's `~*`: case-insensitive unless the pattern starts with
    /// `(?-i)`. Patterns are [`regex` syntax](https://docs.rs/regex/latest/regex/#syntax)
    /// and match anywhere in the value.
    pub fn deny_user_agent(mut self, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        self.note(patterns::check("deny_user_agent", &pattern));
        self.deny_user_agents.push(pattern);
        self
    }

    /// Adds each of `patterns`; see [`deny_user_agent`](Self::deny_user_agent).
    pub fn deny_user_agents<I>(self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        patterns.into_iter().fold(self, Self::deny_user_agent)
    }

    /// Lets a User-Agent matching `pattern` through even when a deny pattern
    /// also matches it, as `~*python-requests 0;` does in nginx's
    /// `map $http_user_agent $bad_agent`.
    pub fn allow_user_agent(mut self, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        self.note(patterns::check("allow_user_agent", &pattern));
        self.allow_user_agents.push(pattern);
        self
    }

    /// Adds each of `patterns`; see [`allow_user_agent`](Self::allow_user_agent).
    pub fn allow_user_agents<I>(self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        patterns.into_iter().fold(self, Self::allow_user_agent)
    }

    /// Drops a request whose User-Agent is missing, empty or blank
    /// (rule `user_agent_empty`), as `"" 1;` does in nginx's
    /// `map $http_user_agent $bad_agent`.
    pub fn drop_empty_user_agent(mut self, drop: bool) -> Self {
        self.drop_empty_user_agent = drop;
        self
    }

    /// Appends an allow rule, as nginx `allow`: an address, a CIDR block or
    /// `all`. IP rules are checked in the order given and the first match
    /// wins; a client that matches none is allowed. A rule after one that
    /// matches every client of its family (`all`, `0.0.0.0/0`, `::/0`)
    /// could never match, and is refused.
    pub fn allow_ip(self, cidr: impl Into<String>) -> Self {
        self.ip_rule("allow_ip", cidr.into(), IpAction::Allow)
    }

    /// Appends an allow rule for each of `cidrs`; see
    /// [`allow_ip`](Self::allow_ip).
    pub fn allow_ips<I>(self, cidrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        cidrs.into_iter().fold(self, Self::allow_ip)
    }

    /// Appends a deny rule (rule `ip_deny`), as nginx `deny`: an address, a
    /// CIDR block or `all`. It judges the client behind trusted proxies:
    /// `allow_ip(range)` for each range of clients you serve, followed by
    /// `deny_ip("all")`, drops every other client. To serve only
    /// connections that come through a CDN or load balancer, use
    /// [`only_from_peers`](Self::only_from_peers), which judges the TCP peer:
    /// `allow_ip(edge).deny_ip("all")` would drop every visitor behind it.
    pub fn deny_ip(self, cidr: impl Into<String>) -> Self {
        self.ip_rule("deny_ip", cidr.into(), IpAction::Deny)
    }

    /// Appends a deny rule for each of `cidrs`; see
    /// [`deny_ip`](Self::deny_ip).
    pub fn deny_ips<I>(self, cidrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        cidrs.into_iter().fold(self, Self::deny_ip)
    }

    fn ip_rule(mut self, call: &'static str, cidr: String, action: IpAction) -> Self {
        let checked = parse_cidrs(call, &cidr).and_then(|nets| self.reachable(call, &cidr, &nets));
        self.note(checked);
        self.ip_rules.push((cidr, action));
        self
    }

    /// Refuses an IP rule that an earlier catch-all always wins over, and
    /// remembers a catch-all.
    fn reachable(
        &mut self,
        call: &'static str,
        value: &str,
        nets: &[ipnet::IpNet],
    ) -> Result<(), BuildError> {
        let family = |net: &ipnet::IpNet| usize::from(matches!(net, ipnet::IpNet::V6(_)));
        if let Some(earlier) = nets
            .iter()
            .map(|net| self.ip_catch_all[family(net)].as_ref())
            .collect::<Option<Vec<_>>>()
            .and_then(|earlier| earlier.first().copied().cloned())
        {
            return Err(BuildError::Unused {
                call,
                value: value.to_owned(),
                reason: format!(
                    "{earlier} before it matches every client first (IP rules are checked \
                     in order and the first match wins); put this rule before it"
                ),
            });
        }
        for net in nets.iter().filter(|net| net.prefix_len() == 0) {
            self.ip_catch_all[family(net)] = Some(format!("{call}({value:?})"));
        }
        Ok(())
    }

    /// Trusts `cidr` as a proxy, as nginx `set_real_ip_from`. When the peer
    /// is trusted, the client IP is read from the
    /// [`real_ip_header`](Self::real_ip_header); headers from untrusted peers
    /// are ignored.
    pub fn trusted_proxy(mut self, cidr: impl Into<String>) -> Self {
        let cidr = cidr.into();
        self.note(parse_cidrs("trusted_proxy", &cidr).map(drop));
        self.trusted_proxies.push(cidr);
        self
    }

    /// Trusts each of `cidrs`; see [`trusted_proxy`](Self::trusted_proxy).
    pub fn trusted_proxies<I>(self, cidrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        cidrs.into_iter().fold(self, Self::trusted_proxy)
    }

    /// Trusts every range in `list`: addresses or CIDR blocks separated by
    /// newlines or whitespace, `#` starting a comment. This is the format of
    /// the range lists CDNs publish, such as Cloudflare's `ips-v4` and
    /// `ips-v6`, so a current copy can be passed as downloaded.
    pub fn trusted_proxy_list(self, list: &str) -> Self {
        self.trusted_proxies(
            list.lines()
                .map(|line| line.split('#').next().unwrap_or(""))
                .flat_map(str::split_whitespace),
        )
    }

    /// Trusts Cloudflare's edge ([`CLOUDFLARE_RANGES`], copied 2026-11-26)
    /// and reads the client from `CF-Connecting-IP`, as Cloudflare advises
    /// for nginx. Clients that connect directly are still served; to refuse
    /// them, use [`trust_cloudflare_only`](Self::trust_cloudflare_only).
    ///
    /// [`CLOUDFLARE_RANGES`]: crate::rules::CLOUDFLARE_RANGES
    pub fn trust_cloudflare(self) -> Self {
        self.trusted_proxies(CLOUDFLARE_RANGES.iter().copied())
            .real_ip_header(RealIpHeader::CfConnectingIp)
    }

    /// [`trust_cloudflare`](Self::trust_cloudflare), and serves no one
    /// else: a connection whose TCP peer is not Cloudflare's edge is refused
    /// (rule `peer_not_allowed`), while visitors arriving through the edge
    /// are judged by their real address as usual. nginx's answer for a
    /// Cloudflare origin, `allow` for each of Cloudflare's ranges then
    /// `deny all`, judged on the peer where it belongs.
    pub fn trust_cloudflare_only(self) -> Self {
        self.trust_cloudflare()
            .only_from_peers(CLOUDFLARE_RANGES.iter().copied())
    }

    /// Serves only connections whose TCP peer is inside `cidrs` (addresses,
    /// CIDR blocks) or is a trusted proxy: the CDN's or load balancer's
    /// ranges, so that no one reaches the origin around them. Any other
    /// peer is refused with rule `peer_not_allowed`: at accept, before a
    /// byte is read, by the crate's serve loop, the layer's listener and
    /// tonic's incoming stream; before its handshake by the
    /// [kernel filter](crate::server::kernel_filter); and by the layer
    /// itself on a server with no accept hook.
    ///
    /// This judges the **peer**, where `allow_ip` and `deny_ip` judge the
    /// client behind trusted proxies: `allow_ip(edge).deny_ip("all")` would
    /// drop every visitor that comes through the edge. Peers in these
    /// ranges are never struck, banned or capped as clients. Calls add up.
    pub fn only_from_peer(mut self, cidr: impl Into<String>) -> Self {
        let cidr = cidr.into();
        self.note(parse_cidrs("only_from_peer", &cidr).map(drop));
        self.only_from_peers.push(cidr);
        self
    }

    /// Serves only peers inside any of `cidrs`; see
    /// [`only_from_peer`](Self::only_from_peer).
    pub fn only_from_peers<I>(self, cidrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        cidrs.into_iter().fold(self, Self::only_from_peer)
    }

    /// Reads the PROXY protocol header (versions 1 and 2) that the L4 load
    /// balancers at `cidr` (addresses, CIDR blocks) write before their
    /// client's first byte, as nginx's `listen ... proxy_protocol` with
    /// `set_real_ip_from` and `real_ip_header proxy_protocol`. The client
    /// the header names then stands for the TCP peer everywhere: every rule,
    /// strike, ban, connection cap and limit, the TLS gate, CrowdSec's
    /// decisions, the 444 event, the access log, `ClientIp` and axum's
    /// `ConnectInfo`. Forwarding headers are read after it, from that
    /// client, if it is a [trusted proxy](Self::trusted_proxy): an L4
    /// balancer in front of an L7 proxy.
    ///
    /// The balancer is an [edge](crate::rules#peer-and-client): never struck,
    /// banned, capped as a client or refused by the kernel filter. Its own
    /// connections (`LOCAL`, its health checks, or `UNKNOWN`) are served as
    /// the balancer's. A connection from it that does not begin with a
    /// whole, valid header within the header timeout (10 s when none is
    /// set), and a PROXY header sent by any other peer, are dropped with
    /// zero bytes as `proxy_protocol_invalid`; any other peer is served
    /// as usual, without a header.
    ///
    /// Read by the crate's connection sides: the serve loop (before TLS,
    /// so the TLS gate judges the client), the layer's listener for
    /// `axum::serve` and tonic's incoming stream, each in a task of its own
    /// so a slow header holds up no other accept. Version 2's TLVs are
    /// checked and skipped: a balancer that passes TLS through leaves the
    /// ClientHello to the TLS gate, and one that ends TLS says what it
    /// knows in forwarding headers. Feature `proxy-protocol`. Calls add up.
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_protocol_from(mut self, cidr: impl Into<String>) -> Self {
        let cidr = cidr.into();
        self.note(parse_cidrs("proxy_protocol_from", &cidr).map(drop));
        self.proxy_protocol_from.push(cidr);
        self
    }

    /// Reads the PROXY protocol header from the balancers in any of
    /// `cidrs`; see [`proxy_protocol_from`](Self::proxy_protocol_from).
    #[cfg(feature = "proxy-protocol")]
    pub fn proxy_protocol_from_peers<I>(self, cidrs: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        cidrs.into_iter().fold(self, Self::proxy_protocol_from)
    }

    /// The header trusted proxies put the client in, as nginx
    /// `real_ip_header`; [`RealIpHeader::XForwardedFor`] by default.
    pub fn real_ip_header(mut self, header: RealIpHeader) -> Self {
        self.real_ip_header = header;
        self
    }

    /// nginx's `real_ip_recursive`, on by default (nginx's default is off).
    /// On, the client is the rightmost list entry that is not a trusted
    /// proxy, which stays right behind a chain of proxies; off, it is simply
    /// the rightmost entry. Headers that hold one address are not affected.
    pub fn real_ip_recursive(mut self, recursive: bool) -> Self {
        self.real_ip_non_recursive = !recursive;
        self
    }

    /// Limits each client's request rate (rule `rate_limit`). Only requests
    /// that every other rule let through count.
    ///
    /// It counts every path. A page is one request for the browser's user
    /// but dozens for the limit: with nginx's usual `10r/s burst=20`, a
    /// page with 60 images, scripts and stylesheets loses most of them, on
    /// the first visit, silently. Limit what is dear to serve instead, with
    /// [`rate_limit_by`](Self::rate_limit_by) keyed by the client on the
    /// dynamic routes only, or size the burst for the largest page's
    /// sub-resources. A rate-limit drop is also a strike: with a
    /// [`BanList`](crate::ban::BanList), a visitor can be banned during its
    /// first page load, so give rate-limit drops a status
    /// ([`rule_action`](Self::rule_action)) or a limit that real pages never
    /// reach before banning on them.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.note(limit.quota().map(drop));
        self.rate_limit = Some(limit);
        self
    }

    /// Adds a rate limit named `name` (a rule, like a custom rule's name)
    /// keyed by what `key` returns for each request: an API key, a user id
    /// an authentication layer put in the extensions, a route. A request
    /// for which `key` returns `None` is not counted. Keyed limits run in
    /// the order added, after every other rule and before the per-client
    /// [`rate_limit`](Self::rate_limit); each has memory bounded as that
    /// one's, by the limit's [`max_keys`](RateLimit::max_keys). Over it, a
    /// request is dropped, or answered as [`rule_action`](Self::rule_action)
    /// says for `name`: a `429` carries `Retry-After` and the `RateLimit`
    /// and `RateLimit-Policy` headers.
    ///
    /// The limit is a rule named `name`, not `rate_limit`: its drops carry
    /// [`DropReason::Custom(name)`](DropReason::Custom), and
    /// `rule_action(name, ...)` and `dry_run_rule(name)` set it.
    ///
    /// ```
    /// use tower_no_response::{NoResponseLayer, RateLimit};
    /// use tower_no_response::rules::LimitKey;
    ///
    /// let layer = NoResponseLayer::builder()
    ///     // limit_req_zone $http_x_api_key zone=api:10m rate=10r/s;
    ///     .rate_limit_by("api_key", RateLimit::per_second(10), |head| {
    ///         head.headers.get("x-api-key").map(|key| LimitKey::bytes(key.as_bytes()))
    ///     })
    ///     // A strict one for logins, per client address.
    ///     .rate_limit_by("login", RateLimit::per_minute(5), |head| {
    ///         (head.uri.path() == "/login").then_some(LimitKey::ip(head.client_ip?))
    ///     })
    ///     .build()?;
    /// # Ok::<(), tower_no_response::BuildError>(())
    /// ```
    ///
    /// Keyed limits are kept in this process; [`shared_rate_limit`]
    /// applies to the per-client limit only.
    ///
    /// [`shared_rate_limit`]: Self::shared_rate_limit
    pub fn rate_limit_by<F>(mut self, name: &'static str, limit: RateLimit, key: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<LimitKey> + Send + Sync + 'static,
    {
        let checked = self
            .name_is_free("rate_limit_by", name)
            .and_then(|()| limit.quota().map(drop));
        self.note(checked);
        self.keyed_limits.push((
            KeyedRule {
                name,
                key: Arc::new(key),
            },
            limit,
        ));
        self
    }

    /// Keeps the [`rate_limit`](Self::rate_limit)'s budget in a store shared
    /// by every replica (Redis, with feature `redis`), so that a client
    /// gets one budget however many replicas it spreads over. Requests the
    /// other rules let through then wait for one round trip to the store.
    ///
    /// [`build`](Self::build) refuses a shared limit without a rate limit.
    pub fn shared_rate_limit(mut self, shared: SharedRateLimit) -> Self {
        let call = self.note(Ok(()));
        self.shared_rate_limit = Some((call, shared));
        self
    }

    /// Drops a request whose path matches `pattern` (rule `path`), such as
    /// `/\.env`, `^/wp-login\.php` or `/\.git/`. Same syntax and case rules
    /// as [`deny_user_agent`](Self::deny_user_agent); the pattern matches
    /// anywhere in the path, which is judged as sent, with `%XX` escapes
    /// decoded, and normalised as RFC 3986 lets a server (dot segments
    /// removed, slashes merged, unreserved escapes decoded, `;params` cut),
    /// so an anchored pattern cannot be dodged with `//`, `/./` or `/x/../`.
    /// The query string is not judged.
    pub fn deny_path(mut self, pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        self.note(patterns::check("deny_path", &pattern));
        self.deny_paths.push(pattern);
        self
    }

    /// Adds each of `patterns`; see [`deny_path`](Self::deny_path).
    pub fn deny_paths<I>(self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        patterns.into_iter().fold(self, Self::deny_path)
    }

    /// Adds a rule named `name` that drops any request for which `predicate`
    /// returns `true`, like nginx's `if ($var = ...) { return 444; }` on any
    /// variable. It sees the request head and the judged client IP, and runs
    /// after the built-in rules, before the rate limit. The name (lowercase
    /// letters, digits, `_`) appears in events and counters.
    ///
    /// ```
    /// use tower_no_response::NoResponseLayer;
    ///
    /// let layer = NoResponseLayer::builder()
    ///     .custom_rule("trace_method", |head| head.method == http::Method::TRACE)
    ///     .build()?;
    /// # Ok::<(), tower_no_response::BuildError>(())
    /// ```
    pub fn custom_rule<F>(self, name: &'static str, predicate: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.add_custom_rule(
            "custom_rule",
            CustomRule {
                name,
                predicate: Arc::new(predicate),
                peer: None,
                action: None,
                spares_edges: false,
            },
        )
    }

    /// Adds a custom rule made by `call`, the builder call named in errors.
    pub(crate) fn add_custom_rule(mut self, call: &'static str, rule: CustomRule) -> Self {
        let checked = self.name_is_free(call, rule.name);
        self.note(checked);
        self.custom_rules.push(rule);
        self
    }

    /// Puts every rule in dry-run: each is evaluated and, when it matches,
    /// emits its event with `action=would_drop`, but every request goes
    /// through. For trying a rule set on live traffic before enforcing it.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run_all = dry_run;
        self
    }

    /// Puts one rule in dry-run; the others stay enforced. Name a built-in
    /// rule by its [`DropReason`], a custom rule or keyed limit by its name
    /// (see [`RuleName`]). A name no rule has, or a built-in rule that this
    /// configuration never applies (`DropReason::Path` without any
    /// `deny_path`), is refused by [`build`](Self::build).
    pub fn dry_run_rule(mut self, rule: impl Into<RuleName>) -> Self {
        let call = self.note(Ok(()));
        self.dry_run_rules.push((call, rule.into()));
        self
    }

    /// Sets what a rule does when it matches: [`Action::Drop`] (444, the
    /// default) or [`Action::Respond`] with a 4xx status, such as `429` for
    /// [`DropReason::RateLimited`] (with `Retry-After`), as nginx's
    /// `limit_req_status 429`. The rule is named as for
    /// [`dry_run_rule`](Self::dry_run_rule), and refused the same way.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_no_response::rules::Action;
    /// use tower_no_response::{DropReason, NoResponseLayer, RateLimit};
    ///
    /// let layer = NoResponseLayer::builder()
    ///     .rate_limit(RateLimit::per_second(10).burst(20))
    ///     .rule_action(DropReason::RateLimited, Action::Respond(StatusCode::TOO_MANY_REQUESTS))
    ///     .build()?;
    /// # Ok::<(), tower_no_response::BuildError>(())
    /// ```
    pub fn rule_action(mut self, rule: impl Into<RuleName>, action: Action) -> Self {
        let rule = rule.into();
        let call = self.note(policy::validate(rule.as_str(), action));
        self.actions.push((call, rule, action));
        self
    }

    /// Counts each drop that is the client's doing as a strike against the
    /// judged client (the real client behind trusted proxies) on `list`.
    /// A banned client is dropped as `banned` on every request, and refused
    /// at accept by every connection side made from this layer when it
    /// connects directly (see [`ban`](crate::ban)).
    pub fn ban_list(mut self, list: BanList) -> Self {
        self.ban_list = Some(list);
        self
    }

    /// How dropped connections are closed; [`CloseMode::Fin`] by default.
    pub fn close_mode(mut self, mode: CloseMode) -> Self {
        self.close_mode = mode;
        self
    }

    /// Drops a client that has not sent a complete request head this long:
    /// nginx's `client_header_timeout`, against Slowloris. No `408`, nothing
    /// at all, logged as a 444 with rule `header_timeout`. Off by default.
    ///
    /// A new connection on which no request began in that time (nothing
    /// sent, blank lines, or HTTP/2's preface with no stream) is closed in
    /// order and not logged, as nginx logs nothing for it: browsers open
    /// connections ahead of need (`<link rel=preconnect>`) and may leave
    /// them unused, and a log watcher must not ban a visitor for them.
    ///
    /// A head that has begun is closed at its first byte (at accept, for a
    /// connection's first request), or the end of the response before it if
    /// that is later, plus this timeout, whatever the client sends
    /// meanwhile. The timer never runs during a handler, a request body, a
    /// response, an upgraded connection, or between kept-alive requests,
    /// which [`keepalive_timeout`](Self::keepalive_timeout) bounds instead.
    /// On HTTP/2 it bounds a header block (`HEADERS` and its
    /// `CONTINUATION`s), and, after the server's `GOAWAY`, the grace before
    /// the connection is closed whatever is in flight.
    ///
    /// The connection side applies it: the layer's listener under
    /// `axum::serve` (which has no header timeout of its own) and the
    /// crate's serve loop, where it also bounds a TLS handshake.
    ///
    /// The connection timers (this one, the keep-alive, send and body
    /// timeouts) run on the real clock, off tokio's timer wheel, and go off
    /// about 10 ms after their deadline, never before; tokio's paused test
    /// clock (`tokio::time::pause`) does not move them.
    ///
    /// A zero timeout is refused at build: it would drop every request.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.note(nonzero("header_timeout", timeout));
        self.header_timeout = Some(timeout);
        self
    }

    /// Closes a kept-alive connection that sent nothing for this long after
    /// its last response (HTTP/1), or that has had no stream open this long
    /// (HTTP/2): nginx's `keepalive_timeout`, 75 s by default. The close is
    /// an orderly one, the end of the connection as any server closes an
    /// idle one (with a `GOAWAY` on HTTP/2), and it is not a drop: no 444,
    /// no strike, no access-log line, a `debug` event at most. A client
    /// that has begun its next request is under the header timeout
    /// instead. `Duration::MAX` never closes an idle connection.
    ///
    /// The layer's listener under `axum::serve` and the crate's serve loop
    /// apply it.
    pub fn keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = Some(timeout);
        self
    }

    /// Drops a request whose client sends nothing of its body for this long
    /// while the server waits for it: nginx's `client_body_timeout`, against
    /// slow-body attacks (R.U.D.Y.). No `408`, nothing at all, logged as a
    /// 444 with rule `body_timeout`, a strike against the judged client.
    /// Off by default.
    ///
    /// The timer runs only while the inner service waits for the body: from
    /// a read of the body that finds nothing new, until the next part
    /// arrives. A handler that is busy elsewhere and not reading is never
    /// the client's fault, and an upload that keeps sending, however slowly
    /// overall, is never cut. Once the inner service has answered, a body
    /// that runs out of time ends with an error instead: the response is
    /// already on its way.
    ///
    /// The layer applies it, so it works the same on every connection side
    /// and protocol: HTTP/1 closes the connection, HTTP/2 resets the stream
    /// (or closes the connection, as any drop does under `axum::serve`),
    /// and the handler's future is dropped. The inner service reads the
    /// request body through [`TimedBody`](crate::TimedBody), which is the
    /// client's body unchanged when no body timeout is set.
    ///
    /// A zero timeout is refused at build: it would drop every request
    /// whose body is not all there at once.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.note(nonzero("body_timeout", timeout));
        self.body_timeout = Some(timeout);
        self
    }

    /// Closes a connection whose client has accepted no byte of a response
    /// for this long: nginx's `send_timeout`, 60 s by default, against
    /// clients that stop reading to hold the connection and its buffers
    /// (the slow-read attack). Like nginx's, it bounds the time between two
    /// writes that make progress, not a whole response: a reader that is
    /// slow but keeps reading is never cut. `Duration::MAX` never closes.
    ///
    /// The close is not a 444 and not a strike, since a phone that loses
    /// its signal is innocent: it is logged at `info` with
    /// `reason=send_timeout` and counted in
    /// `tower_no_response_send_timeouts_total`. The connection side
    /// applies it: the layer's listener under `axum::serve` and the
    /// crate's serve loop.
    ///
    /// A zero timeout is refused at build: it would close any connection
    /// whose client's window is ever full.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.note(nonzero("send_timeout", timeout));
        self.send_timeout = Some(timeout);
        self
    }

    /// Whether a request that passes carries the client the layer judged
    /// as a [`ClientIp`](crate::ClientIp) request extension, for handlers
    /// and inner layers to read; on by default. An application that never
    /// reads it can turn it off: the insert is an allocation and a map
    /// insert on every allowed request, about a third of what the layer
    /// adds to one. Without it the `ClientIp` extractor rejects, as it does
    /// behind no layer at all.
    pub fn client_ip_extension(mut self, insert: bool) -> Self {
        self.no_client_ip_extension = !insert;
        self
    }

    /// Compiles the rules.
    ///
    /// # Errors
    /// The first malformed address, CIDR block, pattern, server name or rate
    /// limit, by name.
    pub fn build(self) -> Result<NoResponseLayer, BuildError> {
        NoResponseLayer::new(self.compile()?)
    }

    /// For a reload from a document: what a document cannot hold is
    /// carried over from the configuration in force, so that reloading the
    /// rules never removes what the code set. That is the custom rules and
    /// keyed limits (added after the document's rules), the shared store
    /// (when the document has a rate limit for it to keep), the `ClientIp`
    /// extension switch, and each timeout the document leaves unset.
    #[cfg(feature = "serde")]
    pub(super) fn keep_code_parts(mut self, current: &super::state::Compiled) -> Self {
        for rule in &current.rules.custom {
            let checked = self.name_is_free("custom_rule", rule.name);
            self.note(checked);
            self.custom_rules.push(rule.clone());
        }
        for (rule, limiter) in current.rules.keyed.iter().zip(&current.keyed) {
            let checked = self.name_is_free("rate_limit_by", rule.name);
            self.note(checked);
            self.keyed_limits.push((rule.clone(), limiter.limit));
        }
        if let (Some(_), None, Some(crate::limit::RateLimiter::Shared(shared))) =
            (&self.rate_limit, &self.shared_rate_limit, &current.limiter)
        {
            let call = self.note(Ok(()));
            self.shared_rate_limit = Some((call, shared.config().clone()));
        }
        self.header_timeout = self.header_timeout.or(current.header_timeout);
        self.keepalive_timeout = self.keepalive_timeout.or(Some(current.keepalive_timeout));
        self.body_timeout = self.body_timeout.or(current.body_timeout);
        self.send_timeout = self.send_timeout.or(Some(current.send_timeout));
        self.no_client_ip_extension = !current.client_ip_extension;
        // The balancers write their header whatever the rules say: a
        // reload that forgot them would hand every header to hyper.
        if self.proxy_protocol_from.is_empty() {
            self.proxy_protocol_from = current
                .rules
                .proxy_protocol
                .nets()
                .iter()
                .map(ToString::to_string)
                .collect();
        }
        self
    }

    /// Numbers a call that takes a value, keeping its error if it is the
    /// first: `build` reports errors in the order of the calls.
    fn note(&mut self, checked: Result<(), BuildError>) -> u32 {
        let call = self.calls;
        self.calls = self.calls.saturating_add(1);
        if let (Err(error), None) = (checked, &self.refused) {
            self.refused = Some((call, error));
        }
        call
    }

    /// Whether `name` may name a new custom rule or keyed limit.
    fn name_is_free(&self, call: &'static str, name: &'static str) -> Result<(), BuildError> {
        let taken: Vec<&'static str> = self.rule_names().collect();
        if DropReason::BUILTIN.len() + taken.len() >= MAX_RULES {
            return Err(BuildError::RuleName {
                call,
                name: name.to_owned(),
                reason: "a rule set holds at most 114 custom rules and keyed limits",
            });
        }
        CustomRule::validate(call, name, &taken)
    }

    /// The custom rules' and keyed limits' names, in the order added.
    fn rule_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.custom_rules
            .iter()
            .map(|r| r.name)
            .chain(self.keyed_limits.iter().map(|(r, _)| r.name))
    }

    /// Which built-in rules this configuration can ever apply, in
    /// [`DropReason::BUILTIN`] order.
    fn builtin_in_force(&self) -> [bool; DropReason::BUILTIN.len()] {
        let names = !self.server_names.is_empty();
        let host = names || self.drop_missing_host || self.drop_ip_literal_host;
        let limit = self.rate_limit.is_some();
        DropReason::BUILTIN.map(|reason| match reason {
            DropReason::PeerNotAllowed => !self.only_from_peers.is_empty(),
            DropReason::HostMissing => names || self.drop_missing_host,
            DropReason::HostIpLiteral => names || self.drop_ip_literal_host,
            DropReason::HostUnknown => names,
            DropReason::ClientIpUnknown => !self.ip_rules.is_empty() || limit,
            DropReason::IpDenied => self.ip_rules.iter().any(|(_, a)| *a == IpAction::Deny),
            DropReason::UserAgentDenied => !self.deny_user_agents.is_empty(),
            DropReason::UserAgentEmpty => self.drop_empty_user_agent,
            DropReason::Path => !self.deny_paths.is_empty(),
            DropReason::RateLimited | DropReason::RateLimitFull => limit,
            DropReason::RateLimitUnavailable => limit && self.shared_rate_limit.is_some(),
            // host_invalid, host_mismatch
            _ => host,
        })
    }

    /// Refuses a setting for a built-in rule this configuration never
    /// applies.
    fn applies(
        call: &'static str,
        rule: &RuleName,
        in_force: &[bool; DropReason::BUILTIN.len()],
        named: &[&'static str],
    ) -> Result<(), BuildError> {
        let Some(reason) = DropReason::builtin(rule.as_str()) else {
            return Ok(());
        };
        match reason.builtin_index() {
            Some(i) if !in_force[i] => {
                let mut why = format!(
                    "rule {reason} never matches: it applies only with {}",
                    enabling_call(reason)
                );
                if matches!(reason, DropReason::RateLimited | DropReason::RateLimitFull)
                    && !named.is_empty()
                {
                    why.push_str(
                        "; a limit added with rate_limit_by is named by its own name, \
                         as in rule_action(\"NAME\", ...)",
                    );
                }
                let rules: Vec<&str> = DropReason::BUILTIN
                    .iter()
                    .zip(in_force)
                    .filter(|(_, on)| **on)
                    .map(|(r, _)| r.as_str())
                    .chain(named.iter().copied())
                    .collect();
                if rules.is_empty() {
                    why.push_str("; no rule is configured yet");
                } else {
                    why.push_str(&format!("; the rules configured are: {}", rules.join(", ")));
                }
                Err(BuildError::Unused {
                    call,
                    value: rule.to_string(),
                    reason: why,
                })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn compile(self) -> Result<Config, BuildError> {
        let named: Vec<&'static str> = self.rule_names().collect();
        let in_force = self.builtin_in_force();
        let mut policies = Policies::new(named.iter().copied());
        if self.dry_run_all {
            policies.dry_run_all();
        }
        // Settings that name rules are checked now that every rule is
        // known; the first error in the order of the calls wins.
        let mut refused: Vec<(u32, BuildError)> = self.refused.clone().into_iter().collect();
        for rule in &self.custom_rules {
            if let Some(action) = rule.action {
                policies.set_action(rule.name, action)?;
            }
        }
        for (call, name) in &self.dry_run_rules {
            let checked = policies
                .dry_run("dry_run_rule", name.as_str())
                .and_then(|()| Self::applies("dry_run_rule", name, &in_force, &named));
            refused.extend(checked.err().map(|e| (*call, e)));
        }
        for (call, name, action) in &self.actions {
            let checked = policies
                .set_action(name.as_str(), *action)
                .and_then(|()| Self::applies("rule_action", name, &in_force, &named));
            refused.extend(checked.err().map(|e| (*call, e)));
        }
        if let (Some((call, _)), None) = (&self.shared_rate_limit, &self.rate_limit) {
            refused.push((
                *call,
                BuildError::RateLimit {
                    reason: "shared_rate_limit needs a rate_limit to share".into(),
                },
            ));
        }
        if let Some((_, error)) = refused.into_iter().min_by_key(|(call, _)| *call) {
            return Err(error);
        }
        let mut names = ServerNames::default();
        for name in &self.server_names {
            names.add(name)?;
        }
        let mut ip = IpRules::default();
        for (value, action) in &self.ip_rules {
            let rule = match action {
                IpAction::Allow => "allow_ip",
                IpAction::Deny => "deny_ip",
            };
            ip.push(parse_cidrs(rule, value)?, *action);
        }
        ip.seal();
        let mut trusted = IpSet::default();
        for value in &self.trusted_proxies {
            trusted.extend(parse_cidrs("trusted_proxy", value)?);
        }
        let mut only_from = IpSet::default();
        for value in &self.only_from_peers {
            only_from.extend(parse_cidrs("only_from_peer", value)?);
        }
        let mut proxy_protocol = IpSet::default();
        for value in &self.proxy_protocol_from {
            proxy_protocol.extend(parse_cidrs("proxy_protocol_from", value)?);
        }
        if let Some(limit) = &self.rate_limit {
            limit.quota()?;
        }
        let rules = RuleSet {
            only_from,
            proxy_protocol,
            host: HostRules {
                drop_missing: self.drop_missing_host,
                drop_ip_literal: self.drop_ip_literal_host,
                names,
            },
            ip,
            real_ip: RealIp {
                trusted,
                header: self.real_ip_header,
                recursive: !self.real_ip_non_recursive,
            },
            user_agent: UserAgentRules::new(
                &self.deny_user_agents,
                &self.allow_user_agents,
                self.drop_empty_user_agent,
            )?,
            paths: PathRules::new(&self.deny_paths)?,
            custom: self.custom_rules,
            rate_limited: self.rate_limit.is_some(),
            keyed: self.keyed_limits.iter().map(|(r, _)| r.clone()).collect(),
            policies,
            in_force,
        };
        let keyed_limits = self
            .keyed_limits
            .into_iter()
            .map(|(rule, limit)| (rule.name, limit))
            .collect();
        Ok(Config {
            keyed_limits,
            rules,
            close_mode: self.close_mode,
            header_timeout: self.header_timeout,
            keepalive_timeout: self.keepalive_timeout.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
            body_timeout: self.body_timeout,
            send_timeout: self.send_timeout.unwrap_or(DEFAULT_SEND_TIMEOUT),
            client_ip_extension: !self.no_client_ip_extension,
            rate_limit: self
                .rate_limit
                .map(|limit| (limit, self.shared_rate_limit.map(|(_, shared)| shared))),
            ban_list: self.ban_list,
        })
    }
}

/// Refuses a zero timeout: unlike nginx's `0` for some of its timeouts, it
/// would not turn the timer off but run out at once.
fn nonzero(setting: &'static str, timeout: Duration) -> Result<(), BuildError> {
    if timeout.is_zero() {
        return Err(BuildError::Setting {
            setting,
            value: format!("{timeout:?}"),
            reason: "a zero timeout runs out at once; leave it unset for none, \
                     or give Duration::MAX for one that never runs out"
                .into(),
        });
    }
    Ok(())
}

/// The builder call that turns a built-in rule on, for errors.
fn enabling_call(reason: DropReason) -> &'static str {
    match reason {
        DropReason::PeerNotAllowed => "only_from_peer",
        DropReason::HostMissing => "server_name or drop_missing_host",
        DropReason::HostIpLiteral => "server_name or drop_ip_literal_host",
        DropReason::HostUnknown => "server_name",
        DropReason::ClientIpUnknown => "allow_ip, deny_ip or rate_limit",
        DropReason::IpDenied => "deny_ip",
        DropReason::UserAgentDenied => "deny_user_agent",
        DropReason::UserAgentEmpty => "drop_empty_user_agent(true)",
        DropReason::Path => "deny_path",
        DropReason::RateLimited | DropReason::RateLimitFull => "rate_limit",
        DropReason::RateLimitUnavailable => "rate_limit and shared_rate_limit",
        _ => "server_name, drop_missing_host or drop_ip_literal_host",
    }
}

/// A checked configuration: the compiled rules, and the settings of the
/// runtime state the layer keeps beside them.
pub(crate) struct Config {
    pub(crate) rules: RuleSet,
    pub(crate) close_mode: CloseMode,
    pub(crate) header_timeout: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) body_timeout: Option<Duration>,
    pub(crate) send_timeout: Duration,
    pub(crate) client_ip_extension: bool,
    pub(crate) rate_limit: Option<(RateLimit, Option<SharedRateLimit>)>,
    /// Each keyed limit's name and rate, in the rules' order.
    pub(crate) keyed_limits: Vec<(&'static str, RateLimit)>,
    pub(crate) ban_list: Option<BanList>,
}
