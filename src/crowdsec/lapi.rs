//! One pull from the CrowdSec Local API's decision stream, over HTTP/1.1
//! with hyper, and the checks that refuse a malformed answer whole.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde::Deserialize;

use super::decisions::{Decision, Remedy, Target, go_duration};

/// The most a stream answer may hold: about a million decisions.
const MAX_BODY: usize = 256 << 20;

/// The LAPI's address, and the TLS it is reached with, if any.
#[derive(Clone)]
pub(crate) struct Server {
    /// `host:port`, connected to and sent as `Host`.
    pub(crate) authority: String,
    #[cfg(feature = "crowdsec-tls")]
    pub(crate) tls: Option<super::tls::Tls>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.authority)
    }
}

/// Where and how to ask.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) server: Server,
    /// The URL's path, without its last `/`: what every API path follows.
    pub(crate) base: String,
    /// The stream's path and the query every pull sends (filters).
    pub(crate) path: String,
    /// `None` when a client certificate identifies the bouncer instead.
    pub(crate) api_key: Option<String>,
}

/// What one pull brought.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub(crate) new: Vec<(u64, Decision)>,
    pub(crate) deleted: Vec<u64>,
    /// Decisions of a scope the table does not hold (a country, an AS).
    pub(crate) skipped: usize,
}

/// Why a pull failed.
#[derive(Debug)]
pub(crate) enum PullError {
    /// The LAPI could not be reached or did not answer in time.
    Unreachable(String),
    /// It answered with a status other than `200`; `403` is a bad key.
    Status(StatusCode),
    /// The answer is not a decision stream; nothing of it is applied.
    Malformed(String),
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::Status(s) if *s == StatusCode::FORBIDDEN => {
                write!(f, "refused the bouncer's key (403)")
            }
            Self::Status(s) => write!(f, "answered {s}"),
            Self::Malformed(e) => write!(f, "sent a malformed answer: {e}"),
        }
    }
}

/// Pulls once: every decision in force with `startup`, else what changed
/// since this bouncer's last pull.
pub(crate) async fn pull(
    endpoint: &Endpoint,
    startup: bool,
    timeout: Duration,
) -> Result<Delta, PullError> {
    let body = tokio::time::timeout(timeout, fetch(endpoint, startup))
        .await
        .map_err(|_| PullError::Unreachable(format!("no answer within {timeout:?}")))??;
    parse(&body, Instant::now())
}

async fn fetch(endpoint: &Endpoint, startup: bool) -> Result<Vec<u8>, PullError> {
    let separator = if endpoint.path.contains('?') {
        '&'
    } else {
        '?'
    };
    let target = if startup {
        format!("{}{separator}startup=true", endpoint.path)
    } else {
        endpoint.path.clone()
    };
    let mut request = Request::get(target);
    if let Some(key) = &endpoint.api_key {
        request = request.header("x-api-key", key);
    }
    let request = request
        .body(OneShot(None))
        .map_err(|e| PullError::Malformed(e.to_string()))?;
    let (status, body) = send(&endpoint.server, request).await?;
    if status != StatusCode::OK {
        return Err(PullError::Status(status));
    }
    Ok(body)
}

/// Sends one request on a connection of its own and reads the whole
/// answer; the request's own headers are kept, with `Host`, the crate's
/// `User-Agent` and `Connection: close` added.
pub(crate) async fn send(
    server: &Server,
    mut request: Request<OneShot>,
) -> Result<(StatusCode, Vec<u8>), PullError> {
    let unreachable = |e: &dyn std::fmt::Display| PullError::Unreachable(e.to_string());
    let tcp = tokio::net::TcpStream::connect(&server.authority)
        .await
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let headers = request.headers_mut();
    let host = http::HeaderValue::from_str(&server.authority).map_err(|e| unreachable(&e))?;
    headers.insert(http::header::HOST, host);
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("tower-no-response/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    #[cfg(feature = "crowdsec-tls")]
    if let Some(tls) = &server.tls {
        let stream = tls.connect(tcp).await.map_err(|e| unreachable(&e))?;
        return exchange(stream, request).await;
    }
    exchange(tcp, request).await
}

async fn exchange<I>(io: I, request: Request<OneShot>) -> Result<(StatusCode, Vec<u8>), PullError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |e: &dyn std::fmt::Display| PullError::Unreachable(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(&e))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = read_body(response.into_body()).await;
    driver.abort();
    Ok((status, body?))
}

/// The whole body, up to [`MAX_BODY`].
async fn read_body(body: Incoming) -> Result<Vec<u8>, PullError> {
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| PullError::Unreachable(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(PullError::Malformed(format!(
                    "longer than {MAX_BODY} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// A request body sent in one piece, or none.
#[derive(Debug)]
pub(crate) struct OneShot(pub(crate) Option<hyper::body::Bytes>);

impl http_body::Body for OneShot {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|data| Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let len = self.0.as_ref().map_or(0, |d| d.len() as u64);
        http_body::SizeHint::with_exact(len)
    }
}

#[derive(Deserialize)]
struct Stream {
    new: Option<Vec<Wire>>,
    deleted: Option<Vec<Wire>>,
}

/// A decision as the LAPI writes it; the fields a bouncer does not use are
/// ignored.
#[derive(Deserialize)]
struct Wire {
    id: u64,
    duration: String,
    scenario: String,
    scope: String,
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

/// The stream answer, checked whole before any of it is used.
pub(crate) fn parse(body: &[u8], now: Instant) -> Result<Delta, PullError> {
    let stream: Stream =
        serde_json::from_slice(body).map_err(|e| PullError::Malformed(e.to_string()))?;
    let mut delta = Delta::default();
    // Many decisions share a scenario: one allocation each.
    let mut scenarios: std::collections::HashMap<String, Arc<str>> =
        std::collections::HashMap::new();
    for wire in stream.deleted.unwrap_or_default() {
        delta.deleted.push(wire.id);
    }
    for wire in stream.new.unwrap_or_default() {
        let bad = |why: String| PullError::Malformed(format!("decision {}: {why}", wire.id));
        let target = match wire.scope.to_ascii_lowercase().as_str() {
            "ip" => Target::ip(
                wire.value
                    .parse::<IpAddr>()
                    .map_err(|_| bad(format!("{:?} is not an IP address", wire.value)))?,
            ),
            "range" => Target::range(
                wire.value
                    .parse::<IpNet>()
                    .map_err(|_| bad(format!("{:?} is not an IP range", wire.value)))?,
            ),
            _ => {
                delta.skipped += 1;
                continue;
            }
        };
        let left = go_duration(&wire.duration)
            .ok_or_else(|| bad(format!("{:?} is not a duration", wire.duration)))?;
        let remedy = if wire.kind.eq_ignore_ascii_case("ban") {
            Remedy::Ban
        } else {
            Remedy::Other
        };
        delta.new.push((
            wire.id,
            Decision {
                target,
                remedy,
                // Even Go's longest duration fits; if the clock cannot say
                // when, the decision lasts as long as the clock can.
                until: now.checked_add(left).unwrap_or_else(|| far_future(now)),
                scenario: match scenarios.get(&wire.scenario) {
                    Some(shared) => Arc::clone(shared),
                    None => {
                        let shared: Arc<str> = Arc::from(wire.scenario.as_str());
                        scenarios.insert(wire.scenario, Arc::clone(&shared));
                        shared
                    }
                },
            },
        ));
    }
    Ok(delta)
}

/// The latest instant after `now` that the clock can hold, in whole
/// seconds down from Go's longest duration.
fn far_future(now: Instant) -> Instant {
    let mut ahead = super::decisions::GO_MAX_DURATION;
    loop {
        if let Some(at) = now.checked_add(ahead) {
            return at;
        }
        ahead /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_answer_is_read_whole() {
        let body = br#"{"deleted":[{"duration":"-1ms","id":1,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.7"}],
            "new":[{"duration":"29.1s","id":2,"origin":"cscli","scenario":"scan","scope":"Range","type":"ban","value":"198.51.100.0/24"},
                   {"duration":"1h","id":3,"origin":"crowdsec","scenario":"c","scope":"Ip","type":"captcha","value":"2001:db8::5"},
                   {"duration":"1h","id":4,"origin":"crowdsec","scenario":"geo","scope":"Country","type":"ban","value":"XX"}]}"#;
        let delta = parse(body, Instant::now()).unwrap();
        assert_eq!(delta.deleted, vec![1]);
        assert_eq!(delta.new.len(), 2);
        assert_eq!(delta.new[0].1.remedy, Remedy::Ban);
        assert_eq!(delta.new[1].1.remedy, Remedy::Other);
        assert_eq!(delta.skipped, 1);
        let empty = parse(br#"{"deleted":null,"new":null}"#, Instant::now()).unwrap();
        assert!(empty.new.is_empty() && empty.deleted.is_empty());
    }

    /// A duration longer than Go can hold is as long as it can, and
    /// lasts: no overflow, no panic of the puller.
    #[test]
    fn a_huge_duration_lasts_as_long_as_go_says() {
        let body = br#"{"new":[{"duration":"3000000000000000h","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}]}"#;
        let now = Instant::now();
        let delta = parse(body, now).unwrap();
        let until = delta.new[0].1.until;
        assert!(until >= now + Duration::from_secs(100 * 365 * 86_400));
    }

    #[test]
    fn a_malformed_answer_is_refused_whole() {
        for body in [
            &br#"{"new":[{"duration":"1h","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"not-an-ip"}]}"#[..],
            br#"{"new":[{"duration":"soon","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}]}"#,
            br#"{"new":[{"duration":"1h","id":2,"scenario":"s","scope":"Range","type":"ban","value":"192.0.2.1/33"}]}"#,
            br#"{"new":[{"id":2}]}"#,
            br#"<html>maintenance</html>"#,
            br#"{"new":[{"duration":"1h","id":-2,"scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}]}"#,
        ] {
            assert!(
                matches!(parse(body, Instant::now()), Err(PullError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
