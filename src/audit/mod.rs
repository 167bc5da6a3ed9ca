//! The audit output: one `tracing` event for every request a rule stops or,
//! in dry-run, would have stopped; per-rule counters; and, with the
//! `access-log` feature, nginx's combined log line.
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
//! | `status` | `444` for a drop (and for a dry-run match: what it would have been), else the status answered |
//! | `rule` | the [`DropReason`] name, e.g. `host_unknown` |
//! | `action` | `drop`, `respond`, or `would_drop` for a rule in dry-run (the request went through) |
//! | `client_ip` | the judged client IP, or `-` |
//! | `peer_addr` | the TCP peer `ip:port`, or `-` |
//! | `method` | the request method |
//! | `host` | the host judged (Host header or URI authority), or `-` |
//! | `uri` | the request target as received |
//! | `version` | `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0` |
//! | `referer` | the Referer header, or `-` |
//! | `user_agent` | the first User-Agent, or `-` |
//! | `close` | `fin`, `reset`, `stream` when only the HTTP/2 stream was reset, `body_error` when no connection handle was found, or `none` when the connection stays open |
//!
//! Header values are written as nginx writes them in its access log: bytes
//! outside printable ASCII, `"` and `\` become `\xNN`, so a hostile value can
//! neither forge a log line nor break a parser.
//!
//! To print only these events, filter on the target, e.g.
//! `RUST_LOG=tower_no_response::drop=info` with `tracing-subscriber`'s
//! `EnvFilter`.

#[cfg(feature = "access-log")]
mod access_log;
pub(crate) mod stats;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Request, StatusCode, header};

#[cfg(feature = "access-log")]
pub use access_log::AccessLogLayer;
pub use stats::{RuleStats, Stats};

use crate::rules::DropReason;
use crate::rules::host::{HostField, host_field};

/// The `tracing` target of the 444 event.
pub const DROP_EVENT_TARGET: &str = "tower_no_response::drop";

/// What the `close` field says when the connection could not be aborted
/// directly and the dropped response's body failed instead.
pub(crate) const CLOSE_BODY_ERROR: &str = "body_error";

/// What was done to a request a rule matched.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Dropped; the close mode's name.
    Drop(&'static str),
    Respond(StatusCode),
    WouldDrop,
}

impl Outcome {
    fn action(self) -> &'static str {
        match self {
            Self::Drop(_) => "drop",
            Self::Respond(_) => "respond",
            Self::WouldDrop => "would_drop",
        }
    }

    fn status(self) -> u16 {
        match self {
            Self::Drop(_) | Self::WouldDrop => 444,
            Self::Respond(status) => status.as_u16(),
        }
    }

    fn close(self) -> &'static str {
        match self {
            Self::Drop(close) => close,
            Self::Respond(_) | Self::WouldDrop => "none",
        }
    }
}

pub(crate) fn emit<B>(
    request: &Request<B>,
    reason: DropReason,
    client_ip: Option<IpAddr>,
    peer_addr: Option<SocketAddr>,
    outcome: Outcome,
) {
    let headers = request.headers();
    let host = match host_field(request.version(), request.uri(), headers) {
        HostField::Value(v) => Escaped(Some(v)),
        HostField::Ambiguous | HostField::Missing => {
            Escaped(headers.get(header::HOST).map(HeaderValue::as_bytes))
        }
    };
    let header = |name| Escaped(headers.get(name).map(HeaderValue::as_bytes));
    tracing::info!(
        target: "tower_no_response::drop",
        status = outcome.status(),
        rule = %reason,
        action = %outcome.action(),
        client_ip = %OrDash(client_ip),
        peer_addr = %OrDash(peer_addr),
        method = %request.method(),
        host = %host,
        uri = %request.uri(),
        version = ?request.version(),
        referer = %header(header::REFERER),
        user_agent = %header(header::USER_AGENT),
        close = %outcome.close(),
        "dropped request"
    );
}

/// The event for a connection dropped before any request was read (at
/// accept, or on a header timeout): the request fields are `-`.
#[cfg(feature = "server")]
pub(crate) fn emit_connection(reason: DropReason, peer_addr: SocketAddr, close: &'static str) {
    tracing::info!(
        target: "tower_no_response::drop",
        status = 444u16,
        rule = %reason,
        action = "drop",
        client_ip = %peer_addr.ip().to_canonical(),
        peer_addr = %peer_addr,
        method = "-",
        host = "-",
        uri = "-",
        version = "-",
        referer = "-",
        user_agent = "-",
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
