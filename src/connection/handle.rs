use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::Context;

use atomic_waker::AtomicWaker;

/// How a dropped connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CloseMode {
    /// Half-close with a FIN, as nginx's `return 444`. curl reports
    /// `(52) Empty reply from server`.
    #[default]
    Fin,
    /// Reset with an RST (`SO_LINGER` of zero). curl reports
    /// `(56) Connection reset by peer`. Frees the server's socket at once,
    /// with no TIME_WAIT.
    Reset,
    /// Vanish without telling the client at all, like HAProxy's
    /// `silent-drop`: the client is left waiting on a connection that no
    /// longer exists, which ties up scanners instead of the server.
    ///
    /// With `CAP_NET_ADMIN` on Linux the socket is put in `TCP_REPAIR` mode
    /// before it closes, so the kernel sends nothing at all. Without it, the
    /// hop limit is set to 1 and the connection reset: the RST dies at the
    /// first router, so clients beyond it see nothing, but a client on the
    /// same host or link still sees the reset. [`silent_close_available`]
    /// tells which one this process gets.
    ///
    /// [`silent_close_available`]: crate::connection::silent_close_available
    Silent,
}

impl CloseMode {
    /// The name used in the 444 event's `close` field: `fin` or `reset`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fin => "fin",
            Self::Reset => "reset",
            Self::Silent => "silent",
        }
    }

    const fn to_state(self) -> u8 {
        match self {
            Self::Fin => FIN,
            Self::Reset => RESET,
            Self::Silent => SILENT,
        }
    }
}

impl fmt::Display for CloseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const OPEN: u8 = 0;
const FIN: u8 = 1;
const RESET: u8 = 2;
const SILENT: u8 = 3;

/// The switch that aborts one connection. Cheap to clone; all clones and the
/// connection's [`AbortableStream`](super::AbortableStream) share it.
///
/// Once tripped, the stream refuses every later read and write, wakes the
/// connection task so it is torn down even if a service future is still
/// pending, and closes the socket as the [`CloseMode`] says.
#[derive(Clone)]
pub struct ConnectionHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: AtomicU8,
    reader: AtomicWaker,
    writer: AtomicWaker,
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
            shared: Arc::new(Shared {
                state: AtomicU8::new(OPEN),
                reader: AtomicWaker::new(),
                writer: AtomicWaker::new(),
            }),
        }
    }

    /// Aborts the connection. Returns `false` if it was already aborted, in
    /// which case the first close mode stands.
    pub fn abort(&self, mode: CloseMode) -> bool {
        let tripped = self
            .shared
            .state
            .compare_exchange(OPEN, mode.to_state(), Ordering::AcqRel, Ordering::Acquire)
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
