//! The layer: the tower `Layer` + `Service` + `ResponseFuture` trio, the
//! builder that configures it, and the state it keeps beside the rules.

pub(crate) mod body;
mod builder;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod request_body;
mod response;
pub(crate) mod service;
mod state;

pub use body::NoResponseBody;
pub use builder::NoResponseLayerBuilder;
pub use future::ResponseFuture;
pub use layer::NoResponseLayer;
pub use request_body::TimedBody;
pub use service::NoResponse;
