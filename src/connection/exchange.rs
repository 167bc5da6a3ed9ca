//! Where an HTTP/1 connection stands, read off the bytes it carries: which
//! request head is incomplete, which body is on its way, which response is
//! being written. The connection's timers hang on it, so that each runs only
//! while the server waits for the client, as nginx's do:
//!
//! - the header timeout, while a request head is incomplete: from accept
//!   for the first, from the first byte of each later one (or from the end
//!   of the previous response, if that is later, since a server that is
//!   still answering does not read);
//! - the keep-alive timeout, while the connection is idle between a
//!   response and the first byte of the next request.
//!
//! Neither runs during a handler, a request body, a response or an upgraded
//! connection. HTTP/2, known by its preface, is left alone.
//!
//! Framing follows RFC 9112 §6: `Transfer-Encoding: chunked`, then
//! `Content-Length`, for both sides; a response to `HEAD`, a `1xx`, `204` or
//! `304` has no body, and a response with neither header runs to the close.
//! Anything this reading cannot follow (a head it cannot parse, too many
//! pipelined requests) turns it to a plain inactivity timer at the
//! keep-alive timeout, never to a drop.

use std::mem::MaybeUninit;
use std::time::Duration;

use tokio::time::Instant;

/// A head longer than this is not followed: hyper refuses most such heads
/// itself, and the rest fall back to the inactivity timer.
const MAX_HEAD: usize = 64 * 1024;

/// Headers read from one head; hyper takes 100 by default.
const MAX_HEADERS: usize = 128;

/// Requests read ahead of their responses that are followed; more
/// pipelined at once fall back to the inactivity timer.
const MAX_OUTSTANDING: u32 = 64;

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
}

/// The timeouts that apply; `None` never runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
}

/// One HTTP/1 connection's exchanges, as far as its timers need them.
#[derive(Debug)]
pub(crate) struct Exchanges {
    timeouts: Timeouts,
    state: State,
    /// The bytes the client sends.
    requests: Side,
    /// The bytes the server writes.
    responses: Side,
    /// Requests whose head was read and whose final response is not
    /// complete yet, oldest first in the low bits of the masks below.
    outstanding: u32,
    /// Which outstanding requests are `HEAD`, whose responses have no body.
    head_method: u64,
    /// Which outstanding requests are `CONNECT`, whose `2xx` opens a tunnel.
    connect_method: u64,
    /// When the request head being read began: at accept for the first
    /// request, else at its first byte; `None` before that byte.
    head_began: Option<Instant>,
    /// When the last final response was complete (or the connection began).
    answered_at: Instant,
    /// The last byte read or written, for the fallback inactivity timer.
    active_at: Instant,
    /// How much of the HTTP/2 preface the first bytes matched.
    preface: Option<u8>,
    /// Whether a request ever began on the connection.
    requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Each head and body is followed.
    Following,
    /// HTTP/2, an upgraded connection or a tunnel: the bytes are not
    /// HTTP/1 any more, and no timer applies.
    Opaque,
    /// The reading lost track: only the inactivity timer applies.
    Lost,
}

/// One direction's position.
#[derive(Debug)]
enum Side {
    /// In a head (or before one): how the bytes so far end, and the head's
    /// bytes when it spans more than one read or write.
    Head {
        ends: u8,
        began: bool,
        buf: Vec<u8>,
    },
    Body(Framing),
    /// A response delimited by the close: nothing follows it.
    UntilClose,
}

impl Side {
    fn new_head(buf: Vec<u8>) -> Self {
        Side::Head {
            ends: 0,
            began: false,
            buf,
        }
    }
}

/// How a body ends.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far.
    Size(u64),
    /// In a chunk extension, up to the line's end; the size read.
    Extension(u64),
    /// After a size line's `\r`.
    SizeEnd(u64),
    /// In a chunk's data: how much is left.
    Data(u64),
    /// After a chunk's data, in its `\r\n`.
    DataEnd,
    /// At the start of a trailer line (or of the final blank line).
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// After the final blank line's `\r`.
    End,
}

/// A finished head, as far as framing goes.
struct Head {
    /// A request's method, or `None` for a response.
    method: Option<Method>,
    /// A response's status.
    status: u16,
    framing: Option<Framing>,
    /// No length and not chunked.
    unframed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Connect,
    Other,
}

impl Exchanges {
    /// A connection accepted at `now`, whose first request the header
    /// timeout bounds from now.
    pub(crate) fn new(timeouts: Timeouts, now: Instant) -> Self {
        Self {
            timeouts,
            state: State::Following,
            requests: Side::new_head(Vec::new()),
            responses: Side::new_head(Vec::new()),
            outstanding: 0,
            head_method: 0,
            connect_method: 0,
            head_began: Some(now),
            answered_at: now,
            active_at: now,
            preface: Some(0),
            requested: false,
        }
    }

    /// Whether any timer may still apply: `false` once the connection is
    /// HTTP/2, upgraded or a tunnel, for good.
    pub(crate) fn is_timed(&self) -> bool {
        self.state != State::Opaque
    }

    /// When the timer that applies now runs out, and what it is.
    pub(crate) fn deadline(&self) -> Option<(Instant, Expiry)> {
        let at = |from: Instant, timeout: Option<Duration>, expiry| {
            timeout
                .and_then(|t| from.checked_add(t))
                .map(|at| (at, expiry))
        };
        match self.state {
            State::Opaque => None,
            State::Lost => at(self.active_at, self.timeouts.keepalive, Expiry::Idle),
            State::Following if self.outstanding > 0 => None,
            State::Following => match (&self.requests, self.head_began) {
                (Side::Head { .. }, Some(began)) => at(
                    began.max(self.answered_at),
                    self.timeouts.header,
                    if self.requested {
                        Expiry::Header
                    } else {
                        Expiry::Unused
                    },
                ),
                // Idle between requests, or a body the server no longer
                // waits for, since it has answered.
                _ => at(self.answered_at, self.timeouts.keepalive, Expiry::Idle),
            },
        }
    }

    /// Follows bytes the client sent.
    pub(crate) fn read(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() || self.state == State::Opaque {
            return;
        }
        let now = Instant::now();
        self.active_at = now;
        if self.preface.is_some() && self.is_preface(bytes) {
            self.state = State::Opaque;
            return;
        }
        while !bytes.is_empty() && self.state == State::Following {
            bytes = match &mut self.requests {
                Side::Head { began: false, .. } => {
                    // Blank lines before a request are ignored (RFC 9112
                    // §2.2), and are not its start.
                    let skip = bytes
                        .iter()
                        .position(|&b| b != b'\r' && b != b'\n')
                        .unwrap_or(bytes.len());
                    if skip < bytes.len() {
                        if let Side::Head { began, .. } = &mut self.requests {
                            *began = true;
                        }
                        self.requested = true;
                        self.head_began.get_or_insert(now);
                    }
                    &bytes[skip..]
                }
                Side::Head { .. } => match self.head_bytes(bytes, true) {
                    Ok((rest, Some(head))) => {
                        self.request_read(&head);
                        rest
                    }
                    Ok((rest, None)) => rest,
                    Err(()) => {
                        self.state = State::Lost;
                        return;
                    }
                },
                Side::Body(framing) => match consume(framing, bytes) {
                    Ok((rest, true)) => {
                        self.requests = Side::new_head(self.take_buf(true));
                        rest
                    }
                    Ok((rest, false)) => rest,
                    Err(()) => {
                        self.state = State::Lost;
                        return;
                    }
                },
                Side::UntilClose => return,
            };
        }
    }

    /// Follows bytes the server wrote.
    pub(crate) fn wrote(&mut self, mut bytes: &[u8]) {
        if bytes.is_empty() || self.state == State::Opaque {
            return;
        }
        let now = Instant::now();
        self.active_at = now;
        while !bytes.is_empty() && self.state == State::Following {
            bytes = match &mut self.responses {
                Side::Head { .. } => match self.head_bytes(bytes, false) {
                    Ok((rest, Some(head))) => {
                        self.response_head_written(&head, now);
                        rest
                    }
                    Ok((rest, None)) => rest,
                    Err(()) => {
                        self.state = State::Lost;
                        return;
                    }
                },
                Side::Body(framing) => match consume(framing, bytes) {
                    Ok((rest, true)) => {
                        self.response_done(now);
                        rest
                    }
                    Ok((rest, false)) => rest,
                    Err(()) => {
                        self.state = State::Lost;
                        return;
                    }
                },
                Side::UntilClose => return,
            };
        }
    }

    /// Whether the first bytes are (still) the HTTP/2 preface.
    fn is_preface(&mut self, bytes: &[u8]) -> bool {
        const PREFACE: &[u8] = b"PRI * HTTP/2.0";
        let Some(seen) = self.preface.map(usize::from) else {
            return false;
        };
        let n = bytes.len().min(PREFACE.len() - seen);
        if bytes[..n] != PREFACE[seen..seen + n] {
            self.preface = None;
            false
        } else if seen + n == PREFACE.len() {
            true
        } else {
            self.preface = Some(u8::try_from(seen + n).unwrap_or(u8::MAX));
            // Not known yet: followed as HTTP/1 meanwhile, which is what
            // hyper does too.
            false
        }
    }

    fn side(&mut self, request: bool) -> &mut Side {
        if request {
            &mut self.requests
        } else {
            &mut self.responses
        }
    }

    /// The side's head buffer, emptied, to reuse for its next head.
    fn take_buf(&mut self, request: bool) -> Vec<u8> {
        match self.side(request) {
            Side::Head { buf, .. } => {
                let mut buf = std::mem::take(buf);
                buf.clear();
                buf
            }
            _ => Vec::new(),
        }
    }

    /// Reads head bytes: the bytes after the head and the head, once it is
    /// complete; an error when it cannot be followed.
    fn head_bytes<'b>(
        &mut self,
        bytes: &'b [u8],
        request: bool,
    ) -> Result<(&'b [u8], Option<Head>), ()> {
        let Side::Head { ends, buf, .. } = self.side(request) else {
            return Err(());
        };
        let Some(len) = head_end(ends, bytes) else {
            if buf.len() + bytes.len() > MAX_HEAD {
                return Err(());
            }
            buf.extend_from_slice(bytes);
            return Ok((&[], None));
        };
        let head = if buf.is_empty() {
            parse(&bytes[..len], request)
        } else {
            buf.extend_from_slice(&bytes[..len]);
            let head = parse(buf, request);
            buf.clear();
            head
        }
        .ok_or(())?;
        if let Side::Head { ends, began, .. } = self.side(request) {
            *ends = 0;
            *began = false;
        }
        Ok((&bytes[len..], Some(head)))
    }

    fn request_read(&mut self, head: &Head) {
        if self.outstanding == MAX_OUTSTANDING {
            self.state = State::Lost;
            return;
        }
        let bit = 1u64 << self.outstanding;
        match head.method {
            Some(Method::Head) => self.head_method |= bit,
            Some(Method::Connect) => self.connect_method |= bit,
            _ => {}
        }
        self.outstanding += 1;
        self.head_began = None;
        // A request without a length has no body (RFC 9112 §6.3).
        if let Some(framing) = head.framing.filter(|f| !f.is_done()) {
            self.requests = Side::Body(framing);
        }
    }

    fn response_head_written(&mut self, head: &Head, now: Instant) {
        let oldest = self.outstanding > 0;
        let to_head = oldest && self.head_method & 1 == 1;
        let to_connect = oldest && self.connect_method & 1 == 1;
        match head.status {
            101 => self.state = State::Opaque,
            // An interim response: the final one follows.
            100..=199 => {}
            200..=299 if to_connect => self.state = State::Opaque,
            204 | 304 => self.response_done(now),
            _ if to_head => self.response_done(now),
            _ => match head.framing {
                Some(framing) if framing.is_done() => self.response_done(now),
                Some(framing) => self.responses = Side::Body(framing),
                None if head.unframed => self.responses = Side::UntilClose,
                None => self.response_done(now),
            },
        }
    }

    fn response_done(&mut self, now: Instant) {
        if self.outstanding == 0 {
            // An answer to nothing this reading saw (hyper refusing a head
            // it could not parse, say): it closes next anyway.
            self.state = State::Lost;
            return;
        }
        self.outstanding -= 1;
        self.head_method >>= 1;
        self.connect_method >>= 1;
        self.answered_at = now;
        let buf = self.take_buf(false);
        self.responses = Side::new_head(buf);
    }
}

impl Framing {
    fn is_done(self) -> bool {
        matches!(self, Framing::Length(0))
    }
}

/// Where a head ends in `bytes`, given how the bytes before them ended
/// (`ends`: 1 after `\n`, 2 after `\n\r`), which is updated. A head ends
/// at a blank line, `\n\n` or `\n\r\n`, which covers `\r\n\r\n`.
fn head_end(ends: &mut u8, bytes: &[u8]) -> Option<usize> {
    // Finish a line end that the previous bytes began.
    let mut i = 0;
    while *ends > 0 && i < bytes.len() {
        match (*ends, bytes[i]) {
            (1 | 2, b'\n') => {
                *ends = 0;
                return Some(i + 1);
            }
            (1, b'\r') => *ends = 2,
            _ => *ends = 0,
        }
        i += 1;
    }
    for at in memchr::memchr_iter(b'\n', &bytes[i..]) {
        let at = i + at;
        match &bytes[at + 1..] {
            [b'\n', ..] => return Some(at + 2),
            [b'\r', b'\n', ..] => return Some(at + 3),
            [b'\r'] => *ends = 2,
            [] => *ends = 1,
            _ => {}
        }
    }
    if bytes.last().is_some_and(|&b| b != b'\n' && b != b'\r') {
        *ends = 0;
    }
    None
}

/// Reads a complete head; `None` if it does not parse.
fn parse(bytes: &[u8], request: bool) -> Option<Head> {
    // Left uninitialised for httparse to fill: zeroing 128 headers (4 KiB)
    // for each head cost more than parsing a short one.
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let (method, status, headers) = if request {
        let mut req = httparse::Request::new(&mut []);
        if !req
            .parse_with_uninit_headers(bytes, &mut headers)
            .ok()?
            .is_complete()
        {
            return None;
        }
        let method = match req.method? {
            m if m.eq_ignore_ascii_case("HEAD") => Method::Head,
            m if m.eq_ignore_ascii_case("CONNECT") => Method::Connect,
            _ => Method::Other,
        };
        (Some(method), 0, req.headers)
    } else {
        let mut res = httparse::Response::new(&mut []);
        if !httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, bytes, &mut headers)
            .ok()?
            .is_complete()
        {
            return None;
        }
        (None, res.code?, res.headers)
    };
    let mut chunked = false;
    let mut length: Option<u64> = None;
    for header in headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is the final coding when it is there at all.
            let last = header
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return None;
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            for value in header.value.split(|&b| b == b',') {
                let value = value.trim_ascii();
                if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let n = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            }
        }
    }
    let framing = if chunked {
        Some(Framing::Chunked(Chunk::Size(0)))
    } else {
        length.map(Framing::Length)
    };
    Some(Head {
        method,
        status,
        framing,
        unframed: framing.is_none(),
    })
}

/// Consumes body bytes: the bytes after the body, and whether it ended; an
/// error when the chunked framing is broken.
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
                let b = bytes[i];
                *chunk = match *chunk {
                    Chunk::Data(left) => {
                        let n = usize::try_from(left)
                            .map_or(bytes.len() - i, |l| l.min(bytes.len() - i));
                        i += n;
                        let left = left - n as u64;
                        if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        }
                    }
                    Chunk::Size(size) => {
                        i += 1;
                        match b {
                            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                                let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                                Chunk::Size(size.checked_mul(16).ok_or(())? | digit)
                            }
                            b';' | b' ' | b'\t' => Chunk::Extension(size),
                            b'\r' => Chunk::SizeEnd(size),
                            b'\n' => size_line_end(size),
                            _ => return Err(()),
                        }
                    }
                    Chunk::Extension(size) => {
                        i += 1;
                        if b == b'\n' {
                            size_line_end(size)
                        } else {
                            Chunk::Extension(size)
                        }
                    }
                    Chunk::SizeEnd(size) => {
                        i += 1;
                        if b == b'\n' {
                            size_line_end(size)
                        } else {
                            return Err(());
                        }
                    }
                    Chunk::DataEnd => {
                        i += 1;
                        match b {
                            b'\r' => Chunk::DataEnd,
                            b'\n' => Chunk::Size(0),
                            _ => return Err(()),
                        }
                    }
                    Chunk::TrailerStart => {
                        i += 1;
                        match b {
                            b'\r' => Chunk::End,
                            b'\n' => return Ok((&bytes[i..], true)),
                            _ => Chunk::Trailer,
                        }
                    }
                    Chunk::Trailer => {
                        i += 1;
                        if b == b'\n' {
                            Chunk::TrailerStart
                        } else {
                            Chunk::Trailer
                        }
                    }
                    Chunk::End => {
                        i += 1;
                        if b == b'\n' {
                            return Ok((&bytes[i..], true));
                        }
                        return Err(());
                    }
                };
            }
            Ok((&[], false))
        }
    }
}

fn size_line_end(size: u64) -> Chunk {
    if size == 0 {
        Chunk::TrailerStart
    } else {
        Chunk::Data(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);
    const K: Duration = Duration::from_secs(75);

    fn exchanges() -> Exchanges {
        Exchanges::new(
            Timeouts {
                header: Some(T),
                keepalive: Some(K),
            },
            Instant::now(),
        )
    }

    fn expiry(e: &Exchanges) -> Option<Expiry> {
        e.deadline().map(|(_, expiry)| expiry)
    }

    /// Feeds `bytes` in pieces of `step`.
    fn read(e: &mut Exchanges, bytes: &[u8], step: usize) {
        for piece in bytes.chunks(step) {
            e.read(piece);
        }
    }

    fn wrote(e: &mut Exchanges, bytes: &[u8], step: usize) {
        for piece in bytes.chunks(step) {
            e.wrote(piece);
        }
    }

    /// Every exchange reads the same whatever the reads and writes split.
    #[test]
    fn exchanges_are_followed_however_the_bytes_split() {
        let post = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let chunked_post =
            b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let get = b"\r\nGET / HTTP/1.1\nHost: a\n\n";
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let chunked_ok =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        for step in 1..=40 {
            let mut e = exchanges();
            assert_eq!(expiry(&e), Some(Expiry::Unused), "from accept");
            read(&mut e, post, step);
            assert_eq!(expiry(&e), None, "answering");
            wrote(&mut e, interim, step);
            assert_eq!(expiry(&e), None, "still answering");
            wrote(&mut e, chunked_ok, step);
            assert_eq!(expiry(&e), Some(Expiry::Idle), "step {step}");
            read(&mut e, chunked_post, step);
            assert_eq!(expiry(&e), None);
            wrote(&mut e, ok, step);
            assert_eq!(expiry(&e), Some(Expiry::Idle), "step {step}");
            // Two pipelined at once: no timer until both are answered.
            let mut both = get.to_vec();
            both.extend_from_slice(post);
            read(&mut e, &both, step);
            wrote(&mut e, ok, step);
            assert_eq!(expiry(&e), None, "step {step}");
            wrote(&mut e, chunked_ok, step);
            assert_eq!(expiry(&e), Some(Expiry::Idle), "step {step}");
            // Half a head is a head in progress.
            read(&mut e, b"GET / HT", step);
            assert_eq!(expiry(&e), Some(Expiry::Header), "step {step}");
            read(&mut e, b"TP/1.1\r\nHost: a\r\n\r\n", step);
            assert_eq!(expiry(&e), None);
            assert_eq!(e.state, State::Following, "step {step}");
        }
    }

    #[test]
    fn responses_without_a_body_end_at_their_head() {
        let mut e = exchanges();
        e.read(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        e.wrote(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n");
        assert_eq!(expiry(&e), Some(Expiry::Idle));
        e.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        e.wrote(b"HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(expiry(&e), Some(Expiry::Idle));
        e.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        e.wrote(b"HTTP/1.1 200 OK\r\n\r\nand then the close");
        assert_eq!(expiry(&e), None, "a response delimited by the close");
    }

    #[test]
    fn upgrades_tunnels_and_http2_stop_every_timer() {
        let mut e = exchanges();
        e.read(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        e.wrote(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n");
        assert_eq!(expiry(&e), None);
        assert!(!e.is_timed());
        // An upgrade the server declines leaves a plain keep-alive.
        let mut e = exchanges();
        e.read(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n");
        e.wrote(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(expiry(&e), Some(Expiry::Idle));
        let mut e = exchanges();
        e.read(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01");
        e.wrote(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(!e.is_timed());
        let mut e = exchanges();
        read(&mut e, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3);
        assert!(!e.is_timed());
    }

    #[test]
    fn what_cannot_be_followed_falls_back_to_inactivity() {
        let mut e = exchanges();
        e.read(b"GET / HTTP/1.1\r\nHost a\r\n\r\n");
        assert_eq!(e.state, State::Lost);
        assert_eq!(expiry(&e), Some(Expiry::Idle));
        let mut e = exchanges();
        e.read(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(e.state, State::Lost);
        let mut e = exchanges();
        e.read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert_eq!(e.state, State::Lost);
        let mut e = exchanges();
        e.read(&vec![b'a'; MAX_HEAD + 1]);
        assert_eq!(e.state, State::Lost);
    }

    #[test]
    fn a_connection_with_no_request_yet_is_unused_until_a_head_begins() {
        let mut e = exchanges();
        assert_eq!(expiry(&e), Some(Expiry::Unused));
        // Blank lines before a request are not its start.
        e.read(b"\r\n\r\n");
        assert_eq!(expiry(&e), Some(Expiry::Unused));
        e.read(b"G");
        assert_eq!(expiry(&e), Some(Expiry::Header));
    }

    #[test]
    fn the_header_timer_of_a_later_head_waits_for_the_answer() {
        let start = Instant::now();
        let mut e = exchanges();
        e.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HT");
        assert_eq!(expiry(&e), None);
        e.wrote(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let (at, expiry) = e.deadline().unwrap();
        assert_eq!(expiry, Expiry::Header);
        assert!(at >= start + T && at >= e.answered_at + T);
    }

    #[test]
    fn endless_timeouts_never_run_out() {
        let mut e = Exchanges::new(
            Timeouts {
                header: Some(Duration::MAX),
                keepalive: None,
            },
            Instant::now(),
        );
        assert_eq!(e.deadline(), None);
        e.read(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        e.wrote(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(e.deadline(), None);
    }
}
