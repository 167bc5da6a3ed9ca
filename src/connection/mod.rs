//! The connection primitives: the handle that aborts a TCP stream, the
//! stream wrapper that obeys it, and what a drop looks like to the server
//! that runs the connection. The connection sides made from the layer (the
//! listener for `axum::serve`, the crate's serve loop, tonic's incoming
//! stream) are in [`server`](crate::server).
//!
//! A tower service cannot close its connection: it can only return a
//! response, and `axum::serve` insists the service never fails. So the layer
//! and the connection share a [`ConnectionHandle`], the layer's half of the
//! seam, which the connection side obeys. Each accepted stream is an
//! [`AbortableStream`]. The layer finds its handle either in the request,
//! as [`ConnectionInfo`] (the serve loop and tonic put it there), or, under
//! `axum::serve`, by the peer address in axum's `ConnectInfo<SocketAddr>`,
//! under which the layer's listener recorded it. When a rule drops a request,
//! the layer trips the handle before any response exists; the stream then
//! refuses every write and closes the socket with the [`CloseMode`].
//!
//! Below the handle, on Linux, [`set_defer_accept`] holds each connection in
//! the kernel until its request has arrived.

#[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
mod accept;
#[cfg(target_os = "linux")]
mod defer_accept;
mod dropped;
// Without a connection side that arms them, streams carry no timers.
#[cfg_attr(not(any(feature = "server", feature = "axum")), allow(dead_code))]
mod exchange;
mod handle;
pub(crate) mod peer;
mod placement;
#[cfg(all(
    feature = "proxy-protocol",
    any(feature = "server", feature = "axum", feature = "tonic")
))]
pub(crate) mod proxy_header;
pub(crate) mod registry;
mod stream;
#[cfg(any(feature = "server", feature = "tonic"))]
pub(crate) mod stream_reset;

pub use crate::rules::policy::CloseMode;
#[cfg(target_os = "linux")]
pub use defer_accept::set_defer_accept;
pub use dropped::RequestDropped;
pub(crate) use exchange::InFlight;
#[cfg(any(feature = "server", feature = "axum"))]
pub(crate) use exchange::{Exchanges, Timeouts};
#[cfg(all(feature = "tonic", feature = "rustls"))]
pub(crate) use handle::Attachment;
pub use handle::{ConnectionHandle, ConnectionInfo};
pub(crate) use placement::Placement;
#[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
pub(crate) use stream::close_as;
pub use stream::{AbortableStream, silent_close_available};
#[cfg(feature = "rustls")]
pub(crate) use stream::{Watch, Watched};
#[cfg(any(feature = "server", feature = "tonic"))]
pub use stream_reset::{DropAsError, StreamDropped};

#[cfg(all(any(feature = "server", feature = "axum"), target_os = "linux"))]
pub(crate) use accept::accept_bare;
#[cfg(all(
    any(feature = "rustls", feature = "proxy-protocol"),
    any(feature = "server", feature = "axum", feature = "tonic")
))]
pub(crate) use accept::drop_connection;
#[cfg(any(feature = "server", feature = "axum", feature = "tonic"))]
pub(crate) use accept::{Accepted, refuse};
