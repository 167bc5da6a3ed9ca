#![allow(dead_code)]
//! A raw HTTP/2 client that records every frame the server sends, per
//! stream: the way an attacker would check that a dropped request leaked
//! nothing. It encodes request headers as HPACK literals (no table, no
//! Huffman) and never decodes the server's headers: a `HEADERS` frame on a
//! stream is a leak whatever it says.

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: it bounds a hang, it times nothing.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// What the server sent on one stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StreamFrames {
    /// `HEADERS` and `CONTINUATION` frames: a response head or trailers.
    pub headers: usize,
    /// `DATA` frames, and their payload bytes.
    pub data: usize,
    pub data_bytes: usize,
    /// The error code of a `RST_STREAM`, if one came.
    pub reset: Option<u32>,
    /// The stream ended with `END_STREAM`.
    pub ended: bool,
}

impl StreamFrames {
    /// Done: answered to the end, or reset.
    fn finished(&self) -> bool {
        self.ended || self.reset.is_some()
    }

    /// Whether any byte of a response reached the client.
    pub fn leaked(&self) -> bool {
        self.headers > 0 || self.data > 0
    }
}

/// An HTTP/2 connection with prior knowledge (h2c).
pub struct RawH2 {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u32,
    pub streams: HashMap<u32, StreamFrames>,
    /// The error code of a `GOAWAY`, if the server sent one.
    pub goaway: Option<u32>,
    /// The server closed the TCP connection.
    pub closed: bool,
}

/// One frame: its header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541, 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literals without indexing, with literal names.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

impl RawH2 {
    /// Connects, sends the preface and settings, and opens both flow-control
    /// windows wide so that no response ever waits on the client.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::over(TcpStream::connect(addr).await.expect("connect")).await
    }

    /// The same, over a stream already connected.
    pub async fn over(mut stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        let mut hello = PREFACE.to_vec();
        // SETTINGS_INITIAL_WINDOW_SIZE = 2^31 - 1.
        let mut settings = vec![0x00, 0x04];
        settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        hello.extend(frame(SETTINGS, 0, 0, &settings));
        hello.extend(frame(0x8, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
        stream.write_all(&hello).await.expect("preface");
        Self {
            stream,
            buf: Vec::new(),
            next_id: 1,
            streams: HashMap::new(),
            goaway: None,
            closed: false,
        }
    }

    /// The frames of a request: its headers, and a body when given, which
    /// ends the stream. Returns the stream id and the bytes to write.
    pub fn request(&mut self, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u32, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 2;
        let block = header_block(headers);
        let flags = END_HEADERS | if body.is_none() { END_STREAM } else { 0 };
        let mut out = frame(HEADERS, flags, id, &block);
        if let Some(body) = body {
            out.extend(frame(DATA, END_STREAM, id, body));
        }
        self.streams.insert(id, StreamFrames::default());
        (id, out)
    }

    /// The frames that open a request whose body follows: its headers,
    /// without `END_STREAM`. Returns the stream id and the bytes to write.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> (u32, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 2;
        let out = frame(HEADERS, END_HEADERS, id, &header_block(headers));
        self.streams.insert(id, StreamFrames::default());
        (id, out)
    }

    /// A `DATA` frame on stream `id`, which ends it when `end` is set.
    pub fn data(&self, id: u32, bytes: &[u8], end: bool) -> Vec<u8> {
        frame(DATA, if end { END_STREAM } else { 0 }, id, bytes)
    }

    /// The client's own address.
    pub fn local(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    /// Writes raw bytes (many requests' frames at once, say).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads frames until every stream in `ids` has finished, or the
    /// connection ends. Panics if the server goes quiet for too long.
    pub async fn finish(&mut self, ids: &[u32]) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.closed
            && !ids
                .iter()
                .all(|id| self.streams.get(id).is_some_and(StreamFrames::finished))
        {
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("the server left a stream unfinished: it hangs");
            match n {
                Ok(0) | Err(_) => self.closed = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.parse().await;
                }
            }
        }
    }

    /// Reads, answering the server's frames, until it closes the
    /// connection. Panics if it never does.
    pub async fn wait_for_close(&mut self) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.closed {
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("the server never closed the connection");
            match n {
                Ok(0) | Err(_) => self.closed = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.parse().await;
                }
            }
        }
    }

    async fn parse(&mut self) {
        let mut replies = Vec::new();
        while self.buf.len() >= 9 {
            let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
            if self.buf.len() < 9 + len {
                break;
            }
            let kind = self.buf[3];
            let flags = self.buf[4];
            let id = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                & 0x7fff_ffff;
            let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
            self.buf.drain(..9 + len);
            let entry = self.streams.entry(id).or_default();
            match kind {
                DATA => {
                    entry.data += 1;
                    entry.data_bytes += len;
                    entry.ended |= flags & END_STREAM != 0;
                }
                HEADERS | CONTINUATION => {
                    entry.headers += 1;
                    entry.ended |= flags & END_STREAM != 0;
                }
                RST_STREAM => {
                    entry.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                SETTINGS if flags & ACK == 0 => replies.extend(frame(SETTINGS, ACK, 0, &[])),
                PING if flags & ACK == 0 => replies.extend(frame(PING, ACK, 0, &payload)),
                GOAWAY => {
                    self.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
        if !replies.is_empty() {
            let _ = self.stream.write_all(&replies).await;
        }
    }
}

/// How many requests [`interleave`] sends: connections, batches per
/// connection, and dropped-and-allowed pairs per batch.
pub const CONNECTIONS: usize = 4;
pub const BATCHES: usize = 50;
pub const PAIRS: usize = 50;

/// 10,000 requests that a rule drops, interleaved with 10,000 it allows, on
/// [`CONNECTIONS`] shared connections at once, each batch written whole.
/// Checks every stream: an allowed one answered to its end, a dropped one
/// reset with `CANCEL`. Returns how many dropped streams received any
/// `HEADERS` or `DATA` frame.
pub async fn interleave(
    addr: SocketAddr,
    allowed: Vec<(String, String)>,
    dropped: Vec<(String, String)>,
    body: Option<Vec<u8>>,
) -> usize {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (allowed, dropped, body) = (allowed.clone(), dropped.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let (allowed_head, dropped_head) = (borrowed(&allowed), borrowed(&dropped));
            let mut h2 = RawH2::connect(addr).await;
            let (mut allowed_ids, mut dropped_ids) = (Vec::new(), Vec::new());
            for _ in 0..BATCHES {
                let (mut batch, mut ids) = (Vec::new(), Vec::new());
                for _ in 0..PAIRS {
                    let (id, bytes) = h2.request(&dropped_head, body.as_deref());
                    batch.extend(bytes);
                    dropped_ids.push(id);
                    ids.push(id);
                    let (id, bytes) = h2.request(&allowed_head, body.as_deref());
                    batch.extend(bytes);
                    allowed_ids.push(id);
                    ids.push(id);
                }
                h2.send(&batch).await;
                h2.finish(&ids).await;
                assert!(!h2.closed, "the connection closed: {:?}", h2.goaway);
            }
            (h2, allowed_ids, dropped_ids)
        }));
    }
    let (mut leaked, mut total) = (0, 0);
    for client in clients {
        let (h2, allowed_ids, dropped_ids) = client.await.unwrap();
        for id in &dropped_ids {
            let frames = &h2.streams[id];
            total += 1;
            leaked += usize::from(frames.leaked());
            assert_eq!(frames.reset, Some(0x8), "stream {id}: {frames:?}");
        }
        for id in &allowed_ids {
            let frames = &h2.streams[id];
            assert!(
                frames.headers >= 1 && frames.ended && frames.reset.is_none(),
                "allowed stream {id}: {frames:?}"
            );
        }
    }
    assert_eq!(total, CONNECTIONS * BATCHES * PAIRS);
    leaked
}

fn borrowed(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A header list owned, for [`interleave`].
pub fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The head and body of a unary gRPC call to `grpc.health.v1.Health/Check`
/// for the server's overall health, with extra headers.
pub fn grpc_health_check<'a>(
    authority: &'a str,
    extra: &[(&'a str, &'a str)],
) -> (Vec<(&'a str, &'a str)>, Vec<u8>) {
    let mut headers = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    headers.extend_from_slice(extra);
    // An uncompressed, empty `HealthCheckRequest`.
    (headers, vec![0, 0, 0, 0, 0])
}
