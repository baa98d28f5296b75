//! A netfilter netlink socket opened in a namespace and read one datagram at a time with a
//! receive timeout: what the conntrack event, NFLOG and nftables trace listeners share.
//! They differ only in how the socket joins what it hears (multicast groups, or an NFLOG
//! bind) and in how they parse a datagram.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

pub(crate) struct Listener {
    socket: Socket,
    buf: Vec<u8>,
}

impl Listener {
    /// A socket made in `ns` (or here), so it stays in that namespace, set up by `join`;
    /// each read waits at most `wait`. `action` names it in the error.
    pub(crate) fn open(
        ns: Option<&NetNs>,
        action: &str,
        capacity: usize,
        wait: Duration,
        join: impl FnOnce(&mut Socket) -> io::Result<()> + Send,
    ) -> Result<Listener> {
        let open = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_NETFILTER)?;
            join(&mut socket)?;
            Ok(socket)
        };
        let socket = match ns {
            Some(ns) => ns.run(open)?,
            None => open(),
        }
        .map_err(|source| KernelError::Netlink {
            action: action.to_string(),
            netns: ns.map_or_else(|| "current".into(), |n| n.label().to_string()),
            source,
        })?;
        set_timeout(&socket, wait);
        Ok(Listener {
            socket,
            buf: Vec::with_capacity(capacity),
        })
    }

    /// The next datagram; `None` when none came in time, or when the receive buffer was
    /// full (`ENOBUFS`: messages were lost, and what comes next is read) or a signal came.
    pub(crate) fn datagram(&mut self) -> io::Result<Option<&[u8]>> {
        self.buf.clear();
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => Ok(Some(&self.buf)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Hands every datagram already queued to `each`, without waiting; how many there were.
    /// A full receive buffer (`ENOBUFS`: messages were lost) is read past.
    pub(crate) fn drain(&mut self, mut each: impl FnMut(&[u8])) -> io::Result<usize> {
        let mut n = 0;
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => {
                    n += 1;
                    each(&self.buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks for a receive buffer of `bytes` (past `rmem_max` when privileged), so a reader
    /// that drains now and then loses nothing in between; the kernel's default otherwise.
    pub(crate) fn set_receive_buffer(&self, bytes: usize) {
        use std::os::fd::AsRawFd;
        let size = bytes as libc::c_int;
        for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: `size` is a live c_int of the size passed, for the duration of the call.
            let r = unsafe {
                libc::setsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                return;
            }
        }
    }
}

fn set_timeout(socket: &Socket, t: Duration) {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a live timeval of the size passed, for the duration of the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}
