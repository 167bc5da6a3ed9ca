//! The integration tests, one module per concern, in one binary so that a
//! build links the dependency graph once.
//!
//! A few suites stay binaries of their own, beside this one, because they
//! need a process to themselves: a global `tracing` subscriber that sees
//! every thread (`browser`, `crowdsec`, `fail2ban`, `long_lived`,
//! `misplaced_layer`, `proxy_protocol`, `tls_gate`, some of which assert that
//! nothing in the whole process was dropped) or a global allocator
//! (`no_alloc`), or a global metrics recorder whose every count is the
//! suite's own (`prometheus`).

#[cfg(feature = "axum")]
#[path = "../common/mod.rs"]
mod common;

#[cfg(feature = "axum")]
#[path = "../common/h2_frames.rs"]
mod h2_frames;

#[cfg(feature = "redis")]
#[path = "../common/certs.rs"]
mod certs;

#[cfg(all(feature = "axum", feature = "redis"))]
#[path = "../common/redis_servers.rs"]
mod redis_servers;

#[cfg(all(feature = "axum", feature = "access-log"))]
mod access_log;
#[cfg(feature = "axum")]
mod audit_event;
#[cfg(feature = "axum-server")]
mod axum_server;
#[cfg(feature = "axum")]
mod ban_events;
#[cfg(all(feature = "axum", feature = "server"))]
mod behind_a_proxy;
mod build_errors;
#[cfg(feature = "axum")]
mod connection;
#[cfg(feature = "axum")]
mod ecosystem;
#[cfg(all(feature = "axum", feature = "server"))]
mod header_timeout;
#[cfg(feature = "axum")]
mod hostile_input;
#[cfg(all(feature = "axum", feature = "server"))]
mod judge_early;
#[cfg(feature = "axum")]
mod kernel_filter;
#[cfg(feature = "axum")]
mod keyed_limits;
mod layering;
mod limiter_eviction;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "axum")]
mod operating;
mod properties;
#[cfg(feature = "axum")]
mod real_ip;
#[cfg(all(feature = "axum", feature = "redis"))]
mod redis;
#[cfg(all(feature = "axum", feature = "redis"))]
mod redis_scale_out;
#[cfg(feature = "axum")]
mod rules_on_the_wire;
#[cfg(all(feature = "axum", feature = "server"))]
mod serve;
#[cfg(feature = "axum")]
mod silent;
#[cfg(all(feature = "axum", feature = "rustls"))]
mod tls;
#[cfg(feature = "tonic")]
mod tonic;
#[cfg(all(feature = "tonic", feature = "rustls"))]
mod tonic_tls;
