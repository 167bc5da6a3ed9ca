use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, ToSocketAddrs};

use super::{AbortableStream, ConnectionInfo};

/// A TCP listener for `axum::serve` whose connections a
/// [`NoResponseLayer`](crate::NoResponseLayer) can abort.
///
/// Accept errors are handled exactly as axum's own `TcpListener` handles them,
/// since this listener delegates to it: per-connection errors are skipped, and
/// others (such as running out of file descriptors) are logged and retried
/// after a pause.
#[derive(Debug)]
pub struct NoResponseListener {
    inner: TcpListener,
}

impl NoResponseListener {
    /// Binds a new listener.
    ///
    /// # Errors
    /// As [`TcpListener::bind`].
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        TcpListener::bind(addr).await.map(Self::from)
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The wrapped listener.
    #[must_use]
    pub fn get_ref(&self) -> &TcpListener {
        &self.inner
    }
}

impl From<TcpListener> for NoResponseListener {
    fn from(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for NoResponseListener {
    type Io = AbortableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        (AbortableStream::new(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, NoResponseListener>> for ConnectionInfo {
    fn connect_info(stream: IncomingStream<'_, NoResponseListener>) -> Self {
        Self::new(*stream.remote_addr(), stream.io().handle().clone())
    }
}
