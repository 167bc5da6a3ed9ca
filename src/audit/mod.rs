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
mod export;
pub(crate) mod stats;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version, header};

#[cfg(feature = "access-log")]
pub use access_log::AccessLogLayer;
pub use stats::{RuleStats, Stats};

use crate::parse::host::{HostField, host_field};
use crate::rules::CloseMode;
use crate::rules::DropReason;

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

impl DropEvent<'_> {
    /// Emits the 444 event, and hands the access log its line.
    pub(crate) fn emit(&self) {
        #[cfg(feature = "access-log")]
        let _line = access_log::render(self);
        let handling = self.handling;
        match &self.request {
            Some(request) => tracing::info!(
                target: "tower_no_response::drop",
                status = handling.status(),
                rule = %self.rule,
                action = %handling.action(),
                client_ip = %OrDash(self.client_ip),
                peer_addr = %OrDash(self.peer_addr),
                method = %request.method,
                host = %request.host(),
                uri = %EscapedDisplay(request.uri),
                version = ?request.version,
                referer = %request.header(header::REFERER),
                user_agent = %request.header(header::USER_AGENT),
                close = %handling.close(),
                "dropped request"
            ),
            None => tracing::info!(
                target: "tower_no_response::drop",
                status = handling.status(),
                rule = %self.rule,
                action = %handling.action(),
                client_ip = %OrDash(self.client_ip),
                peer_addr = %OrDash(self.peer_addr),
                method = "-",
                host = "-",
                uri = "-",
                version = "-",
                referer = "-",
                user_agent = "-",
                close = %handling.close(),
                "dropped request"
            ),
        }
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
