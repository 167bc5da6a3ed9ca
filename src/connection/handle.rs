//! The seam between the layer and the connection side: the switch that
//! aborts a connection, and what a request carries of its connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Context;

use atomic_waker::AtomicWaker;

use crate::connection::exchange::Exchanges;
use crate::rules::CloseMode;

const OPEN: u8 = 0;
const FIN: u8 = 1;
const RESET: u8 = 2;
const SILENT: u8 = 3;

const fn state_of(mode: CloseMode) -> u8 {
    match mode {
        CloseMode::Fin => FIN,
        CloseMode::Reset => RESET,
        CloseMode::Silent => SILENT,
    }
}

/// The switch that aborts one connection. Cheap to clone; all clones and the
/// connection's [`AbortableStream`](crate::connection::AbortableStream) share it.
///
/// Once tripped, the stream refuses every later read and write, wakes the
/// connection task so it is torn down even if a service future is still
/// pending, and closes the socket as the [`CloseMode`] says.
#[derive(Clone)]
pub struct ConnectionHandle {
    shared: Arc<HandleState>,
}

struct HandleState {
    state: AtomicU8,
    reader: AtomicWaker,
    writer: AtomicWaker,
    /// The exchanges the connection has carried, where a connection side
    /// follows them.
    exchanges: OnceLock<Arc<Exchanges>>,
}

impl fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("aborted", &self.close_mode())
            .finish()
    }
}

impl ConnectionHandle {
    pub(crate) fn new() -> Self {
        Self {
            shared: Arc::new(HandleState {
                state: AtomicU8::new(OPEN),
                reader: AtomicWaker::new(),
                writer: AtomicWaker::new(),
                exchanges: OnceLock::new(),
            }),
        }
    }

    /// Ties the connection's exchanges to its handle, so that a drop can
    /// tell whether its request was the connection's first.
    #[cfg_attr(not(any(feature = "axum", feature = "server")), allow(dead_code))]
    pub(crate) fn follow(&self, exchanges: &Arc<Exchanges>) {
        let _ = self.shared.exchanges.set(Arc::clone(exchanges));
    }

    /// Whether the connection carried an exchange before the one in
    /// flight: a client sends an idempotent request again when such a
    /// connection closes without an answer, as it never does for a
    /// connection's first.
    pub(crate) fn reused(&self) -> bool {
        self.shared
            .exchanges
            .get()
            .is_some_and(|exchanges| exchanges.begun() > 1)
    }

    /// Aborts the connection. Returns `false` if it was already aborted, in
    /// which case the first close mode stands.
    pub fn abort(&self, mode: CloseMode) -> bool {
        let tripped = self
            .shared
            .state
            .compare_exchange(OPEN, state_of(mode), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if tripped {
            self.shared.reader.wake();
            self.shared.writer.wake();
        }
        tripped
    }

    /// The close mode if the connection was aborted.
    #[must_use]
    pub fn close_mode(&self) -> Option<CloseMode> {
        match self.shared.state.load(Ordering::Acquire) {
            FIN => Some(CloseMode::Fin),
            RESET => Some(CloseMode::Reset),
            SILENT => Some(CloseMode::Silent),
            _ => None,
        }
    }

    /// Whether the connection was aborted.
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) != OPEN
    }

    /// Whether both handles belong to one connection.
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn register_reader(&self, cx: &Context<'_>) {
        self.shared.reader.register(cx.waker());
    }

    pub(crate) fn register_writer(&self, cx: &Context<'_>) {
        self.shared.writer.register(cx.waker());
    }
}

/// The peer address and abort handle of the connection a request came on.
///
/// The crate's serve loop and tonic's server (with the layer's incoming
/// stream) put it in every request as a plain extension; another serve loop
/// may do the same. Under `axum::serve` it is not needed: the layer finds the
/// connection by its peer address.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    peer_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    balancer_addr: Option<SocketAddr>,
    handle: ConnectionHandle,
    /// The ClientHello the connection began with, for the 444 event of a
    /// request dropped inside TLS.
    pub(crate) hello: Option<Arc<crate::audit::HelloNames>>,
    /// Set where a `DropAsError` stands between the layer and hyper
    /// (the crate's serve loop, the gRPC layer), which can reset one HTTP/2
    /// stream without a head; anywhere else a drop closes the connection.
    pub(crate) stream_resets: bool,
    /// What a connection side learnt for the layers above it, such as the
    /// TLS gate's ClientHello; type-erased, as this side need not know it.
    #[cfg(all(feature = "tonic", feature = "rustls"))]
    pub(crate) attachment: Option<Attachment>,
}

/// A value a connection side attaches to its [`ConnectionInfo`].
#[cfg(all(feature = "tonic", feature = "rustls"))]
#[derive(Clone)]
pub(crate) struct Attachment(pub(crate) Arc<dyn std::any::Any + Send + Sync>);

#[cfg(all(feature = "tonic", feature = "rustls"))]
impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Attachment")
    }
}

impl ConnectionInfo {
    /// Pairs a peer address with the handle of its stream.
    #[must_use]
    pub fn new(peer_addr: SocketAddr, handle: ConnectionHandle) -> Self {
        Self {
            peer_addr,
            local_addr: None,
            balancer_addr: None,
            handle,
            hello: None,
            stream_resets: false,
            #[cfg(all(feature = "tonic", feature = "rustls"))]
            attachment: None,
        }
    }

    /// The same connection, with its local address.
    #[must_use]
    pub fn with_local_addr(mut self, local_addr: SocketAddr) -> Self {
        self.local_addr = Some(local_addr);
        self
    }

    #[cfg(feature = "server")]
    pub(crate) fn with_stream_resets(&self) -> Self {
        let mut info = self.clone();
        info.stream_resets = true;
        info
    }

    /// The same connection, which came from the load balancer at
    /// `balancer_addr`: `peer_addr` is the client its PROXY protocol header
    /// named.
    #[must_use]
    pub fn with_balancer_addr(mut self, balancer_addr: SocketAddr) -> Self {
        self.balancer_addr = Some(balancer_addr);
        self
    }

    /// The TCP peer, or behind a load balancer that sends the PROXY
    /// protocol, the client its header named. Behind a proxy this is the
    /// proxy; see [`ClientIp`](crate::ClientIp) for the client.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The load balancer the connection came from, when its PROXY protocol
    /// header named the client (see
    /// [`proxy_protocol_from`](crate::NoResponseLayerBuilder::proxy_protocol_from)).
    #[must_use]
    pub fn balancer_addr(&self) -> Option<SocketAddr> {
        self.balancer_addr
    }

    /// The local address of the connection, where known.
    #[must_use]
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The handle that aborts the connection.
    #[must_use]
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }
}
