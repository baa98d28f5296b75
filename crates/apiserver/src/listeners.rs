//! Listening sockets handed to the apiserver by its parent (`--listen-fd`), e.g. one the lab
//! opened inside the underlay network namespace so that node agents reach the API without
//! any address or route in the root namespace.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};

/// Why an inherited descriptor cannot be served on.
#[derive(Debug, thiserror::Error)]
pub enum ListenFdError {
    #[error("--listen-fd {fd}: {reason}; the parent must pass a bound, listening TCP socket")]
    NotAListener { fd: RawFd, reason: String },
}

/// Takes ownership of the listening TCP socket at `fd` (inherited from the parent).
pub fn take_listener(fd: RawFd) -> Result<(std::net::TcpListener, SocketAddr), ListenFdError> {
    let bad = |reason: String| ListenFdError::NotAListener { fd, reason };
    if fd < 3 {
        return Err(bad("descriptors 0-2 are stdin, stdout and stderr".into()));
    }
    check_listening_socket(fd).map_err(bad)?;
    // SAFETY: `fd` is an open listening socket (checked above) that nothing else in this
    // process owns: it was inherited from the parent for exactly this use.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let addr = listener
        .local_addr()
        .map_err(|e| bad(format!("reading its address: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(format!("making it non-blocking: {e}")))?;
    Ok((listener, addr))
}

fn check_listening_socket(fd: RawFd) -> Result<(), String> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(format!(
            "it is not an open socket ({})",
            std::io::Error::last_os_error()
        ));
    }
    if accepting == 0 {
        return Err("the socket is not listening".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn takes_a_listening_socket_and_refuses_others() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let want = l.local_addr().unwrap();
        let fd = l.into_raw_fd();
        let (_listener, addr) = take_listener(fd).unwrap();
        assert_eq!(addr, want);

        let file = std::fs::File::open("/proc/self/status").unwrap();
        let fd = file.into_raw_fd();
        let err = take_listener(fd).unwrap_err().to_string();
        assert!(err.contains("not an open socket"), "{err}");
        // SAFETY: closing the descriptor this test opened.
        unsafe { libc::close(fd) };
        assert!(take_listener(1).is_err());
    }
}
