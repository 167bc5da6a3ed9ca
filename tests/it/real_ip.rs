//! The real client IP behind trusted proxies, per header mode, on the wire:
//! the rules judge it and handlers see it as `ClientIp`.

use crate::common;

use axum::Router;
use common::{Close, exchange, request, serve_with};
use tower_no_response::rules::RealIpHeader;
use tower_no_response::{ClientIp, NoResponseLayer, NoResponseLayerBuilder};

fn echo_client_ip() -> Router {
    Router::new()
        .fallback(|axum::Extension(ip): axum::Extension<ClientIp>| async move { ip.to_string() })
}

fn rules() -> NoResponseLayerBuilder {
    NoResponseLayer::builder().deny_ip("198.51.100.0/24")
}

async fn client_seen(builder: NoResponseLayerBuilder, header: (&str, &str)) -> Option<String> {
    let addr = serve_with(builder.build().unwrap(), echo_client_ip()).await;
    let outcome = exchange(
        addr,
        &request("GET", "/", Some("a.test"), Some("curl"), &[header]),
    )
    .await;
    if outcome.bytes.is_empty() {
        outcome.assert_dropped(Close::Fin);
        return None;
    }
    let text = outcome.text();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    Some(text.rsplit("\r\n\r\n").next().unwrap().to_owned())
}

#[tokio::test]
async fn x_forwarded_for_recursive_and_not() {
    let trusted = || rules().trusted_proxies(["127.0.0.1", "10.0.0.0/8"]);
    let xff = |v| ("X-Forwarded-For", v);
    assert_eq!(
        client_seen(trusted(), xff("192.0.2.1, 10.0.0.9"))
            .await
            .as_deref(),
        Some("192.0.2.1")
    );
    assert_eq!(
        client_seen(trusted(), xff("198.51.100.7, 10.0.0.9")).await,
        None
    );
    let flat = || trusted().real_ip_recursive(false);
    assert_eq!(
        client_seen(flat(), xff("198.51.100.7, 10.0.0.9"))
            .await
            .as_deref(),
        Some("10.0.0.9")
    );
    assert_eq!(
        client_seen(flat(), xff("10.0.0.9, 198.51.100.7")).await,
        None
    );
}

#[tokio::test]
async fn forwarded_header() {
    let b = || {
        rules()
            .trusted_proxy("127.0.0.1")
            .real_ip_header(RealIpHeader::Forwarded)
    };
    let fwd = |v| ("Forwarded", v);
    assert_eq!(
        client_seen(b(), fwd("for=\"[2001:db8::5]:4711\";proto=https"))
            .await
            .as_deref(),
        Some("2001:db8::5")
    );
    assert_eq!(client_seen(b(), fwd("for=198.51.100.7")).await, None);
    // `unknown` names no one: the client is the proxy itself.
    assert_eq!(
        client_seen(b(), fwd("for=unknown")).await.as_deref(),
        Some("127.0.0.1")
    );
    // X-Forwarded-For is not read in this mode.
    assert_eq!(
        client_seen(b(), ("X-Forwarded-For", "198.51.100.7"))
            .await
            .as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn single_address_headers() {
    for (header, name) in [
        (RealIpHeader::XRealIp, "X-Real-IP"),
        (RealIpHeader::CfConnectingIp, "CF-Connecting-IP"),
        ("True-Client-IP".parse().unwrap(), "True-Client-IP"),
    ] {
        let b = || {
            rules()
                .trusted_proxy("127.0.0.1")
                .real_ip_header(header.clone())
        };
        assert_eq!(
            client_seen(b(), (name, "192.0.2.8")).await.as_deref(),
            Some("192.0.2.8")
        );
        assert_eq!(
            client_seen(b(), (name, "198.51.100.8")).await,
            None,
            "{name}"
        );
        assert_eq!(
            client_seen(b(), (name, "not an address")).await.as_deref(),
            Some("127.0.0.1")
        );
    }
}

#[tokio::test]
async fn nothing_is_read_from_an_untrusted_peer() {
    for header in [
        RealIpHeader::XForwardedFor,
        RealIpHeader::Forwarded,
        RealIpHeader::XRealIp,
    ] {
        let b = rules()
            .trusted_proxy("10.0.0.0/8")
            .real_ip_header(header.clone());
        let name = header.name();
        let value = if header == RealIpHeader::Forwarded {
            "for=198.51.100.7"
        } else {
            "198.51.100.7"
        };
        assert_eq!(
            client_seen(b, (name.as_str(), value)).await.as_deref(),
            Some("127.0.0.1"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn cloudflare_preset_and_published_lists() {
    // Loopback stands in for a Cloudflare edge: trusted through a list in
    // Cloudflare's published format.
    let list = "# ips-v4\n173.245.48.0/20\n127.0.0.1\n\n# ips-v6\n2400:cb00::/32  # comment\n";
    let b = || rules().trust_cloudflare().trusted_proxy_list(list);
    assert_eq!(
        client_seen(b(), ("CF-Connecting-IP", "192.0.2.77"))
            .await
            .as_deref(),
        Some("192.0.2.77")
    );
    assert_eq!(
        client_seen(b(), ("CF-Connecting-IP", "198.51.100.1")).await,
        None
    );
    // A bad line in a list is refused by name.
    let err = rules()
        .trusted_proxy_list("10.0.0.0/8\n10.0.0.0/33\n")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("\"10.0.0.0/33\""), "{err}");
}
