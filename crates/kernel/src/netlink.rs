//! A small synchronous rtnetlink client: one request, its replies, its ack.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

/// Large enough for any one netlink datagram (the kernel sends dumps in
/// pieces of at most a few pages).
const RECV_BUFFER: usize = 64 * 1024;

/// Requests sent to the kernel together, in one datagram: one round trip
/// for all of them instead of one each. The kernel runs them in order and
/// independently (a failed request does not stop the ones after it), and
/// acks each one. Fill it with the builders of the link, address and route
/// modules, run it with [`Netlink::run_batch`].
#[derive(Default)]
pub struct Batch {
    requests: Vec<Pending>,
}

struct Pending {
    msg: RouteNetlinkMessage,
    flags: u16,
    action: String,
    /// `EEXIST` counts as success (an "ensure" request).
    exists_ok: bool,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn len(&self) -> usize {
        self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Adds a request; returns its position, which indexes [`Replies`].
    pub(crate) fn push(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        action: String,
        exists_ok: bool,
    ) -> usize {
        self.requests.push(Pending {
            msg,
            flags,
            action,
            exists_ok,
        });
        self.requests.len() - 1
    }
}

/// What each request of a batch got back besides its ack (a get's answer,
/// a create's echo), by the position [`Batch`]'s builders returned.
pub struct Replies {
    replies: Vec<Vec<RouteNetlinkMessage>>,
}

impl Replies {
    pub(crate) fn of(&self, position: usize) -> &[RouteNetlinkMessage] {
        self.replies.get(position).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// A route netlink socket bound to one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    netns: String,
}

impl Netlink {
    /// A socket in the calling thread's namespace.
    pub fn current() -> Result<Netlink> {
        Self::open_here("current")
    }

    /// A socket in `ns`, whatever namespace the caller is in. The calling
    /// thread enters `ns` just long enough to open the socket, then returns
    /// to its own namespace (cheaper than a thread of its own, which matters
    /// for the CNI plugin's latency).
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        let home = NetNs::current()?;
        ns.enter()?;
        let opened = Self::open_here(ns.label());
        if let Err(e) = home.enter() {
            // Carrying on in the wrong namespace would touch the wrong
            // kernel objects; there is no safe way forward.
            eprintln!("podnet: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
        opened
    }

    fn open_here(label: &str) -> Result<Netlink> {
        let wrap = |e: io::Error| KernelError::Netlink {
            action: "open a route netlink socket".into(),
            netns: label.to_string(),
            source: e,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(wrap)?;
        socket.bind_auto().map_err(wrap)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(wrap)?;
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            netns: label.to_string(),
        })
    }

    /// The namespace label used in error messages.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Sends a request that changes state and waits for its ack.
    pub(crate) fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        action: impl FnOnce() -> String,
    ) -> Result<()> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(|_| ())
            .map_err(|e| self.error(action(), e))
    }

    /// Sends a dump request and collects every reply.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        action: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
            .map_err(|e| self.error(action(), e))
    }

    /// Sends a get request for one object and returns its reply.
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
        action: impl FnOnce() -> String,
    ) -> Result<Option<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK)
            .map(|mut replies| replies.pop())
            .map_err(|e| self.error(action(), e))
    }

    pub(crate) fn error(&self, action: String, source: io::Error) -> KernelError {
        KernelError::Netlink {
            action,
            netns: self.netns.clone(),
            source,
        }
    }

    /// Sends every request of `batch` in one datagram and waits for all their
    /// acks. Fails with the first request (in batch order) that failed, after
    /// every ack has been read, so the socket stays in step; the requests
    /// after a failed one have still been run by the kernel.
    pub fn run_batch(&mut self, batch: Batch) -> Result<Replies> {
        if batch.is_empty() {
            return Ok(Replies {
                replies: Vec::new(),
            });
        }
        let first = self.seq.wrapping_add(1);
        let datagram = self.serialize_batch(&batch.requests);
        let acks = self
            .socket
            .send(&datagram, 0)
            .and_then(|sent| {
                if sent == datagram.len() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "netlink took {sent} of {} bytes of a batch",
                        datagram.len()
                    )))
                }
            })
            .and_then(|()| self.collect_batch(first, batch.requests.len()));
        let (replies, codes) = match acks {
            Ok(acks) => acks,
            Err(e) => {
                let what = batch.requests.iter().map(|p| p.action.as_str());
                let action = what.collect::<Vec<_>>().join(", ");
                return Err(self.error(action, e));
            }
        };
        for (pending, code) in batch.requests.into_iter().zip(codes) {
            if code == 0 || (pending.exists_ok && code == -libc::EEXIST) {
                continue;
            }
            return Err(self.error(pending.action, io::Error::from_raw_os_error(-code)));
        }
        Ok(Replies { replies })
    }

    /// The batch's requests back to back, each 4-byte aligned, numbered from
    /// the next sequence number on, each asking for an ack.
    fn serialize_batch(&mut self, requests: &[Pending]) -> Vec<u8> {
        let mut datagram = Vec::new();
        for pending in requests {
            self.seq = self.seq.wrapping_add(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK | pending.flags;
            header.sequence_number = self.seq;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(pending.msg.clone()));
            packet.finalize();
            let start = datagram.len();
            datagram.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut datagram[start..]);
            datagram.resize((datagram.len() + 3) & !3, 0);
        }
        datagram
    }

    /// Reads until each of the `count` requests numbered from `first` has its
    /// ack; returns each one's replies and error code (0: success).
    fn collect_batch(
        &mut self,
        first: u32,
        count: usize,
    ) -> io::Result<(Vec<Vec<RouteNetlinkMessage>>, Vec<i32>)> {
        let mut replies = vec![Vec::new(); count];
        let mut codes: Vec<Option<i32>> = vec![None; count];
        let mut waiting = count;
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
        while waiting > 0 {
            buf.clear();
            let n = self.socket.recv(&mut buf, libc::MSG_TRUNC)?;
            if n > buf.len() {
                return Err(io::Error::other(format!(
                    "netlink reply of {n} bytes exceeds the {RECV_BUFFER}-byte buffer"
                )));
            }
            for msg in split_datagram(&buf)? {
                let position = msg.header.sequence_number.wrapping_sub(first) as usize;
                if position >= count {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => replies[position].push(inner),
                    NetlinkPayload::Error(err) => {
                        if codes[position].is_none() {
                            waiting -= 1;
                        }
                        codes[position] = Some(err.code.map_or(0, |c| c.get()));
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::other("netlink reply overrun"));
                    }
                    _ => {}
                }
            }
        }
        Ok((replies, codes.into_iter().map(|c| c.unwrap_or(0)).collect()))
    }

    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        self.collect_replies(seq, flags & NLM_F_DUMP == NLM_F_DUMP)
    }

    fn collect_replies(&mut self, seq: u32, is_dump: bool) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut replies = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, libc::MSG_TRUNC)?;
            if n > buf.len() {
                return Err(io::Error::other(format!(
                    "netlink reply of {n} bytes exceeds the {RECV_BUFFER}-byte buffer"
                )));
            }
            let datagram = &buf[..];
            let mut offset = 0;
            while offset < datagram.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink message of length 0",
                    ));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(err) => match err.code {
                        None => return Ok(replies),
                        Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::other("netlink reply overrun"));
                    }
                    _ => {}
                }
            }
            if is_dump && replies.is_empty() && datagram.is_empty() {
                return Ok(replies);
            }
        }
    }
}

/// The messages of one datagram.
fn split_datagram(datagram: &[u8]) -> io::Result<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.header.length as usize;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "netlink message of length 0",
            ));
        }
        offset += (len + 3) & !3;
        messages.push(msg);
    }
    Ok(messages)
}
