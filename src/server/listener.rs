use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::{Listener, ListenerExt, TapIo};
use tokio::net::TcpListener;

use super::early::{Early, judge_now};
use crate::NoResponseLayer;
#[cfg(feature = "proxy-protocol")]
use crate::connection::proxy_header::{self, Origin};
use crate::connection::registry::Registry;
use crate::connection::{AbortableStream, Accepted, Exchanges, Timeouts};

impl NoResponseLayer {
    /// Where the layer's listeners record their connections.
    pub(crate) fn connections(&self) -> &Arc<Registry> {
        &self.shared.connections
    }

    /// A listener for `axum::serve` whose connections this layer can abort:
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::net::SocketAddr;
    /// use axum::{Router, routing::get};
    /// use tower_no_response::NoResponseLayer;
    ///
    /// let layer = NoResponseLayer::builder().server_name("example.com").build()?;
    /// let app = Router::new().route("/", get(|| async { "ok" })).layer(layer.clone());
    /// let tcp = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// axum::serve(
    ///     layer.listener(tcp),
    ///     app.into_make_service_with_connect_info::<SocketAddr>(),
    /// )
    /// .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Serve with `into_make_service_with_connect_info::<SocketAddr>()`, as
    /// for any axum app that reads the peer: the layer judges the client by
    /// that `ConnectInfo<SocketAddr>`, finds the connection by it, and every
    /// other middleware reads it as usual.
    ///
    /// A connection's first request that has already arrived when it is
    /// accepted is judged then, as the crate's serve loop does: if a rule
    /// drops it, the connection is closed (and the drop counted and logged)
    /// before axum sees it, so middleware outside the layer does not see
    /// it either. Everything else reaches axum and the layer with the bytes
    /// already read. [`set_defer_accept`](crate::connection::set_defer_accept)
    /// on `listener` makes every first request arrive before its accept.
    /// That judges every path by the layer's rules: when the layer guards
    /// only part of the app (one nested router, say), serve with
    /// [`listener_without_early_judging`](Self::listener_without_early_judging).
    ///
    /// **Add the layer after the routes**, `Router::new().route(..).layer(layer)`:
    /// axum's `Router::layer` wraps only the routes added before it. A
    /// layer added first, `Router::new().layer(layer).route(..)`, wraps
    /// none, yet this listener still drops a bad first request on each new
    /// connection, so a test with curl looks right while every later
    /// request on a kept-alive connection, and every HTTP/2 request, goes
    /// unjudged, and a bad first request is dropped only when it arrived
    /// whole before its accept, so the same request is dropped or served
    /// depending on timing. Once the listener has let three first requests
    /// through, the first of them at least a quarter of a second earlier,
    /// and the layer itself has judged none, the layer logs a warning
    /// saying so, once, at `warn` with target `tower_no_response`.
    ///
    /// The stream keeps the header, keep-alive and send timeouts, and
    /// HTTP/2's, since `axum::serve` has none. It learns of each exchange
    /// from the layer: a request the layer does not wrap (a route outside
    /// it) is followed by its bytes alone, and its response is taken to
    /// end at the server's last write. So a response outside the layer
    /// that streams with pauses longer than the keep-alive timeout is
    /// closed at the first such pause; keep long-lived routes inside it.
    #[must_use]
    pub fn listener(&self, listener: TcpListener) -> NoResponseListener {
        self.abortable_listener(listener, true)
    }

    /// [`listener`](Self::listener) without judging at accept: every
    /// request reaches axum, and only the routes the layer wraps are judged,
    /// by the layer.
    #[must_use]
    pub fn listener_without_early_judging(&self, listener: TcpListener) -> NoResponseListener {
        self.abortable_listener(listener, false)
    }

    fn abortable_listener(&self, listener: TcpListener, judge_early: bool) -> NoResponseListener {
        let listener = AbortableListener {
            door: Door {
                inner: listener,
                #[cfg(target_os = "linux")]
                backlog: None,
            },
            registry: Arc::clone(self.connections()),
            layer: self.clone(),
            judge_early,
            #[cfg(feature = "proxy-protocol")]
            behind_balancers: tokio::task::JoinSet::new(),
        };
        listener.tap_io(accepted as fn(&mut AbortableStream))
    }
}

/// The listener made by [`NoResponseLayer::listener`](crate::NoResponseLayer::listener): an
/// [`AbortableListener`] in axum's `TapIo`.
///
/// It is an alias, not a type of its own, on purpose: axum provides
/// `ConnectInfo<SocketAddr>` only for its own `TcpListener` and for
/// `TapIo`, and a type of this crate could not be given it (the trait, the
/// stream type and `SocketAddr` all belong to other crates). Through
/// `TapIo`, every middleware keeps reading the peer as axum's usual
/// `ConnectInfo<SocketAddr>`. Treat it as opaque: pass it to `axum::serve`.
pub type NoResponseListener = TapIo<AbortableListener, fn(&mut AbortableStream)>;

/// Nothing to do to an accepted stream: the wrapper is there for axum's
/// connect info.
fn accepted(_: &mut AbortableStream) {}

/// A TCP listener for `axum::serve` whose connections a
/// [`NoResponseLayer`](crate::NoResponseLayer) can abort, inside a
/// [`NoResponseListener`].
///
/// Accept errors are handled exactly as axum's own `TcpListener` handles them,
/// since this listener delegates to it: per-connection errors are skipped, and
/// others (such as running out of file descriptors) are logged and retried
/// after a pause.
#[derive(Debug)]
pub struct AbortableListener {
    door: Door,
    registry: Arc<Registry>,
    /// For the header timeout and close mode in force at each accept, and
    /// the rules a first request is judged by.
    layer: NoResponseLayer,
    judge_early: bool,
    /// Connections from balancers, each reading its PROXY protocol header
    /// in a task of its own, so that a slow one holds up no other accept.
    #[cfg(feature = "proxy-protocol")]
    behind_balancers: tokio::task::JoinSet<Option<(tokio::net::TcpStream, Origin, Vec<u8>)>>,
}

impl AbortableListener {
    /// The address the listener is bound to.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.door.inner.local_addr()
    }

    /// The wrapped listener.
    #[must_use]
    pub fn get_ref(&self) -> &TcpListener {
        &self.door.inner
    }

    /// What every accepted connection goes through before axum has it: the
    /// refusals at accept, then, if it is there, the first request. The
    /// socket and the bytes read, when it is kept.
    fn judge<S: Accepted>(&self, stream: S, addr: SocketAddr) -> Option<(S, Vec<u8>)> {
        let stream = self.layer.screen_at_accept(stream, addr)?;
        // A first request already here is judged now: a drop then never
        // becomes a task, a hyper connection or a registry entry. (With
        // `TCP_DEFER_ACCEPT` on the listener, the request is always here.)
        // Anything else goes to axum with the bytes read.
        if !self.judge_early {
            return Some((stream, Vec::new()));
        }
        match judge_now(stream, addr, &self.layer) {
            Early::Done => None,
            Early::Undecided(stream, read) => Some((stream, read)),
        }
    }

    /// Reads the PROXY protocol header of a connection from `balancer` in
    /// a task of its own, then judges it as its client's: the refusals at
    /// accept, then the first request if it is there.
    #[cfg(feature = "proxy-protocol")]
    fn read_proxy_header(&mut self, stream: tokio::net::TcpStream, balancer: SocketAddr) {
        let layer = self.layer.clone();
        let judge_early = self.judge_early;
        self.behind_balancers.spawn(async move {
            let (stream, origin) =
                proxy_header::read(stream, balancer, layer.proxy_header_policy()).await?;
            let stream = layer.screen_behind_balancer(stream, origin.client)?;
            if !judge_early {
                return Some((stream, origin, Vec::new()));
            }
            match judge_now(stream, origin.client, &layer) {
                Early::Done => None,
                Early::Undecided(stream, read) => Some((stream, origin, read)),
            }
        });
    }
}

impl Listener for AbortableListener {
    type Io = AbortableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer, prefix, balancer) = loop {
            #[cfg(feature = "proxy-protocol")]
            let accepted = tokio::select! {
                accepted = self.door.next(self.judge_early) => accepted,
                Some(read) = self.behind_balancers.join_next(), if !self.behind_balancers.is_empty() => {
                    // A task that panicked, or a connection dropped while
                    // its header was read.
                    if let Ok(Some((stream, origin, prefix))) = read {
                        break (stream, origin.client, prefix, Some(origin.balancer));
                    }
                    continue;
                }
            };
            #[cfg(not(feature = "proxy-protocol"))]
            let accepted = self.door.next(self.judge_early).await;
            let (stream, addr) = match accepted {
                #[cfg(target_os = "linux")]
                Bare::Bare(socket, addr) => {
                    #[cfg(feature = "proxy-protocol")]
                    if self.layer.sends_proxy_header(addr) {
                        if let Ok(stream) = tokio::net::TcpStream::from_std(socket) {
                            self.read_proxy_header(stream, addr);
                        }
                        continue;
                    }
                    let kept = self.judge(socket, addr).and_then(|(socket, read)| {
                        Some((tokio::net::TcpStream::from_std(socket).ok()?, read))
                    });
                    match kept {
                        Some((stream, read)) => break (stream, addr, read, None),
                        None => continue,
                    }
                }
                Bare::Registered(stream, addr) => (stream, addr),
            };
            #[cfg(feature = "proxy-protocol")]
            if self.layer.sends_proxy_header(addr) {
                self.read_proxy_header(stream, addr);
                continue;
            }
            if let Some((stream, read)) = self.judge(stream, addr) {
                break (stream, addr, read, None);
            }
        };
        let mut stream = AbortableStream::with_prefix(stream, prefix);
        #[cfg(feature = "proxy-protocol")]
        if balancer.is_none() {
            stream = self.layer.guard_proxy_header(stream, peer);
        }
        #[cfg(not(feature = "proxy-protocol"))]
        let _: Option<SocketAddr> = balancer;
        // The layer reports each exchange it sees to the stream's timers,
        // finding the stream by the task that serves it.
        let exchanges = Arc::new(Exchanges::default());
        stream.handle().follow(&exchanges);
        stream.register(&self.registry, peer, Arc::clone(&exchanges));
        // axum::serve has no header, keep-alive or send timeout of its
        // own: the stream keeps them.
        let stream = stream.with_timers(
            Timeouts::of(&self.layer),
            exchanges,
            tokio::time::Instant::now(),
            peer,
            self.layer.close_mode(),
        );
        // Behind a balancer, axum's `ConnectInfo` is the client.
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.door.inner.local_addr()
    }
}

/// A connection as accepted: bare, outside the runtime (see `backlog`), or
/// by the runtime's own accept.
enum Bare {
    #[cfg(target_os = "linux")]
    Bare(std::net::TcpStream, SocketAddr),
    Registered(tokio::net::TcpStream, SocketAddr),
}

/// The listening socket, and its backlog read bare beside it.
#[derive(Debug)]
struct Door {
    inner: TcpListener,
    /// The socket's backlog, read bare beside `inner`; made at the first
    /// accept, inside the runtime. `None` where it cannot be made, and the
    /// runtime's accept serves alone.
    #[cfg(target_os = "linux")]
    backlog: Option<Option<super::backlog::Backlog>>,
}

impl Door {
    /// The next connection. Every connection is taken bare and judged
    /// before the runtime registers it, where that can be done: a drop
    /// then costs no registration and no removal, whether the backlog was
    /// full or empty. The wait is on the listener's readiness, which spends
    /// the task's budget on each accept, so a flood of drops still yields.
    async fn next(&mut self, bare: bool) -> Bare {
        #[cfg(target_os = "linux")]
        if bare {
            let inner = &self.inner;
            let backlog = self
                .backlog
                .get_or_insert_with(|| super::backlog::Backlog::beside(inner).ok());
            // On any error the runtime's accept takes over, and meets and
            // handles it as axum's does.
            if let Some(backlog) = backlog {
                if let Ok((socket, addr)) = backlog.accept().await {
                    return Bare::Bare(socket, addr);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = bare;
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        Bare::Registered(stream, addr)
    }
}
