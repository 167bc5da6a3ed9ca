//! One connection's task: the first request judged early if it has not
//! arrived yet, TLS if configured, then hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

#[cfg(feature = "rustls")]
use super::super::early::judge_in_tls;
use super::super::early::{Early, judge_when_read};
use super::ClientHello;
use super::ConnectionSlot;
use super::Http2Drop;
use super::ServeLoopService;
use super::adapter::{Activity, StreamResets};
use crate::NoResponseLayer;
use crate::connection::{AbortableStream, ConnectionHandle, ConnectionInfo, Exchanges, Timeouts};
use crate::rules::CloseMode;

pub(super) struct Connection<S> {
    /// Shared: hyper's builder is large, and each connection's task would
    /// otherwise copy it, dropped or not.
    pub(super) builder: Arc<Builder<TokioExecutor>>,
    pub(super) service: S,
    /// The client: the TCP peer, or the client a balancer's PROXY
    /// protocol header named.
    pub(super) peer: SocketAddr,
    /// The balancer, behind one.
    pub(super) balancer: Option<SocketAddr>,
    /// Whether the layer reads PROXY protocol headers from balancers, so
    /// that another peer's is refused.
    #[cfg(feature = "proxy-protocol")]
    pub(super) proxy_headers: bool,
    pub(super) http2_drop: Http2Drop,
    pub(super) close_mode: CloseMode,
    /// The header timeout bounds the wait for the first bytes and the TLS
    /// handshake, then each request head, as the keep-alive timeout bounds
    /// the wait between requests; see `connection::exchange`.
    pub(super) timeouts: Timeouts,
    /// Closes a connection with nothing in flight this long, whatever the
    /// stream's timers say.
    pub(super) idle_timeout: Option<Duration>,
    /// Held while the connection lives, for the connection caps.
    pub(super) _slot: Option<ConnectionSlot>,
    pub(super) stop: watch::Receiver<()>,
    pub(super) _done: mpsc::Sender<Infallible>,
    #[cfg(feature = "rustls")]
    pub(super) tls: Option<super::tls::TlsSetup>,
}

impl<S: ServeLoopService> Connection<S> {
    pub(super) async fn run(
        self,
        stream: TcpStream,
        prefix: Vec<u8>,
        judge_later: Option<NoResponseLayer>,
    ) {
        let accepted = tokio::time::Instant::now();
        let (stream, prefix) = match judge_later {
            None => (stream, prefix),
            Some(layer) => {
                let mut stop = self.stop.clone();
                let judged = judge_when_read(stream, &layer, self.peer, self.timeouts.header);
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
        // Boxed, as hyper's connection is below: the handshake's state is
        // large, and inline it would make every spawn copy it, plaintext
        // connections and connections dropped before it included.
        #[cfg(feature = "rustls")]
        if let Some(tls) = self.tls.clone() {
            Box::pin(self.run_tls(tls, stream, prefix, accepted)).await;
            return;
        }
        let io = self.guard(AbortableStream::with_prefix(stream, prefix));
        let handle = io.handle().clone();
        let exchanges = Arc::new(Exchanges::default());
        let io = io.with_timers(
            self.timeouts,
            Arc::clone(&exchanges),
            accepted,
            self.peer,
            self.close_mode,
        );
        // Boxed: hyper's connection is large, and inline it would make every
        // spawn copy it, even for connections judged and dropped before it.
        Box::pin(self.serve_io(io, handle, exchanges, None)).await;
    }

    /// A direct connection's stream, watched for a PROXY protocol header
    /// it has no right to send.
    fn guard(&self, io: AbortableStream) -> AbortableStream {
        #[cfg(feature = "proxy-protocol")]
        if self.proxy_headers && self.balancer.is_none() {
            return io.refusing_proxy_headers(self.peer, self.close_mode);
        }
        io
    }

    /// The TLS part of [`run`](Self::run): the gate, the handshake, the
    /// first request judged inside TLS, then hyper.
    #[cfg(feature = "rustls")]
    async fn run_tls(
        self,
        tls: super::tls::TlsSetup,
        stream: TcpStream,
        prefix: Vec<u8>,
        accepted: tokio::time::Instant,
    ) {
        let limit = self.timeouts.header.unwrap_or(Duration::from_secs(10));
        let (peer, close_mode) = (self.peer, self.close_mode);
        let (io, hello) = match &tls.gate {
            Some(gate) => match gate.admit_from(stream, peer, self.balancer.is_some()).await {
                Some(admitted) => {
                    let (io, hello) = admitted.into_parts();
                    (io, Some(hello))
                }
                None => return,
            },
            None => (
                self.guard(AbortableStream::with_prefix(stream, prefix)),
                None,
            ),
        };
        let handle = io.handle().clone();
        let names = hello.as_ref().map(ClientHello::names);
        // One bound for the ClientHello and the handshake together.
        let limit = limit.saturating_sub(accepted.elapsed());
        let handshake = super::tls::handshake(tls.config, io, limit, peer, close_mode);
        let Some(mut tls_stream) = handshake.await else {
            return;
        };
        let handshaken = tokio::time::Instant::now();
        let prefix = match &tls.judge_first {
            Some(layer) => {
                let header = self.timeouts.header;
                let judged = judge_in_tls(
                    &mut tls_stream,
                    &handle,
                    layer,
                    peer,
                    header,
                    names.as_ref(),
                );
                let mut stop = self.stop.clone();
                let judged = tokio::select! {
                    judged = judged => judged,
                    // Shutting down before the first request: close.
                    _ = stop.changed() => None,
                };
                match judged {
                    Some(prefix) => prefix,
                    None => return,
                }
            }
            None => Vec::new(),
        };
        // The timers read the plain bytes, from the end of the
        // handshake, which has a bound of its own.
        let exchanges = Arc::new(Exchanges::default());
        let watch = crate::connection::Watch::new(
            self.timeouts,
            Arc::clone(&exchanges),
            handshaken,
            &prefix,
            (peer, close_mode),
        );
        let io = crate::connection::Watched::new(tls_stream, prefix, watch, handle.clone());
        Box::pin(self.serve_io(io, handle, exchanges, hello.zip(names))).await;
    }

    async fn serve_io<I>(
        mut self,
        io: I,
        handle: ConnectionHandle,
        exchanges: Arc<Exchanges>,
        hello: Option<(ClientHello, Arc<crate::audit::HelloNames>)>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        handle.follow(&exchanges);
        let mut info = ConnectionInfo::new(self.peer, handle.clone());
        if let Some(balancer) = self.balancer {
            info = info.with_balancer_addr(balancer);
        }
        let hello = hello.map(|(hello, names)| {
            info.hello = Some(names);
            hello
        });
        let reset = match self.http2_drop {
            Http2Drop::ResetStreamInternalError => h2::Reason::INTERNAL_ERROR,
            _ => h2::Reason::CANCEL,
        };
        let info = match self.http2_drop {
            // Without the flag, the layer closes the whole connection.
            Http2Drop::CloseConnection => info,
            _ => info.with_stream_resets(),
        };
        let idle = self.idle_timeout;
        let activity = Activity::new(exchanges, idle.is_some());
        let service = TowerToHyperService::new(StreamResets::new(
            self.service,
            reset,
            info,
            Arc::clone(&activity),
            hello,
        ));
        let mut conn = pin!(
            self.builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
        );
        let mut stopping = false;
        let result = loop {
            // Read afresh after every change of activity, which wakes the
            // loop: a request that begins or ends moves the deadline.
            let changed = activity.changed();
            let due = idle
                .zip(activity.idle_since())
                .and_then(|(t, since)| since.checked_add(t));
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = changed, if idle.is_some() => {}
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() && !stopping => {
                    // Idle: an orderly close.
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        // hyper has no header timeout here (the stream's timers are it), so
        // an error is the client's going or hyper's own refusal: nothing
        // to log as a drop.
        drop(result);
    }
}
