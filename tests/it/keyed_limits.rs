//! Rate limits keyed by more than the client IP, on real sockets: by a
//! header (an API key), by an extension an outer authentication layer sets
//! (a user id), and a strict named limit for one route, answered with a
//! `429` that carries the IETF `RateLimit` headers.

use crate::common;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use common::{Close, counting_router, exchange, request, serve_layered, serve_with};
use http::StatusCode;
use tower_no_response::rules::{Action, LimitKey};
use tower_no_response::{NoResponseLayer, RateLimit};

const UA: Option<&str> = Some("curl/8.5.0");

fn with_key(key: &str) -> Vec<u8> {
    request("GET", "/", Some("example.com"), UA, &[("X-Api-Key", key)])
}

/// One request a minute per API key, whoever sends it; requests without a
/// key are not counted.
#[tokio::test]
async fn a_limit_keyed_by_an_api_key() {
    let layer = NoResponseLayer::builder()
        .rate_limit_by("api_key", RateLimit::per_minute(1), |head| {
            head.headers
                .get("x-api-key")
                .map(|key| LimitKey::bytes(key.as_bytes()))
        })
        .build()
        .unwrap();
    let addr = serve_with(layer.clone(), counting_router(Arc::default())).await;
    exchange(addr, &with_key("alpha")).await.assert_ok();
    exchange(addr, &with_key("alpha"))
        .await
        .assert_dropped(Close::Fin);
    // Another key has a budget of its own, from the same address.
    exchange(addr, &with_key("beta")).await.assert_ok();
    // No key: not this limit's business.
    for _ in 0..3 {
        exchange(addr, &request("GET", "/", Some("example.com"), UA, &[]))
            .await
            .assert_ok();
    }
    assert_eq!(layer.stats().rule("api_key").unwrap().dropped, 1);
}

#[derive(Clone, Copy)]
struct UserId(u64);

/// An authentication layer outside puts the user in the extensions; the
/// limit counts per user.
#[tokio::test]
async fn a_limit_keyed_by_an_extension_from_an_auth_layer() {
    let layer = NoResponseLayer::builder()
        .rate_limit_by("per_user", RateLimit::per_minute(2).burst(0), |head| {
            head.extensions
                .get::<UserId>()
                .map(|UserId(id)| LimitKey::from(*id))
        })
        .build()
        .unwrap();
    let app =
        counting_router(Arc::default())
            .layer(layer.clone())
            .layer(axum::middleware::map_request(
                |mut request: axum::extract::Request| async move {
                    // The user named in a header stands in for a real session.
                    let user = request
                        .headers()
                        .get("x-user")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    if let Some(user) = user {
                        request.extensions_mut().insert(UserId(user));
                    }
                    request
                },
            ));
    let addr = serve_layered(app, &layer).await;
    let as_user = |id: &str| request("GET", "/", Some("example.com"), UA, &[("X-User", id)]);
    exchange(addr, &as_user("7")).await.assert_ok();
    exchange(addr, &as_user("7"))
        .await
        .assert_dropped(Close::Fin);
    exchange(addr, &as_user("8")).await.assert_ok();
}

/// A strict limit for `/login` only, per client, answered with a `429`:
/// `Retry-After`, and the `RateLimit-Policy` and `RateLimit` headers naming
/// the limit. Other routes are not counted.
#[tokio::test]
async fn a_strict_named_limit_for_one_route_answers_429_with_ratelimit_headers() {
    let layer = NoResponseLayer::builder()
        .rate_limit_by("login", RateLimit::per_minute(1), |head| {
            (head.uri.path() == "/login").then_some(LimitKey::ip(head.client_ip?))
        })
        .rule_action("login", Action::Respond(StatusCode::TOO_MANY_REQUESTS))
        .build()
        .unwrap();
    let router = Router::new()
        .route("/login", get(|| async { "ok" }))
        .fallback(|| async { "ok" });
    let addr = serve_with(layer, router).await;
    let login = request("GET", "/login", Some("example.com"), UA, &[]);
    exchange(addr, &login).await.assert_ok();
    let limited = exchange(addr, &login).await.text().to_ascii_lowercase();
    assert!(limited.starts_with("http/1.1 429"), "{limited}");
    assert!(
        limited.contains("ratelimit-policy: \"login\";q=1;w=60\r\n"),
        "{limited}"
    );
    let t: u64 = limited
        .split("ratelimit: \"login\";r=0;t=")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no RateLimit header: {limited}"));
    assert!((1..=60).contains(&t), "{t}");
    assert!(
        limited.contains(&format!("retry-after: {t}\r\n")),
        "{limited}"
    );
    // Other routes are not this limit's.
    for _ in 0..3 {
        exchange(addr, &request("GET", "/", Some("example.com"), UA, &[]))
            .await
            .assert_ok();
    }
}

/// A keyed limit's name is a rule's: checked at build, by name.
#[test]
fn keyed_limit_names_are_checked() {
    let err = NoResponseLayer::builder()
        .custom_rule("login", |_| false)
        .rate_limit_by("login", RateLimit::per_minute(1), |_| None)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"login\""), "{err}");
    let err = NoResponseLayer::builder()
        .rate_limit_by("Bad Name", RateLimit::per_minute(1), |_| None)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"Bad Name\""), "{err}");
}
