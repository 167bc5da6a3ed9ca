//! The audit output: one `tracing` event for every dropped request.
//!
//! nginx never sends a 444 but still logs it, so operators can count what was
//! dropped and by which rule. This crate does the same with an event:
//!
//! - **target:** `tower_no_response::drop` (see [`DROP_EVENT_TARGET`]);
//! - **level:** `INFO`;
//! - **message:** `dropped request`;
//! - **fields**, always all present:
//!
//! | field | value |
//! |---|---|
//! | `status` | `444` |
//! | `rule` | the [`DropReason`] name, e.g. `host_unknown` |
//! | `client_ip` | the judged client IP, or `-` |
//! | `peer_addr` | the TCP peer `ip:port`, or `-` |
//! | `method` | the request method |
//! | `host` | the Host header (or URI authority), or `-` |
//! | `uri` | the request target as received |
//! | `user_agent` | the first User-Agent, or `-` |
//! | `close` | `fin`, `reset`, or `body_error` when no connection handle was found |
//!
//! Header values are written as nginx writes them in its access log: bytes
//! outside printable ASCII, `"` and `\` become `\xNN`, so a hostile value can
//! neither forge a log line nor break a parser.
//!
//! To print only these events, filter on the target, e.g.
//! `RUST_LOG=tower_no_response::drop=info` with `tracing-subscriber`'s
//! `EnvFilter`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Request, header::USER_AGENT};

use crate::rules::DropReason;
use crate::rules::host::{HostField, host_field};

/// The `tracing` target of the 444 event.
pub const DROP_EVENT_TARGET: &str = "tower_no_response::drop";

/// What the `close` field says when the connection could not be aborted
/// directly and the dropped response's body failed instead.
pub(crate) const CLOSE_BODY_ERROR: &str = "body_error";

pub(crate) fn emit_drop<B>(
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    peer_addr: Option<SocketAddr>,
    close: &'static str,
) {
    let host = match host_field(request.version(), request.uri(), request.headers()) {
        HostField::Value(v) => Escaped(Some(v)),
        HostField::Ambiguous | HostField::Missing => Escaped(
            request
                .headers()
                .get(http::header::HOST)
                .map(HeaderValue::as_bytes),
        ),
    };
    let user_agent = Escaped(request.headers().get(USER_AGENT).map(HeaderValue::as_bytes));
    tracing::info!(
        target: "tower_no_response::drop",
        status = 444u16,
        rule = %reason,
        client_ip = %OrDash(client_ip),
        peer_addr = %OrDash(peer_addr),
        method = %request.method(),
        host = %host,
        uri = %request.uri(),
        user_agent = %user_agent,
        close = %close,
        "dropped request"
    );
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
    }
}
