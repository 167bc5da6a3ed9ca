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
use std::collections::HashMap;

use serde::de::{
    DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

use super::decisions::{Decision, Epoch, Remedy, Target, go_duration};

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
    /// Decisions by id; their scenarios index `names`.
    pub(crate) new: Vec<(u64, Decision)>,
    pub(crate) names: Vec<Arc<str>>,
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
/// since this bouncer's last pull. The answer is parsed on a blocking
/// thread as its chunks arrive, so its text is never held whole.
pub(crate) async fn pull(
    endpoint: &Endpoint,
    startup: bool,
    timeout: Duration,
    epoch: Epoch,
) -> Result<Delta, PullError> {
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let now = Instant::now();
    let parsed = tokio::task::spawn_blocking(move || {
        parse(std::io::BufReader::new(Chunks::new(rx)), now, epoch)
    });
    // Whatever ends the fetch drops the sender, which ends the parse.
    fetch(endpoint, startup, tx, timeout).await?;
    parsed
        .await
        .map_err(|_| PullError::Malformed("its reading panicked".to_owned()))?
}

/// How many chunks of an answer may wait for the parse.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Fetches the answer into `to_parse`. `timeout` bounds the time spent
/// waiting on the LAPI, not on the parse: a big answer read slower than
/// it arrives is no slow LAPI.
async fn fetch(
    endpoint: &Endpoint,
    startup: bool,
    to_parse: tokio::sync::mpsc::Sender<hyper::body::Bytes>,
    timeout: Duration,
) -> Result<(), PullError> {
    let mut deadline = tokio::time::Instant::now() + timeout;
    let late = || PullError::Unreachable(format!("no answer within {timeout:?}"));
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
    let answer = tokio::time::timeout_at(deadline, open(&endpoint.server, request))
        .await
        .map_err(|_| late())??;
    if answer.status != StatusCode::OK {
        return Err(PullError::Status(answer.status));
    }
    let mut body = std::pin::pin!(answer.body);
    let mut len = 0;
    loop {
        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
        let Some(frame) = tokio::time::timeout_at(deadline, next)
            .await
            .map_err(|_| late())?
        else {
            return Ok(());
        };
        let frame = frame.map_err(|e| PullError::Unreachable(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            len += data.len();
            if len > MAX_BODY {
                return Err(PullError::Malformed(format!(
                    "longer than {MAX_BODY} bytes"
                )));
            }
            let waited = tokio::time::Instant::now();
            if to_parse.send(data).await.is_err() {
                // The parse refused what came so far, and says why.
                return Ok(());
            }
            deadline += waited.elapsed();
        }
    }
}

/// An answer's chunks as one reader, for the parse's thread.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<hyper::body::Bytes>,
    chunk: hyper::body::Bytes,
    at: usize,
}

impl Chunks {
    fn new(rx: tokio::sync::mpsc::Receiver<hyper::body::Bytes>) -> Self {
        Self {
            rx,
            chunk: hyper::body::Bytes::new(),
            at: 0,
        }
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Sends one request on a connection of its own and reads the whole
/// answer; the request's own headers are kept, with `Host`, the crate's
/// `User-Agent` and `Connection: close` added.
pub(crate) async fn send(
    server: &Server,
    request: Request<OneShot>,
) -> Result<(StatusCode, Vec<u8>), PullError> {
    let answer = open(server, request).await?;
    let body = read_body(answer.body).await?;
    Ok((answer.status, body))
}

/// An answer whose body is still to be read, and the task that drives its
/// connection, stopped when the answer is dropped.
struct Answer {
    status: StatusCode,
    body: Incoming,
    _driver: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn open(server: &Server, mut request: Request<OneShot>) -> Result<Answer, PullError> {
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

async fn exchange<I>(io: I, request: Request<OneShot>) -> Result<Answer, PullError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |e: &dyn std::fmt::Display| PullError::Unreachable(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unreachable(&e))?;
    let driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    Ok(Answer {
        status: response.status(),
        body: response.into_body(),
        _driver: driver,
    })
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

/// The stream answer, read as it arrives and checked whole before any of
/// it is used: a decision is kept in its compact form as soon as it is
/// read, so the answer's text is never held, only the chunks in flight.
pub(crate) fn parse(
    body: impl std::io::Read,
    now: Instant,
    epoch: Epoch,
) -> Result<Delta, PullError> {
    let mut reading = Reading {
        delta: Delta::default(),
        scenarios: HashMap::new(),
        now,
        epoch,
    };
    let mut de = serde_json::Deserializer::from_reader(body);
    let read = (&mut reading).deserialize(&mut de).and_then(|()| de.end());
    read.map_err(|e| PullError::Malformed(e.to_string()))?;
    let mut delta = reading.delta;
    delta.new.shrink_to_fit();
    Ok(delta)
}

/// An answer being read: what it brought so far, and each scenario's index
/// in [`Delta::names`], by name.
struct Reading {
    delta: Delta,
    scenarios: HashMap<Arc<str>, u32>,
    now: Instant,
    epoch: Epoch,
}

/// The answer: an object with `new` and `deleted`, each a list or `null`.
impl<'de> DeserializeSeed<'de> for &mut Reading {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Reading {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a decision stream")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(list) = map.next_key_seed(Text(|key: &str| {
            Ok(match key {
                "new" => Some(true),
                "deleted" => Some(false),
                _ => None,
            })
        }))? {
            match list {
                Some(new) => map.next_value_seed(ListSeed {
                    new,
                    reading: &mut *self,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `new` or `deleted`: a list of decisions, or `null`.
struct ListSeed<'r> {
    new: bool,
    reading: &'r mut Reading,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of decisions or null")
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let reading = self.reading;
        while let Some(wire) = seq.next_element_seed(WireSeed(&mut *reading))? {
            if !self.new {
                reading.delta.deleted.push(wire.id);
                continue;
            }
            let bad = |why: String| A::Error::custom(format!("decision {}: {why}", wire.id));
            let target = match wire.scope {
                Scope::Ip => Target::ip(
                    wire.value
                        .parse::<IpAddr>()
                        .ok_or_else(|| bad(format!("{} is not an IP address", wire.value)))?,
                ),
                Scope::Range => Target::range(
                    wire.value
                        .parse::<IpNet>()
                        .ok_or_else(|| bad(format!("{} is not an IP range", wire.value)))?,
                ),
                Scope::Other => {
                    reading.delta.skipped += 1;
                    continue;
                }
            };
            let left = wire
                .duration
                .ok_or_else(|| bad(format!("{} is not a duration", wire.duration_text)))?;
            reading.delta.new.push((
                wire.id,
                Decision {
                    target,
                    remedy: wire.remedy,
                    until: reading.epoch.until_after(reading.now, left),
                    scenario: wire.scenario,
                },
            ));
        }
        Ok(())
    }
}

/// A decision as the LAPI writes it, read field by field without keeping
/// its text; the fields a bouncer does not use are skipped.
struct Wire {
    id: u64,
    duration: Option<Duration>,
    duration_text: Short,
    scenario: u32,
    scope: Scope,
    remedy: Remedy,
    value: Short,
}

#[derive(Clone, Copy)]
enum Scope {
    Ip,
    Range,
    /// A country, an AS, a user name: nothing the table holds.
    Other,
}

struct WireSeed<'r>(&'r mut Reading);

impl<'de> DeserializeSeed<'de> for WireSeed<'_> {
    type Value = Wire;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Wire, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WireSeed<'_> {
    type Value = Wire;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a decision")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire, A::Error> {
        #[derive(Clone, Copy)]
        enum Field {
            Id,
            Duration,
            Scenario,
            Scope,
            Type,
            Value,
            Other,
        }
        let (mut id, mut duration, mut scenario, mut scope, mut remedy, mut value) =
            (None, None, None, None, None, None);
        while let Some(field) = map.next_key_seed(Text(|key: &str| {
            Ok(match key {
                "id" => Field::Id,
                "duration" => Field::Duration,
                "scenario" => Field::Scenario,
                "scope" => Field::Scope,
                "type" => Field::Type,
                "value" => Field::Value,
                _ => Field::Other,
            })
        }))? {
            match field {
                Field::Id => id = Some(map.next_value::<u64>()?),
                Field::Duration => {
                    duration = Some(map.next_value_seed(Text(|text: &str| {
                        Ok((go_duration(text), Short::of(text)))
                    }))?);
                }
                Field::Scenario => {
                    let (scenarios, names) = (&mut self.0.scenarios, &mut self.0.delta.names);
                    scenario = Some(map.next_value_seed(Text(|name: &str| {
                        if let Some(&index) = scenarios.get(name) {
                            return Ok(index);
                        }
                        let index = u32::try_from(names.len())
                            .map_err(|_| "more scenarios than a table holds".to_owned())?;
                        let name: Arc<str> = Arc::from(name);
                        names.push(Arc::clone(&name));
                        scenarios.insert(name, index);
                        Ok(index)
                    }))?);
                }
                Field::Scope => {
                    scope = Some(map.next_value_seed(Text(|scope: &str| {
                        Ok(if scope.eq_ignore_ascii_case("ip") {
                            Scope::Ip
                        } else if scope.eq_ignore_ascii_case("range") {
                            Scope::Range
                        } else {
                            Scope::Other
                        })
                    }))?);
                }
                Field::Type => {
                    remedy = Some(map.next_value_seed(Text(|kind: &str| {
                        Ok(if kind.eq_ignore_ascii_case("ban") {
                            Remedy::Ban
                        } else {
                            Remedy::Other
                        })
                    }))?);
                }
                Field::Value => {
                    value = Some(map.next_value_seed(Text(|text: &str| Ok(Short::of(text))))?);
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = |field: &'static str| A::Error::missing_field(field);
        let (duration, duration_text) = duration.ok_or_else(|| missing("duration"))?;
        Ok(Wire {
            id: id.ok_or_else(|| missing("id"))?,
            duration,
            duration_text,
            scenario: scenario.ok_or_else(|| missing("scenario"))?,
            scope: scope.ok_or_else(|| missing("scope"))?,
            remedy: remedy.ok_or_else(|| missing("type"))?,
            value: value.ok_or_else(|| missing("value"))?,
        })
    }
}

/// A string read by a function of it, which may refuse it; the text is
/// borrowed from the reader's buffer, never kept.
struct Text<F>(F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> DeserializeSeed<'de> for Text<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Text<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        (self.0)(text).map_err(E::custom)
    }
}

/// A value short enough for any address or range, kept without an
/// allocation: longer text is none of them, and is named by its length.
#[derive(Clone, Copy)]
struct Short {
    bytes: [u8; 64],
    len: usize,
}

impl Short {
    fn of(text: &str) -> Self {
        let mut bytes = [0; 64];
        let len = text.len();
        if let Some(b) = bytes.get_mut(..len) {
            b.copy_from_slice(text.as_bytes());
        }
        Self { bytes, len }
    }

    fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes.get(..self.len)?).ok()
    }

    fn parse<T: std::str::FromStr>(&self) -> Option<T> {
        self.as_str()?.parse().ok()
    }
}

impl std::fmt::Display for Short {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.as_str() {
            Some(text) => write!(f, "{text:?}"),
            None => write!(f, "a value of {} bytes", self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &[u8]) -> Result<Delta, PullError> {
        let now = Instant::now();
        parse(body, now, Epoch::new(now))
    }

    #[test]
    fn a_stream_answer_is_read_whole() {
        let body = br#"{"deleted":[{"duration":"-1ms","id":1,"origin":"cscli","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.7"}],
            "new":[{"duration":"29.1s","id":2,"origin":"cscli","scenario":"scan","scope":"Range","type":"ban","value":"198.51.100.0/24"},
                   {"duration":"1h","id":3,"origin":"crowdsec","scenario":"c","scope":"Ip","type":"captcha","value":"2001:db8::5"},
                   {"duration":"1h","id":4,"origin":"crowdsec","scenario":"geo","scope":"Country","type":"ban","value":"XX"}]}"#;
        let delta = read(body).unwrap();
        assert_eq!(delta.deleted, vec![1]);
        assert_eq!(delta.new.len(), 2);
        assert_eq!(delta.new[0].1.remedy, Remedy::Ban);
        assert_eq!(delta.new[1].1.remedy, Remedy::Other);
        assert_eq!(delta.skipped, 1);
        let empty = read(br#"{"deleted":null,"new":null}"#).unwrap();
        assert!(empty.new.is_empty() && empty.deleted.is_empty());
    }

    /// A duration longer than Go can hold is as long as it can, and
    /// lasts: no overflow, no panic of the puller.
    #[test]
    fn a_huge_duration_lasts_as_long_as_go_says() {
        let body = br#"{"new":[{"duration":"3000000000000000h","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}]}"#;
        let delta = read(body).unwrap();
        assert_eq!(delta.new[0].1.until, u32::MAX);
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
            // Whole, and nothing after it.
            br#"{"new":[{"duration":"1h","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"}]"#,
            br#"{"new":null} {"new":null}"#,
            br#"{"new":{"id":2}}"#,
        ] {
            assert!(
                matches!(read(body), Err(PullError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// The answer is read as it arrives, in chunks of any size, and what
    /// it names more than once is kept once.
    #[test]
    fn an_answer_is_read_from_its_chunks() {
        let body = br#"{"new":[{"duration":"1h","id":7,"scenario":"ssh","scope":"Ip","type":"ban","value":"192.0.2.1"},
            {"duration":"1h","id":8,"scenario":"ssh","scope":"Range","type":"ban","value":"2001:db8::/48"},
            {"duration":"1h","id":9,"scenario":"http","scope":"Ip","type":"ban","value":"192.0.2.2"}],"deleted":[{"id":3,"duration":"0","scenario":"x","scope":"Ip","type":"ban","value":"192.0.2.3"}]}"#;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for size in [1, 3, 64, body.len()] {
            let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
            let now = Instant::now();
            let parsed = std::thread::spawn(move || parse(Chunks::new(rx), now, Epoch::new(now)));
            runtime.block_on(async {
                for chunk in body.chunks(size) {
                    tx.send(hyper::body::Bytes::copy_from_slice(chunk))
                        .await
                        .unwrap();
                }
            });
            drop(tx);
            let delta = parsed.join().unwrap().unwrap();
            let ids: Vec<u64> = delta.new.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, [7, 8, 9], "chunks of {size}");
            assert_eq!(delta.deleted, [3]);
            assert_eq!(delta.names.len(), 3, "ssh, http, and the deleted one's x");
            assert_eq!(delta.new[0].1.scenario, delta.new[1].1.scenario);
        }
    }

    /// A value no address or range is as long as is named by its length.
    #[test]
    fn a_long_value_is_refused_by_its_length() {
        let long = "9".repeat(100);
        let body = format!(
            r#"{{"new":[{{"duration":"1h","id":2,"scenario":"s","scope":"Ip","type":"ban","value":"{long}"}}]}}"#
        );
        let Err(PullError::Malformed(why)) = read(body.as_bytes()) else {
            panic!("accepted");
        };
        assert!(why.contains("a value of 100 bytes"), "{why}");
        // Of a scope the table does not hold, it is skipped.
        let body = body.replace(r#""Ip""#, r#""Username""#);
        assert_eq!(read(body.as_bytes()).unwrap().skipped, 1);
    }
}
