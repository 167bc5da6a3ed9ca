//! The request-side rules: what a request is judged on, compiled once.
//!
//! Rules run in a fixed order, and the first one that matches, and is not in
//! dry-run, decides the request:
//!
//! 0. **Peer**: `peer_not_allowed`.
//! 1. **Host**: `host_missing`, `host_invalid`, `host_mismatch`, `host_ip_literal`,
//!    `host_unknown`.
//! 2. **Client IP**: `client_ip_unknown`, then `ip_deny`.
//! 3. **User-Agent**: `user_agent`, `user_agent_empty`.
//! 4. **Path**: `path`.
//! 5. **Custom rules**, in the order they were added.
//! 6. **Rate limit**: `rate_limit`, `rate_limit_full`, and with a shared
//!    store, `rate_limit_unavailable`.
//!
//! The rate limit runs last so that only requests every other rule accepted
//! count toward a client's budget, as in nginx's phase order: a scanner that
//! is dropped for its Host cannot use up a shared client's allowance.
//!
//! A rule in dry-run is evaluated fully; when it matches, an event records
//! what it would have done and evaluation goes on with the next rule.
//!
//! Judging is pure: [`RuleSet::judge`] reads a request head and the peer
//! and returns a [`Judgement`], with no clock, runtime, logging or state.
//! The rate limit's budget is runtime state, kept by the layer beside the
//! rules, so the rules end at "ask the limiter about this client"
//! ([`Verdict::RateLimit`]), and the layer applies the limiter's answer.
//!
//! # Rules
//!
//! Rules run in this order; the first that matches names the drop.
//!
//! | order | rule name | drops when |
//! |---|---|---|
//! | 0 | `peer_not_allowed` | `only_from_peer` is set and the TCP peer is neither in it nor a trusted proxy |
//! | 1 | `host_missing` | no host: no Host header (HTTP/1.1 needs one even with an absolute-form target), no `:authority` on HTTP/2, or an empty value |
//! | 1 | `host_invalid` | two Host headers, or a value that is neither a DNS name nor an address |
//! | 1 | `host_mismatch` | the target names a host (absolute form, or HTTP/2's `:authority`) and the Host header names another |
//! | 1 | `host_ip_literal` | the host is an IP: `192.0.2.1`, `[2001:db8::1]:443`, and the forms browsers also accept: `3221225985`, `0xc0.0.2.1`, `0300.0.2.1`, `192.1` |
//! | 1 | `host_unknown` | the host is not a served name |
//! | 2 | `client_ip_unknown` | IP rules or a rate limit are set but no peer address is known |
//! | 2 | `ip_deny` | the client IP's first matching IP rule is a deny |
//! | 3 | `user_agent` | a User-Agent matches a deny pattern and no allow pattern |
//! | 3 | `user_agent_empty` | the User-Agent is missing or blank (with `drop_empty_user_agent(true)`) |
//! | 4 | `path` | the path matches a `deny_path` pattern: as sent, with escapes decoded, or normalised (dot segments removed, slashes merged, unreserved escapes decoded, `;params` cut), so `//wp-login.php` or `/x/../wp-login.php` cannot slip past `^/wp-login\.php` |
//! | 5 | your name | a `custom_rule` predicate returns `true` |
//! | 6 | `rate_limit` | the client is over its rate |
//! | 6 | `rate_limit_full` | a new client while the limiter already tracks `max_keys` clients, whose network (/24, /48) is over the rate |
//! | 6 | `rate_limit_unavailable` | the [shared store](crate::limit::SharedRateLimit) did not answer in time and the limit fails closed |
//!
//! Every rule drops by default; any rule can instead answer with a 4xx status
//! or run in dry-run (see [Operating](crate::audit#operating)).
//!
//! Details:
//!
//! - **Host.** Names compare without case, port or trailing dot. The authority
//!   of an absolute-form target, or HTTP/2's `:authority`, wins over the Host
//!   value (RFC 9112 §3.2.2). Once any name is served, a missing host and an IP
//!   literal are dropped too, as nginx's catch-all `default_server` would;
//!   `drop_missing_host` and `drop_ip_literal_host` turn those on alone.
//! - **Client IP.** The socket peer, unless the peer is a trusted proxy; see
//!   [Real client IP](#real-client-ip). `::ffff:a.b.c.d` is treated as `a.b.c.d`
//!   everywhere, in addresses and in rules.
//! - **User-Agent.** Patterns are regexes matched anywhere in the raw header
//!   bytes, case-insensitively unless they start with `(?-i)`. Allow patterns
//!   beat deny patterns. Every User-Agent header is judged.
//! - **Rate limit.** nginx's `limit_req ... burst=N nodelay` model, keyed by IPv4
//!   address or IPv6 prefix (`/64` by default, `RateLimit::ipv6_prefix`). Only
//!   requests that passed every other rule count. `rate=10r/s burst=20` admits 21
//!   back-to-back requests and drops 19 of 40; one second later 10 more pass,
//!   exactly the figures measured on nginx.
//!
//! # Real client IP
//!
//! Behind a load balancer or CDN every peer is the proxy. `trusted_proxy` names
//! the proxies (nginx `set_real_ip_from`); for requests from them, the client is
//! read from one header (nginx `real_ip_header`). Requests from any other peer
//! are judged on the peer address, and their forwarding headers are ignored.
//!
//! | `real_ip_header(...)` | header | reads |
//! |---|---|---|
//! | `RealIpHeader::XForwardedFor` (default) | `X-Forwarded-For: client, proxy1, proxy2` | a list; every line, in order; entries may carry ports (`192.0.2.1:4711`, `[2001:db8::1]:80`) |
//! | `RealIpHeader::Forwarded` | RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:4711"` | a list of `for=` nodes; quoted values, escapes and commas inside quotes are handled |
//! | `RealIpHeader::XRealIp` | `X-Real-IP: client` | one address |
//! | `RealIpHeader::CfConnectingIp` | `CF-Connecting-IP: client` | one address |
//! | `"True-Client-IP".parse()?` | any other name | one address |
//!
//! For list headers, `real_ip_recursive(true)` (the default; nginx's default is
//! off) walks from the right and takes the first address that is not a trusted
//! proxy, so a chain of proxies is seen through; with every entry trusted it
//! takes the leftmost. `real_ip_recursive(false)` takes the rightmost entry,
//! trusted or not.
//!
//! For Cloudflare, `trust_cloudflare()` trusts `rules::CLOUDFLARE_RANGES`
//! (Cloudflare's published list, copied 2026-11-26) and reads
//! `CF-Connecting-IP`. The list changes rarely; pass a current copy of
//! Cloudflare's `ips-v4` and `ips-v6` files, or any provider's list, with
//! `trusted_proxy_list(&text)`: one range per line, `#` comments allowed.
//! To refuse anyone who reaches the origin around the CDN, use
//! `trust_cloudflare_only()`, or `only_from_peers(ranges)` for any provider: it
//! judges the TCP peer. `allow_ip` and `deny_ip` judge the real client, so
//! `allow_ip(edge).deny_ip("all")` would drop every visitor that comes
//! through the edge.
//!
//! # Peer and client
//!
//! A request has two identities: the **peer**, the TCP connection's other
//! end (the proxy, or the client itself when it connects directly), and the
//! **client**, the real address behind trusted proxies (the peer when it is
//! not a trusted proxy). Each part of the crate uses one of them:
//!
//! | part | identity |
//! |---|---|
//! | `proxy_protocol_from` (`proxy_protocol_invalid`) | peer: the balancer, before its header is read |
//! | `only_from_peer` (`peer_not_allowed`) | peer (behind a PROXY protocol balancer, the balancer, at accept) |
//! | host, User-Agent, path and custom rules | the request; custom rules see both in `RequestHead` (`peer`, `client_ip`) |
//! | `allow_ip`, `deny_ip` (`ip_deny`) | client |
//! | `rate_limit` (`rate_limit`, `rate_limit_full`) | client (IPv6 by its prefix) |
//! | `rate_limit_by` | its key; strikes only when the key is the client's own address |
//! | strikes and bans (`BanList`), in the layer | client, on every request, through any proxy |
//! | bans at accept (serve loop, listener, tonic's incoming) | peer, when it is not an edge: a banned client that connects directly |
//! | kernel filter | peer: `only_from_peer`, bans and denies of direct clients; never an edge |
//! | `max_connections_per_client` | peer, when it is not an edge |
//! | `max_connections_per_proxy` | peer, when it is an edge |
//! | `AcceptRules::deny` (`accept_deny`) | peer |
//! | `header_timeout` | peer (the connection); never a strike |
//! | `keepalive_timeout` | the connection; an idle close is not a drop |
//! | `body_timeout` | the request; a strike against the client |
//! | the `ClientIp` extractor | client |
//! | the 444 event and the access log | both: `client_ip` and `peer_addr` |
//!
//! Behind an L4 load balancer listed in `proxy_protocol_from`, the client its
//! PROXY protocol header names takes the peer's place in every row above: it
//! is judged, struck, banned, capped and logged as the peer would be, and
//! forwarding headers are read from it when it is a trusted proxy (a CDN in
//! front of the balancer), never from the balancer. Only `only_from_peer`
//! and `proxy_protocol_from` judge the balancer itself, at accept.
//!
//! An **edge** is a trusted proxy, a peer in `only_from_peer`, or a balancer
//! in `proxy_protocol_from`: it carries other
//! people's traffic, so it is never struck, banned, capped as a client or
//! refused by the kernel filter, even when a ban of an IPv6 /64 or a denied
//! block contains it. NAT is not an edge: many people behind one untrusted
//! address are one client, as nginx judges them.
//!
//! Every request that passes carries the answer as a `ClientIp` extension.
//! The example takes `--real-ip-header NAME` and `--no-recursive` to try each
//! mode with curl.
//!
//! # Security model
//!
//! **What is trusted.** Only the socket peer address, and only the forwarding
//! header you chose, and only from peers inside `trusted_proxy` ranges. Nothing
//! a client sends can make an untrusted peer look trusted, and no header other
//! than the chosen one is read. The rules themselves are trusted configuration:
//! every value is checked at `build()`, and a malformed one is refused with an
//! error naming it.
//!
//! **How the client IP is chosen.** See [Real client IP](#real-client-ip). An
//! entry that is not an address never names the client: the walk stops there
//! and keeps the last address it verified (the nearest trusted proxy, or the
//! peer), as nginx does. Empty list members are skipped, as nginx does. A
//! one-address header sent twice is ignored. IPv4-mapped IPv6 addresses are
//! turned into IPv4 before any rule sees them, so `::ffff:198.51.100.7` cannot
//! slip past `deny_ip("198.51.100.0/24")`. If IP rules or a rate limit are set
//! but no peer address is known at all, requests are dropped
//! (`client_ip_unknown`), not let through.
//!
//! **Edge cases, decided.** Each is tested on a real socket in
//! `tests/it/hostile_input.rs`, `tests/it/rules_on_the_wire.rs` or `tests/it/real_ip.rs`.
//!
//! | input | outcome |
//! |---|---|
//! | two Host headers | `host_invalid` (RFC 9112 §3.2 calls it a bad request) |
//! | empty Host | `host_missing` |
//! | userinfo in Host (`example.com@evil`) | `host_invalid`; userinfo in an absolute-form target is ignored, the host is judged |
//! | absolute-form target whose authority differs from Host | `host_mismatch`: the rules would judge the target while the application reads Host; when they agree (case aside) the request is served |
//! | absolute-form HTTP/1.1 request without Host | `host_missing` (RFC 9112 §3.2); HTTP/1.0 may omit it |
//! | HTTP/2 `:authority` and a different Host | `host_mismatch` (malformed, RFC 9113 §8.3.1) |
//! | IPv6 literal, bracketed or bare, with or without port | `host_ip_literal`; with a zone id (`[fe80::1%25eth0]`) it does not parse: `host_invalid` |
//! | IPv4 as browsers also accept it: decimal, hex, octal, short | `host_ip_literal` (the WHATWG URL "ends in a number" test) |
//! | Host with bytes outside a DNS name, non-UTF-8, or over 253 characters | `host_invalid` |
//! | port over 65535 | `host_invalid`; in `X-Forwarded-For` or `Forwarded`, the entry is garbage |
//! | `[192.0.2.1]` in a forwarding header | garbage: brackets hold IPv6 only |
//! | `Forwarded: for=unknown`, obfuscated `for=_hidden`, repeated `for=`, no `for=` | garbage (names no one) |
//! | non-UTF-8 or very long User-Agent | judged on its raw bytes; patterns still match |
//! | several User-Agent headers | each is judged; one denied value drops the request; empty only if all are |
//!
//! Nothing here can make the layer panic: property tests run in the normal test
//! suite, and two `cargo fuzz` targets (below) exercise the parsers further.
//!
//! **Known limits.**
//!
//! - A request hyper itself cannot parse (a control byte in a header, headers
//!   over its size limit) gets hyper's own `400` or `431` before any rule runs.
//! - HTTP/2 over `axum::serve`: a drop closes the whole connection (the
//!   crate's own serve loop resets only the stream).
//! - A client that controls many addresses (a botnet, or IPv6 space beyond the
//!   `/64` key) gets a budget per key; per-address limits cannot stop that.
//! - The rate limiter's memory is bounded (see below). When its table is
//!   full, a new client is judged together with its network (IPv4 /24, IPv6
//!   /48) in a fixed-memory sketch, so a spray of addresses neither grows
//!   memory nor crowds out newcomers from other networks, and a sprayed
//!   network stays limited. A newcomer sharing a /24 or /48 with a sprayer
//!   shares its budget while the table is full; and a spray across as many
//!   networks as the sketch has cells (a million distinct IPv4 /24s against
//!   the default) saturates it, wrongly limiting most newcomers until it
//!   drains: per-client limits cannot tell such a botnet's first requests from
//!   a newcomer's. Clients already tracked are unaffected.
//! - Without the listener, HTTP/2 drops may send a bare `:status 444` head.
//!
//! ## Rate-limit memory
//!
//! Each tracked client costs about 67 bytes (`benches/limiter_memory.rs`
//! measures it). Every `eviction_interval` (10 s by default) a task on the
//! tokio runtime forgets the clients whose budget has been full again for a
//! whole interval, and at most `max_keys` clients (100,000 by default, a
//! few MiB) are tracked at once. When the table is full, idle clients are
//! evicted on the spot, at most once a second so a flood cannot make every
//! request scan it; if it is still full, the new client is judged with its
//! network (IPv4 /24, IPv6 /48) by an overflow sketch: four rows of twice
//! `max_keys` cells (8 MiB for the default, allocated the first time the
//! table is full), each holding the latest GCRA arrival time of the
//! networks that hash to it. A network's estimate is the smallest of its
//! four cells, never earlier than its own, so a sprayed network is never
//! under-limited; one over the rate is dropped as `rate_limit_full`, which
//! does not count as a strike.

pub(crate) mod client_ip;
pub(crate) mod custom;
pub(crate) mod host;
pub(crate) mod ip;
pub(crate) mod path;
pub(crate) mod patterns;
pub(crate) mod policy;
pub(crate) mod reason;
pub(crate) mod user_agent;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::Request;

use crate::parse::headers::HeaderScan;

pub(crate) use client_ip::ClientIp;
pub use client_ip::{CLOUDFLARE_RANGES, RealIpHeader};
pub use custom::{LimitKey, RequestHead};
pub use policy::Action;
pub(crate) use policy::CloseMode;
pub(crate) use reason::DropReason;
pub use reason::RuleName;

use custom::{CustomRule, KeyedRule};
use path::PathRules;
use policy::Policies;

use client_ip::RealIp;
use host::HostRules;
use ip::{IpAction, IpRules};
use user_agent::UserAgentRules;

/// A compiled, immutable rule set. Build it with
/// [`NoResponseLayer::builder`](crate::NoResponseLayer::builder); every
/// service made by the layer shares one behind an `Arc`.
#[derive(Debug)]
pub struct RuleSet {
    /// The peers a connection may come from (`only_from_peer`); empty for any.
    pub(crate) only_from: ip::IpSet,
    /// The load balancers whose PROXY protocol header names the client
    /// (`proxy_protocol_from`); empty when none is read.
    pub(crate) proxy_protocol: ip::IpSet,
    pub(crate) host: HostRules,
    pub(crate) ip: IpRules,
    pub(crate) real_ip: RealIp,
    pub(crate) user_agent: UserAgentRules,
    pub(crate) paths: PathRules,
    pub(crate) custom: Vec<CustomRule>,
    /// Whether the per-client rate limit follows the other rules.
    pub(crate) rate_limited: bool,
    /// The keyed rate limits, in the order added; they run before the
    /// per-client one.
    pub(crate) keyed: Vec<KeyedRule>,
    pub(crate) policies: Policies,
    /// Which built-in rules this configuration can ever apply, in
    /// [`DropReason::BUILTIN`] order.
    pub(crate) in_force: [bool; DropReason::BUILTIN.len()],
}

/// What the rules let a filter below the application (the kernel's) do
/// with peers before a byte is read.
#[derive(Debug, Default)]
pub(crate) struct KernelSets {
    /// Never refused, whatever else says so: trusted proxies, `only_from_peer`
    /// peers, and the allows that come before a deny.
    pub(crate) keep: Vec<ipnet::IpNet>,
    /// Refused outright while the `ip_deny` rule drops: the client is the
    /// peer here, since proxies are kept.
    pub(crate) deny: Vec<ipnet::IpNet>,
    /// Refuse every peer that is not kept: `only_from_peer` is enforced.
    pub(crate) keep_only: bool,
    /// The enforced custom rules that list the peers they refuse (CrowdSec's
    /// decisions).
    pub(crate) peer_rules: Vec<std::sync::Arc<dyn custom::PeerRule>>,
}

/// What the rules make of one request: [`RuleSet::judge`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Judgement {
    /// The client the rules judged, when a peer address was known.
    pub client_ip: Option<IpAddr>,
    /// What happens to the request.
    pub verdict: Verdict,
    /// The rules in dry-run that matched; see [`RuleSet::would_drop`].
    pub dry_run: DryRunHits,
}

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every enforced rule let it through.
    Pass,
    /// An enforced rule stopped it.
    Stop(Stop),
    /// Every other rule let it through; the rate limits decide: the keyed
    /// ones, then the per-client one for this client. The layer applies
    /// their answers.
    RateLimit(Option<IpAddr>),
}

/// The rule that stopped a request, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The rule that matched.
    pub rule: DropReason,
    /// Drop (444), or respond with a status.
    pub action: Action,
    /// How long the client should wait, when the rate limit matched.
    pub retry_after: Option<Duration>,
}

/// The set of rules in dry-run that matched one request, by their slot in
/// the rule set: built-in rules first, then custom rules. A rule set holds
/// at most 128 rules, so it fits in one word pair and judging allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DryRunHits(u128);

impl DryRunHits {
    /// Whether no rule in dry-run matched.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The hits in `self` that are not in `earlier`.
    #[must_use]
    pub const fn since(self, earlier: DryRunHits) -> DryRunHits {
        DryRunHits(self.0 & !earlier.0)
    }

    fn with(self, slot: usize) -> Self {
        Self(self.0 | 1 << slot)
    }

    fn slots(self) -> impl Iterator<Item = usize> {
        (0..128).filter(move |slot| self.0 & (1 << slot) != 0)
    }
}

/// What the rate limiter says about one request's budget: the answer
/// [`RuleSet::settle`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    Allow,
    /// Over the limit; the client may try again after this long.
    OverLimit(Duration),
    /// A new client while the table is full, whose network is over the
    /// rate; how long until it is not.
    NetworkOverLimit(Duration),
    /// The shared store could not answer and the policy is to fail closed.
    Unavailable,
}

/// The most rules a rule set holds: the slots of [`DryRunHits`], of which
/// the built-in rules take 14, leaving 114 for custom rules.
pub(crate) const MAX_RULES: usize = 128;
const _: () = assert!(MAX_RULES - DropReason::BUILTIN.len() == 114);

impl RuleSet {
    /// Judges a request from its head and the socket peer: allocation-free,
    /// with no clock, runtime or logging.
    ///
    /// `peer` is the TCP peer; the client IP is derived from it and, when the
    /// peer is a trusted proxy, from the real-IP header.
    pub fn judge<B>(&self, request: &Request<B>, peer: Option<SocketAddr>) -> Judgement {
        self.judge_with(request, peer, Custom::Judged)
    }

    /// [`judge`](Self::judge) for a request read off the socket before any
    /// layer ran: custom rules, which may read what outer layers add (an
    /// authenticated user, say), are left out, so the answer is always the
    /// layer's own or none. They come last, so a stop found without them is
    /// the stop the layer would find.
    #[cfg(any(feature = "server", feature = "axum"))]
    pub(crate) fn judge_at_accept<B>(&self, request: &Request<B>, peer: SocketAddr) -> Judgement {
        self.judge_with(request, Some(peer), Custom::LeftToTheLayer)
    }

    fn judge_with<B>(
        &self,
        request: &Request<B>,
        peer: Option<SocketAddr>,
        custom: Custom,
    ) -> Judgement {
        let scan = HeaderScan::new(request.headers(), self.real_ip.header_name());
        let client_ip = peer.map(|p| self.real_ip.resolve_scanned(p.ip(), &scan));
        let mut dry_run = DryRunHits::default();
        let verdict = match self.first_stop(request, &scan, peer, client_ip, custom, &mut dry_run) {
            Err(stop) => Verdict::Stop(stop),
            Ok(()) if self.rate_limited || !self.keyed.is_empty() => Verdict::RateLimit(client_ip),
            Ok(()) => Verdict::Pass,
        };
        Judgement {
            client_ip,
            verdict,
            dry_run,
        }
    }

    /// The key the `index`th keyed limit counts `head` under, if it applies.
    pub(crate) fn limit_key(&self, index: usize, head: &RequestHead<'_>) -> Option<LimitKey> {
        (self.keyed[index].key)(head)
    }

    /// Applies the `index`th keyed limit's answer to a judgement that
    /// awaits the rate limits: over it, a stop (or a dry-run hit) named for
    /// the limit; within it, the judgement goes on to the next limit.
    pub(crate) fn settle_keyed(
        &self,
        judgement: Judgement,
        index: usize,
        budget: Budget,
    ) -> Judgement {
        let wait = match budget {
            Budget::Allow => return judgement,
            Budget::OverLimit(wait) | Budget::NetworkOverLimit(wait) => Some(wait),
            Budget::Unavailable => None,
        };
        let rule = DropReason::Custom(self.keyed[index].name);
        self.over_limit(judgement, rule, wait, judgement.verdict)
    }

    /// Applies the per-client rate limiter's answer to a judgement that
    /// awaits it; any other judgement is returned as it is.
    pub(crate) fn settle(&self, judgement: Judgement, budget: Budget) -> Judgement {
        if !matches!(judgement.verdict, Verdict::RateLimit(_)) {
            return judgement;
        }
        let (rule, wait) = match budget {
            Budget::Allow => {
                return Judgement {
                    verdict: Verdict::Pass,
                    ..judgement
                };
            }
            Budget::OverLimit(wait) => (DropReason::RateLimited, Some(wait)),
            Budget::NetworkOverLimit(wait) => (DropReason::RateLimitFull, Some(wait)),
            Budget::Unavailable => (DropReason::RateLimitUnavailable, None),
        };
        self.over_limit(judgement, rule, wait, Verdict::Pass)
    }

    /// A rate limit's `rule` matched: a stop carrying `wait` when it is
    /// enforced; when it is in dry-run, a hit, and the judgement goes on as
    /// `otherwise`.
    fn over_limit(
        &self,
        judgement: Judgement,
        rule: DropReason,
        wait: Option<Duration>,
        otherwise: Verdict,
    ) -> Judgement {
        let mut dry_run = judgement.dry_run;
        let verdict = match self.enforce(rule, &mut dry_run) {
            Ok(()) => otherwise,
            Err(mut stop) => {
                stop.retry_after = wait;
                Verdict::Stop(stop)
            }
        };
        Judgement {
            verdict,
            dry_run,
            ..judgement
        }
    }

    /// The rules in dry-run that matched, in evaluation order.
    pub fn would_drop(&self, hits: DryRunHits) -> impl Iterator<Item = DropReason> + '_ {
        hits.slots().map(|slot| self.policies.reason(slot))
    }

    /// What a filter below the application may refuse before a byte is
    /// read, and what it must never refuse; see [`KernelSets`].
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn kernel_sets(&self) -> KernelSets {
        let enforced = |rule| {
            let policy = self.policies.get(rule);
            !policy.dry_run && policy.action == Action::Drop
        };
        let mut keep = self.real_ip.trusted.nets();
        keep.extend(self.only_from.nets());
        keep.extend(self.proxy_protocol.nets());
        if !self.only_from.is_empty() && enforced(DropReason::PeerNotAllowed) {
            return KernelSets {
                keep,
                deny: Vec::new(),
                keep_only: true,
                peer_rules: Vec::new(),
            };
        }
        let mut deny = Vec::new();
        if enforced(DropReason::IpDenied) {
            let rules = self.ip.rules();
            let last_deny = rules.iter().rposition(|(_, a)| *a == IpAction::Deny);
            for (i, (net, action)) in rules.iter().enumerate() {
                match action {
                    IpAction::Deny => deny.push(*net),
                    // An allow before a deny takes its addresses out of it.
                    IpAction::Allow if last_deny.is_some_and(|d| i < d) => keep.push(*net),
                    IpAction::Allow => {}
                }
            }
        }
        let peer_rules = self.enforced_peer_rules();
        KernelSets {
            keep,
            deny,
            keep_only: false,
            peer_rules,
        }
    }

    /// The custom rules that judge bare peers and drop, enforced.
    pub(crate) fn enforced_peer_rules(&self) -> Vec<std::sync::Arc<dyn custom::PeerRule>> {
        self.custom
            .iter()
            .filter(|rule| {
                let policy = self.policies.get(DropReason::Custom(rule.name));
                !policy.dry_run && policy.action == Action::Drop
            })
            .filter_map(|rule| rule.peer.clone())
            .collect()
    }

    /// Whether `ip` is one of the trusted proxies: an address whose drops
    /// are its clients', never its own.
    #[must_use]
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.real_ip.trusted.contains(ip.to_canonical())
    }

    /// Whether `ip` is an edge: a trusted proxy, a peer inside the
    /// [`only_from_peer`](crate::NoResponseLayerBuilder::only_from_peer)
    /// ranges, or a load balancer that sends the PROXY protocol. An
    /// edge carries other people's traffic, so it is never struck, banned,
    /// capped as a client, or refused by the kernel filter; the clients
    /// behind it are judged instead.
    #[must_use]
    pub fn is_edge(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.real_ip.trusted.contains(ip)
            || self.only_from.contains(ip)
            || self.proxy_protocol.contains(ip)
    }

    /// Whether a connection from `peer` begins with a PROXY protocol
    /// header: `peer` is one of the `proxy_protocol_from` balancers.
    #[cfg(all(
        feature = "proxy-protocol",
        any(feature = "server", feature = "axum", feature = "tonic")
    ))]
    pub(crate) fn sends_proxy_header(&self, peer: IpAddr) -> bool {
        !self.proxy_protocol.is_empty() && self.proxy_protocol.contains(peer.to_canonical())
    }

    /// Whether any peer may send a PROXY protocol header, so that one from
    /// another peer is refused rather than handed to the server.
    #[cfg(all(
        feature = "proxy-protocol",
        any(feature = "server", feature = "axum", feature = "tonic")
    ))]
    pub(crate) fn reads_proxy_headers(&self) -> bool {
        !self.proxy_protocol.is_empty()
    }

    /// Whether a connection from `peer` may be served at all: any peer when
    /// no `only_from_peer` range is set; otherwise one inside them, or a trusted
    /// proxy.
    #[must_use]
    pub fn peer_allowed(&self, peer: IpAddr) -> bool {
        self.only_from.is_empty() || self.is_edge(peer)
    }

    /// The custom rule that refuses `peer` at accept, if one does: a rule
    /// that can judge a bare peer, enforced as a drop. An edge is never
    /// refused this way, since it carries other clients.
    #[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
    pub(crate) fn custom_refuses_peer(&self, peer: IpAddr) -> Option<&'static str> {
        let mut judging = self
            .custom
            .iter()
            .filter(|rule| rule.peer.is_some())
            .peekable();
        if judging.peek().is_none() || self.is_edge(peer) {
            return None;
        }
        judging
            .find(|rule| {
                let policy = self.policies.get(DropReason::Custom(rule.name));
                !policy.dry_run
                    && policy.action == Action::Drop
                    && rule.peer.as_ref().is_some_and(|judge| judge.refuses(peer))
            })
            .map(|rule| rule.name)
    }

    /// Whether a connection from `peer` is refused before a byte is read:
    /// it is outside `only_from_peer` and the rule is enforced with a drop.
    #[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
    pub(crate) fn refuses_peer(&self, peer: IpAddr) -> bool {
        if self.peer_allowed(peer) {
            return false;
        }
        let policy = self.policies.get(DropReason::PeerNotAllowed);
        !policy.dry_run && policy.action == Action::Drop
    }

    /// What the rule that matched does.
    #[must_use]
    pub fn action(&self, reason: DropReason) -> Action {
        self.policies.get(reason).action
    }

    /// A rule that matched: a stop when enforced, a hit when in dry-run.
    fn enforce(&self, rule: DropReason, dry_run: &mut DryRunHits) -> Result<(), Stop> {
        let slot = self.policies.slot(rule);
        let policy = self.policies.policies[slot];
        if policy.dry_run {
            *dry_run = dry_run.with(slot);
            return Ok(());
        }
        Err(Stop {
            rule,
            action: policy.action,
            retry_after: None,
        })
    }

    fn first_stop<B>(
        &self,
        request: &Request<B>,
        scan: &HeaderScan<'_>,
        peer: Option<SocketAddr>,
        client_ip: Option<IpAddr>,
        custom: Custom,
        dry_run: &mut DryRunHits,
    ) -> Result<(), Stop> {
        // Behind balancers that send the PROXY protocol, the peer a request
        // carries is the client the header named: the balancer, the TCP
        // peer, was judged at accept.
        if !self.only_from.is_empty()
            && self.proxy_protocol.is_empty()
            && !peer.is_some_and(|p| self.peer_allowed(p.ip()))
        {
            self.enforce(DropReason::PeerNotAllowed, dry_run)?;
        }
        if let Err(rule) = self
            .host
            .check_scanned(request.version(), request.uri(), scan)
        {
            self.enforce(rule, dry_run)?;
        }
        let needs_ip = !self.ip.is_empty() || self.rate_limited;
        if client_ip.is_none() && needs_ip {
            self.enforce(DropReason::ClientIpUnknown, dry_run)?;
        }
        if let Some(ip) = client_ip {
            if self.ip.first_match(ip) == Some(IpAction::Deny) {
                self.enforce(DropReason::IpDenied, dry_run)?;
            }
        }
        if let Err(rule) = self.user_agent.check_scanned(scan) {
            self.enforce(rule, dry_run)?;
        }
        if let Err(rule) = self.paths.check(request.uri()) {
            self.enforce(rule, dry_run)?;
        }
        if !self.custom.is_empty() && custom == Custom::Judged {
            custom::clear_detail();
            let head = RequestHead::of(request, peer, client_ip);
            let mut edge = None;
            for rule in &self.custom {
                let spared = rule.spares_edges
                    && *edge.get_or_insert_with(|| client_ip.is_some_and(|ip| self.is_edge(ip)));
                if !spared && (rule.predicate)(&head) {
                    self.enforce(DropReason::Custom(rule.name), dry_run)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether a judgement runs the custom rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "server", feature = "axum")), allow(dead_code))]
enum Custom {
    Judged,
    LeftToTheLayer,
}

impl Judgement {
    /// The stop, if an enforced rule stopped the request.
    #[must_use]
    pub fn stop(&self) -> Option<Stop> {
        match self.verdict {
            Verdict::Stop(stop) => Some(stop),
            _ => None,
        }
    }
}
