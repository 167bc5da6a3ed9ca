//! Bad configuration is refused at build time, naming the bad value and the
//! builder call that received it. Nothing is silently ignored.

use tower_no_response::{BuildError, NoResponseLayer, NoResponseLayerBuilder, RateLimit};

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
