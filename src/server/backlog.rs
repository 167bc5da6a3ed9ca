//! The listening socket's backlog, read outside the runtime (Linux). Both
//! accept loops, the serve loop's and the layer's listener for
//! `axum::serve`, take each waiting connection as a bare non-blocking
//! socket and judge what is known at accept before the socket is
//! registered with the runtime: a connection dropped there is closed
//! without ever being added to the reactor or removed from it. Only the
//! listener's readiness comes from the runtime.
//!
//! # Why `unsafe`
//!
//! That readiness comes through `AsyncFd`, whose constructor is `unsafe`:
//! the runtime must be able to trust that the descriptor stays open, and
//! stays the same, while it is registered. It does: the `AsyncFd` owns the
//! `std::net::TcpListener`, whose descriptor closes only when the listener
//! is dropped, after the registration is gone, and whose `as_raw_fd` never
//! changes.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::task::{Poll, ready};

use tokio::io::{Interest, unix::AsyncFd};

/// A listening socket whose readiness the runtime reports and whose
/// connections are accepted bare.
#[derive(Debug)]
pub(crate) struct Backlog(AsyncFd<std::net::TcpListener>);

impl Backlog {
    /// Registers `listener`, which must be non-blocking, for readiness.
    /// Must run inside the runtime.
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        // SAFETY: the `AsyncFd` takes the listener, and with it the one
        // descriptor it reports, open until the `AsyncFd` drops it (see
        // the module's docs).
        let fd = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
        fd.map(Self).map_err(|e| e.into_parts().1)
    }

    /// A second descriptor for the socket behind `listener`, registered
    /// for readiness beside it: the runtime's listener stays as it is (for
    /// callers that hold it), and epoll takes a duplicate descriptor of a
    /// socket already registered.
    #[cfg(feature = "axum")]
    pub(crate) fn beside(listener: &tokio::net::TcpListener) -> io::Result<Self> {
        use std::os::fd::AsFd;
        // A duplicate shares the original's non-blocking flag.
        Self::new(listener.as_fd().try_clone_to_owned()?.into())
    }

    /// The next waiting connection, as a bare non-blocking socket; on an
    /// empty backlog, the wait for one.
    pub(crate) async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| {
            loop {
                // `poll_read_ready` spends the task's budget, as the
                // runtime's own accept does: under a flood of connections
                // dropped at accept the loop still yields, and every other
                // task on its thread runs. (`readable()` spends none.)
                let mut ready = ready!(self.0.poll_read_ready(cx))?;
                // A would-block clears the readiness, and the loop waits again.
                if let Ok(accepted) =
                    ready.try_io(|listener| crate::connection::accept_bare(listener.get_ref()))
                {
                    return Poll::Ready(accepted);
                }
            }
        })
        .await
    }
}
