//! The real-IP parsers on fuzzer bytes, in every mode: never panic, and the
//! client is the peer or an address a textual entry could name.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower_no_response::NoResponseLayer;
use tower_no_response::rules::RealIpHeader;

static LAYERS: LazyLock<Vec<(NoResponseLayer, &'static str)>> = LazyLock::new(|| {
    let mut layers = Vec::new();
    for (header, name) in [
        (RealIpHeader::XForwardedFor, "x-forwarded-for"),
        (RealIpHeader::Forwarded, "forwarded"),
        (RealIpHeader::XRealIp, "x-real-ip"),
    ] {
        for recursive in [true, false] {
            let layer = NoResponseLayer::builder()
                .trusted_proxies(["10.0.0.0/8", "fd00::/8"])
                .real_ip_header(header.clone())
                .real_ip_recursive(recursive)
                .build()
                .unwrap();
            layers.push((layer, name));
        }
    }
    layers
});

fuzz_target!(|data: &[u8]| {
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    for (layer, name) in LAYERS.iter() {
        let mut req = Request::get("/").body(()).unwrap();
        for line in data.split(|&b| b == b'\n') {
            if let Ok(v) = HeaderValue::from_bytes(line) {
                req.headers_mut().append(*name, v);
            }
        }
        let client = layer
            .rules()
            .judge(&req, Some(SocketAddr::new(peer, 1)))
            .client_ip
            .unwrap();
        if client != peer {
            // Whatever form the address took, its digits must be in the input.
            let text = String::from_utf8_lossy(data).to_ascii_lowercase();
            let first_digits: String = match client {
                IpAddr::V4(v4) => v4.octets()[0].to_string(),
                IpAddr::V6(_) => String::new(),
            };
            assert!(text.contains(&first_digits), "{client} from {text:?}");
        }
    }
});
