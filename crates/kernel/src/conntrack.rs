//! Connection tracking over netfilter netlink (`NETLINK_NETFILTER`, ctnetlink): list IPv4
//! entries and delete the ones matching a filter (original destination address, port and
//! protocol, reply source). A service proxy uses it to drop stale UDP entries that would
//! otherwise keep sending a client's datagrams to an endpoint that is gone.
//!
//! The kernel deletes one entry per request, by its exact original tuple, so deleting by a
//! filter is a dump followed by one delete per match (the tuple echoed back as the kernel
//! sent it).

mod events;
mod poll;

use std::io;
use std::net::Ipv4Addr;

pub use events::{Counters, Event, EventKind, Events};
pub use poll::Poller;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RECV_BUFFER: usize = 64 * 1024;

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tuple {
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// A conntrack entry: as the client sent it (original) and as the reply comes back (after
/// NAT the reply's source is the real endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub original: Tuple,
    pub reply: Tuple,
    pub zone: Option<u16>,
    /// The `CTA_TUPLE_ORIG` attribute as the kernel sent it, to delete exactly this entry.
    raw_original: Vec<u8>,
}

/// Which entries to delete: every set field must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    /// IP protocol number (17 for UDP); 0 matches any.
    pub protocol: u8,
    pub original_dst: Option<Ipv4Addr>,
    pub original_dst_port: Option<u16>,
    pub reply_src: Option<Ipv4Addr>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        (self.protocol == 0 || e.original.protocol == self.protocol)
            && self.original_dst.is_none_or(|d| e.original.dst == Some(d))
            && self
                .original_dst_port
                .is_none_or(|p| e.original.dst_port == Some(p))
            && self.reply_src.is_none_or(|s| e.reply.src == Some(s))
    }
}

/// The packets and bytes `e` has carried each way so far (with accounting on in the
/// namespace); `None` when the entry is gone or counts nothing.
pub fn counters_of(ns: Option<&NetNs>, e: &Entry) -> Result<Option<(Counters, Counters)>> {
    in_netns(ns, |ct| ct.get_counters(e))
}

/// Lists the IPv4 conntrack entries of `ns` (or of the calling thread's namespace).
pub fn list(ns: Option<&NetNs>) -> Result<Vec<Entry>> {
    in_netns(ns, |ct| ct.dump())
}

/// Deletes the IPv4 entries matching every filter in `filters` (one dump for all of
/// them); returns how many were deleted. Entries that vanish meanwhile are not an error.
pub fn delete(ns: Option<&NetNs>, filters: &[Filter]) -> Result<usize> {
    if filters.is_empty() {
        return Ok(0);
    }
    in_netns(ns, |ct| {
        let entries = ct.dump()?;
        let mut deleted = 0;
        for e in entries
            .iter()
            .filter(|e| filters.iter().any(|f| f.matches(e)))
        {
            match ct.delete_entry(e) {
                Ok(()) => deleted += 1,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(deleted)
    })
}

fn in_netns<T: Send>(
    ns: Option<&NetNs>,
    f: impl FnOnce(&mut Ctnetlink) -> io::Result<T> + Send,
) -> Result<T> {
    let label = ns
        .map(|n| n.label().to_string())
        .unwrap_or("current".into());
    let wrap = |source: io::Error| KernelError::Netlink {
        action: "change connection tracking entries (ctnetlink)".into(),
        netns: label.clone(),
        source,
    };
    let work = || Ctnetlink::open().and_then(|mut ct| f(&mut ct));
    match ns {
        Some(ns) => ns.run(work)?.map_err(wrap),
        None => work().map_err(wrap),
    }
}

struct Ctnetlink {
    socket: Socket,
    seq: u32,
}

impl Ctnetlink {
    fn open() -> io::Result<Ctnetlink> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Ctnetlink { socket, seq: 0 })
    }

    fn send(&mut self, msg_type: u16, flags: u16, attrs: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + 4 + attrs.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version, resource id (big endian).
        buf.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
        buf.extend_from_slice(attrs);
        self.socket.send(&buf, 0)?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until the dump ends or the ack comes; hands each entry's
    /// attributes to `each`.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, libc::MSG_TRUNC)?;
            if n > buf.len() {
                return Err(io::Error::other("ctnetlink reply larger than the buffer"));
            }
            let mut off = 0;
            while off + NLMSG_HDR <= buf.len() {
                let len = u32_at(&buf, off) as usize;
                let kind = u16_ne(&buf, off + 4);
                let mseq = u32_at(&buf, off + 8);
                if len < NLMSG_HDR || off + len > buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed ctnetlink message",
                    ));
                }
                let body = &buf[off + NLMSG_HDR..off + len];
                off += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
                        && body.len() >= 4 =>
                    {
                        each(&body[4..]);
                    }
                    _ => {}
                }
            }
        }
    }

    fn dump(&mut self) -> io::Result<Vec<Entry>> {
        let seq = self.send(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, &[])?;
        let mut out = Vec::new();
        self.receive(seq, |attrs| {
            if let Some(e) = parse_entry(attrs) {
                out.push(e);
            }
        })?;
        Ok(out)
    }

    fn get_counters(&mut self, e: &Entry) -> io::Result<Option<(Counters, Counters)>> {
        let mut attrs = e.raw_original.clone();
        if let Some(zone) = e.zone {
            push_attr(&mut attrs, CTA_ZONE, &zone.to_be_bytes());
        }
        let seq = self.send(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, &attrs)?;
        let mut found = None;
        match self.receive(seq, |a| found = events::counters(a)) {
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            other => other.map(|()| found),
        }
    }

    fn delete_entry(&mut self, e: &Entry) -> io::Result<()> {
        let mut attrs = e.raw_original.clone();
        if let Some(zone) = e.zone {
            push_attr(&mut attrs, CTA_ZONE, &zone.to_be_bytes());
        }
        let seq = self.send(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, &attrs)?;
        self.receive(seq, |_| {})
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u16_ne(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn push_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + ((4 - len % 4) % 4), 0);
}

/// Iterates (type, payload, whole attribute) over a run of netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16_ne(b, 0) as usize;
        let kind = u16_ne(b, 2) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (kind, &b[4..len], &b[..len]);
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(item)
    })
}

fn parse_tuple(b: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (kind, payload, _) in attrs(b) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p, _) in attrs(payload) {
                    let ip = (p.len() == 4).then(|| Ipv4Addr::new(p[0], p[1], p[2], p[3]));
                    match k {
                        CTA_IP_V4_SRC => t.src = ip,
                        CTA_IP_V4_DST => t.dst = ip,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p, _) in attrs(payload) {
                    let port = (p.len() == 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    match k {
                        CTA_PROTO_NUM => t.protocol = p.first().copied().unwrap_or(0),
                        CTA_PROTO_SRC_PORT => t.src_port = port,
                        CTA_PROTO_DST_PORT => t.dst_port = port,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn parse_entry(b: &[u8]) -> Option<Entry> {
    let mut original = None;
    let mut reply = None;
    let mut zone = None;
    let mut raw_original = Vec::new();
    for (kind, payload, whole) in attrs(b) {
        match kind {
            CTA_TUPLE_ORIG => {
                original = Some(parse_tuple(payload));
                raw_original = whole.to_vec();
                // The kernel sends it nested; say so when sending it back.
                let t = u16_ne(&raw_original, 2) | NLA_F_NESTED;
                raw_original[2..4].copy_from_slice(&t.to_ne_bytes());
                let padded = (raw_original.len() + 3) & !3;
                raw_original.resize(padded, 0);
            }
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(payload)),
            CTA_ZONE if payload.len() >= 2 => {
                zone = Some(u16::from_be_bytes([payload[0], payload[1]]))
            }
            _ => {}
        }
    }
    Some(Entry {
        original: original?,
        reply: reply?,
        zone,
        raw_original,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nested(kind: u16, inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        push_attr(&mut v, kind | NLA_F_NESTED, inner);
        v
    }

    fn tuple(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut ip = Vec::new();
        push_attr(&mut ip, CTA_IP_V4_SRC, &src);
        push_attr(&mut ip, CTA_IP_V4_DST, &dst);
        let mut p = Vec::new();
        push_attr(&mut p, CTA_PROTO_NUM, &[proto]);
        push_attr(&mut p, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
        push_attr(&mut p, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        let mut t = nested(CTA_TUPLE_IP, &ip);
        t.extend(nested(CTA_TUPLE_PROTO, &p));
        t
    }

    #[test]
    fn parses_an_entry_and_filters_it() {
        let mut msg = nested(
            CTA_TUPLE_ORIG,
            &tuple([10, 244, 1, 5], [10, 96, 0, 10], 17, 40000, 53),
        );
        msg.extend(nested(
            CTA_TUPLE_REPLY,
            &tuple([10, 244, 1, 2], [10, 244, 1, 5], 17, 5353, 40000),
        ));
        let e = parse_entry(&msg).unwrap();
        assert_eq!(e.original.dst, Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(e.original.dst_port, Some(53));
        assert_eq!(e.reply.src, Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(e.original.protocol, 17);
        let f = Filter {
            protocol: 17,
            original_dst: Some(Ipv4Addr::new(10, 96, 0, 10)),
            original_dst_port: Some(53),
            reply_src: Some(Ipv4Addr::new(10, 244, 1, 2)),
        };
        assert!(f.matches(&e));
        assert!(
            !Filter {
                reply_src: Some(Ipv4Addr::new(10, 244, 1, 3)),
                ..f
            }
            .matches(&e)
        );
        assert!(!Filter { protocol: 6, ..f }.matches(&e));
    }
}
