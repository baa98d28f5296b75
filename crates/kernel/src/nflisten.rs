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
