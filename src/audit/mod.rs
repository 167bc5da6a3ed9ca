//! The audit output: one `tracing` event for every request a rule stops or,
//! in dry-run, would have stopped; per-rule counters; and, with the
//! `access-log` feature, nginx's combined log line.
//!
//! nginx never sends a 444 but still logs it, so operators can count what was
//! dropped and by which rule. This crate does the same with an event:
//!
//! - **target:** `tower_no_response::drop` (see [`DROP_EVENT_TARGET`]);
//! - **level:** `INFO`;
//! - **message**, one per outcome: `dropped request` (444), `answered
//!   request` (a rule's [`Action::Respond`](crate::rules::Action::Respond)
//!   status, such as a 429), `request would be dropped (dry-run)` (the
//!   request went through);
//! - **fields**, always all present. `status` is recorded as an integer,
//!   every other field as text (`tracing`'s `Display` values), `-` when
//!   there is nothing to show:
//!
//! | field | type | value |
//! |---|---|---|
//! | `status` | `u64` | `444` for a drop (and for a dry-run match: what it would have been), else the status answered |
//! | `rule` | text | the [`DropReason`] name, e.g. `host_unknown` |
//! | `action` | text | `drop`, `respond`, or `would_drop` for a rule in dry-run |
//! | `client_ip` | text | the judged client IP, or `-` |
//! | `peer_addr` | text | the TCP peer `ip:port` (behind a PROXY protocol balancer, the client its header names), or `-` |
//! | `method` | text | the request method, or `-` for a connection dropped before a request |
//! | `host` | text | the host judged (Host header or URI authority), or `-` |
//! | `uri` | text | the request target as received, or `-` |
//! | `version` | text | `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`, or `-` |
//! | `referer` | text | the Referer header, or `-` |
//! | `user_agent` | text | the first User-Agent, or `-` |
//! | `close` | text | `fin`, `reset`, `stream` when only the HTTP/2 stream was reset, `body_error` when no connection handle was found, or `none` when the connection stays open |
//! | `detail` | text | what the rule matched on, where it says: CrowdSec's scenario for rules `crowdsec` and `crowdsec_other`; else `-` |
//! | `sni` | text | the server name of the connection's TLS ClientHello (feature `rustls`: the TLS gate's refusals, and requests inside TLS on the serve loop, tonic's TLS incoming stream and axum-server's gate acceptor), or `-` |
//! | `ja4` | text | the same ClientHello's JA4 fingerprint, or `-` |
//!
//! Header values are written as nginx writes them in its access log: bytes
//! outside printable ASCII, `"` and `\` become `\xNN`, so a hostile value can
//! neither forge a log line nor break a parser.
//!
//! To print only these events, filter on the target, e.g.
//! `RUST_LOG=tower_no_response::drop=info` with `tracing-subscriber`'s
//! `EnvFilter`.
//!
//! # Operating
//!
//! nginx's own advice for 444 is operational: drop only clear attackers, give
//! legitimate clients a proper 400, 403 or 429, test new rules in staging, and
//! watch the log for unexpected 444s. The layer has a tool for each.
//!
//! ## Rolling out a new rule
//!
//! 1. **Add it in dry-run.** The rule is evaluated on live traffic, and every
//!    match emits the 444 event with `action=would_drop`, but the request is
//!    served. Evaluation goes on past it, so the enforced rules behind it still
//!    apply.
//!
//!    ```rust
//!    use tower_no_response::{BuildError, DropReason, NoResponseLayer};
//!
//!    fn rules() -> Result<NoResponseLayer, BuildError> {
//!        NoResponseLayer::builder()
//!            .server_names(["example.com"])
//!            .deny_path(r"^/wp-login\.php")
//!            .dry_run_rule(DropReason::Path) // or .dry_run(true) for every rule
//!            .build()
//!    }
//!    ```
//!
//! 2. **Watch the counters.** `layer.stats()` is a lock-free snapshot: per
//!    rule, how many requests were `dropped`, `responded` to and `would_drop`,
//!    and how many were `allowed`. With the `metrics` feature the same counts go
//!    to the [`metrics`](https://docs.rs/metrics) facade, so any exporter serves
//!    them:
//!
//!    | metric | labels | counts |
//!    |---|---|---|
//!    | `tower_no_response_requests_total` | `rule`, `action` = `drop` \| `respond` \| `would_drop` | requests a rule stopped, answered, or matched in dry-run |
//!    | `tower_no_response_allowed_total` | | requests no enforced rule stopped |
//!    | `tower_no_response_connection_drops_total` | `rule` = `accept_deny` \| `banned` \| `connection_limit` \| `header_timeout` \| `body_timeout` | connections the connection side dropped for a reason that is not a rule's (these are logged, and not in `stats()`); a rule's own refusal at accept (`peer_not_allowed`, `crowdsec`) counts under `requests_total` with its rule |
//!    | `tower_no_response_bans_total` | `source` = `strikes` \| `app` \| `shared` | bans begun: by the ban policy's strikes, by the app's `ban`, or from another replica |
//!    | `tower_no_response_send_timeouts_total` | | connections closed because the client accepted no byte of a response for the send timeout |
//!    | `tower_no_response_rate_limit_store_up` (gauge) | `part` = `host:port` of a Redis Cluster primary, or `store` | 1 while the shared store answers, 0 while its circuit is open; set at each change |
//!
//!    In Prometheus, `sum by (rule) (rate(tower_no_response_requests_total{action="would_drop"}[5m]))`
//!    shows what a dry-run rule would drop. Install the recorder before the
//!    first request; counters register on first use, each with its help
//!    text. The demo serves them all for Prometheus with
//!    `--metrics ADDR` (feature `metrics`), through the facade's
//!    `metrics-exporter-prometheus`; a scrape passes
//!    `promtool check metrics`:
//!
//!    ```rust,no_run
//!    # #[cfg(feature = "metrics")]
//!    # #[tokio::main]
//!    # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!    use metrics_exporter_prometheus::PrometheusBuilder;
//!    use tower_no_response::NoResponseLayer;
//!
//!    // First, so that every counter registers with it.
//!    PrometheusBuilder::new()
//!        .with_http_listener(([127, 0, 0, 1], 9444))
//!        .install()?;
//!    let layer = NoResponseLayer::builder().server_name("example.com").build()?;
//!    // ... serve the app behind `layer`; Prometheus scrapes
//!    // http://127.0.0.1:9444/metrics.
//!    # drop(layer);
//!    # Ok(())
//!    # }
//!    # #[cfg(not(feature = "metrics"))]
//!    # fn main() {}
//!    ```
//!
//! 3. **Enforce it** by removing the dry-run, with a [live reload](#live-reload)
//!    and no restart. Keep watching `action="drop"` for the rule.
//!
//! ## Answering instead of dropping
//!
//! Any rule can answer with a 4xx status instead of dropping, for clients
//! that may be legitimate and need to know what went wrong:
//!
//! ```rust
//! use http::StatusCode;
//! use tower_no_response::{BuildError, DropReason, NoResponseLayer, RateLimit};
//! use tower_no_response::rules::Action;
//!
//! fn rules() -> Result<NoResponseLayer, BuildError> {
//!     NoResponseLayer::builder()
//!         .server_names(["example.com"])
//!         .rate_limit(RateLimit::per_second(10).burst(20))
//!         .rule_action(DropReason::RateLimited, Action::Respond(StatusCode::TOO_MANY_REQUESTS))
//!         .rule_action(DropReason::HostInvalid, Action::Respond(StatusCode::BAD_REQUEST))
//!         .build()
//! }
//! ```
//!
//! A built-in rule is named by its [`DropReason`]; a
//! custom rule or keyed limit by its name, as a string. A name no rule has
//! is refused with the rule most likely meant (`deny_ip` → `ip_deny`), and
//! a setting for a rule the configuration never applies (an action for
//! `RateLimited` without a `rate_limit`) is refused too.
//!
//! A `429` from the rate limit carries `Retry-After` with the limiter's own
//! wait, rounded up to whole seconds (nginx's `limit_req_status 429`). The body
//! is empty and the connection stays open. The event records `action=respond`
//! and the status.
//!
//! ## Path and custom rules
//!
//! `deny_path` takes patterns like `deny_user_agent`: compiled once into one
//! regex, case-insensitive unless a pattern starts with `(?-i)`, matching
//! anywhere. The path is judged as sent and with `%XX` escapes decoded, so
//! `/%2eenv` does not hide `/.env`; the query string is not judged. The rule is
//! named `path`.
//!
//! `custom_rule(name, predicate)` covers everything else, like nginx's `if` and
//! `map` on any variable. The predicate sees a `RequestHead` (method, URI,
//! version, headers, and the judged client IP) and returns `true` to drop. Its
//! name appears in events and counters, and works with `dry_run_rule` and
//! `rule_action` like any built-in name.
//!
//! ## An access log fail2ban can read
//!
//! With the `access-log` feature, `audit::AccessLogLayer` is a
//! `tracing-subscriber` layer that writes every drop and answer in nginx's
//! combined format, with status 444 and 0 bytes for drops:
//!
//! ```text
//! 192.0.2.55 - - [26/Apr/2026:10:22:01 +0000] "GET / HTTP/1.1" 444 0 "-" "-"
//! ```
//!
//! ```rust,ignore
//! tracing_subscriber::registry()
//!     .with(tower_no_response::audit::AccessLogLayer::new(std::io::stdout))
//!     .init();
//! ```
//!
//! Dry-run matches are not written: those requests were served. Existing
//! pipelines that parse nginx logs read these lines unchanged.
//!
//! The repository ships a fail2ban filter and jail in `contrib/fail2ban/`,
//! checked with the real `fail2ban-regex` against a log the layer wrote:
//!
//! ```sh
//! cp contrib/fail2ban/filter.d/tower-no-response.conf /etc/fail2ban/filter.d/
//! cp contrib/fail2ban/jail.d/tower-no-response.conf /etc/fail2ban/jail.d/  # set logpath
//! fail2ban-regex /var/log/myapp/access.log tower-no-response                  # try it first
//! ```
//!
//! The filter, `/etc/fail2ban/filter.d/tower-no-response.conf`:
//!
//! ```ini
//! [Definition]
//! failregex = ^<HOST> -[^"]*"[^"]*" 444 0 "[^"]*" "[^"]*"$
//! ignoreregex =
//! datepattern = ^[^\[]*\[({DATE})
//! ```
//!
//! fail2ban cuts the date out of a line before it applies `failregex`, so
//! the expression must not match the bracketed date: `-[^"]*"` skips what
//! is left of it. The host is the judged client, the real client behind
//! trusted proxies; behind a CDN or a load balancer, ban with an action
//! that acts at the edge (a firewall on the origin sees only the proxy), or
//! with the crate's own [`ban`](crate::ban) list.
//!
//! Only drops match: a `429` or another status answered is written with
//! its status, and a request served, a dry-run match, a kept-alive
//! connection closed when idle and a new one closed because no request
//! began on it (a browser's unused preconnection) write no line. A client
//! that stalls on a request head it began (`header_timeout`) or on its body
//! (`body_timeout`) does match. The demo prints the lines with
//! `cargo run --example nginx_444 --features access-log -- --access-log`;
//! [`AccessLogLayer`]'s docs show the file set-up for fail2ban.
//!
//! Set `maxretry` knowing that clients retry: curl and browsers send an
//! idempotent request again, once, when a reused keep-alive connection
//! closes without an answer, so a request dropped there can write two lines.
//!
//! ## Live reload
//!
//! `layer.reload(builder)` compiles a new rule set and swaps it in atomically
//! for every clone of the layer and every service it made, without a restart.
//! A request is judged once, when it arrives, so requests in flight finish under
//! the rules they started with. A bad configuration is refused with the usual
//! error and the old rules stay in force.
//!
//! The rules are immutable; what the layer learns at run time sits beside
//! them, and a reload keeps what still applies:
//!
//! | state | after a reload |
//! |---|---|
//! | counters | carried over by rule name; a removed rule leaves the stats, a new one starts at 0 |
//! | clients' rate budgets | kept when the rate limit is unchanged (rate, burst, IPv6 prefix, key cap, eviction interval) and, for a shared limit, the store and its settings are the same; otherwise every client starts with a full budget, since a budget earned under one rate means nothing under another |
//! | the shared store's health | kept with the budgets, reset with them |
//! | bans | kept: a configuration without a ban list keeps the current one; one with a ban list uses it |
//!
//! With the `serde` feature, a rule set can come from a TOML or JSON document
//! whose fields are the builder's settings, and `layer.reload_config(...)`
//! reloads from one:
//!
//! ```toml
//! server_names = ["example.com", "www.example.com"]
//! deny_user_agents = ["masscan", "zgrab"]
//! allow_user_agents = ["python-requests"]
//! drop_empty_user_agent = true
//! deny_paths = ['/\.env', '^/wp-login\.php']
//! ip_rules = [{ allow = "192.0.2.0/24" }, { deny = "all" }]
//! trusted_proxies = ["10.0.0.0/8"]
//! real_ip_header = "X-Forwarded-For"
//! dry_run_rules = ["path"]
//!
//! [rate_limit]
//! per_second = 10
//! burst = 20
//!
//! [actions]
//! rate_limit = 429
//! ```
//!
//! ```rust,ignore
//! let config = RuleConfig::from_toml(&std::fs::read_to_string("rules.toml")?)?;
//! layer.reload_config(config)?; // on error, nothing changed
//! ```
//!
//! A document is refused naming the field: `field \`rate_limit.burst\`:
//! invalid type: string "x", expected u32`, or `field \`ip_rules\`: deny_ip:
//! invalid address or CIDR "300.0.0.1": invalid IP address syntax`.
//!
//! # Close modes
//!
//! | mode | on the wire | curl | server side |
//! |---|---|---|---|
//! | `CloseMode::Fin` (default) | zero bytes, then FIN | `(52) Empty reply from server` | unread request bytes (up to 256 KiB) are drained after the FIN, so the kernel does not turn the close into an RST |
//! | `CloseMode::Reset` | zero bytes, then RST (`SO_LINGER` 0) | `(56) Connection reset by peer` | the socket is freed at once, with no TIME_WAIT |
//! | `CloseMode::Silent` | nothing at all: no FIN, no RST (HAProxy's `silent-drop`) | hangs until its own timeout: `(28)` with `--max-time` | with `CAP_NET_ADMIN` on Linux the socket enters `TCP_REPAIR` before it closes, so the kernel sends nothing; without it, the hop limit is set to 1 before an RST, which dies at the first router (a client on the same host or link still sees it). `connection::silent_close_available()` says which applies; log it at start-up |
//!
//! On a kept-alive or pipelined HTTP/1 connection, every response before the
//! dropped request is delivered whole; the dropped request and anything after it
//! get nothing.
//!
//! # Caveats
//!
//! - **HTTP/2 over `axum::serve`.** A dropped HTTP/2 request closes the whole
//!   connection, with every other stream on it. nginx resets only the stream;
//!   the crate's own serve loop (`NoResponseLayer::serve`) does too.
//! - **A CDN or proxy in front.** Behind Cloudflare or a load balancer, every
//!   peer is the proxy: configure it with `trusted_proxy` so rules judge the
//!   real client. To refuse anyone who reaches the origin around the edge,
//!   use `only_from_peers(ranges)` (or `trust_cloudflare_only()`), which
//!   judges the TCP peer; `allow_ip` and `deny_ip` judge the visitor, so
//!   `allow_ip(edge).deny_ip("all")` would drop every visitor. A dropped
//!   request makes the CDN answer the visitor with its own error page
//!   (Cloudflare shows 520 or 502), not a 444.
//! - **Too-broad rules** cut off real users, and they cannot tell why. Drop only
//!   what is clearly automated or hostile; give legitimate clients a real 400,
//!   403 or 429. Watch the 444 events after every change.

#[cfg(feature = "access-log")]
mod access_log;
pub(crate) mod export;
pub(crate) mod stats;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header};

#[cfg(feature = "access-log")]
pub use access_log::AccessLogLayer;
pub use stats::{RuleStats, Stats};

use crate::DropReason;
use crate::parse::host::{HostField, host_field};
use crate::rules::CloseMode;

/// The `tracing` target of the 444 event.
pub const DROP_EVENT_TARGET: &str = "tower_no_response::drop";

/// How a matched request was handled: what the event's `status`, `action`
/// and `close` fields, the counters, the metrics and the access log all
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    /// Dropped with status 444, the connection ended as `Close` says.
    Drop(Close),
    /// Answered with this status instead.
    Respond(StatusCode),
    /// Matched by a rule in dry-run, and let through.
    WouldDrop,
}

impl Handling {
    pub(crate) const fn action(self) -> &'static str {
        match self {
            Self::Drop(_) => "drop",
            Self::Respond(_) => "respond",
            Self::WouldDrop => "would_drop",
        }
    }

    pub(crate) fn status(self) -> u16 {
        match self {
            Self::Drop(_) | Self::WouldDrop => 444,
            Self::Respond(status) => status.as_u16(),
        }
    }

    const fn close(self) -> &'static str {
        match self {
            Self::Drop(close) => close.as_str(),
            Self::Respond(_) | Self::WouldDrop => "none",
        }
    }
}

/// How a dropped request's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// The connection closed with the layer's close mode.
    Mode(CloseMode),
    /// Only the request's HTTP/2 stream was reset.
    Stream,
    /// No connection was found to abort; the response's body failed.
    BodyError,
}

impl Close {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Mode(mode) => mode.as_str(),
            Self::Stream => "stream",
            Self::BodyError => "body_error",
        }
    }
}

/// One request a rule stopped, or in dry-run would have stopped, or a
/// connection dropped before a request was read: the one record every audit
/// output is made from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropEvent<'a> {
    pub(crate) rule: DropReason,
    pub(crate) handling: Handling,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) peer_addr: Option<SocketAddr>,
    /// The request head; `None` when the connection was dropped before one
    /// was read (at accept, or on a header timeout).
    pub(crate) request: Option<RequestView<'a>>,
    /// The ClientHello of a connection the TLS gate judged.
    pub(crate) hello: Option<HelloView<'a>>,
}

/// What the audit outputs name of the TLS ClientHello a connection began
/// with, made once per connection by the TLS side and carried in its
/// [`ConnectionInfo`](crate::connection::ConnectionInfo), so that a request
/// dropped inside TLS names it.
#[derive(Debug)]
pub(crate) struct HelloNames {
    pub(crate) server_name: Option<Box<[u8]>>,
    pub(crate) ja4: Box<str>,
}

impl HelloNames {
    pub(crate) fn view(&self) -> HelloView<'_> {
        HelloView {
            server_name: self.server_name.as_deref(),
            ja4: Some(&self.ja4),
        }
    }
}

/// What the audit outputs write of a ClientHello.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HelloView<'a> {
    pub(crate) server_name: Option<&'a [u8]>,
    pub(crate) ja4: Option<&'a str>,
}

/// The parts of a request head the audit outputs write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) version: Version,
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            version: request.version(),
            headers: request.headers(),
        }
    }

    /// The host judged: the Host header or the URI authority.
    fn host(&self) -> Escaped<'a> {
        match host_field(self.version, self.uri, self.headers) {
            HostField::Value(v) => Escaped(Some(v)),
            HostField::Ambiguous | HostField::Mismatch | HostField::Missing => {
                Escaped(self.headers.get(header::HOST).map(HeaderValue::as_bytes))
            }
        }
    }

    fn header(&self, name: header::HeaderName) -> Escaped<'a> {
        Escaped(self.headers.get(name).map(HeaderValue::as_bytes))
    }
}

/// A connection closed because its client accepted no byte of a response
/// for the send timeout: logged and counted under its own name, and
/// neither a 444 nor a strike, since a client that lost its signal is
/// innocent.
pub(crate) fn send_timed_out(peer: SocketAddr) {
    export::send_timeout();
    tracing::info!(
        target: "tower_no_response",
        peer_addr = %peer,
        reason = "send_timeout",
        "connection closed: the client accepted no byte of a response for the send timeout"
    );
}

impl DropEvent<'_> {
    /// Emits the 444 event, and hands the access log its line.
    pub(crate) fn emit(&self) {
        #[cfg(feature = "access-log")]
        let _line = access_log::render(self);
        let handling = self.handling;
        // A connection dropped before a request was read has `-` for every
        // request field.
        let request = self.request.as_ref();
        let detail = match self.rule {
            DropReason::Custom(name) => crate::rules::custom::take_detail(name),
            _ => None,
        };
        // One message per outcome; the fields are the same for each.
        macro_rules! event {
            ($message:literal) => {
                tracing::info!(
                    target: "tower_no_response::drop",
                    status = handling.status(),
                    rule = %self.rule,
                    action = %handling.action(),
                    client_ip = %OrDash(self.client_ip),
                    peer_addr = %OrDash(self.peer_addr),
                    method = %OrDash(request.map(|r| r.method)),
                    host = %OrDash(request.map(RequestView::host)),
                    uri = %OrDash(request.map(|r| EscapedDisplay(r.uri))),
                    version = %OrDash(request.map(|r| VersionName(r.version))),
                    referer = %OrDash(request.map(|r| r.header(header::REFERER))),
                    user_agent = %OrDash(request.map(|r| r.header(header::USER_AGENT))),
                    close = %handling.close(),
                    detail = %OrDash(detail.as_deref()),
                    sni = %OrDash(self.hello.and_then(|h| h.server_name).map(|n| Escaped(Some(n)))),
                    ja4 = %OrDash(self.hello.and_then(|h| h.ja4)),
                    $message
                )
            };
        }
        if let (
            Handling::Drop(_),
            DropReason::AcceptDenied
            | DropReason::HeaderTimeout
            | DropReason::BodyTimeout
            | DropReason::Banned
            | DropReason::ConnectionLimit
            | DropReason::TlsSniMissing
            | DropReason::TlsSniIpLiteral
            | DropReason::TlsSniUnknown
            | DropReason::TlsFingerprint
            | DropReason::TlsClientHelloInvalid,
        ) = (handling, self.rule)
        {
            // The rules' own outcomes are counted per rule; these reasons
            // have no rule slot, so they are published here.
            export::connection_drop(self.rule.as_str());
        }
        match handling {
            Handling::Drop(_) => event!("dropped request"),
            Handling::Respond(_) => event!("answered request"),
            Handling::WouldDrop => event!("request would be dropped (dry-run)"),
        }
    }
}

/// `HTTP/1.1`, as `Version`'s `Debug` writes it.
struct VersionName(Version);

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

struct OrDash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A header value escaped like nginx's access log; `-` when absent.
pub(crate) struct Escaped<'a>(pub(crate) Option<&'a [u8]>);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(bytes) = self.0 else {
            return f.write_str("-");
        };
        for chunk in bytes.split_inclusive(|b| !is_plain(*b)) {
            let (last, plain) = chunk
                .split_last()
                .expect("split_inclusive yields non-empty chunks");
            if is_plain(*last) {
                f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
            } else {
                f.write_str(std::str::from_utf8(plain).map_err(|_| fmt::Error)?)?;
                write!(f, "\\x{last:02X}")?;
            }
        }
        Ok(())
    }
}

/// A displayed value escaped as [`Escaped`] escapes bytes, written through
/// without first being collected.
pub(crate) struct EscapedDisplay<T>(pub(crate) T);

impl<T: fmt::Display> fmt::Display for EscapedDisplay<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        write!(EscapingWriter(f), "{}", self.0)
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        fmt::Display::fmt(&Escaped(Some(s.as_bytes())), self.0)
    }
}

fn is_plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_nginx() {
        assert_eq!(Escaped(None).to_string(), "-");
        assert_eq!(Escaped(Some(b"curl/8.5")).to_string(), "curl/8.5");
        assert_eq!(
            Escaped(Some(b"a\"b\\c\xff\td")).to_string(),
            "a\\x22b\\x5Cc\\xFF\\x09d"
        );
        assert_eq!(Escaped(Some(b"")).to_string(), "");
        let uri: http::Uri = "/.env%22x".parse().unwrap();
        assert_eq!(EscapedDisplay(&uri).to_string(), "/.env%22x");
        assert_eq!(EscapedDisplay("/a\"b").to_string(), "/a\\x22b");
    }
}
