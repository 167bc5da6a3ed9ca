//! Bad configuration is refused at build time, naming the bad value and the
//! builder call that received it. Nothing is silently ignored.

use http::StatusCode;
use tower_no_response::rules::Action;
use tower_no_response::{
    BuildError, DropReason, NoResponseLayer, NoResponseLayerBuilder, RateLimit,
};

#[track_caller]
fn refused(builder: NoResponseLayerBuilder, call: &str, value: &str) -> BuildError {
    let err = builder.build().expect_err("a bad value was accepted");
    let msg = err.to_string();
    assert!(msg.starts_with(call), "{msg:?} should start with {call}");
    assert!(
        msg.contains(&format!("{value:?}")),
        "{msg:?} should name {value:?}"
    );
    err
}

#[test]
fn every_entry_point_names_its_bad_value() {
    let b = NoResponseLayer::builder;
    refused(b().deny_ip("10.0.0.300"), "deny_ip", "10.0.0.300");
    refused(b().allow_ip("10.0.0.0/40"), "allow_ip", "10.0.0.0/40");
    refused(b().deny_ip("10.1.2.3/8"), "deny_ip", "10.1.2.3/8");
    refused(
        b().trusted_proxy("proxy.internal"),
        "trusted_proxy",
        "proxy.internal",
    );
    refused(
        b().server_name("exa mple.com"),
        "server_name",
        "exa mple.com",
    );
    refused(b().server_name("foo.*.com"), "server_name", "foo.*.com");
    let err = refused(b().deny_user_agent("zgrab("), "deny_user_agent", "zgrab(");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the regex error is kept as the source"
    );
    refused(
        b().allow_user_agent("[python"),
        "allow_user_agent",
        "[python",
    );
    let err = b()
        .rate_limit(RateLimit::per_second(0))
        .build()
        .unwrap_err();
    assert!(err.to_string().starts_with("rate_limit"), "{err}");
}

#[test]
fn the_first_bad_value_is_reported_even_among_good_ones() {
    refused(
        NoResponseLayer::builder()
            .server_names(["example.com", "bad..name", "also bad"])
            .deny_ip("198.51.100.0/24"),
        "server_name",
        "bad..name",
    );
}

#[test]
fn good_values_in_every_form_build() {
    NoResponseLayer::builder()
        .server_names([
            "example.com",
            "*.example.org",
            ".example.net",
            "Trailing.Dot.",
        ])
        .deny_ip("198.51.100.0/24")
        .deny_ip("203.0.113.7")
        .deny_ip("2001:db8::/32")
        .deny_ip("::ffff:192.0.2.0/120")
        .allow_ip("all")
        .trusted_proxies(["10.0.0.0/8", "::1"])
        .deny_user_agents(["masscan", "(?-i)ZGrab", r"^$"])
        .rate_limit(RateLimit::per_minute(30).burst(5).ipv6_prefix(56))
        .build()
        .expect("valid configuration");
}

/// Errors come back in the order of the calls, whichever kind of check
/// found them: a value checked where it is given, or a rule name checked
/// once every rule is known.
#[test]
fn the_first_bad_call_is_reported_whatever_its_kind() {
    let b = NoResponseLayer::builder;
    refused(
        b().deny_ip("10.0.0.300").server_name("bad name"),
        "deny_ip",
        "10.0.0.300",
    );
    refused(
        b().server_name("bad name").deny_ip("10.0.0.300"),
        "server_name",
        "bad name",
    );
    refused(
        b().rule_action("nope", Action::Drop).deny_ip("10.0.0.300"),
        "rule_action",
        "nope",
    );
    refused(
        b().deny_ip("10.0.0.300").rule_action("nope", Action::Drop),
        "deny_ip",
        "10.0.0.300",
    );
}

#[test]
fn rules_are_named_by_their_reason_and_a_wrong_name_says_what_was_meant() {
    let b = || NoResponseLayer::builder().rate_limit(RateLimit::per_second(10));
    b().rule_action(
        DropReason::RateLimited,
        Action::Respond(StatusCode::TOO_MANY_REQUESTS),
    )
    .dry_run_rule(DropReason::RateLimitFull)
    .build()
    .expect("a typed reason names its rule");
    let with_ip = || b().deny_ip("192.0.2.0/24").deny_user_agent("masscan");
    for (wrong, meant) in [
        ("deny_ip", "ip_deny"),
        ("IpDenied", "ip_deny"),
        ("rate_limited", "rate_limit"),
        ("user_agent_denied", "user_agent"),
        ("ratelimit", "rate_limit"),
    ] {
        let err = refused(
            with_ip().rule_action(wrong, Action::Drop),
            "rule_action",
            wrong,
        );
        assert!(
            err.to_string()
                .ends_with(&format!("did you mean {meant:?}?")),
            "{err}"
        );
    }
    let err = refused(
        b().dry_run_rule("nothing_like_it"),
        "dry_run_rule",
        "nothing_like_it",
    );
    let text = err.to_string();
    assert!(
        text.contains("the rules are peer_not_allowed, host_missing,"),
        "{text}"
    );
    // A custom rule is named by its name, and a typo of it is caught too.
    let err = refused(
        b().custom_rule("login_flood", |_| false)
            .dry_run_rule("login_flod"),
        "dry_run_rule",
        "login_flod",
    );
    assert!(
        err.to_string().contains("did you mean \"login_flood\"?"),
        "{err}"
    );
    // The connection side's reasons have no per-rule settings.
    let err = refused(
        b().dry_run_rule(DropReason::HeaderTimeout),
        "dry_run_rule",
        "header_timeout",
    );
    assert!(err.to_string().contains("connection side"), "{err}");
}

/// A setting that could never take effect is refused by name, so that a
/// rule set never looks stricter than it is.
#[test]
fn dead_configuration_is_refused() {
    let b = NoResponseLayer::builder;
    let err = refused(
        b().rule_action(
            DropReason::RateLimited,
            Action::Respond(StatusCode::TOO_MANY_REQUESTS),
        ),
        "rule_action",
        "rate_limit",
    );
    assert!(err.to_string().contains("only with rate_limit"), "{err}");
    refused(b().dry_run_rule(DropReason::Path), "dry_run_rule", "path");
    refused(
        b().allow_ip("192.0.2.0/24")
            .dry_run_rule(DropReason::IpDenied),
        "dry_run_rule",
        "ip_deny",
    );
    let err = refused(
        b().deny_ip("all").allow_ip("10.0.0.0/8"),
        "allow_ip",
        "10.0.0.0/8",
    );
    assert!(
        err.to_string().contains("deny_ip(\"all\") before it"),
        "{err}"
    );
    refused(
        b().allow_ip("0.0.0.0/0").deny_ip("192.0.2.1"),
        "deny_ip",
        "192.0.2.1",
    );
    // A catch-all of one family leaves the other open.
    b().deny_ip("0.0.0.0/0")
        .allow_ip("2001:db8::/32")
        .build()
        .expect("IPv6 rules still match after an IPv4 catch-all");
    // Allow-lists before a catch-all are the usual form.
    b().allow_ips(tower_no_response::rules::CLOUDFLARE_RANGES.iter().copied())
        .deny_ip("all")
        .build()
        .expect("allow_ips then deny all");
}

#[test]
fn errors_say_what_is_wrong_in_the_caller_s_words() {
    let b = NoResponseLayer::builder;
    let err = refused(b().deny_ip("10.0.0.0/33"), "deny_ip", "10.0.0.0/33");
    assert!(err.to_string().contains("from 0 to 32"), "{err}");
    let err = refused(b().deny_ip("2001:db8::/129"), "deny_ip", "2001:db8::/129");
    assert!(err.to_string().contains("from 0 to 128"), "{err}");
    let err = refused(b().deny_ips(["10.0.0.0/8", "nope/8"]), "deny_ip", "nope/8");
    assert!(err.to_string().contains("is not an IP address"), "{err}");
    let err = refused(
        b().server_name("example.com:8080"),
        "server_name",
        "example.com:8080",
    );
    assert!(err.to_string().contains("takes no port"), "{err}");
    let err = refused(
        b().rate_limit_by("api-key", RateLimit::per_second(1), |_| None),
        "rate_limit_by",
        "api-key",
    );
    assert!(err.to_string().contains("lowercase"), "{err}");
    refused(
        b().custom_rule("Bad Name", |_| false),
        "custom_rule",
        "Bad Name",
    );
}

/// Setting the per-client limit's action where only keyed limits exist is
/// refused with the way out: a keyed limit is named by its own name, and
/// the rules that exist are listed.
#[test]
fn a_keyed_limit_is_named_by_its_own_name() {
    let builder = NoResponseLayer::builder()
        .server_name("example.com")
        .rate_limit_by("api_key", RateLimit::per_second(10), |head| {
            head.headers
                .get("x-api-key")
                .map(|k| tower_no_response::rules::LimitKey::bytes(k.as_bytes()))
        })
        .rule_action(
            DropReason::RateLimited,
            Action::Respond(StatusCode::TOO_MANY_REQUESTS),
        );
    let msg = refused(builder, "rule_action", "rate_limit").to_string();
    assert!(msg.contains("rate_limit_by"), "{msg}");
    assert!(msg.contains("rule_action(\"NAME\""), "{msg}");
    assert!(
        msg.contains("api_key") && msg.contains("host_unknown"),
        "{msg}"
    );
    // The way out builds.
    NoResponseLayer::builder()
        .rate_limit_by("api_key", RateLimit::per_second(10), |_| None)
        .rule_action("api_key", Action::Respond(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap();
}

/// A zero timeout would run out at once, not turn the timer off: it is
/// refused, naming the call, as a document's `0` is.
#[test]
fn a_zero_timeout_is_refused() {
    use std::time::Duration;
    let b = NoResponseLayer::builder;
    refused(b().header_timeout(Duration::ZERO), "header_timeout", "0ns");
    refused(b().body_timeout(Duration::ZERO), "body_timeout", "0ns");
    refused(b().send_timeout(Duration::ZERO), "send_timeout", "0ns");
    // None at all, or one that never runs out, is said so.
    b().header_timeout(Duration::MAX).build().unwrap();
}
