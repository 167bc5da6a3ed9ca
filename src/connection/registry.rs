//! The connections a layer's listener accepted, by peer address: how a drop
//! finds its connection when the request carries only the standard
//! `ConnectInfo<SocketAddr>`.
//!
//! `axum::serve` gives each request one connect-info value. Making it the
//! crate's own type would take `ConnectInfo<SocketAddr>` away from every
//! other middleware (rate limiters, tracing) that reads it. So the listener
//! records each connection's abort handle here, under its peer address,
//! and the layer looks the handle up only when it drops a request.
//!
//! A peer address names one live connection per local address, but two
//! connections to different local addresses (a listener on `0.0.0.0` of a
//! multi-homed host, or two listeners of one layer) can share a peer
//! address and port. So each connection is also recorded under the tokio
//! task that serves it, once the stream is first read there: a request
//! whose service is called in that task (every HTTP/1 request, and HTTP/2
//! requests when the layer wraps the whole app) finds its own connection
//! without doubt, and its peer even when the app was served without
//! connect info. Only a request called elsewhere that shares its peer
//! address with another connection still aborts both, since zero bytes
//! matters more than the neighbour. The entries leave with their stream.

// Only the axum listener registers connections; without it the registry
// stays empty and every lookup finds nothing.
#![cfg_attr(not(feature = "axum"), allow(dead_code))]

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::task::Id;

use super::ConnectionHandle;
use super::exchange::{Exchanges, InFlight};
use crate::rules::CloseMode;

/// A fast hasher: the keys are the server's own (task ids) or a peer's
/// address, which no client chooses freely enough to flood one shard.
type Fast = foldhash::fast::RandomState;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    live: DashMap<SocketAddr, Slot, Fast>,
    /// Each connection, by the task that serves it: looked up for every
    /// request, to report its exchange to the connection's timers.
    by_task: DashMap<Id, Served, Fast>,
}

/// A connection as the task that serves it knows it.
#[derive(Debug)]
struct Served {
    peer: SocketAddr,
    handle: ConnectionHandle,
    exchanges: Arc<Exchanges>,
}

#[derive(Debug)]
enum Slot {
    One(ConnectionHandle),
    Many(Vec<ConnectionHandle>),
}

/// Removes its connection from the registry when dropped, with its stream.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    peer: SocketAddr,
    handle: ConnectionHandle,
    exchanges: Arc<Exchanges>,
    /// The task the connection is served in, once known.
    task: Option<Id>,
    /// Whether the task was looked for: once, at the first read.
    bound: bool,
}

/// What a drop found for its peer.
#[derive(Debug)]
pub(crate) enum Found {
    /// The connection's handle, to abort once the drop is enacted.
    One(ConnectionHandle),
    /// More than one connection from the address: all already aborted.
    AbortedAll,
    /// No live connection from the address in this registry.
    Nothing,
}

impl Registry {
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        handle: &ConnectionHandle,
        exchanges: Arc<Exchanges>,
    ) -> Registration {
        let handle = handle.clone();
        self.live
            .entry(peer)
            .and_modify(|slot| match slot {
                Slot::One(first) => *slot = Slot::Many(vec![first.clone(), handle.clone()]),
                Slot::Many(all) => all.push(handle.clone()),
            })
            .or_insert_with(|| Slot::One(handle.clone()));
        Registration {
            registry: Arc::clone(self),
            peer,
            handle,
            exchanges,
            task: None,
            bound: false,
        }
    }

    /// The connection a request from `peer` came on: the one served by the
    /// current task when there is one (and it is from `peer`, if known),
    /// else the one from `peer`.
    pub(crate) fn find(&self, peer: Option<SocketAddr>, mode: CloseMode) -> Found {
        if let Some(entry) = tokio::task::try_id().and_then(|id| self.by_task.get(&id)) {
            if peer.is_none_or(|p| p == entry.peer) {
                return Found::One(entry.handle.clone());
            }
        }
        let Some(slot) = peer.and_then(|p| self.live.get(&p)) else {
            return Found::Nothing;
        };
        match &*slot {
            Slot::One(handle) => Found::One(handle.clone()),
            Slot::Many(all) => {
                for handle in all {
                    handle.abort(mode);
                }
                Found::AbortedAll
            }
        }
    }

    /// A request on the connection the current task serves, if this
    /// registry holds it (and it is from `peer`, if known): its peer, and
    /// its exchange, in flight until the guard is dropped.
    pub(crate) fn begin_current(
        &self,
        peer: Option<SocketAddr>,
        body: &http_body::SizeHint,
    ) -> Option<(SocketAddr, InFlight)> {
        let id = tokio::task::try_id()?;
        let entry = self.by_task.get(&id)?;
        peer.is_none_or(|p| p == entry.peer)
            .then(|| (entry.peer, entry.exchanges.begin(body)))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len()
    }
}

impl Registration {
    /// Records the connection under the task it is read in, the first time
    /// it is read: the task that serves it, since a listener only accepts.
    pub(crate) fn bind_to_task(&mut self) {
        if self.bound {
            return;
        }
        self.bound = true;
        if let Some(id) = tokio::task::try_id() {
            self.registry.by_task.insert(
                id,
                Served {
                    peer: self.peer,
                    handle: self.handle.clone(),
                    exchanges: Arc::clone(&self.exchanges),
                },
            );
            self.task = Some(id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.task {
            let me = &self.handle;
            self.registry
                .by_task
                .remove_if(&id, |_, served| served.handle.same(me));
        }
        let me = &self.handle;
        self.registry
            .live
            .remove_if_mut(&self.peer, |_, slot| match slot {
                Slot::One(handle) => handle.same(me),
                Slot::Many(all) => {
                    all.retain(|h| !h.same(me));
                    if let [last] = all.as_slice() {
                        *slot = Slot::One(last.clone());
                    }
                    false
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_with_their_connection() {
        let registry = Arc::new(Registry::default());
        let peer: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let a = ConnectionHandle::new();
        let b = ConnectionHandle::new();
        let first = registry.register(peer, &a, Arc::default());
        assert!(matches!(registry.find(Some(peer), CloseMode::Fin), Found::One(h) if h.same(&a)));
        let second = registry.register(peer, &b, Arc::default());
        drop(first);
        // The survivor is found alone again, and was not aborted.
        assert!(matches!(registry.find(Some(peer), CloseMode::Fin), Found::One(h) if h.same(&b)));
        assert!(!b.is_aborted());
        drop(second);
        assert_eq!(registry.len(), 0);
        assert!(matches!(
            registry.find(Some(peer), CloseMode::Fin),
            Found::Nothing
        ));
    }

    #[test]
    fn an_ambiguous_peer_aborts_every_connection_from_it() {
        let registry = Arc::new(Registry::default());
        let peer: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
        let (a, b) = (ConnectionHandle::new(), ConnectionHandle::new());
        let _ra = registry.register(peer, &a, Arc::default());
        let _rb = registry.register(peer, &b, Arc::default());
        assert!(matches!(
            registry.find(Some(peer), CloseMode::Reset),
            Found::AbortedAll
        ));
        assert_eq!(a.close_mode(), Some(CloseMode::Reset));
        assert_eq!(b.close_mode(), Some(CloseMode::Reset));
    }
}
