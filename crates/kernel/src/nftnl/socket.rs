//! The netfilter netlink socket: a batch sent and its acknowledgements read, and set
//! element dumps.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::dump::{self, DumpRequest, Dumped, ListedTable};
use super::wire::*;
use super::{Batch, Family, set_header};
use crate::error::{KernelError, Result};
use crate::netns::NetNs;

const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A netfilter netlink socket in one network namespace, kept open across transactions.
pub struct NftSocket {
    socket: Socket,
    netns: String,
    next_seq: u32,
}

impl NftSocket {
    /// Opens the socket in `ns` (or here); it stays in that namespace whatever thread
    /// uses it later.
    pub fn open(ns: Option<&NetNs>) -> Result<NftSocket> {
        let netns = ns
            .map(|n| n.label().to_string())
            .unwrap_or_else(|| "current".into());
        let socket = match ns {
            Some(ns) => ns.run(open_socket)?,
            None => open_socket(),
        };
        let socket = socket.map_err(|source| KernelError::Netlink {
            action: "open a netfilter netlink socket".into(),
            netns: netns.clone(),
            source,
        })?;
        Ok(NftSocket {
            socket,
            netns,
            next_seq: 1,
        })
    }

    /// Commits `batch` as one transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let first_seq = self.next_seq;
        self.next_seq = first_seq.wrapping_add(batch.len() as u32 + 2);
        send_batch(&mut self.socket, batch, first_seq).map_err(|(what, source)| {
            KernelError::Netlink {
                action: format!("nftables transaction over netlink ({what})"),
                netns: self.netns.clone(),
                source,
            }
        })
    }
}

impl NftSocket {
    /// The elements of `set` in `table` (ip family) with the time each has left, for sets
    /// with timeouts (`None` for an element without one). An absent table or set has none.
    pub fn set_elements(&mut self, table: &str, set: &str) -> Result<Vec<TimedElement>> {
        let request = DumpRequest {
            kind: NFT_MSG_GETSETELEM,
            family: NFPROTO_IPV4,
            attrs: set_header(table, set),
        };
        let listed = self.dump(request).map_err(|source| KernelError::Netlink {
            action: format!("list the elements of set ip {table} {set}"),
            netns: self.netns.clone(),
            source,
        })?;
        Ok(listed
            .iter()
            .flat_map(|m| parse_elements(&m.body))
            .collect())
    }

    /// Every table of `family` (every family with `None`) whose name `wanted` accepts,
    /// whole: chains with their rules, sets with their elements.
    pub fn list_tables(
        &mut self,
        family: Option<Family>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<ListedTable>> {
        dump::ruleset(family, &wanted, &mut |request| self.dump(request)).map_err(|source| {
            KernelError::Netlink {
                action: "list the nftables ruleset".into(),
                netns: self.netns.clone(),
                source,
            }
        })
    }

    /// The messages of one dump; an object that is not there (`ENOENT`) has none.
    fn dump(&mut self, request: DumpRequest) -> io::Result<Vec<Dumped>> {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let mut wire = Vec::new();
        put_message(
            &mut wire,
            (NFNL_SUBSYS_NFTABLES << 8) | request.kind,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            request.family,
            &request.attrs,
        );
        self.socket.send(&wire, 0)?;
        match read_dump(&mut self.socket, seq) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            other => other,
        }
    }
}

/// A set element as the kernel lists it: its key and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedElement {
    pub key: Vec<u8>,
    pub expires: Option<Duration>,
}

/// Reads the messages of a dump answering `seq` to its end.
fn read_dump(socket: &mut Socket, seq: u32) -> io::Result<Vec<Dumped>> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        for reply in receive(socket, &mut buf)? {
            if reply.seq != seq {
                continue;
            }
            match reply.kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = error_code(reply.body);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok(out);
                }
                _ if reply.body.len() >= 4 => out.push(Dumped {
                    family: reply.body[0],
                    body: reply.body[4..].to_vec(),
                }),
                _ => {}
            }
        }
    }
}

/// One netlink message of a datagram from the kernel.
struct Reply<'a> {
    kind: u16,
    seq: u32,
    body: &'a [u8],
}

/// Receives one datagram into `buf` and splits it into its messages.
fn receive<'a>(socket: &mut Socket, buf: &'a mut Vec<u8>) -> io::Result<Vec<Reply<'a>>> {
    buf.clear();
    let n = socket.recv(buf, libc::MSG_TRUNC)?;
    if n > buf.capacity() {
        return Err(io::Error::other("nftables reply larger than the buffer"));
    }
    let mut replies = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32_at(buf, off) as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed nftables reply",
            ));
        }
        replies.push(Reply {
            kind: u16::from_ne_bytes([buf[off + 4], buf[off + 5]]),
            seq: u32_at(buf, off + 8),
            body: &buf[off + NLMSG_HDR..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(replies)
}

/// The error code of an `NLMSG_ERROR` body (0: an acknowledgement).
fn error_code(body: &[u8]) -> i32 {
    body.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// The elements in the attributes of one `NEWSETELEM` dump message.
fn parse_elements(attrs_of_message: &[u8]) -> Vec<TimedElement> {
    let mut out = Vec::new();
    for (kind, list) in attrs(attrs_of_message) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, element) in attrs(list) {
            let mut key = None;
            let mut expires = None;
            for (k, v) in attrs(element) {
                match k {
                    NFTA_SET_ELEM_KEY => {
                        key = attrs(v)
                            .find(|(t, _)| *t == NFTA_DATA_VALUE)
                            .map(|(_, d)| d.to_vec());
                    }
                    NFTA_SET_ELEM_EXPIRATION if v.len() == 8 => {
                        let ms = u64::from_be_bytes(v.try_into().unwrap_or([0; 8]));
                        expires = Some(Duration::from_millis(ms));
                    }
                    _ => {}
                }
            }
            if let Some(key) = key {
                out.push(TimedElement { key, expires });
            }
        }
    }
    out
}

fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    set_timeouts(&socket)?;
    Ok(socket)
}

fn send_batch(
    socket: &mut Socket,
    batch: &Batch,
    first_seq: u32,
) -> std::result::Result<(), (String, io::Error)> {
    let plain = |e: io::Error| ("sending the batch".to_string(), e);
    let wire = batch.encode(first_seq);
    grow_send_buffer(socket, wire.len()).map_err(plain)?;
    socket.send(&wire, 0).map_err(plain)?;
    let messages = first_seq.wrapping_add(1)..first_seq.wrapping_add(1 + batch.len() as u32);
    let refused = read_answers(socket, first_seq, &messages).map_err(plain)?;
    match refused {
        None => Ok(()),
        Some((seq, code)) => {
            let what = batch.describe(seq.wrapping_sub(messages.start) as usize);
            Err((what, io::Error::from_raw_os_error(-code)))
        }
    }
}

/// Reads the kernel's answers to a batch until the last message's: refusals of single
/// messages come before it, in order. A refusal of the whole batch (out of memory)
/// answers the batch-begin message (`begin`) instead. Returns the first refusal. Answers
/// to an earlier batch that timed out are skipped.
fn read_answers(
    socket: &mut Socket,
    begin: u32,
    seqs: &std::ops::Range<u32>,
) -> io::Result<Option<(u32, i32)>> {
    let last = seqs.end.wrapping_sub(1);
    let mut first_refusal = None;
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        for reply in receive(socket, &mut buf)? {
            if reply.kind != NLMSG_ERROR || reply.body.len() < 4 {
                continue;
            }
            let ours = seqs.contains(&reply.seq) || reply.seq == begin;
            if !ours {
                continue;
            }
            let code = error_code(reply.body);
            if code != 0 && first_refusal.is_none() {
                first_refusal = Some((reply.seq, code));
            }
            if reply.seq == last || reply.seq == begin {
                return Ok(first_refusal);
            }
        }
    }
}

fn set_timeouts(socket: &Socket) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    setsockopt(socket, libc::SO_RCVTIMEO, &tv)
}

/// A batch is one datagram: the send buffer must hold all of it.
fn grow_send_buffer(socket: &Socket, len: usize) -> io::Result<()> {
    if len < 128 * 1024 {
        return Ok(());
    }
    let size = i32::try_from(len + 4096).unwrap_or(i32::MAX);
    setsockopt(socket, libc::SO_SNDBUFFORCE, &size)
}

fn setsockopt<T>(socket: &Socket, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed, for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
