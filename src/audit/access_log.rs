//! nginx's combined log format for dropped requests, as a
//! `tracing-subscriber` layer, so log pipelines and fail2ban filters written
//! for nginx read this crate's drops unchanged.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use super::DROP_EVENT_TARGET;

/// Writes one line in nginx's `combined` format for every request a rule
/// dropped or answered, built from the 444 event:
///
/// ```text
/// 192.0.2.55 - - [26/Apr/2026:10:22:01 +0000] "GET / HTTP/1.1" 444 0 "-" "-"
/// ```
///
/// The address is the judged client IP, the status `444` for a drop (or the
/// status answered), and the size `0`: no body byte is ever sent. Dry-run
/// matches are not written, since the request was served. A fail2ban filter
/// for these lines:
///
/// ```text
/// [Definition]
/// failregex = ^<HOST> - \S+ \[[^\]]+\] "[^"]*" 444 0 "[^"]*" "[^"]*"$
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
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.action == "would_drop" {
            return;
        }
        let mut line = String::with_capacity(160);
        let _ = writeln!(line, "{}", CombinedLine::new(&fields, SystemTime::now()));
        let _ = self.make_writer.make_writer().write_all(line.as_bytes());
    }
}

#[derive(Debug, Default)]
struct Fields {
    status: u64,
    action: String,
    client_ip: String,
    peer_addr: String,
    method: String,
    uri: String,
    version: String,
    referer: String,
    user_agent: String,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "status" {
            self.status = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let slot = match field.name() {
            "action" => &mut self.action,
            "client_ip" => &mut self.client_ip,
            "peer_addr" => &mut self.peer_addr,
            "method" => &mut self.method,
            "uri" => &mut self.uri,
            "version" => &mut self.version,
            "referer" => &mut self.referer,
            "user_agent" => &mut self.user_agent,
            _ => return,
        };
        let _ = write!(slot, "{value:?}");
    }
}

struct CombinedLine<'a> {
    fields: &'a Fields,
    time: SystemTime,
}

impl<'a> CombinedLine<'a> {
    fn new(fields: &'a Fields, time: SystemTime) -> Self {
        Self { fields, time }
    }

    /// nginx's `$remote_addr` after realip: the client, else the peer.
    fn remote_addr(&self) -> &str {
        let f = self.fields;
        if f.client_ip != "-" && !f.client_ip.is_empty() {
            return &f.client_ip;
        }
        match f.peer_addr.rsplit_once(':') {
            Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']'),
            None => "-",
        }
    }
}

impl fmt::Display for CombinedLine<'_> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = self.fields;
        write!(
            out,
            "{} - - [{}] \"{} {} {}\" {} 0 \"{}\" \"{}\"",
            self.remote_addr(),
            LocalTime(self.time),
            f.method,
            f.uri,
            f.version,
            f.status,
            f.referer,
            f.user_agent,
        )
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
        let fields = Fields {
            status: 444,
            action: "drop".into(),
            client_ip: "192.0.2.55".into(),
            peer_addr: "127.0.0.1:4711".into(),
            method: "GET".into(),
            uri: "/".into(),
            version: "HTTP/1.1".into(),
            referer: "-".into(),
            user_agent: "-".into(),
        };
        let t = UNIX_EPOCH + Duration::from_secs(1_777_198_921);
        assert_eq!(
            CombinedLine::new(&fields, t).to_string(),
            r#"192.0.2.55 - - [26/Apr/2026:10:22:01 +0000] "GET / HTTP/1.1" 444 0 "-" "-""#
        );
        let no_client = Fields {
            client_ip: "-".into(),
            peer_addr: "[2001:db8::1]:4711".into(),
            ..fields
        };
        assert!(
            CombinedLine::new(&no_client, t)
                .to_string()
                .starts_with("2001:db8::1 - - [")
        );
    }
}
