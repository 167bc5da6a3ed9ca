//! The rate limit: its settings ([`RateLimit`]), and the limiter the layer
//! keeps beside the rules, runtime state that a reload keeps while the
//! limit it enforces is unchanged, so that clients' budgets survive it.
//! The budget lives in this process (governor's GCRA) or, with a
//! [`SharedRateLimit`], in a store every replica shares.
//!
//! # With tower_governor
//!
//! The layer's own [`rate_limit`](crate::NoResponseLayerBuilder::rate_limit)
//! covers nginx's `limit_req`. To keep a `tower_governor` limit instead, put
//! it inside the layer and key it by the client the layer judged, which the
//! layer puts in every allowed request as [`ClientIp`](crate::ClientIp): the
//! real client behind trusted proxies, where governor's own extractors would
//! see the proxy or trust any `X-Forwarded-For`.
//!
//! ```rust
//! # #[cfg(feature = "axum")]
//! # mod example {
//! use std::net::IpAddr;
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use http::Request;
//! use tower_governor::{GovernorError, GovernorLayer, governor::GovernorConfigBuilder};
//! use tower_governor::key_extractor::KeyExtractor;
//! use tower_no_response::{ClientIp, NoResponseLayer};
//!
//! #[derive(Clone)]
//! struct JudgedClient;
//!
//! impl KeyExtractor for JudgedClient {
//!     type Key = IpAddr;
//!
//!     fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
//!         let client = request.extensions().get::<ClientIp>();
//!         client.map(|c| c.0).ok_or(GovernorError::UnableToExtractKey)
//!     }
//! }
//!
//! pub fn app() -> Result<Router, Box<dyn std::error::Error>> {
//!     let layer = NoResponseLayer::builder()
//!         .server_name("example.com")
//!         .trusted_proxy("10.0.0.0/8")
//!         .build()?;
//!     let governor = GovernorConfigBuilder::default()
//!         .per_second(1)
//!         .burst_size(20)
//!         .key_extractor(JudgedClient)
//!         .finish()
//!         .ok_or("a valid governor configuration")?;
//!     Ok(Router::new()
//!         .route("/", get(|| async { "ok" }))
//!         .layer(GovernorLayer::new(Arc::new(governor))) // inside: runs after the layer
//!         .layer(layer)) // outside: judges first, then hands governor the ClientIp
//! }
//! # }
//! # #[cfg(feature = "axum")]
//! # example::app().unwrap();
//! ```

pub(crate) mod local;
mod overflow;
pub(crate) mod rate;
mod shared;
mod table;

use std::net::IpAddr;
use std::sync::Arc;

pub(crate) use rate::RateLimit;
pub use shared::{
    FailurePolicy, RateLimitStore, SharedRateLimit, StoreError, StoreFuture, StoreVerdict,
};

use crate::error::BuildError;
use local::Limiter;
pub(crate) use shared::{SharedLimiter, Step, StoreCheck};

/// Where the rate limit's budget is kept.
#[derive(Debug, Clone)]
pub(crate) enum RateLimiter {
    /// In this process: governor's GCRA, the default.
    Local(Arc<Limiter>),
    /// In a store shared with other replicas.
    Shared(Arc<SharedLimiter>),
}

impl RateLimiter {
    /// The limiter for `limit` (kept in `shared`, if given): `previous`
    /// when it already enforces exactly that, else a new one.
    pub(crate) fn for_limit(
        limit: &RateLimit,
        shared: Option<&SharedRateLimit>,
        previous: Option<&RateLimiter>,
    ) -> Result<Self, BuildError> {
        match (shared, previous) {
            (None, Some(Self::Local(kept))) if kept.serves(limit) => {
                Ok(Self::Local(Arc::clone(kept)))
            }
            (Some(shared), Some(Self::Shared(kept))) if kept.serves(limit, shared) => {
                Ok(Self::Shared(Arc::clone(kept)))
            }
            (None, _) => Ok(Self::Local(Arc::new(Limiter::new(limit)?))),
            (Some(shared), _) => Ok(Self::Shared(Arc::new(shared.compile(limit)?))),
        }
    }

    /// The part of the check that needs no round trip.
    pub(crate) fn check(&self, ip: IpAddr) -> Step {
        match self {
            Self::Local(limiter) => Step::Done(limiter.check(ip)),
            Self::Shared(shared) => shared.check(ip),
        }
    }

    /// The round trip to the shared store, if there is one.
    pub(crate) fn ask(&self, ip: IpAddr) -> Option<StoreCheck> {
        match self {
            Self::Local(_) => None,
            Self::Shared(shared) => Some(shared.ask(ip)),
        }
    }

    /// How many clients the in-process limiter tracks (with a shared store,
    /// the local pre-check's, if any).
    pub(crate) fn clients(&self) -> Option<usize> {
        match self {
            Self::Local(limiter) => Some(limiter.len()),
            Self::Shared(shared) => shared.local_clients(),
        }
    }
}
