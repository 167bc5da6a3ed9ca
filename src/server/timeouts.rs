//! The timeouts a connection side arms a stream with, as the layer holds
//! them at accept.

use crate::NoResponseLayer;
use crate::connection::Timeouts;

impl Timeouts {
    /// The timeouts in force in `layer`, for a connection accepted now.
    pub(crate) fn of(layer: &NoResponseLayer) -> Self {
        Self {
            header: layer.header_timeout(),
            keepalive: Some(layer.keepalive_timeout()),
            send: Some(layer.send_timeout()),
        }
    }
}
