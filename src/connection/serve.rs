//! The crate's own serve loop, for hyper and tower services that want more
//! than `axum::serve` gives (feature `server`):
//!
//! - a dropped HTTP/2 request resets **only its stream**, as nginx does,
//!   instead of closing the connection with every other stream on it;
//! - clients can be refused at `accept`, before a byte of HTTP is read;
//! - a connection's first request is judged before hyper sets the
//!   connection up, so a drop costs what it costs nginx: an accept, a read
//!   and a close;
//! - a client that does not finish its request headers in time is dropped
//!   without a `408` (nginx's `client_header_timeout`, Slowloris).
//!
//! It serves HTTP/1.1 and h2c (HTTP/2 without TLS, by prior knowledge) on one
//! port with hyper-util's auto builder, runs connections concurrently, shuts
//! down gracefully, and handles accept errors as `axum::serve` does.
//!
//! It is made from the layer, [`NoResponseLayer::serve`], which gives it the
//! close mode, the ban list and the rules for early judging: there is no
//! second place to set them. Each request carries axum's
//! `ConnectInfo<SocketAddr>`, for handlers and for middleware outside the
//! layer alike.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use tower_no_response::NoResponseLayer;
//! use tower_no_response::connection::serve::Http2Drop;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = NoResponseLayer::builder().server_name("example.com").build()?;
//! let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! layer
//!     .serve(listener, app)
//!     .http2_drop(Http2Drop::ResetStream)
//!     .header_timeout(std::time::Duration::from_secs(10))
//!     .run_until(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower_service::Service;

use super::DropAsError;
use super::stream_reset::mark_stream_resets;
use super::{AbortableStream, CloseMode, ConnectionHandle, ConnectionInfo};
use crate::NoResponseLayer;
use crate::audit::{Close, DropEvent, Handling};
use crate::body::BoxError;
use crate::error::BuildError;
use crate::rules::DropReason;
use crate::rules::ip::{IpAction, IpRules, parse_cidrs};

/// What a dropped HTTP/2 request does to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Http2Drop {
    /// Reset only the request's stream with `RST_STREAM(CANCEL)`; the other
    /// streams on the connection carry on, as with nginx's `return 444` on
    /// HTTP/2. The default.
    #[default]
    ResetStream,
    /// Reset only the stream, with `INTERNAL_ERROR`, which looks like any
    /// server fault.
    ResetStreamInternalError,
    /// Close the whole connection, with every stream on it (Caddy's
    /// `abort`).
    CloseConnection,
}

// `REFUSED_STREAM` is deliberately not offered: it tells the client the
// request was not processed and may be retried, which invites the retry.

/// Refusals checked at `accept`, before any byte is read: the cheapest drop
/// there is, for clients known to be bad by their address alone.
///
/// The peer here is the TCP peer: behind a proxy or CDN it is the proxy, so
/// use these only for traffic that reaches the server directly, and use the
/// layer's `deny_ip` (which sees the real client) otherwise.
#[derive(Debug, Default)]
pub struct AcceptRules {
    rules: IpRules,
}

impl AcceptRules {
    /// Refuses connections from each of `cidrs` (addresses, CIDR blocks or
    /// `all`), with rule name `accept_deny`.
    ///
    /// # Errors
    /// The first malformed value, by name.
    pub fn deny<I>(cidrs: I) -> Result<Self, BuildError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut rules = IpRules::default();
        for cidr in cidrs {
            rules.push(
                parse_cidrs("deny_at_accept", cidr.as_ref())?,
                IpAction::Deny,
            );
        }
        rules.seal();
        Ok(Self { rules })
    }

    fn denies(&self, peer: SocketAddr) -> bool {
        self.rules.first_match(peer.ip().to_canonical()) == Some(IpAction::Deny)
    }
}

/// A serve loop; see the [module docs](self). Made by
/// [`NoResponseLayer::serve`].
#[must_use = "a server does nothing until it is run"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    layer: NoResponseLayer,
    http2_drop: Http2Drop,
    header_timeout: Option<Duration>,
    accept_rules: AcceptRules,
    judge_early: bool,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("http2_drop", &self.http2_drop)
            .field("header_timeout", &self.header_timeout)
            .field("layer", &self.layer)
            .field("accept_rules", &self.accept_rules)
            .field("judge_early", &self.judge_early)
            .finish_non_exhaustive()
    }
}

impl NoResponseLayer {
    /// The crate's serve loop for `app` on `listener`, with this layer's
    /// close mode, ban list and rules. `app` is the service this layer
    /// wraps: an axum `Router` with `.layer(layer.clone())` added last, with
    /// any middleware that should see dropped requests (tracing, metrics)
    /// outside it.
    pub fn serve<S>(&self, listener: TcpListener, app: S) -> Serve<S> {
        Serve {
            listener,
            service: app,
            layer: self.clone(),
            http2_drop: Http2Drop::default(),
            header_timeout: None,
            accept_rules: AcceptRules::default(),
            judge_early: true,
            #[cfg(feature = "rustls")]
            tls: None,
        }
    }
}

impl<S> Serve<S> {
    /// What a dropped HTTP/2 request does; [`Http2Drop::ResetStream`] by
    /// default.
    pub fn http2_drop(mut self, drop: Http2Drop) -> Self {
        self.http2_drop = drop;
        self
    }

    /// Drops an HTTP/1 client that has not sent complete request headers
    /// this long after it started a request (or went idle on a kept-alive
    /// connection): no `408`, nothing at all, logged as a 444 with rule
    /// `header_timeout`. Off by default.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = Some(timeout);
        self
    }

    /// Refusals checked at accept.
    pub fn accept_rules(mut self, rules: AcceptRules) -> Self {
        self.accept_rules = rules;
        self
    }

    /// Whether each connection's first request is judged with the layer's
    /// rules as soon as its head has arrived, before hyper sets up the
    /// connection; on by default. A request that a rule drops then costs an
    /// accept, one read and a close, which is all nginx spends on a
    /// `return 444`.
    ///
    /// Only enforced drops are made this early, by every rule but the rate
    /// limit, and counted and logged as the layer would. Everything else (no
    /// rule matched, a rule in dry-run or one that answers with a status, a
    /// head not complete yet, HTTP/2, TLS) goes on to hyper and the layer
    /// with the bytes already read, and the layer judges it in full. Later
    /// requests on a kept-alive connection are the layer's alone.
    pub fn judge_early(mut self, on: bool) -> Self {
        self.judge_early = on;
        self
    }

    /// Serves TLS with this rustls configuration (feature `rustls`); set its
    /// ALPN protocols to `h2` and `http/1.1` to offer both.
    ///
    /// Each handshake runs in its connection's own task, so a slow or
    /// stalled client never holds up the accept loop; one that has not
    /// finished its handshake within the header timeout (10 s when none is
    /// set) is dropped and logged as `header_timeout`. A dropped HTTP/1
    /// request, or a connection closed whole, ends with the TCP stream
    /// closing: no application byte and no TLS alert is written, because the
    /// stream under TLS refuses every write once aborted.
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S, B> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves until the process ends.
    ///
    /// # Errors
    /// Never, today; the signature leaves room for fatal listener errors.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `signal` completes, then stops accepting, lets every
    /// connection finish its requests in flight (idle ones close at once),
    /// and returns when the last one is done.
    ///
    /// # Errors
    /// Never, today; the signature leaves room for fatal listener errors.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send) -> io::Result<()> {
        let Self {
            listener,
            service,
            layer,
            http2_drop,
            header_timeout,
            accept_rules,
            judge_early,
            #[cfg(feature = "rustls")]
            tls,
        } = self;
        #[cfg(feature = "rustls")]
        let judge_early = judge_early && tls.is_none();
        let judge_early = judge_early.then_some(&layer);
        let mut builder = Builder::new(TokioExecutor::new());
        if let Some(timeout) = header_timeout {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout);
        }
        let (stop_tx, stop_rx) = watch::channel(());
        // Every connection task holds a sender; all dropped means all done.
        let (done_tx, mut done_rx) = mpsc::channel::<Infallible>(1);
        let mut signal = pin!(signal);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = accept(&listener) => accepted,
                () = &mut signal => break,
            };
            let close_mode = layer.close_mode();
            if accept_rules.denies(peer) {
                refuse(stream, peer, close_mode, DropReason::AcceptDenied);
                continue;
            }
            if layer.is_banned(peer.ip()) {
                refuse(stream, peer, close_mode, DropReason::Banned);
                continue;
            }
            // Judge the first request now if it has arrived, else in the
            // connection's task once it does; hyper sees it only if no rule
            // drops it.
            let (stream, prefix, judge_later) = match judge_early {
                None => (stream, Vec::new(), None),
                Some(layer) => match judge_now(stream, peer, layer) {
                    Early::Done => continue,
                    Early::Undecided(stream, read) if read.is_empty() => {
                        (stream, read, Some(layer.clone()))
                    }
                    Early::Undecided(stream, read) => (stream, read, None),
                },
            };
            let connection = Connection {
                builder: builder.clone(),
                service: service.clone(),
                peer,
                http2_drop,
                close_mode,
                header_timeout,
                stop: stop_rx.clone(),
                _done: done_tx.clone(),
                #[cfg(feature = "rustls")]
                tls: tls.clone(),
            };
            tokio::spawn(connection.run(stream, prefix, judge_later));
        }
        drop(listener);
        let _ = stop_tx.send(());
        drop(done_tx);
        // Returns `None` once every connection task has dropped its sender.
        let _ = done_rx.recv().await;
        Ok(())
    }
}

/// Accepts like `axum::serve`: errors that belong to one connection are
/// skipped; others (such as running out of file descriptors) are logged and
/// retried after a second, instead of spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                tracing::error!(target: "tower_no_response", "accept error: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// What judging a connection's first request before hyper decided.
enum Early {
    /// Dropped by a rule and closed (and logged), or the client is gone.
    Done,
    /// Over to hyper and the layer, with the bytes read so far.
    Undecided(TcpStream, Vec<u8>),
}

/// As much of a request as is judged before hyper: hyper's first read
/// takes no more for most requests, and a longer head is simply left to
/// the layer.
const EARLY_READ: usize = 4096;

/// Reads what the client has sent so far, without waiting, and judges it
/// if it is a whole HTTP/1 request head.
fn judge_now(stream: TcpStream, peer: SocketAddr, layer: &NoResponseLayer) -> Early {
    let mut buf = [0u8; EARLY_READ];
    match stream.try_read(&mut buf) {
        Ok(0) => Early::Done,
        Ok(n) => judge_read(stream, &buf[..n], peer, layer),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Early::Undecided(stream, Vec::new()),
        Err(_) => Early::Done,
    }
}

/// Judges the first bytes a client sent, and closes the stream if a rule
/// drops the request.
fn judge_read(stream: TcpStream, read: &[u8], peer: SocketAddr, layer: &NoResponseLayer) -> Early {
    match request_head(read).and_then(|head| layer.drop_early(&head, peer)) {
        // A read that did not fill the buffer emptied the socket, so the
        // close alone sends the FIN; there is nothing to drain.
        Some(CloseMode::Fin) if read.len() < EARLY_READ => drop(stream),
        Some(mode) => {
            AbortableStream::new(stream).handle().abort(mode);
        }
        None => return Early::Undecided(stream, read.to_vec()),
    }
    Early::Done
}

/// Waits for the client's first bytes, within the header timeout, and
/// judges them before hyper has the connection.
async fn judge_when_read(
    stream: TcpStream,
    layer: &NoResponseLayer,
    peer: SocketAddr,
    header_timeout: Option<Duration>,
    close_mode: CloseMode,
) -> Early {
    let readable = stream.readable();
    let ready = match header_timeout {
        Some(limit) => match tokio::time::timeout(limit, readable).await {
            Ok(ready) => ready,
            Err(_) => {
                // Not one byte in time: what hyper would drop anyway.
                let stream = AbortableStream::new(stream);
                drop_connection(stream.handle(), peer, close_mode, DropReason::HeaderTimeout);
                return Early::Done;
            }
        },
        None => readable.await,
    };
    if ready.is_err() {
        return Early::Done;
    }
    judge_now(stream, peer, layer)
}

/// The request head at the start of `bytes`, if it is complete and valid.
fn request_head(bytes: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    if !parsed.parse(bytes).ok()?.is_complete() {
        return None;
    }
    let version = match parsed.version? {
        0 => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let mut head = Request::builder()
        .method(parsed.method?)
        .uri(parsed.path?)
        .version(version);
    for header in parsed.headers.iter() {
        head = head.header(header.name, header.value);
    }
    head.body(()).ok()
}

/// Closes a connection before reading from it, and logs it as a 444.
fn refuse(stream: TcpStream, peer: SocketAddr, mode: CloseMode, reason: DropReason) {
    drop_connection(AbortableStream::new(stream).handle(), peer, mode, reason);
}

/// Aborts a connection the loop itself drops and logs it, once: a handle
/// already tripped by the layer has had its event.
fn drop_connection(
    handle: &ConnectionHandle,
    peer: SocketAddr,
    mode: CloseMode,
    reason: DropReason,
) {
    if handle.abort(mode) {
        DropEvent {
            rule: reason,
            handling: Handling::Drop(Close::Mode(mode)),
            client_ip: Some(peer.ip().to_canonical()),
            peer_addr: Some(peer),
            request: None,
        }
        .emit();
    }
}

struct Connection<S> {
    builder: Builder<TokioExecutor>,
    service: S,
    peer: SocketAddr,
    http2_drop: Http2Drop,
    close_mode: CloseMode,
    /// Bounds the wait for the first bytes and the TLS handshake; hyper
    /// enforces it after that.
    header_timeout: Option<Duration>,
    stop: watch::Receiver<()>,
    _done: mpsc::Sender<Infallible>,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl<S, B> Connection<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn run(self, stream: TcpStream, prefix: Vec<u8>, judge_later: Option<NoResponseLayer>) {
        let (stream, prefix) = match judge_later {
            None => (stream, prefix),
            Some(layer) => {
                let mut stop = self.stop.clone();
                let judged = judge_when_read(
                    stream,
                    &layer,
                    self.peer,
                    self.header_timeout,
                    self.close_mode,
                );
                let judged = tokio::select! {
                    judged = judged => judged,
                    // Shutting down before the client sent a byte: close it
                    // now, as hyper closes idle connections.
                    _ = stop.changed() => Early::Done,
                };
                match judged {
                    Early::Done => return,
                    Early::Undecided(stream, read) => (stream, read),
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let io = AbortableStream::with_prefix(stream, prefix);
        let handle = io.handle().clone();
        #[cfg(feature = "rustls")]
        if let Some(tls) = self.tls.clone() {
            let limit = self.header_timeout.unwrap_or(Duration::from_secs(10));
            let mut handshake = pin!(tokio_rustls::TlsAcceptor::from(tls).accept(io));
            tokio::select! {
                // A failed handshake is rustls's to answer, with an alert.
                done = &mut handshake => if let Ok(tls_stream) = done {
                    Box::pin(self.serve_io(tls_stream, handle)).await;
                },
                () = tokio::time::sleep(limit) => {
                    // Trip first: the stream, still inside the handshake,
                    // then closes with the close mode when it is dropped.
                    drop_connection(&handle, self.peer, self.close_mode, DropReason::HeaderTimeout);
                }
            }
            return;
        }
        // Boxed: hyper's connection is large, and inline it would make every
        // spawn copy it, even for connections judged and dropped before it.
        Box::pin(self.serve_io(io, handle)).await;
    }

    async fn serve_io<I>(mut self, io: I, handle: ConnectionHandle)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnectionInfo::new(self.peer, handle.clone());
        let reset = match self.http2_drop {
            Http2Drop::ResetStreamInternalError => h2::Reason::INTERNAL_ERROR,
            _ => h2::Reason::CANCEL,
        };
        let service = TowerToHyperService::new(match self.http2_drop {
            // Without the flag, the layer closes the whole connection.
            Http2Drop::CloseConnection => StreamResets::new(self.service, reset, Some(info)),
            _ => StreamResets::new(self.service, reset, Some(info.with_stream_resets())),
        });
        let mut conn = pin!(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
        );
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        // The connection still owns the stream here, so the close mode can
        // still be chosen before it is dropped.
        if let Err(e) = result {
            let timed_out = e
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            if timed_out {
                drop_connection(
                    &handle,
                    self.peer,
                    self.close_mode,
                    DropReason::HeaderTimeout,
                );
            }
        }
    }
}

/// Marks each request's connection as one whose HTTP/2 drops are turned
/// into stream resets, and turns every dropped response into a
/// [`RequestDropped`] error. The serve loop's; tonic's is `NoResponseGrpc`.
#[derive(Clone, Debug)]
pub(crate) struct StreamResets<S> {
    inner: S,
    reset: h2::Reason,
    /// The connection, for a serve loop that puts it in each request
    /// itself; `None` when it is there already (tonic's `Connected`).
    info: Option<ConnectionInfo>,
}

impl<S> StreamResets<S> {
    pub(crate) fn new(inner: S, reset: h2::Reason, info: Option<ConnectionInfo>) -> Self {
        Self { inner, reset, info }
    }
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for StreamResets<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = DropAsError<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let extensions = request.extensions_mut();
        match &self.info {
            Some(info) => {
                // Middleware outside the layer reads the peer as axum's.
                #[cfg(feature = "axum")]
                crate::extract::insert_peer(extensions, info.peer_addr());
                extensions.insert(info.clone());
            }
            None => {
                mark_stream_resets(extensions);
            }
        }
        DropAsError::new(self.inner.call(request), self.reset)
    }
}
