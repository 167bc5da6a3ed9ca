//! A typical nginx `return 444` configuration, rule for rule, as an axum app.
//!
//! ```text
//! cargo run --example nginx_444 -- [--listen ADDR] [--close fin|rst|silent] [--trusted-proxy CIDR]...
//!                                   [--real-ip-header NAME] [--no-recursive]
//!                                   [--dry-run] [--rate-action drop|429] [--access-log]
//!                                   [--server axum|own] [--header-timeout SECS] [--keepalive-timeout SECS]
//!                                   [--body-timeout SECS] [--no-layer] [--quiet]
//!                                   [--kernel-filter] [--defer-accept SECS]
//!                                   [--redis URL | --redis-cluster URL,URL,...] [--redis-fail open|closed]
//!                                   [--redis-ca FILE] [--redis-cert FILE --redis-key FILE]
//!                                   [--redis-precheck on|off]
//!                                   [--rate NUMr/s|NUMr/m] [--burst N] [--login-rate NUMr/s|NUMr/m] [--max-clients N]
//!                                   [--ban-after N] [--ban-for SECS] [--deny-path REGEX]...
//!                                   [--deny-ip CIDR]... [--only-from CIDR]... [--metrics ADDR]
//!                                   [--proxy-protocol CIDR]...
//!                                   [--crowdsec URL --crowdsec-key KEY]
//!                                   [--tls-cert FILE --tls-key FILE | --tls-self-signed DIR]
//!                                   [--deny-ja4 FP]... [--sni-alert] [--no-tls-gate]
//! ```
//!
//! `--rate` and `--burst` set the rate limit in nginx's `limit_req` terms
//! (`10r/s` and `20` by default), `--max-clients` caps the clients it tracks.
//! That limit counts every path, as nginx's usual `limit_req` does, so a
//! page's images, scripts and stylesheets count too: size `--burst` for the
//! largest page. `--login-rate` (`5r/m` by default, after a burst of 5) is
//! the safe pattern beside it: a strict limit of its own, per client, on
//! `/login` alone, the one route worth guessing at (rule `login`, a keyed
//! limit). Before
//! banning on drops (`--ban-after`), give the every-path limit
//! `--rate-action 429`: an answer is not a strike, so a visitor who loads a
//! heavy page is never banned for it.
//! `--ban-after N` bans a client for `--ban-for SECS` (600 by default) after
//! N drops within a minute. The client struck and banned is the real one
//! behind the trusted proxies: a banned client is dropped on every request
//! through the proxy, and refused at accept when it connects directly. `--deny-path` (repeatable) drops requests for matching paths;
//! `--deny-ip` (repeatable) adds addresses or CIDR blocks to the deny list.
//! `--only-from` (repeatable) serves only connections whose TCP peer is in
//! those blocks or is a trusted proxy, as an origin behind a CDN does; any
//! other peer is refused at accept with rule `peer_not_allowed`.
//! `--proxy-protocol CIDR` (repeatable; feature `proxy-protocol`) reads the
//! PROXY protocol header (versions 1 and 2) that the L4 load balancers in
//! those blocks write, as nginx's `listen ... proxy_protocol`: the client it
//! names is judged, struck and logged, on either server, with TLS too.
//! `GET /login?password=...` (the password is `letmein`) counts each failed
//! login as a strike, so `--ban-after N` also bans after N failed logins.
//!
//! `--no-layer` serves the same routes without the layer (and, with the axum
//! server, without the crate's listener), for side-by-side load runs;
//! `--quiet` prints no line per drop, like nginx's `access_log off`. Each
//! drop's line goes to stdout; everything else goes to stderr, filtered by
//! `RUST_LOG` as in any tracing-based program (`warn` by default, e.g.
//! `RUST_LOG=tower_no_response=debug` to see idle closes).
//!
//! `--kernel-filter` (Linux) refuses denied and banned clients in the kernel:
//! their SYNs go unanswered and their connection attempts time out, with
//! nothing logged; see `server::kernel_filter`. `--defer-accept SECS`
//! (Linux) has the kernel hand over a connection only once its request has
//! arrived, so that a dropped one costs no wake-up.
//!
//! `--server own` serves with the crate's own loop (HTTP/1.1 and h2c): a
//! connection's first request is judged as soon as it is accepted, before
//! hyper sees it; and a dropped HTTP/2 request resets only its own stream.
//! `--header-timeout SECS` drops clients that send their headers too slowly,
//! with either server. `--keepalive-timeout SECS` closes a kept-alive
//! connection idle this long between requests (75 by default), quietly: it
//! is not a drop. `--send-timeout SECS` closes a connection whose client
//! has read nothing of a response this long (60 by default), also without
//! a drop. `--body-timeout SECS` drops a request whose body stalls
//! this long while the app reads it, as `POST /upload` does: it reads the
//! whole body and answers with its length.
//!
//! `--redis URL` keeps the rate limit's budget in Redis (feature `redis`):
//! run two instances on two ports with the same URL and a client gets one
//! budget across both. `--redis-fail` says what happens while Redis is down
//! (`open`, the default, serves; `closed` drops as `rate_limit_unavailable`).
//! With `--ban-after`, bans are shared through the same Redis.
//! `--redis-cluster` takes a Redis Cluster's seed nodes instead. A
//! `rediss://` URL (feature `redis-tls`) is verified against the system
//! roots, or against `--redis-ca FILE`; `--redis-cert` and `--redis-key`
//! present a client certificate. `--redis-precheck off` asks Redis about
//! every request, even from a client already over the limit here (`on`, the
//! default, drops those without a round trip).
//!
//! `--access-log` prints each drop as an nginx combined-format line instead
//! of the event; it needs the `access-log` feature
//! (`cargo run --example nginx_444 --features access-log -- --access-log`).
//!
//! `--metrics ADDR` serves the counters for Prometheus at
//! `http://ADDR/metrics` (feature `metrics`:
//! `cargo run --example nginx_444 --features metrics -- --metrics 127.0.0.1:9444`):
//! `tower_no_response_requests_total{rule,action}`,
//! `tower_no_response_allowed_total`,
//! `tower_no_response_connection_drops_total{rule}`,
//! `tower_no_response_bans_total{source}` and
//! `tower_no_response_rate_limit_store_up{part}`.
//!
//! `--crowdsec URL --crowdsec-key KEY` applies a CrowdSec Local API's
//! decisions (feature `crowdsec`): a `ban` drops the client with rule
//! `crowdsec`, other types answer 403. The key is what
//! `cscli bouncers add NAME -o raw` prints.
//!
//! `--tls-cert FILE --tls-key FILE` (PEM) serves HTTPS with the crate's own
//! loop (feature `rustls`), offering `h2` and `http/1.1`; `--tls-self-signed
//! DIR` makes a self-signed pair for the served names first, and writes it
//! to `DIR/cert.pem` and `DIR/key.pem`. Each ClientHello is judged before a
//! byte is written: no server name, an address or an unknown name gets
//! nothing (rule `tls_sni_missing`, `tls_sni_ip_literal`,
//! `tls_sni_unknown`), as does a client whose JA4 fingerprint matches a
//! `--deny-ja4 FP` pattern (repeatable; `*` for any of its three parts).
//! `--sni-alert` answers the server-name refusals with nginx's
//! `unrecognized_name` alert instead; `--no-tls-gate` hands every
//! ClientHello to rustls unjudged, as a baseline for the load bench.
//!
//! ```text
//! cargo run --example nginx_444 --features rustls -- --tls-self-signed /tmp/tnr
//! curl --cacert /tmp/tnr/cert.pem --resolve example.com:8444:127.0.0.1 https://example.com:8444/  # ok
//! curl -k https://127.0.0.1:8444/                                 # (35): no ServerHello
//! ```
//!
//! Serves `example.com` and `www.example.com`; every path answers `200 ok`.
//! Try it:
//!
//! ```text
//! curl -H 'Host: example.com' -A curl http://127.0.0.1:8444/      # 200 ok
//! curl http://127.0.0.1:8444/                                     # (52) Empty reply from server
//! curl -H 'Host: example.com' -A masscan http://127.0.0.1:8444/   # (52)
//! ```
//!
//! Every drop prints one line with `status=444` and `rule=<name>` on stdout.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::body::Body;
use http::StatusCode;
use tower_no_response::audit::DROP_EVENT_TARGET;
use tower_no_response::connection::CloseMode;
use tower_no_response::rules::{Action, LimitKey, RealIpHeader};
use tower_no_response::{
    DropReason, NoResponseBody, NoResponseLayer, NoResponseLayerBuilder, RateLimit,
};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

struct Args {
    listen: SocketAddr,
    close: CloseMode,
    trusted_proxies: Vec<String>,
    real_ip_header: RealIpHeader,
    recursive: bool,
    dry_run: bool,
    rate_action: Action,
    access_log: bool,
    own_server: bool,
    header_timeout: Option<std::time::Duration>,
    keepalive_timeout: Option<std::time::Duration>,
    send_timeout: Option<std::time::Duration>,
    body_timeout: Option<std::time::Duration>,
    no_layer: bool,
    quiet: bool,
    kernel_filter: bool,
    defer_accept: Option<std::time::Duration>,
    redis: Option<String>,
    redis_cluster: Option<Vec<String>>,
    redis_ca: Option<String>,
    redis_cert: Option<String>,
    redis_key: Option<String>,
    redis_fail_closed: bool,
    redis_precheck: bool,
    rate: RateLimit,
    burst: u32,
    login_rate: RateLimit,
    max_clients: Option<usize>,
    ban_after: Option<u32>,
    ban_for: std::time::Duration,
    deny_paths: Vec<String>,
    deny_ips: Vec<String>,
    only_from: Vec<String>,
    proxy_protocol: Vec<String>,
    metrics: Option<SocketAddr>,
    crowdsec: Option<String>,
    crowdsec_key: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_self_signed: Option<String>,
    deny_ja4: Vec<String>,
    sni_alert: bool,
    no_tls_gate: bool,
}

const USAGE: &str = "usage: nginx_444 [--listen ADDR] [--close fin|rst|silent] [--trusted-proxy CIDR]... \
[--real-ip-header X-Forwarded-For|Forwarded|X-Real-IP|CF-Connecting-IP|NAME] [--no-recursive] \
[--dry-run] [--rate-action drop|429] [--access-log] [--server axum|own] [--header-timeout SECS] [--keepalive-timeout SECS] [--send-timeout SECS] [--body-timeout SECS] [--no-layer] [--quiet] [--kernel-filter] [--defer-accept SECS] \
[--redis URL | --redis-cluster URL,URL,...] [--redis-fail open|closed] \
[--redis-ca FILE] [--redis-cert FILE --redis-key FILE] [--redis-precheck on|off] [--rate NUMr/s|NUMr/m] [--burst N] [--login-rate NUMr/s|NUMr/m] [--max-clients N] \
[--ban-after N] [--ban-for SECS] [--deny-path REGEX]... [--deny-ip CIDR]... [--only-from CIDR]... [--metrics ADDR] \
[--proxy-protocol CIDR]... \
[--crowdsec URL --crowdsec-key KEY] [--tls-cert FILE --tls-key FILE | --tls-self-signed DIR] \
[--deny-ja4 FP]... [--sni-alert] [--no-tls-gate]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: "127.0.0.1:8444".parse().expect("literal"),
        close: CloseMode::Fin,
        trusted_proxies: Vec::new(),
        real_ip_header: RealIpHeader::XForwardedFor,
        recursive: true,
        dry_run: false,
        rate_action: Action::Drop,
        access_log: false,
        own_server: false,
        header_timeout: None,
        keepalive_timeout: None,
        send_timeout: None,
        body_timeout: None,
        no_layer: false,
        quiet: false,
        kernel_filter: false,
        defer_accept: None,
        redis: None,
        redis_cluster: None,
        redis_ca: None,
        redis_cert: None,
        redis_key: None,
        redis_fail_closed: false,
        redis_precheck: true,
        rate: RateLimit::per_second(10),
        burst: 20,
        login_rate: RateLimit::per_minute(5),
        max_clients: None,
        ban_after: None,
        ban_for: std::time::Duration::from_secs(600),
        deny_paths: Vec::new(),
        deny_ips: Vec::new(),
        only_from: Vec::new(),
        proxy_protocol: Vec::new(),
        metrics: None,
        crowdsec: None,
        crowdsec_key: None,
        tls_cert: None,
        tls_key: None,
        tls_self_signed: None,
        deny_ja4: Vec::new(),
        sni_alert: false,
        no_tls_gate: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                args.listen = v.parse().map_err(|e| format!("--listen {v:?}: {e}"))?;
            }
            "--close" => {
                args.close = match value()?.as_str() {
                    "fin" => CloseMode::Fin,
                    "rst" | "reset" => CloseMode::Reset,
                    "silent" => CloseMode::Silent,
                    other => {
                        return Err(format!("--close {other:?}: expected fin, rst or silent"));
                    }
                }
            }
            "--trusted-proxy" => args.trusted_proxies.push(value()?),
            "--real-ip-header" => {
                args.real_ip_header = value()?.parse().map_err(|e| format!("{e}"))?;
            }
            "--no-recursive" => args.recursive = false,
            "--dry-run" => args.dry_run = true,
            "--no-layer" => args.no_layer = true,
            "--quiet" => args.quiet = true,
            "--kernel-filter" => args.kernel_filter = true,
            "--defer-accept" => {
                args.defer_accept = Some(std::time::Duration::from_secs(parse_number(
                    "--defer-accept",
                    &value()?,
                )?));
            }
            "--server" => {
                args.own_server = match value()?.as_str() {
                    "axum" => false,
                    "own" => true,
                    other => return Err(format!("--server {other:?}: expected axum or own")),
                }
            }
            "--header-timeout" => {
                args.header_timeout = Some(parse_secs("--header-timeout", &value()?)?);
            }
            "--keepalive-timeout" => {
                args.keepalive_timeout = Some(parse_secs("--keepalive-timeout", &value()?)?);
            }
            "--send-timeout" => args.send_timeout = Some(parse_secs("--send-timeout", &value()?)?),
            "--body-timeout" => args.body_timeout = Some(parse_secs("--body-timeout", &value()?)?),
            "--access-log" => args.access_log = true,
            "--rate" => args.rate = parse_rate("--rate", &value()?)?,
            "--login-rate" => args.login_rate = parse_rate("--login-rate", &value()?)?,
            "--burst" => args.burst = parse_number("--burst", &value()?)?,
            "--max-clients" => args.max_clients = Some(parse_number("--max-clients", &value()?)?),
            "--ban-after" => args.ban_after = Some(parse_number("--ban-after", &value()?)?),
            "--ban-for" => {
                args.ban_for =
                    std::time::Duration::from_secs(parse_number("--ban-for", &value()?)?);
            }
            "--deny-path" => args.deny_paths.push(value()?),
            "--deny-ip" => args.deny_ips.push(value()?),
            "--only-from" => args.only_from.push(value()?),
            "--proxy-protocol" => args.proxy_protocol.push(value()?),
            "--crowdsec" => args.crowdsec = Some(value()?),
            "--crowdsec-key" => args.crowdsec_key = Some(value()?),
            "--tls-cert" => args.tls_cert = Some(value()?),
            "--tls-key" => args.tls_key = Some(value()?),
            "--tls-self-signed" => args.tls_self_signed = Some(value()?),
            "--deny-ja4" => args.deny_ja4.push(value()?),
            "--sni-alert" => args.sni_alert = true,
            "--no-tls-gate" => args.no_tls_gate = true,
            "--metrics" => {
                let addr = value()?;
                args.metrics = Some(
                    addr.parse()
                        .map_err(|e| format!("--metrics {addr:?}: {e}"))?,
                );
            }
            "--redis" => args.redis = Some(value()?),
            "--redis-cluster" => {
                args.redis_cluster = Some(value()?.split(',').map(str::to_owned).collect());
            }
            "--redis-ca" => args.redis_ca = Some(value()?),
            "--redis-precheck" => {
                args.redis_precheck = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--redis-precheck {other:?}: expected on or off")),
                }
            }
            "--redis-cert" => args.redis_cert = Some(value()?),
            "--redis-key" => args.redis_key = Some(value()?),
            "--redis-fail" => {
                args.redis_fail_closed = match value()?.as_str() {
                    "open" => false,
                    "closed" => true,
                    other => {
                        return Err(format!("--redis-fail {other:?}: expected open or closed"));
                    }
                }
            }
            "--rate-action" => {
                args.rate_action = match value()?.as_str() {
                    "drop" | "444" => Action::Drop,
                    "429" => Action::Respond(StatusCode::TOO_MANY_REQUESTS),
                    other => return Err(format!("--rate-action {other:?}: expected drop or 429")),
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other:?}; try --help")),
        }
    }
    let redis = args.redis.is_some() || args.redis_cluster.is_some();
    if args.redis.is_some() && args.redis_cluster.is_some() {
        return Err("--redis and --redis-cluster: give one".into());
    }
    for (flag, given) in [
        ("--redis-fail", args.redis_fail_closed),
        ("--redis-ca", args.redis_ca.is_some()),
        ("--redis-cert", args.redis_cert.is_some()),
        ("--redis-key", args.redis_key.is_some()),
    ] {
        if given && !redis {
            return Err(format!("{flag} needs --redis or --redis-cluster"));
        }
    }
    if args.redis_cert.is_some() != args.redis_key.is_some() {
        return Err("--redis-cert and --redis-key go together".into());
    }
    let tls = args.tls_cert.is_some() || args.tls_self_signed.is_some();
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if args.tls_cert.is_some() && args.tls_self_signed.is_some() {
        return Err("--tls-cert and --tls-self-signed: give one".into());
    }
    if (!args.deny_ja4.is_empty() || args.sni_alert || args.no_tls_gate) && !tls {
        return Err(
            "--deny-ja4, --sni-alert and --no-tls-gate need --tls-cert or --tls-self-signed".into(),
        );
    }
    if tls {
        // TLS is the crate's own loop's.
        args.own_server = true;
    }
    // Loopback is trusted as a proxy by default, for trying the real-IP
    // rules from this machine; over TLS that would exempt every local
    // client from the ClientHello rules, as an edge is.
    if args.trusted_proxies.is_empty() && !tls {
        args.trusted_proxies = vec!["127.0.0.0/8".into(), "::1/128".into()];
    }
    Ok(args)
}

/// `GET /login?password=...`: the password is `letmein`. Each failure is a
/// strike on the ban list, as fail2ban counts failed logins: with
/// `--ban-after N`, N failures within a minute ban the client.
async fn login(
    axum::extract::State(bans): axum::extract::State<Option<tower_no_response::ban::BanList>>,
    tower_no_response::ClientIp(ip): tower_no_response::ClientIp,
    axum::extract::Query(params): axum::extract::Query<Vec<(String, String)>>,
) -> (StatusCode, &'static str) {
    if params
        .iter()
        .any(|(k, v)| k == "password" && v == "letmein")
    {
        return (StatusCode::OK, "welcome");
    }
    if let Some(bans) = bans {
        bans.strike(ip);
    }
    (StatusCode::UNAUTHORIZED, "denied")
}

/// nginx's `limit_req` rate: `10r/s` or `30r/m`.
fn parse_rate(flag: &str, value: &str) -> Result<RateLimit, String> {
    let bad = || format!("{flag} {value:?}: expected NUMr/s or NUMr/m, as nginx writes it");
    let (number, per) = value.split_once("r/").ok_or_else(bad)?;
    let n: u32 = number.parse().map_err(|_| bad())?;
    match per {
        "s" => Ok(RateLimit::per_second(n)),
        "m" => Ok(RateLimit::per_minute(n)),
        _ => Err(bad()),
    }
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} {value:?}: expected a whole number"))
}

/// A duration in seconds, fractions allowed, above zero.
fn parse_secs(flag: &str, value: &str) -> Result<std::time::Duration, String> {
    value
        .parse()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag} {value:?}: expected seconds above 0"))
}

/// The rules of a typical nginx `return 444` setup, in nginx's order.
fn nginx_rules(args: &Args) -> Result<NoResponseLayerBuilder, String> {
    let rules = NoResponseLayer::builder()
        // server { listen 80 default_server; server_name _; return 444; }
        // server { server_name example.com www.example.com; ... }
        .server_names(["example.com", "www.example.com"])
        // deny 198.51.100.0/24;  if ($remote_addr = "203.0.113.7") { return 444; }
        .deny_ip("198.51.100.0/24")
        .deny_ip("203.0.113.7")
        // set_real_ip_from ...; real_ip_header X-Forwarded-For; real_ip_recursive on;
        .trusted_proxies(args.trusted_proxies.iter().cloned())
        .real_ip_header(args.real_ip_header.clone())
        .real_ip_recursive(args.recursive)
        // allow <edge>; deny all; judged on the TCP peer, before the real IP
        .only_from_peers(args.only_from.iter().cloned())
        // map $http_user_agent $bad_agent { ~*masscan 1; ~*zgrab 1; ~*python-requests 0; "" 1; }
        .deny_user_agents(["masscan", "zgrab"])
        .allow_user_agent("python-requests")
        .drop_empty_user_agent(true)
        // limit_req_zone $binary_remote_addr zone=req_limit:10m rate=10r/s;
        // limit_req zone=req_limit burst=20 nodelay; limit_req_status 444;
        .rate_limit(match args.max_clients {
            Some(n) => args.rate.burst(args.burst).max_keys(n),
            None => args.rate.burst(args.burst),
        })
        // The safe pattern beside it: the one route that is dear to serve,
        // and worth guessing at, gets a strict limit of its own, per client.
        // location = /login { limit_req zone=login_limit; }
        .rate_limit_by("login", args.login_rate.burst(5), |head| {
            (head.uri.path() == "/login").then_some(LimitKey::ip(head.client_ip?))
        })
        // location ~ ^/wp-login\.php { return 444; }
        .deny_paths(args.deny_paths.iter().cloned())
        // limit_req_status 429; (or 444, the default)
        .rule_action(DropReason::RateLimited, args.rate_action)
        .dry_run(args.dry_run)
        .close_mode(args.close);
    // deny ...; for each --deny-ip
    let rules = rules.deny_ips(args.deny_ips.iter().cloned());
    let rules = match args.header_timeout {
        // client_header_timeout
        Some(timeout) => rules.header_timeout(timeout),
        None => rules,
    };
    let rules = match args.keepalive_timeout {
        // keepalive_timeout
        Some(timeout) => rules.keepalive_timeout(timeout),
        None => rules,
    };
    let rules = match args.send_timeout {
        // send_timeout
        Some(timeout) => rules.send_timeout(timeout),
        None => rules,
    };
    let rules = match args.body_timeout {
        // client_body_timeout
        Some(timeout) => rules.body_timeout(timeout),
        None => rules,
    };
    let rules = match args.ban_after {
        Some(strikes) => rules.ban_list(tower_no_response::ban::BanList::new(
            tower_no_response::ban::BanPolicy::new(
                strikes,
                std::time::Duration::from_secs(60),
                args.ban_for,
            ),
        )),
        None => rules,
    };
    let rules = crowdsec(rules, args)?;
    let rules = proxy_protocol(rules, args)?;
    if args.redis.is_none() && args.redis_cluster.is_none() {
        return Ok(rules);
    }
    shared_budget(rules, args)
}

/// The decisions of a CrowdSec Local API, with `--crowdsec`.
#[cfg(feature = "crowdsec")]
fn crowdsec(rules: NoResponseLayerBuilder, args: &Args) -> Result<NoResponseLayerBuilder, String> {
    let Some(url) = &args.crowdsec else {
        return Ok(rules);
    };
    let key = args
        .crowdsec_key
        .clone()
        .ok_or("--crowdsec needs --crowdsec-key KEY (`cscli bouncers add NAME -o raw`)")?;
    let bouncer = tower_no_response::crowdsec::Bouncer::builder(url.clone(), key)
        .start()
        .map_err(|e| e.to_string())?;
    Ok(rules.crowdsec(&bouncer))
}

#[cfg(not(feature = "crowdsec"))]
fn crowdsec(rules: NoResponseLayerBuilder, args: &Args) -> Result<NoResponseLayerBuilder, String> {
    match &args.crowdsec {
        None => Ok(rules),
        Some(_) => Err("--crowdsec needs the crowdsec feature: \
             cargo run --example nginx_444 --features crowdsec -- --crowdsec URL --crowdsec-key KEY"
            .into()),
    }
}

/// The balancers whose PROXY protocol header names the client, with
/// `--proxy-protocol`; nginx's `listen 80 proxy_protocol; set_real_ip_from
/// LB; real_ip_header proxy_protocol;`.
#[cfg(feature = "proxy-protocol")]
fn proxy_protocol(
    rules: NoResponseLayerBuilder,
    args: &Args,
) -> Result<NoResponseLayerBuilder, String> {
    Ok(rules.proxy_protocol_from_peers(args.proxy_protocol.iter().cloned()))
}

#[cfg(not(feature = "proxy-protocol"))]
fn proxy_protocol(
    rules: NoResponseLayerBuilder,
    args: &Args,
) -> Result<NoResponseLayerBuilder, String> {
    if args.proxy_protocol.is_empty() {
        return Ok(rules);
    }
    Err("--proxy-protocol needs the proxy-protocol feature: \
         cargo run --example nginx_444 --features proxy-protocol -- --proxy-protocol CIDR"
        .into())
}

/// The same rate limit, with its budget in Redis for every instance that
/// points at the same server or cluster.
#[cfg(feature = "redis")]
fn shared_budget(
    rules: NoResponseLayerBuilder,
    args: &Args,
) -> Result<NoResponseLayerBuilder, String> {
    use tower_no_response::limit::{FailurePolicy, SharedRateLimit};
    let policy = if args.redis_fail_closed {
        FailurePolicy::Closed
    } else {
        FailurePolicy::Open
    };
    Ok(rules.shared_rate_limit(
        SharedRateLimit::new(redis_store(args)?)
            .on_failure(policy)
            .local_precheck(args.redis_precheck),
    ))
}

/// The store `--redis` or `--redis-cluster` names, with the TLS files.
#[cfg(feature = "redis")]
fn redis_store(args: &Args) -> Result<tower_no_response::redis::RedisStore, String> {
    let builder = tower_no_response::redis::RedisStore::builder();
    let builder = match (&args.redis, &args.redis_cluster) {
        (_, Some(seeds)) => builder.cluster(seeds.iter().cloned()),
        (Some(url), None) => builder.url(url.clone()),
        (None, None) => return Err("no Redis given".into()),
    };
    #[cfg(feature = "redis-tls")]
    let builder = {
        let mut builder = builder;
        if let Some(ca) = &args.redis_ca {
            builder = builder.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&args.redis_cert, &args.redis_key) {
            builder = builder.client_cert_files(cert, key);
        }
        builder
    };
    #[cfg(not(feature = "redis-tls"))]
    if args.redis_ca.is_some() || args.redis_cert.is_some() {
        return Err("--redis-ca and --redis-cert need the redis-tls feature: \
                    cargo run --example nginx_444 --features redis-tls -- ..."
            .into());
    }
    builder.build().map_err(|e| e.to_string())
}

/// Bans made here reach every instance sharing the store, and theirs reach
/// this one.
#[cfg(feature = "redis")]
fn share_bans(args: &Args, bans: &tower_no_response::ban::BanList) -> Result<(), String> {
    if args.redis.is_none() && args.redis_cluster.is_none() {
        return Ok(());
    }
    redis_store(args)?
        .share_bans(bans)
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "redis"))]
fn shared_budget(_: NoResponseLayerBuilder, _: &Args) -> Result<NoResponseLayerBuilder, String> {
    Err("--redis needs the redis feature: \
         cargo run --example nginx_444 --features redis -- --redis redis://127.0.0.1:6379/"
        .into())
}

/// Installs the Prometheus exporter as the `metrics` recorder, serving
/// `/metrics` on `addr`; before the layer is built, so that every counter
/// is registered with it.
#[cfg(feature = "metrics")]
fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("--metrics {addr}: {e}"))
}

#[cfg(not(feature = "metrics"))]
fn serve_metrics(_: SocketAddr) -> Result<(), String> {
    Err("--metrics needs the metrics feature: \
         cargo run --example nginx_444 --features metrics -- --metrics 127.0.0.1:9444"
        .into())
}

/// The audit trail on stdout, one line per drop (the 444 event, or with
/// `--access-log` the combined-format line); everything else on stderr, as
/// `RUST_LOG` says (`warn` when it is unset).
fn init_logging(access_log: bool, quiet: bool) -> Result<(), String> {
    let diagnostics = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy()
        // The audit trail has stdout to itself.
        .add_directive(
            format!("{DROP_EVENT_TARGET}=off")
                .parse()
                .map_err(|e| format!("{e}"))?,
        );
    let others = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(diagnostics);
    let drops = Targets::new().with_target(
        DROP_EVENT_TARGET,
        if quiet {
            LevelFilter::OFF
        } else {
            LevelFilter::INFO
        },
    );
    if access_log {
        #[cfg(feature = "access-log")]
        {
            tracing_subscriber::registry()
                .with(others)
                .with(
                    tower_no_response::audit::AccessLogLayer::new(std::io::stdout)
                        .with_filter(drops),
                )
                .init();
            return Ok(());
        }
        #[cfg(not(feature = "access-log"))]
        return Err("--access-log needs the access-log feature: \
             cargo run --example nginx_444 --features access-log -- --access-log"
            .into());
    }
    tracing_subscriber::registry()
        .with(others)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(drops),
        )
        .init();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = init_logging(args.access_log, args.quiet) {
        eprintln!("{msg}");
        return ExitCode::from(2);
    }
    if let Some(addr) = args.metrics {
        if let Err(msg) = serve_metrics(addr) {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    }

    let layer = match nginx_rules(&args).map(|rules| rules.build()) {
        Ok(Ok(layer)) => layer,
        Ok(Err(e)) => {
            eprintln!("bad rule: {e}");
            return ExitCode::from(2);
        }
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "redis")]
    if let Some(bans) = layer.ban_list() {
        if let Err(msg) = share_bans(&args, &bans) {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    }
    // Every path answers 200 ok, but /login and POST /upload. The layer wraps the whole
    // Router (see `serve_axum` and `serve_own`), so probes for paths that do
    // not exist are judged too.
    let app = Router::new()
        .route("/login", axum::routing::get(login))
        .route(
            "/upload",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .fallback(|| async { "ok" })
        .with_state(layer.ban_list());

    eprintln!(
        "listening on {}://{} ({} server{}, close mode: {}, client IP from {} behind {}{}, \
         rate limit: {}{}{})",
        if args.tls_cert.is_some() || args.tls_self_signed.is_some() {
            "https"
        } else {
            "http"
        },
        args.listen,
        if args.own_server { "own" } else { "axum" },
        if args.no_layer { ", NO LAYER" } else { "" },
        args.close,
        args.real_ip_header.name(),
        args.trusted_proxies.join(" "),
        if args.recursive { ", recursive" } else { "" },
        args.rate_action,
        match (&args.redis, &args.redis_cluster) {
            (Some(url), _) => format!(" shared in {url}"),
            (None, Some(seeds)) => format!(" shared in the cluster at {}", seeds.join(",")),
            (None, None) => String::new(),
        },
        if args.dry_run {
            ", DRY RUN: nothing is dropped"
        } else {
            ""
        },
    );
    // Serve from a worker thread: `#[tokio::main]` polls this function on a
    // thread of its own, and an accept loop there would hand every new
    // connection across threads to a worker.
    let served = tokio::spawn(async move {
        if args.own_server {
            serve_own(&args, app, layer).await
        } else {
            serve_axum(&args, app, layer).await
        }
    })
    .await
    .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked)));
    if let Err(e) = served {
        eprintln!("server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve_axum(args: &Args, app: Router, layer: NoResponseLayer) -> std::io::Result<()> {
    if args.no_layer {
        // Without the crate at all: axum's own listener, for the baseline.
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        return axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    }
    // The layer's own listener: its drops close the connection they came on.
    let tcp = tokio::net::TcpListener::bind(args.listen).await?;
    let _filter = kernel_filter(args, &layer, &tcp)?;
    if let Some(wait) = args.defer_accept {
        defer_accept(&tcp, wait)?;
    }
    let listener = layer.listener(tcp);
    // Wrapped around the whole Router rather than added with
    // `Router::layer`, which axum applies to each route, cloning and boxing
    // the route's service on every request. `axum::serve` takes axum's own
    // response type: `Body::from` unwraps an allowed response's body.
    let app = tower::ServiceBuilder::new()
        .map_response(|r: http::Response<NoResponseBody<Body>>| r.map(Body::from))
        .layer(layer.clone())
        .service(app);
    axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
            SocketAddr,
        >(app),
    )
    .await
}

/// With `--kernel-filter`, banned and denied clients are refused by the
/// kernel before their handshake; kept for as long as the server runs.
#[cfg(target_os = "linux")]
fn kernel_filter(
    args: &Args,
    layer: &NoResponseLayer,
    listener: &tokio::net::TcpListener,
) -> std::io::Result<Option<tower_no_response::server::KernelFilter>> {
    args.kernel_filter
        .then(|| layer.kernel_filter(listener))
        .transpose()
}

#[cfg(target_os = "linux")]
fn defer_accept(tcp: &tokio::net::TcpListener, wait: std::time::Duration) -> std::io::Result<()> {
    tower_no_response::connection::set_defer_accept(tcp, wait)
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_: &tokio::net::TcpListener, _: std::time::Duration) -> std::io::Result<()> {
    Err(std::io::Error::other("--defer-accept needs Linux"))
}

#[cfg(not(target_os = "linux"))]
fn kernel_filter(
    args: &Args,
    _: &NoResponseLayer,
    _: &tokio::net::TcpListener,
) -> std::io::Result<Option<()>> {
    if args.kernel_filter {
        return Err(std::io::Error::other("--kernel-filter needs Linux"));
    }
    Ok(None)
}

#[cfg(feature = "server")]
async fn serve_own(args: &Args, app: Router, layer: NoResponseLayer) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let _filter = kernel_filter(args, &layer, &listener)?;
    // Close mode, bans and early judging all come from the layer. A first
    // request that a rule drops never reaches hyper.
    if args.no_layer {
        let serve = layer.serve(listener, app).judge_early(false);
        return match args.defer_accept {
            Some(wait) => serve.defer_accept(wait).run().await,
            None => serve.run().await,
        };
    }
    let serve = layer.serve(listener, tower::Layer::layer(&layer, app));
    let serve = tls(args, &layer, serve)?;
    match args.defer_accept {
        Some(wait) => serve.defer_accept(wait).run().await,
        None => serve.run().await,
    }
}

/// With `--tls-cert` or `--tls-self-signed`, TLS (h2 and http/1.1) behind
/// the gate, with `--deny-ja4` and `--sni-alert`.
#[cfg(feature = "rustls")]
fn tls<S>(
    args: &Args,
    layer: &NoResponseLayer,
    serve: tower_no_response::server::Serve<S>,
) -> std::io::Result<tower_no_response::server::Serve<S>> {
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tower_no_response::tls::SniRefusal;

    let (cert, key) = match (&args.tls_cert, &args.tls_key, &args.tls_self_signed) {
        (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
        (_, _, Some(dir)) => self_signed(dir)?,
        _ => return Ok(serve),
    };
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| std::io::Error::other(format!("--tls-cert {cert}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| std::io::Error::other(format!("--tls-key {key}: {e}")))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| std::io::Error::other(format!("TLS: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let refusal = if args.sni_alert {
        SniRefusal::UnrecognizedNameAlert
    } else {
        SniRefusal::Silent
    };
    let gate = layer
        .tls_gate()
        .deny_tls_fingerprint(args.deny_ja4.iter().cloned())
        .sni_refusal(refusal)
        .build()
        .map_err(|e| std::io::Error::other(format!("bad rule: {e}")))?;
    let gate = (!args.no_tls_gate).then_some(gate);
    Ok(serve.tls(std::sync::Arc::new(config)).tls_gate(gate))
}

/// A self-signed certificate for the served names, written to `dir`.
#[cfg(feature = "rustls")]
fn self_signed(dir: &str) -> std::io::Result<(String, String)> {
    let pair = rcgen::generate_simple_self_signed(vec![
        "example.com".to_owned(),
        "www.example.com".to_owned(),
    ])
    .map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let cert = format!("{dir}/cert.pem");
    let key = format!("{dir}/key.pem");
    std::fs::write(&cert, pair.cert.pem())?;
    std::fs::write(&key, pair.signing_key.serialize_pem())?;
    eprintln!("self-signed certificate for example.com and www.example.com: {cert}");
    Ok((cert, key))
}

#[cfg(not(feature = "rustls"))]
fn tls<S>(
    args: &Args,
    _: &NoResponseLayer,
    serve: tower_no_response::server::Serve<S>,
) -> std::io::Result<tower_no_response::server::Serve<S>> {
    if args.tls_cert.is_some() || args.tls_self_signed.is_some() {
        return Err(std::io::Error::other(
            "--tls-cert and --tls-self-signed need the rustls feature: \
             cargo run --example nginx_444 --features rustls -- --tls-self-signed /tmp/tnr",
        ));
    }
    Ok(serve)
}

#[cfg(not(feature = "server"))]
async fn serve_own(_: &Args, _: Router, _: NoResponseLayer) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "--server own needs the server feature (on by default)",
    ))
}
