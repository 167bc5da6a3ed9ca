//! `TCP_DEFER_ACCEPT` on a listening socket (Linux): `accept` returns a
//! connection only once its first bytes have arrived.
//!
//! Most connections a 444 server drops are scanners that connect and send
//! their request at once. Without this option each is accepted as soon as
//! the handshake completes, and the server then spends a wake-up and an
//! empty read waiting for the request. With it, the kernel holds the
//! connection until the request is there, so the serve loop's early judging
//! reads it in the same turn as the accept and closes the connection
//! without ever registering it with the runtime. A client that connects and
//! sends nothing is held by the kernel for the given time (rounded up to
//! the retransmission schedule of the SYN-ACK), then accepted anyway, and
//! the header timeout applies as usual.
//!
//! # Why `unsafe`
//!
//! Neither std (`set_deferaccept` is unstable), socket2 nor nix offers this
//! option, so this module makes the one `setsockopt(2)` call itself. The call is sound: the descriptor is borrowed
//! from a live socket for the duration of the call, and the option value is
//! a local `c_int` whose address and exact size are passed, which the
//! kernel only reads.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Sets `TCP_DEFER_ACCEPT` on `listener` to hold connections for up to
/// `wait` until their first bytes arrive; `Duration::ZERO` turns it off.
///
/// [`Serve::defer_accept`](crate::server::Serve::defer_accept) sets it for
/// the crate's serve loop; call it directly for any other server.
///
/// # Errors
/// The operating system's, such as for a socket that is not TCP.
pub fn set_defer_accept(listener: &impl AsFd, wait: Duration) -> io::Result<()> {
    // The kernel takes whole seconds, rounded up here; a wait too long to
    // express saturates, as the kernel caps it anyway, rather than wrapping
    // to 0, which would turn the option off.
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    let fd = listener.as_fd();
    // SAFETY: `fd` is a descriptor borrowed from a live socket for the whole
    // call; the value is a `c_int` on this stack frame, passed with its own
    // size, and read by the kernel only.
    let result = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("a small size"),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The option's value on `listener`, in seconds as the kernel rounded it;
/// for tests.
#[cfg(test)]
fn defer_accept(listener: &impl AsFd) -> io::Result<libc::c_int> {
    let mut secs: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("a small size");
    // SAFETY: as above; `secs` and `len` are locals the kernel writes into,
    // with `len` giving `secs`'s exact size.
    let result = unsafe {
        libc::getsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_mut(&mut secs).cast(),
            &mut len,
        )
    };
    if result == 0 {
        Ok(secs)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_set_and_cleared() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(defer_accept(&listener).unwrap(), 0);
        set_defer_accept(&listener, Duration::from_millis(1500)).unwrap();
        assert!(
            defer_accept(&listener).unwrap() >= 2,
            "rounded up to whole seconds"
        );
        set_defer_accept(&listener, Duration::ZERO).unwrap();
        assert_eq!(defer_accept(&listener).unwrap(), 0);
        set_defer_accept(&listener, Duration::MAX).unwrap();
        assert!(
            defer_accept(&listener).unwrap() > 0,
            "the longest wait saturates, it does not wrap to off"
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_defer_accept(&udp, Duration::from_secs(1)).is_err());
    }
}
