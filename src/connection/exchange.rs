//! Where an HTTP/1 connection stands, for its timers: whether the server
//! waits for a request head, for nothing (an idle keep-alive), or for
//! itself (a handler, a body, a response being written). The connection's
//! timers hang on it, so that each runs only while the server waits for the
//! client, as nginx's do:
//!
//! - the header timeout, while a request head is incomplete: from accept
//!   for the first, from the first byte of each later one, or from the end
//!   of the previous response if that is later, since a server that is
//!   still answering does not read;
//! - the keep-alive timeout, while the connection is idle between a
//!   response and the first byte of the next request.
//!
//! # One source of truth
//!
//! What hyper decides is taken from what hyper does, never re-derived:
//!
//! - a request reaching the service means hyper parsed its head
//!   ([`Exchanges::begin`], called by the layer or by the serve loop's
//!   adapter); the exchange lasts until its response body is dropped,
//!   which hyper does once it has written it;
//! - a tunnel exists only where hyper made one: a `101`, or a `2xx` to a
//!   request whose method is exactly `CONNECT` ([`InFlight::answered`]),
//!   or the stream being read from another task than the one that serves
//!   the connection, which happens once hyper hands an upgraded
//!   connection to its handler;
//! - bytes the server writes while no exchange the service saw is open
//!   answer a head that was complete (an outer middleware answered before
//!   the layer, or hyper refused the head itself).
//!
//! One thing is read off the bytes the client sends, since nothing in
//! hyper's API tells it: where each request head begins and ends, so that
//! a head that has begun is timed. [`Requests`] follows the client's bytes
//! with hyper's own rules and limits: empty lines before a head are skipped
//! as httparse skips them; a head ends at its first empty line, which is
//! where httparse completes a valid head; the body is framed as hyper's
//! server frames it (the last `Transfer-Encoding` line decides chunked,
//! which makes any `Content-Length` void; otherwise every `Content-Length`
//! line must be the same run of digits; a request with neither has no
//! body), and a chunked body is walked with the grammar of hyper's decoder.
//! Every request hyper refuses (a head it cannot parse, a framing it calls
//! invalid, a head over its 408 KiB buffer or with more than 100 headers)
//! is one hyper answers with an error and closes the connection after, so
//! the two readings can only part on input that ends the connection. Even
//! then the reading fails closed: what it cannot follow keeps the header
//! bound, and runs out as an orderly close rather than a drop.
//!
//! Most reads are one whole head and nothing else, and those are not read
//! line by line: the head ends where the read ends (no empty line comes
//! before its last), and its body is framed by hyper's own word, the size
//! hint of the body hyper hands the service, which the service side
//! reports with the exchange ([`Exchanges::begin`]). This holds only while
//! the service side has reported every head before it, so that the report
//! is the head's own; a head taken whole and not reported, or whose body's
//! length hyper did not know from it (chunked), is kept and read line by
//! line at the next read, as any other.
//!
//! HTTP/2 is told by all 24 bytes of its preface, as hyper tells it; until
//! they are in, the bytes are a request head in progress. On HTTP/2 the
//! timers read frame headers, nine bytes each, and skip every payload: the
//! client's `HEADERS` open a stream (and, without `END_HEADERS`, begin a
//! header block that the header timeout bounds), `END_STREAM` and
//! `RST_STREAM` end one; the server's own frames, which are h2's, say when
//! it is done with a stream and when it sends `GOAWAY`. A frame that breaks
//! the protocol is h2's to refuse, and it closes the connection.
//!
//! The header timeout runs as a deadline, never as an inactivity timer:
//! nothing the client sends moves it. The timer is armed no further ahead
//! than the shortest timeout, so that a deadline that appears later can
//! only fall after it, and a busy connection costs no timer reset per
//! request, only a look each time the timer runs out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use http::StatusCode;
use http_body::SizeHint;
use memchr::memmem::Finder;
use tokio::time::Instant;

/// hyper's largest read buffer for a request head (`max_buf_size`'s
/// default): a head that does not fit is refused with a `431`.
pub(crate) const MAX_HEAD: usize = 8192 + 4096 * 100;

/// hyper's most headers in one request head (`max_headers`' default).
const MAX_HEADERS: usize = 100;

/// The longest read taken whole as one head (see [`Requests::whole`]),
/// and so the most a connection keeps of one.
const WHOLE_HEAD: usize = 4096;

/// The HTTP/2 connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request head was not complete in time: a drop.
    Header,
    /// A new connection on which no request began in time: an orderly
    /// close and no drop, since browsers open connections ahead of need
    /// and may leave them unused.
    Unused,
    /// Nothing happened on an idle connection: an orderly close.
    Idle,
    /// Bytes the reading could not follow, not answered within the header
    /// timeout: an orderly close, since only hyper knows what they were.
    Unfollowed,
    /// A response the client accepted no byte of for the send timeout.
    Send,
    /// An HTTP/2 connection the server sent `GOAWAY` on, still open after
    /// the grace: closed whatever is in flight.
    Goaway,
}

/// The timeouts that apply; `None` never runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) send: Option<Duration>,
}

impl Timeouts {
    /// The shortest timeout set: no deadline that appears later can fall
    /// before a timer armed this far ahead.
    fn period(self) -> Option<Duration> {
        [self.header, self.keepalive, self.send]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The exchanges hyper runs on one connection, as the service side sees
/// them: shared by the connection's stream and whoever sees its requests
/// (the layer under `axum::serve`, the serve loop's adapter).
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    begun: AtomicU64,
    ended: AtomicU64,
    tunnel: AtomicBool,
    /// How hyper framed the body of the request that began last: its
    /// length (0 for none), or [`NOT_EXACT`].
    framing: AtomicU64,
}

/// A body whose length hyper did not know from its head: chunked.
const NOT_EXACT: u64 = u64::MAX;

impl Exchanges {
    /// A request hyper parsed and handed to the service, whose body hyper
    /// framed as `body` says; it is in flight until the guard is dropped
    /// with its response.
    pub(crate) fn begin(self: &Arc<Self>, body: &SizeHint) -> InFlight {
        let framing = body.exact().map_or(NOT_EXACT, |n| n.min(NOT_EXACT - 1));
        self.framing.store(framing, Ordering::Relaxed);
        self.begun.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// The length hyper gave the body of request `n` (counted from 1, 0
    /// for no body), if `n` is the request that began last and hyper knew
    /// the length from its head.
    fn framing_of(&self, n: u64) -> Option<u64> {
        (self.begun.load(Ordering::Acquire) == n)
            .then(|| self.framing.load(Ordering::Relaxed))
            .filter(|&framing| framing != NOT_EXACT)
    }

    /// How many exchanges have begun, the one in flight included.
    pub(crate) fn begun(&self) -> u64 {
        self.begun.load(Ordering::Acquire)
    }
}

/// One exchange in flight; dropped when hyper is done with its response.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Exchanges>);

impl InFlight {
    /// Records the response to a request: a `101`, or a `2xx` to a
    /// request whose method is exactly `CONNECT`, is where hyper stops
    /// reading HTTP/1.
    pub(crate) fn answered(&self, connect: bool, status: StatusCode) {
        if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
            self.0.tunnel.store(true, Ordering::Release);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
    }
}

/// What the connection is, as far as its timers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The first bytes, as many as have come, are the HTTP/2 preface's.
    Preface(u8),
    Http1,
    Http2,
    /// Upgraded or tunnelled: not HTTP any more, and no timer applies.
    Opaque,
}

/// One connection's timers: what they hang on, and when the next runs out.
#[derive(Debug)]
pub(crate) struct Clock {
    timeouts: Timeouts,
    exchanges: Arc<Exchanges>,
    requests: Requests,
    protocol: Protocol,
    /// The exchange counts as last read from `exchanges`.
    begun: u64,
    ended: u64,
    accepted: Instant,
    /// When the server last finished answering: a response's end, or a
    /// write while no exchange the service saw was open.
    answered_at: Instant,
    /// Whether a byte of a request ever came.
    requested: bool,
    /// Since when a write has waited for the client to read.
    blocked_since: Option<Instant>,
    /// An HTTP/2 connection's streams, once all of its preface is in.
    h2: Option<Box<Streams>>,
}

impl Clock {
    /// A connection accepted at `accepted`.
    pub(crate) fn new(timeouts: Timeouts, exchanges: Arc<Exchanges>, accepted: Instant) -> Self {
        Self {
            timeouts,
            exchanges,
            requests: Requests::default(),
            protocol: Protocol::Preface(0),
            begun: 0,
            ended: 0,
            accepted,
            answered_at: accepted,
            requested: false,
            blocked_since: None,
            h2: None,
        }
    }

    /// How far ahead a timer may be armed without missing a deadline that
    /// appears meanwhile; `None` when no timeout is set.
    pub(crate) fn period(&self) -> Option<Duration> {
        self.timeouts.period()
    }

    #[cfg(test)]
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether any timer may still apply: `false` once the connection is
    /// a tunnel, for good.
    pub(crate) fn is_timed(&self) -> bool {
        self.protocol != Protocol::Opaque
    }

    /// A `GOAWAY` the connection side may send before it closes an HTTP/2
    /// connection in order, if the server is between frames.
    pub(crate) fn goaway(&self) -> Option<[u8; 17]> {
        self.h2.as_ref().and_then(|h2| h2.goaway())
    }

    /// The connection is no longer HTTP/1 as hyper reads it.
    pub(crate) fn tunnel(&mut self) {
        self.protocol = Protocol::Opaque;
    }

    /// Follows bytes the client sent.
    pub(crate) fn read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.requested {
            self.requested = true;
        }
        match self.protocol {
            Protocol::Preface(seen) => {
                let seen = usize::from(seen);
                let n = bytes.len().min(PREFACE.len() - seen);
                if bytes[..n] != PREFACE[seen..seen + n] {
                    // Not HTTP/2: what came so far is the first head, read
                    // as hyper reads it once it knows.
                    self.protocol = Protocol::Http1;
                    let mut now = Now(Some(self.accepted));
                    self.requests.feed(&PREFACE[..seen], &mut now);
                    self.read_http1(bytes, &mut now);
                } else if seen + n == PREFACE.len() {
                    self.protocol = Protocol::Http2;
                    let mut streams = Box::new(Streams::new(self.accepted));
                    streams.read(&bytes[n..], &mut Now(None));
                    self.h2 = Some(streams);
                } else {
                    self.protocol = Protocol::Preface(u8::try_from(seen + n).unwrap_or(u8::MAX));
                }
            }
            Protocol::Http1 => {
                // The first head is bounded from accept.
                let first = (self.requests.heads == 0).then_some(self.accepted);
                self.read_http1(bytes, &mut Now(first));
            }
            Protocol::Http2 => {
                if let Some(h2) = self.h2.as_mut() {
                    h2.read(bytes, &mut Now(None));
                }
            }
            Protocol::Opaque => {}
        }
    }

    /// Follows HTTP/1 bytes. A read that is one whole head and nothing
    /// else, as most are, is taken whole, while the service side has seen
    /// every head before it: its body's framing is then hyper's own, which
    /// the service side reports, and the head is read line by line only if
    /// it does not. Anything else is read line by line at once.
    fn read_http1(&mut self, bytes: &[u8], now: &mut Now) {
        if self.requests.at == At::Whole {
            let reported = self.exchanges.framing_of(self.requests.heads);
            self.requests.settle(reported, now);
        }
        let taken = self.requests.at == At::Between
            && self.exchanges.begun() == self.requests.heads
            && self.requests.whole(bytes);
        if !taken {
            self.requests.feed(bytes, now);
        }
    }

    /// Follows a write of `n` bytes of `bufs` the client accepted.
    pub(crate) fn wrote(&mut self, bufs: &[std::io::IoSlice<'_>], n: usize) {
        if n == 0 {
            return;
        }
        self.blocked_since = None;
        if let Some(h2) = self.h2.as_mut() {
            let mut left = n;
            let mut now = Now(None);
            for buf in bufs {
                let len = buf.len().min(left);
                h2.wrote(&buf[..len], &mut now);
                left -= len;
                if left == 0 {
                    break;
                }
            }
            return;
        }
        if self.protocol != Protocol::Http1 {
            return;
        }
        // The time of an end seen here matters only if no exchange is open
        // after it: the next end seen overwrites it before any use.
        let mut now = Now(None);
        self.sync(&mut now, false);
        if self.begun == self.ended {
            // No exchange the service saw is open: this answers a head
            // that was complete, and what the reading holds as complete
            // and unanswered is answered.
            self.requests.pending = 0;
            self.answered_at = now.get();
        }
    }

    /// A write found the client's window full.
    pub(crate) fn blocked(&mut self) {
        if self.blocked_since.is_none() && self.timeouts.send.is_some() {
            self.blocked_since = Some(Instant::now());
        }
    }

    /// Reads what the service side did since the last look; `stamp` reads
    /// the time of an end seen, for a caller that will not.
    fn sync(&mut self, now: &mut Now, stamp: bool) {
        let begun = self.exchanges.begun.load(Ordering::Acquire);
        let ended = self.exchanges.ended.load(Ordering::Acquire);
        if begun != self.begun {
            let handed = u32::try_from(begun - self.begun).unwrap_or(u32::MAX);
            self.requests.pending = self.requests.pending.saturating_sub(handed);
            self.begun = begun;
        }
        if ended != self.ended {
            self.ended = ended;
            if stamp {
                self.answered_at = now.get();
            }
        }
        if self.exchanges.tunnel.load(Ordering::Acquire) {
            self.protocol = Protocol::Opaque;
        }
    }

    /// When the timer that applies now runs out, and what it is.
    pub(crate) fn deadline(&mut self) -> Option<(Instant, Expiry)> {
        let send = self
            .blocked_since
            .zip(self.timeouts.send)
            .and_then(|(since, t)| since.checked_add(t))
            .map(|at| (at, Expiry::Send));
        let read = match self.protocol {
            Protocol::Preface(_) => self.first_head(),
            // A write waits for the client: the server is answering, and
            // only the send timeout applies, as nginx's does.
            Protocol::Http1 if self.blocked_since.is_some() => None,
            Protocol::Http1 => {
                self.sync(&mut Now(None), true);
                self.read_deadline()
            }
            Protocol::Http2 => self.h2.as_ref().and_then(|h2| h2.deadline(self.timeouts)),
            Protocol::Opaque => None,
        };
        match (read, send) {
            (Some(r), Some(s)) => Some(if s.0 < r.0 { s } else { r }),
            (r, s) => r.or(s),
        }
    }

    /// The first request's bound, from accept.
    fn first_head(&self) -> Option<(Instant, Expiry)> {
        let expiry = if self.requested {
            Expiry::Header
        } else {
            Expiry::Unused
        };
        at(self.accepted, self.timeouts.header, expiry)
    }

    fn read_deadline(&self) -> Option<(Instant, Expiry)> {
        if self.protocol != Protocol::Http1 {
            return None;
        }
        // The server is answering, or has a whole head to answer: it does
        // not read, and waits for no one.
        if self.begun != self.ended || self.requests.pending > 0 {
            return None;
        }
        let since = |t: Instant| t.max(self.answered_at);
        if let Some(lost) = self.requests.lost_at {
            let bound = self.timeouts.header.or(self.timeouts.keepalive);
            return at(since(lost), bound, Expiry::Unfollowed);
        }
        if let Some(began) = self.requests.began {
            return at(since(began), self.timeouts.header, Expiry::Header);
        }
        if self.requests.heads == 0 {
            // Only empty lines so far, which begin no request.
            return at(self.accepted, self.timeouts.header, Expiry::Unused);
        }
        at(self.answered_at, self.timeouts.keepalive, Expiry::Idle)
    }
}

/// An HTTP/2 connection's streams, read off the frame headers that cross
/// it both ways; payloads are skipped. The client's frames say when a
/// stream opens, when its header block is complete and when the client is
/// done with it; hyper's own frames say when the server is done with it
/// and when it sends `GOAWAY`. h2 itself refuses a client whose frames
/// break the protocol, and closes the connection.
#[derive(Debug)]
struct Streams {
    reads: Frames,
    writes: Frames,
    /// Each stream open: its id, and whether the client and the server
    /// are done with it.
    open: Vec<(u32, bool, bool)>,
    last_client_stream: u32,
    /// When the connection began (its first stream's bound), and when the
    /// last stream closed.
    idle_since: Option<Instant>,
    began: Instant,
    /// A header block begun and not ended, since.
    header_block: Option<Instant>,
    /// When the server sent `GOAWAY`.
    goaway_at: Option<Instant>,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Most streams followed at once: h2 refuses more than hyper allows
/// (200), so more open means frames this reading has lost track of.
const MAX_OPEN: usize = 1024;

impl Streams {
    fn new(began: Instant) -> Self {
        Self {
            reads: Frames::default(),
            writes: Frames::default(),
            open: Vec::new(),
            last_client_stream: 0,
            idle_since: None,
            began,
            header_block: None,
            goaway_at: None,
        }
    }

    fn read(&mut self, mut bytes: &[u8], now: &mut Now) {
        while let Some(frame) = self.reads.next(&mut bytes) {
            let end = frame.flags & END_STREAM != 0;
            match frame.kind {
                HEADERS => {
                    if frame.flags & END_HEADERS == 0 {
                        self.header_block.get_or_insert_with(|| now.get());
                    }
                    match self.find(frame.stream) {
                        Some(i) => self.open[i].1 |= end,
                        None if frame.stream > self.last_client_stream
                            && self.open.len() < MAX_OPEN =>
                        {
                            self.last_client_stream = frame.stream;
                            self.open.push((frame.stream, end, false));
                            self.idle_since = None;
                        }
                        None => {}
                    }
                }
                CONTINUATION if frame.flags & END_HEADERS != 0 => self.header_block = None,
                DATA if end => {
                    if let Some(i) = self.find(frame.stream) {
                        self.open[i].1 = true;
                    }
                }
                RST_STREAM => self.close(frame.stream),
                _ => {}
            }
            self.settle(now);
        }
    }

    fn wrote(&mut self, mut bytes: &[u8], now: &mut Now) {
        while let Some(frame) = self.writes.next(&mut bytes) {
            match frame.kind {
                HEADERS | DATA if frame.flags & END_STREAM != 0 => {
                    if let Some(i) = self.find(frame.stream) {
                        self.open[i].2 = true;
                    }
                }
                RST_STREAM => self.close(frame.stream),
                GOAWAY => {
                    self.goaway_at.get_or_insert_with(|| now.get());
                }
                _ => {}
            }
            self.settle(now);
        }
    }

    fn find(&self, stream: u32) -> Option<usize> {
        self.open.iter().position(|&(id, ..)| id == stream)
    }

    fn close(&mut self, stream: u32) {
        if let Some(i) = self.find(stream) {
            self.open.swap_remove(i);
        }
    }

    /// Forgets the streams both sides are done with; the connection is idle
    /// from when the last one goes.
    fn settle(&mut self, now: &mut Now) {
        let before = self.open.len();
        self.open.retain(|&(_, client, server)| !(client && server));
        if before > 0 && self.open.is_empty() {
            self.idle_since = Some(now.get());
        }
    }

    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        if let Some(sent) = self.goaway_at {
            let grace = timeouts.header.or(timeouts.keepalive);
            return at(sent, grace, Expiry::Goaway);
        }
        if let Some(began) = self.header_block {
            return at(began, timeouts.header, Expiry::Header);
        }
        if self.last_client_stream == 0 {
            return at(self.began, timeouts.header, Expiry::Unused);
        }
        let since = self.idle_since?;
        at(since, timeouts.keepalive, Expiry::Idle)
    }

    /// `GOAWAY` with no error, naming the last stream the client opened,
    /// if the server is between frames.
    fn goaway(&self) -> Option<[u8; 17]> {
        if !self.writes.between() {
            return None;
        }
        let mut frame = [0u8; 17];
        frame[..9].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        frame[9..13].copy_from_slice(&self.last_client_stream.to_be_bytes());
        Some(frame)
    }
}

/// One direction's frames: where the next frame header begins.
#[derive(Debug, Default)]
struct Frames {
    head: [u8; 9],
    filled: u8,
    /// Payload bytes of the current frame still to skip.
    skip: u32,
}

/// A frame header.
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Frames {
    /// The next frame header in `bytes`, which are consumed up to it.
    fn next(&mut self, bytes: &mut &[u8]) -> Option<FrameHead> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip).map_or(bytes.len(), |s| s.min(bytes.len()));
            self.skip -= n as u32;
            *bytes = &bytes[n..];
        }
        if bytes.is_empty() {
            return None;
        }
        let filled = usize::from(self.filled);
        let n = (9 - filled).min(bytes.len());
        self.head[filled..filled + n].copy_from_slice(&bytes[..n]);
        *bytes = &bytes[n..];
        self.filled += n as u8;
        if self.filled < 9 {
            return None;
        }
        self.filled = 0;
        let h = self.head;
        self.skip = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        Some(FrameHead {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether the bytes so far end a frame.
    fn between(&self) -> bool {
        self.filled == 0 && self.skip == 0
    }
}

/// The time, read once and only if needed.
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

fn at(from: Instant, timeout: Option<Duration>, expiry: Expiry) -> Option<(Instant, Expiry)> {
    timeout
        .and_then(|t| from.checked_add(t))
        .map(|at| (at, expiry))
}

/// The client's bytes, read for where each request head begins and ends.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    at: At,
    /// The head being read, line by line.
    head: Head,
    /// Heads complete and not yet known to be answered.
    pending: u32,
    /// Heads complete, in all.
    heads: u64,
    /// When the head in progress began.
    began: Option<Instant>,
    /// When the reading lost its place.
    lost_at: Option<Instant>,
    /// The last head taken whole, until its body's framing is settled.
    whole: Vec<u8>,
}

/// The first empty line of a head: after a `\n`, a CRLF or a bare LF.
static CRLF_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\r\n"));
static LF_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Between requests, where empty lines are skipped.
    #[default]
    Between,
    Head,
    Body(Framing),
    /// After a head taken whole, until its body's framing is settled.
    Whole,
    /// Past what this reading follows.
    Lost,
}

/// How a request body ends, as hyper's server frames it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body stands: the states of hyper's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Body(u64),
    BodyCr,
    BodyLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

impl Requests {
    /// Follows the client's `bytes`, read at `now`. The clock is read only
    /// for a head these bytes leave incomplete: most heads come whole, in
    /// one read, and their start never matters.
    fn feed(&mut self, bytes: &[u8], now: &mut Now) {
        self.follow(bytes, now);
        if self.at == At::Head && self.began.is_none() {
            self.began = Some(now.get());
        }
    }

    fn follow(&mut self, mut bytes: &[u8], now: &mut Now) {
        while !bytes.is_empty() {
            bytes = match self.at {
                At::Between => {
                    let skip = bytes
                        .iter()
                        .position(|&b| b != b'\r' && b != b'\n')
                        .unwrap_or(bytes.len());
                    if skip < bytes.len() {
                        self.at = At::Head;
                        self.head = Head::default();
                    }
                    &bytes[skip..]
                }
                At::Head => match self.head.read(bytes) {
                    None => return,
                    Some((_, Err(()))) => {
                        self.lose(now);
                        return;
                    }
                    Some((len, Ok(framing))) => {
                        self.complete(framing.map_or(At::Between, At::Body));
                        &bytes[len..]
                    }
                },
                At::Body(mut framing) => match consume(&mut framing, bytes) {
                    Ok((rest, done)) => {
                        self.at = if done { At::Between } else { At::Body(framing) };
                        rest
                    }
                    Err(()) => {
                        self.lose(now);
                        return;
                    }
                },
                // Settled by the clock before any later bytes.
                At::Whole | At::Lost => return,
            };
        }
    }

    /// A head is complete: one more to answer, and `next` is what follows.
    fn complete(&mut self, next: At) {
        self.pending = self.pending.saturating_add(1);
        self.heads += 1;
        self.began = None;
        self.at = next;
    }

    /// Takes `bytes` as one whole request head, if that is what they are:
    /// a head that ends where they end, with no empty line before, which
    /// would end it there (httparse ends a head at its first). Its body's
    /// framing waits for [`settle`](Self::settle).
    fn whole(&mut self, bytes: &[u8]) -> bool {
        let n = bytes.len();
        let is_whole = n <= WHOLE_HEAD
            && bytes.ends_with(b"\r\n\r\n")
            && !matches!(bytes[0], b'\r' | b'\n')
            && CRLF_LINE.find(bytes) == Some(n - 3)
            && LF_LINE.find(bytes).is_none();
        if is_whole {
            self.complete(At::Whole);
            self.whole.clear();
            self.whole.extend_from_slice(bytes);
        }
        is_whole
    }

    /// Settles the framing of the body after the head taken whole: the
    /// length hyper `reported` for it, or else the head's own, read line
    /// by line as any other.
    fn settle(&mut self, reported: Option<u64>, now: &mut Now) {
        let framing = match reported {
            Some(length) => by_length(length),
            None => Head::default()
                .read(&self.whole)
                .map_or(Err(()), |(_, framing)| framing),
        };
        match framing {
            Ok(framing) => self.at = framing.map_or(At::Between, At::Body),
            Err(()) => self.lose(now),
        }
    }

    fn lose(&mut self, now: &mut Now) {
        self.at = At::Lost;
        self.head = Head::default();
        self.lost_at = Some(self.began.unwrap_or_else(|| now.get()));
        self.began = None;
    }
}

/// A request head read line by line, for where it ends and how its body is
/// framed, by hyper's server rules. Only a line that spans reads is kept.
#[derive(Debug, Default)]
struct Head {
    /// The current line's bytes so far, when it began in an earlier read.
    line: Vec<u8>,
    /// The head's bytes so far, against hyper's limit.
    len: usize,
    /// Lines read, the request line first.
    lines: usize,
    http11: bool,
    /// A `Transfer-Encoding` line came, and whether the last one ends in
    /// chunked.
    te: bool,
    chunked: bool,
    length: Option<u64>,
    /// A line hyper refuses the request for.
    refused: bool,
}

impl Head {
    /// Reads `bytes`, which continue the head: once it ends, how many of
    /// them it took and its body's framing, or an error where hyper
    /// refuses the request.
    fn read(&mut self, bytes: &[u8]) -> Option<(usize, Result<Option<Framing>, ()>)> {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', bytes) {
            let piece = &bytes[start..nl];
            let line = if self.line.is_empty() {
                piece
            } else {
                self.line.extend_from_slice(piece);
                &std::mem::take(&mut self.line)
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                let framing = if self.len + nl + 1 > MAX_HEAD {
                    Err(())
                } else {
                    self.framing()
                };
                return Some((nl + 1, framing));
            }
            self.header_line(line);
            start = nl + 1;
        }
        let rest = &bytes[start..];
        self.len += bytes.len();
        if self.len > MAX_HEAD {
            return Some((bytes.len(), Err(())));
        }
        self.line.extend_from_slice(rest);
        None
    }

    /// One line of the head: the request line, then each header line. A
    /// name is followed by its colon at once, or httparse refuses it, so
    /// the two that frame a body are known by where their colon is. What
    /// else httparse refuses (a line with no colon, say) hyper answers
    /// with a `400` and a close, which no framing read here outlives.
    fn header_line(&mut self, line: &[u8]) {
        self.lines += 1;
        if self.lines == 1 {
            self.http11 = line.ends_with(b" HTTP/1.1");
            return;
        }
        if self.lines > MAX_HEADERS + 1 {
            self.refused = true;
        }
        const TE: &[u8] = b"transfer-encoding";
        const CL: &[u8] = b"content-length";
        if line.get(TE.len()) == Some(&b':') && line[..TE.len()].eq_ignore_ascii_case(TE) {
            if !self.http11 {
                self.refused = true;
            }
            self.te = true;
            self.length = None;
            self.chunked = is_chunked(line[TE.len() + 1..].trim_ascii());
        } else if line.get(CL.len()) == Some(&b':')
            && !self.te
            && line[..CL.len()].eq_ignore_ascii_case(CL)
        {
            match digits(line[CL.len() + 1..].trim_ascii()) {
                Some(n) if self.length.is_none_or(|l| l == n) => self.length = Some(n),
                _ => self.refused = true,
            }
        }
    }

    fn framing(&self) -> Result<Option<Framing>, ()> {
        if self.refused {
            return Err(());
        }
        if self.te {
            return if self.chunked {
                Ok(Some(Framing::Chunked(Chunk::Start)))
            } else {
                Err(())
            };
        }
        self.length.map_or(Ok(None), by_length)
    }
}

/// How a body of `length` bytes is framed: no body for none, and an error
/// past hyper's largest length, two short of the type's.
fn by_length(length: u64) -> Result<Option<Framing>, ()> {
    match length {
        n if n > u64::MAX - 2 => Err(()),
        0 => Ok(None),
        n => Ok(Some(Framing::Length(n))),
    }
}

/// Whether chunked is a `Transfer-Encoding` value's last coding, as hyper
/// reads it: only a value of visible ASCII can say so.
fn is_chunked(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A `Content-Length` value: digits only, as hyper's server takes it.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Consumes body bytes: the bytes after the body and whether it ended; an
/// error where hyper's decoder fails.
fn consume<'b>(framing: &mut Framing, bytes: &'b [u8]) -> Result<(&'b [u8], bool), ()> {
    match framing {
        Framing::Length(left) => {
            let n = usize::try_from(*left).map_or(bytes.len(), |l| l.min(bytes.len()));
            *left -= n as u64;
            Ok((&bytes[n..], *left == 0))
        }
        Framing::Chunked(chunk) => {
            let mut i = 0;
            while i < bytes.len() {
                if let Chunk::Body(left) = *chunk {
                    let n =
                        usize::try_from(left).map_or(bytes.len() - i, |l| l.min(bytes.len() - i));
                    i += n;
                    let left = left - n as u64;
                    *chunk = if left == 0 {
                        Chunk::BodyCr
                    } else {
                        Chunk::Body(left)
                    };
                    continue;
                }
                let b = bytes[i];
                i += 1;
                *chunk = match (*chunk, b) {
                    (Chunk::Start, _) => Chunk::Size(hex(0, b)?),
                    (Chunk::Size(size), b'\t' | b' ') => Chunk::SizeLws(size),
                    (Chunk::Size(size) | Chunk::SizeLws(size), b';') => Chunk::Extension(size),
                    (Chunk::Size(size) | Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => {
                        Chunk::SizeLf(size)
                    }
                    (Chunk::Size(size), _) => Chunk::Size(hex(size, b)?),
                    (Chunk::SizeLws(size), b'\t' | b' ') => Chunk::SizeLws(size),
                    (Chunk::Extension(_), b'\n') => return Err(()),
                    (Chunk::Extension(size), _) => Chunk::Extension(size),
                    (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
                    (Chunk::SizeLf(size), b'\n') => Chunk::Body(size),
                    (Chunk::BodyCr, b'\r') => Chunk::BodyLf,
                    (Chunk::BodyLf, b'\n') => Chunk::Start,
                    (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                    (Chunk::Trailer, _) => Chunk::Trailer,
                    (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
                    (Chunk::EndCr, b'\r') => Chunk::EndLf,
                    (Chunk::EndCr, _) => Chunk::Trailer,
                    (Chunk::EndLf, b'\n') => return Ok((&bytes[i..], true)),
                    _ => return Err(()),
                };
            }
            Ok((&[], false))
        }
    }
}

/// One more hex digit of a chunk size; an error for anything else or an
/// overflow, as hyper's.
fn hex(size: u64, b: u8) -> Result<u64, ()> {
    let digit = char::from(b).to_digit(16).ok_or(())?;
    size.checked_mul(16)
        .and_then(|s| s.checked_add(u64::from(digit)))
        .ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);
    const K: Duration = Duration::from_secs(75);

    pub(super) fn clock() -> (Clock, Arc<Exchanges>) {
        let exchanges = Arc::new(Exchanges::default());
        let clock = Clock::new(
            Timeouts {
                header: Some(T),
                keepalive: Some(K),
                send: None,
            },
            Arc::clone(&exchanges),
            Instant::now(),
        );
        (clock, exchanges)
    }

    fn expiry(c: &mut Clock) -> Option<Expiry> {
        c.deadline().map(|(_, expiry)| expiry)
    }

    /// Feeds `bytes` in pieces of `step`.
    fn read(c: &mut Clock, bytes: &[u8], step: usize) {
        for piece in bytes.chunks(step) {
            c.read(piece);
        }
    }

    /// The heads in `bytes` as this reading counts them, however split.
    fn heads(bytes: &[u8], step: usize) -> (u32, At) {
        let mut r = Requests {
            at: At::Between,
            ..Requests::default()
        };
        for piece in bytes.chunks(step) {
            r.feed(piece, &mut Now(None));
        }
        (r.pending, r.at)
    }

    /// Requests as hyper frames them: a head, the body after it, and the
    /// size hint hyper gives that body.
    fn framed_requests() -> Vec<(&'static [u8], &'static [u8], SizeHint)> {
        vec![
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"", SizeHint::with_exact(0)),
            (
                b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                b"hello",
                SizeHint::with_exact(5),
            ),
            (
                b"POST /u HTTP/1.1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
                b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
                SizeHint::default(),
            ),
            (
                b"PUT /u HTTP/1.1\r\ncOnTeNt-LeNgTh: 3\r\n\r\n",
                b"abc",
                SizeHint::with_exact(3),
            ),
            (b"head / HTTP/1.1\r\nHost: a\r\n\r\n", b"", SizeHint::with_exact(0)),
        ]
    }

    #[test]
    fn a_head_that_comes_whole_is_framed_by_hyper_s_word_or_its_own() {
        // Each head in a read of its own, as most come, then its body: the
        // clock follows them alike whether the service side reports each
        // request with hyper's framing, reports none (an outer middleware
        // answered, say), or reports only some.
        for reports in [[true; 5], [false; 5], [true, false, true, false, true]] {
            let (mut c, exchanges) = clock();
            let mut in_flight = Vec::new();
            for (i, ((head, body, hint), reported)) in
                framed_requests().into_iter().zip(reports).enumerate()
            {
                c.read(head);
                let whole = c.requests.at == At::Whole;
                let all_seen = reports[..i].iter().all(|&r| r);
                assert_eq!(whole, all_seen, "request {i}, reports {reports:?}");
                if reported {
                    in_flight.push(exchanges.begin(&hint));
                }
                c.read(body);
                assert_eq!(c.requests.heads, i as u64 + 1);
            }
            c.read(b"GET / HT");
            assert!(
                c.requests.at == At::Head,
                "reports {reports:?}: {:?}",
                c.requests.at
            );
            assert_eq!(c.requests.heads, 5, "reports {reports:?}");
        }
    }

    #[test]
    fn only_a_read_that_is_one_whole_head_is_taken_whole() {
        for (bytes, whole) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], true),
            // Two heads, a head and its body, a bare LF line, an empty
            // line first, part of a head.
            (b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", false),
            (b"GET / HTTP/1.1\nHost: a\n\r\n", false),
            (b"GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\n\r\n", false),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", false),
        ] {
            let mut r = Requests::default();
            assert_eq!(r.whole(bytes), whole, "{}", String::from_utf8_lossy(bytes));
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(WHOLE_HEAD, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert!(!Requests::default().whole(&long));
    }

    #[test]
    fn heads_and_bodies_are_followed_however_the_bytes_split() {
        let stream: &[u8] = b"\r\nGET / HTTP/1.1\nHost: a\n\n\
            POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            POST /u HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n3 ; x\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
            POST /u HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            head / HTTP/1.1\r\nHost: a\r\n\r\n\
            GET / HT";
        for step in 1..=40 {
            assert_eq!(heads(stream, step), (5, At::Head), "step {step}");
        }
    }

    #[test]
    fn what_hyper_refuses_is_not_followed() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx",
        ] {
            assert_eq!(
                heads(head, 64).1,
                At::Lost,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // A header before the first Transfer-Encoding line is read; after
        // it, Content-Length is void, as in hyper.
        assert_eq!(
            heads(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\n", 7),
            (1, At::Between)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(heads(&many, 1000).1, At::Lost);
    }

    #[test]
    fn a_head_as_long_as_hyper_takes_is_followed() {
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(300 * 1024, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(heads(&head, 4096), (1, At::Between));
        let mut over = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        over.resize(MAX_HEAD + 1, b'a');
        assert_eq!(heads(&over, 4096).1, At::Lost);
    }

    #[test]
    fn a_connection_with_no_request_yet_is_unused_until_a_byte_comes() {
        let (mut c, _) = clock();
        assert_eq!(expiry(&mut c), Some(Expiry::Unused));
        c.read(b"G");
        assert_eq!(expiry(&mut c), Some(Expiry::Header));
    }

    #[test]
    fn the_preface_is_a_head_until_all_of_it_is_in() {
        let (mut c, _) = clock();
        read(&mut c, &PREFACE[..14], 3);
        assert_eq!(c.protocol(), Protocol::Preface(14));
        assert_eq!(expiry(&mut c), Some(Expiry::Header));
        read(&mut c, &PREFACE[14..], 3);
        assert_eq!(c.protocol(), Protocol::Http2);
        // A mismatch late in the preface is a head like any other.
        let (mut c, _) = clock();
        c.read(b"PRI * HTTP/2.0\r\n\r\nXX");
        assert_eq!(c.protocol(), Protocol::Http1);
        assert_eq!(c.requests.pending, 1);
    }

    #[test]
    fn the_server_answering_stops_the_clock_and_its_end_restarts_it() {
        let (mut c, exchanges) = clock();
        c.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // A whole head waits for hyper: no timer.
        assert_eq!(expiry(&mut c), None);
        let in_flight = exchanges.begin(&SizeHint::with_exact(0));
        assert_eq!(expiry(&mut c), None);
        // The next head, pipelined, while the first is answered.
        c.read(b"GET /next HT");
        assert_eq!(expiry(&mut c), None);
        let before = Instant::now();
        drop(in_flight);
        let (at, expiry) = c.deadline().unwrap();
        assert_eq!(expiry, Expiry::Header);
        // From the answer's end, not the head's first byte.
        assert!(at >= before + T, "the bound runs from the response's end");
        c.read(b"TP/1.1\r\n\r\n");
        assert_eq!(c.deadline(), None);
        drop(exchanges.begin(&SizeHint::with_exact(0)));
        assert_eq!(c.deadline().map(|d| d.1), Some(Expiry::Idle));
    }

    #[test]
    fn a_write_no_exchange_explains_answers_the_complete_heads() {
        let (mut c, _) = clock();
        c.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(expiry(&mut c), None);
        c.wrote(&[std::io::IoSlice::new(&[0; 100])], 100);
        assert_eq!(expiry(&mut c), Some(Expiry::Idle));
        // A head begun is timed from the write, whatever the reading held.
        c.read(b"GET");
        assert_eq!(expiry(&mut c), Some(Expiry::Header));
    }

    #[test]
    fn only_hyper_makes_a_tunnel() {
        let (mut c, exchanges) = clock();
        c.read(b"connect a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n");
        let lower: http::Method = "connect".parse().unwrap();
        let in_flight = exchanges.begin(&SizeHint::with_exact(0));
        in_flight.answered(lower == http::Method::CONNECT, StatusCode::OK);
        drop(in_flight);
        assert!(c.deadline().is_some(), "a lowercase connect is no tunnel");
        assert!(c.is_timed());
        let in_flight = exchanges.begin(&SizeHint::with_exact(0));
        in_flight.answered(true, StatusCode::OK);
        drop(in_flight);
        assert_eq!(c.deadline(), None);
        assert!(!c.is_timed());
    }

    #[test]
    fn what_cannot_be_followed_keeps_the_bound() {
        let (mut c, exchanges) = clock();
        c.read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz");
        drop(exchanges.begin(&SizeHint::with_exact(0)));
        let (bound, expiry) = c.deadline().unwrap();
        assert_eq!(expiry, Expiry::Unfollowed);
        c.read(b"more bytes");
        assert_eq!(
            c.deadline(),
            Some((bound, expiry)),
            "bytes do not move the bound"
        );
    }

    #[test]
    fn a_blocked_write_runs_out_at_the_send_timeout() {
        let exchanges = Arc::new(Exchanges::default());
        let mut c = Clock::new(
            Timeouts {
                header: None,
                keepalive: None,
                send: Some(Duration::from_secs(60)),
            },
            exchanges,
            Instant::now(),
        );
        assert_eq!(c.deadline(), None);
        c.blocked();
        assert_eq!(c.deadline().map(|d| d.1), Some(Expiry::Send));
        c.wrote(&[std::io::IoSlice::new(&[0; 1])], 1);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn a_response_still_being_written_is_not_idle() {
        let exchanges = Arc::new(Exchanges::default());
        let mut c = Clock::new(
            Timeouts {
                header: Some(T),
                keepalive: Some(K),
                send: Some(Duration::from_secs(60)),
            },
            Arc::clone(&exchanges),
            Instant::now(),
        );
        c.read(b"GET /big HTTP/1.1\r\n\r\n");
        // hyper drops a body it has read whole before the client took it.
        drop(exchanges.begin(&SizeHint::with_exact(0)));
        assert_eq!(expiry(&mut c), Some(Expiry::Idle));
        c.blocked();
        assert_eq!(expiry(&mut c), Some(Expiry::Send), "no keep-alive bound");
        c.wrote(&[std::io::IoSlice::new(&[0; 1])], 1);
        assert_eq!(expiry(&mut c), Some(Expiry::Idle));
    }

    #[test]
    fn endless_timeouts_never_run_out() {
        let exchanges = Arc::new(Exchanges::default());
        let mut c = Clock::new(
            Timeouts {
                header: Some(Duration::MAX),
                keepalive: None,
                send: None,
            },
            exchanges,
            Instant::now(),
        );
        assert_eq!(c.deadline(), None);
        c.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        c.wrote(&[std::io::IoSlice::new(&[0; 10])], 10);
        assert_eq!(c.deadline(), None);
    }
}
#[cfg(test)]
mod h2_tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn streams_open_and_close_by_their_frames() {
        let t = Timeouts {
            header: Some(Duration::from_secs(1)),
            keepalive: Some(Duration::from_secs(2)),
            send: None,
        };
        let mut c = Clock::new(t, Arc::default(), Instant::now());
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 1]));
        c.read(&hello);
        assert_eq!(c.deadline().map(|d| d.1), Some(Expiry::Unused));
        c.read(&frame(HEADERS, END_HEADERS | END_STREAM, 1, b"xyz"));
        assert_eq!(c.deadline(), None);
        let mut answer = frame(0x4, 0, 0, &[]);
        answer.extend(frame(HEADERS, END_HEADERS, 1, b"abc"));
        answer.extend(frame(DATA, 0, 1, b"slow"));
        answer.extend(frame(DATA, END_STREAM, 1, b""));
        for step in [1, 5, 9, 100] {
            let mut c2 = Clock::new(t, Arc::default(), Instant::now());
            c2.read(&hello);
            c2.read(&frame(HEADERS, END_HEADERS | END_STREAM, 1, b"xyz"));
            for piece in answer.chunks(step) {
                c2.wrote(&[std::io::IoSlice::new(piece)], piece.len());
            }
            assert_eq!(
                c2.deadline().map(|d| d.1),
                Some(Expiry::Idle),
                "step {step}"
            );
        }
    }
}

/// The reading against hyper itself: streams of requests that hyper serves
/// every one of, framed every way hyper frames a body and split at random,
/// are counted as hyper counts them, and leave the reading between heads.
#[cfg(all(test, feature = "server"))]
mod against_hyper {
    use std::sync::Arc;
    use std::sync::Mutex;

    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    use super::{At, Now, Requests};

    /// One request that hyper serves, as bytes, and whether hyper closes
    /// the connection after it (both a length and chunked: hyper serves
    /// it, then closes, as the request smuggling rules ask).
    fn request() -> impl Strategy<Value = (Vec<u8>, bool)> {
        head_and_body().prop_map(|(mut head, body, closes)| {
            head.extend_from_slice(&body);
            (head, closes)
        })
    }

    /// [`request`]'s head and body apart.
    fn head_and_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, bool)> {
        let method = prop::sample::select(vec!["GET", "POST", "head", "connect", "PUT"]);
        let eol = prop::sample::select(vec!["\r\n", "\n"]);
        let chunks = prop::collection::vec((1usize..40, any::<bool>()), 0..4);
        let framing = prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(3u8), Just(4u8)];
        (method, eol, chunks, framing, 0usize..3, 0usize..50).prop_map(
            |(method, eol, chunks, framing, blank, len)| {
                let mut out = Vec::new();
                for _ in 0..blank {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(format!("{method} /x HTTP/1.1{eol}Host: a{eol}").as_bytes());
                let mut body = Vec::new();
                match framing {
                    // No body.
                    0 => {}
                    // A length.
                    1 => {
                        out.extend_from_slice(format!("Content-Length: {len}{eol}").as_bytes());
                        body.resize(len, b'b');
                    }
                    // Chunked, by one line, by two, or over a length.
                    _ => {
                        match framing {
                            2 => out.extend_from_slice(
                                format!("Transfer-Encoding: gzip, chunked{eol}").as_bytes(),
                            ),
                            3 => out.extend_from_slice(
                                format!(
                                    "TRANSFER-encoding: gzip{eol}transfer-encoding:  Chunked {eol}"
                                )
                                .as_bytes(),
                            ),
                            _ => out.extend_from_slice(
                                format!("Content-Length: 3{eol}Transfer-Encoding: chunked{eol}")
                                    .as_bytes(),
                            ),
                        }
                        for (size, ext) in chunks {
                            let ext = if ext { " ;a=b" } else { "" };
                            body.extend_from_slice(format!("{size:X}{ext}\r\n").as_bytes());
                            body.resize(body.len() + size, b'c');
                            body.extend_from_slice(b"\r\n");
                        }
                        body.extend_from_slice(b"0\r\n");
                        if len % 2 == 1 {
                            body.extend_from_slice(b"X-Trailer: 1\r\n");
                        }
                        body.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(eol.as_bytes());
                (out, body, framing == 4)
            },
        )
    }

    /// How many requests hyper hands its service from `stream`, each body
    /// read whole.
    fn hyper_count(stream: &[u8]) -> usize {
        hyper_hints(stream).len()
    }

    /// The size hint of each body hyper hands its service from `stream`,
    /// as the service side reports it to the clock.
    fn hyper_hints(stream: &[u8]) -> Vec<http_body::SizeHint> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let counted = Arc::clone(&seen);
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let counted = Arc::clone(&counted);
                    async move {
                        counted
                            .lock()
                            .unwrap()
                            .push(http_body::Body::size_hint(request.body()));
                        let _ = request.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Empty::<bytes::Bytes>::new(),
                        ))
                    }
                });
            // The client closes its half once it has written: hyper would
            // otherwise drop the requests still in flight.
            let conn = hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(server), service);
            client.write_all(stream).await.unwrap();
            client.shutdown().await.unwrap();
            let drain = async {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink).await;
            };
            let _ = tokio::join!(conn, drain);
            std::mem::take(&mut *seen.lock().unwrap())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn the_reading_counts_the_requests_hyper_serves(
            requests in prop::collection::vec(request(), 1..6),
            step in 1usize..64,
        ) {
            // A request hyper closes after goes last.
            let mut requests = requests;
            requests.sort_by_key(|(_, closes)| *closes);
            if let Some(first) = requests.iter().position(|(_, closes)| *closes) {
                requests.truncate(first + 1);
            }
            let stream: Vec<u8> = requests.iter().flat_map(|(r, _)| r.clone()).collect();
            let served = hyper_count(&stream);
            prop_assert_eq!(served, requests.len(), "hyper served them all");
            let mut reading = Requests::default();
            for piece in stream.chunks(step) {
                reading.feed(piece, &mut Now(None));
            }
            prop_assert_eq!(reading.heads, requests.len() as u64);
            prop_assert_eq!(reading.at, At::Between);
        }

        /// Heads that come whole, each in a read of its own, and bodies
        /// split at random: the clock counts the requests hyper serves,
        /// taking each body's framing from the size hint hyper gave it, as
        /// the service side reports it, or from the head where the service
        /// side reports nothing.
        #[test]
        fn heads_taken_whole_are_framed_as_hyper_frames_them(
            requests in prop::collection::vec(head_and_body(), 1..6),
            step in 1usize..64,
            reported in any::<bool>(),
        ) {
            let mut requests = requests;
            requests.sort_by_key(|(.., closes)| *closes);
            if let Some(first) = requests.iter().position(|(.., closes)| *closes) {
                requests.truncate(first + 1);
            }
            let stream: Vec<u8> = requests
                .iter()
                .flat_map(|(head, body, _)| [head.clone(), body.clone()].concat())
                .collect();
            let hints = hyper_hints(&stream);
            prop_assert_eq!(hints.len(), requests.len(), "hyper served them all");
            let (mut clock, exchanges) = super::tests::clock();
            let mut in_flight = Vec::new();
            for ((head, body, _), hint) in requests.iter().zip(&hints) {
                clock.read(head);
                if reported {
                    in_flight.push(exchanges.begin(hint));
                }
                for piece in body.chunks(step) {
                    clock.read(piece);
                }
            }
            clock.read(b"GET /");
            prop_assert_eq!(clock.requests.heads, requests.len() as u64);
            prop_assert_eq!(clock.requests.at, At::Head);
        }
    }
}
