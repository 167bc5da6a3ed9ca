//! nginx's combined log format for dropped requests, as a
//! `tracing-subscriber` layer, so log pipelines and fail2ban filters written
//! for nginx read this crate's drops unchanged.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use super::{DROP_EVENT_TARGET, DropEvent, EscapedDisplay, Handling};

/// Writes one line in nginx's `combined` format for every request a rule
/// dropped or answered, built from the 444 event:
///
/// ```text
/// 192.0.2.55 - - [26/Apr/2026:10:22:01 +0000] "GET / HTTP/1.1" 444 0 "-" "-"
/// ```
///
/// The address is the judged client IP, the status `444` for a drop (or the
/// status answered), and the size `0`: no body byte is ever sent. Dry-run
/// matches are not written, since the request was served. The fail2ban
/// filter for these lines, shipped in the repository's `contrib/fail2ban/`
/// (see [`audit`](crate::audit#an-access-log-fail2ban-can-read)):
///
/// ```text
/// [Definition]
/// failregex = ^<HOST> -[^"]*"[^"]*" 444 0 "[^"]*" "[^"]*"$
/// ```
///
/// ```
/// use tower_no_response::audit::AccessLogLayer;
/// use tracing_subscriber::prelude::*;
///
/// tracing_subscriber::registry()
///     .with(AccessLogLayer::new(std::io::stdout))
///     .init();
/// ```
///
/// For fail2ban, write a file of its own, as nginx's access log is, and
/// point the jail's `logpath` at it. The layer writes only these lines,
/// whatever else the subscriber logs, so it needs no target filter; the
/// application's own logs go to another layer:
///
/// ```no_run
/// use std::fs::File;
/// use std::sync::Mutex;
/// use tower_no_response::audit::AccessLogLayer;
/// use tracing_subscriber::prelude::*;
///
/// let log = File::options()
///     .create(true)
///     .append(true)
///     .open("/var/log/myapp/access.log")?;
/// tracing_subscriber::registry()
///     .with(AccessLogLayer::new(Mutex::new(log)))
///     .with(tracing_subscriber::fmt::layer()) // everything else, to stdout
///     .init();
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// A file that logrotate moves away is reopened only by a restart: use
/// logrotate's `copytruncate`, which the append mode above follows.
#[derive(Debug)]
pub struct AccessLogLayer<W> {
    make_writer: W,
}

impl<W> AccessLogLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Writes lines to what `make_writer` makes, e.g. `std::io::stdout`.
    pub fn new(make_writer: W) -> Self {
        ACTIVE.store(true, Ordering::Relaxed);
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for AccessLogLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != DROP_EVENT_TARGET {
            return;
        }
        // The line was made from the drop itself just before its event;
        // nothing is read back from the event's fields.
        let written = PENDING.with(|pending| {
            let pending = pending.borrow();
            let Some(line) = pending.as_deref() else {
                return Ok(());
            };
            let mut out = String::with_capacity(line.len() + 40);
            let _ = writeln!(
                out,
                "{}",
                line.replace(TIME, &LocalTime(SystemTime::now()).to_string())
            );
            self.make_writer.make_writer().write_all(out.as_bytes())
        });
        let _ = written;
    }
}

/// Where the line's time goes, filled in when it is written.
const TIME: &str = "\0time\0";

thread_local! {
    /// The combined line of the drop whose event is being dispatched on
    /// this thread. tracing hands an event to every layer on the thread that
    /// emitted it, before the emitting call returns.
    static PENDING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether any access log was made, so that drops render lines only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Holds the rendered line for the event about to be emitted; clears it
/// when dropped, after the event.
pub(super) struct Rendered(());

impl Drop for Rendered {
    fn drop(&mut self) {
        PENDING.with(|pending| pending.borrow_mut().take());
    }
}

/// Renders `event` as a combined line for the access log, if there is one.
/// Dry-run matches are not written: the request was served.
pub(super) fn render(event: &DropEvent<'_>) -> Option<Rendered> {
    if !ACTIVE.load(Ordering::Relaxed) || event.handling == Handling::WouldDrop {
        return None;
    }
    let line = CombinedLine(event).to_string();
    PENDING.with(|pending| *pending.borrow_mut() = Some(line));
    Some(Rendered(()))
}

/// nginx's `combined` format, with the time left as a placeholder.
struct CombinedLine<'e, 'a>(&'e DropEvent<'a>);

impl fmt::Display for CombinedLine<'_, '_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let event = self.0;
        // nginx's `$remote_addr` after realip: the client, else the peer.
        match (event.client_ip, event.peer_addr) {
            (Some(ip), _) => write!(out, "{ip}")?,
            (None, Some(peer)) => write!(out, "{}", peer.ip())?,
            (None, None) => out.write_str("-")?,
        }
        write!(out, " - - [{TIME}] \"")?;
        match &event.request {
            Some(request) => write!(
                out,
                "{} {} {:?}\" {} 0 \"{}\" \"{}\"",
                request.method,
                EscapedDisplay(request.uri),
                request.version,
                event.handling.status(),
                request.header(http::header::REFERER),
                request.header(http::header::USER_AGENT),
            ),
            None => write!(out, "-\" {} 0 \"-\" \"-\"", event.handling.status()),
        }
    }
}

/// `26/Apr/2026:10:22:01 +0000`: nginx's `$time_local`, in UTC.
struct LocalTime(SystemTime);

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = self.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(
            f,
            "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_569), (2026, 4, 26));
        let t = UNIX_EPOCH + Duration::from_secs(1_777_198_921);
        assert_eq!(LocalTime(t).to_string(), "26/Apr/2026:10:22:01 +0000");
    }

    #[test]
    fn the_line_matches_nginx_combined() {
        use crate::DropReason;
        use crate::audit::{Close, RequestView};
        use crate::rules::CloseMode;

        let request = http::Request::get("/.env\"x")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let event = DropEvent {
            rule: DropReason::Path,
            handling: Handling::Drop(Close::Mode(CloseMode::Fin)),
            client_ip: Some("192.0.2.55".parse().unwrap()),
            peer_addr: Some("127.0.0.1:4711".parse().unwrap()),
            request: Some(RequestView::of(&request)),
            hello: None,
        };
        assert_eq!(
            CombinedLine(&event)
                .to_string()
                .replace(TIME, "26/Apr/2026:10:22:01 +0000"),
            r#"192.0.2.55 - - [26/Apr/2026:10:22:01 +0000] "GET /.env\x22x HTTP/1.1" 444 0 "-" "curl/8""#
        );
        let from_peer = DropEvent {
            client_ip: None,
            peer_addr: Some("[2001:db8::1]:4711".parse().unwrap()),
            request: None,
            hello: None,
            ..event
        };
        assert!(
            CombinedLine(&from_peer)
                .to_string()
                .starts_with("2001:db8::1 - - [")
        );
    }
}
