//! Connection tracking events (ctnetlink's multicast groups): a connection seen for the
//! first time, and one that ended with what it carried each way. With accounting on in the
//! namespace (`net.netfilter.nf_conntrack_acct`), an ended connection's event carries its
//! packet and byte counts.

use std::io;
use std::time::Duration;

use netlink_sys::SocketAddr;

use super::{Entry, NFNL_SUBSYS_CTNETLINK, attrs, parse_entry, u16_ne, u32_at};
use crate::error::Result;
use crate::netns::NetNs;
use crate::nflisten::Listener;

/// `NFNLGRP_CONNTRACK_NEW`, `_UPDATE` and `_DESTROY`.
const GROUP_NEW: u32 = 1;
const GROUP_UPDATE: u32 = 2;
const GROUP_DESTROY: u32 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
/// TCP states of conntrack (`TCP_CONNTRACK_*`) that mean the connection has ended.
const TCP_TIME_WAIT: u8 = 7;
const TCP_CLOSE: u8 = 8;
/// The receive buffer of a subscription: what arrives between two drains of a reader that
/// drains on a timer (about 200 bytes an event; 8 MiB holds 40,000).
const DRAINED_BUFFER: usize = 8 << 20;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const NLM_F_CREATE: u16 = 0x400;

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    New,
    /// A TCP connection that ended (FIN to TIME_WAIT, or a reset): its entry stays for the
    /// TIME_WAIT period, so this comes long before it is destroyed.
    Closed,
    Destroyed,
}

/// Packets and bytes one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// One conntrack event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub entry: Entry,
    /// Original and reply direction, when accounting is on (ended connections).
    pub counters: Option<(Counters, Counters)>,
}

/// A subscription to a namespace's new and ended connections.
pub struct Events {
    listener: Listener,
}

impl Events {
    /// Subscribes in `ns` (or here); the socket stays in that namespace.
    pub fn subscribe(ns: Option<&NetNs>) -> Result<Events> {
        let listener = Listener::open(
            ns,
            "subscribe to connection tracking events",
            256 * 1024,
            Duration::from_millis(500),
            |socket| {
                socket.bind(&SocketAddr::new(0, 0))?;
                socket.add_membership(GROUP_NEW)?;
                socket.add_membership(GROUP_UPDATE)?;
                socket.add_membership(GROUP_DESTROY)
            },
        )?;
        listener.set_receive_buffer(DRAINED_BUFFER);
        Ok(Events { listener })
    }

    /// Every event already queued, without waiting. A reader blocked on the socket is woken
    /// by each event, in the path of the packet that made it; one that drains on a timer of
    /// its own leaves no waiter on the socket, so the kernel wakes nobody (the message
    /// itself is still built: see [`super::Poller`] for what costs nothing).
    pub fn pending(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        self.listener
            .drain(|datagram| out.extend(parse_datagram(datagram)))?;
        Ok(out)
    }
}

/// The events in one datagram.
pub fn parse_datagram(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32_at(buf, off) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let kind = u16_ne(buf, off + 4);
        let flags = u16_ne(buf, off + 6);
        let body = &buf[off + 16..off + len];
        off += (len + 3) & !3;
        let what = match kind {
            k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
                && flags & NLM_F_CREATE != 0 =>
            {
                EventKind::New
            }
            k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE => EventKind::Destroyed,
            k if k == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                match body.get(4..).and_then(tcp_state) {
                    Some(TCP_TIME_WAIT | TCP_CLOSE) => EventKind::Closed,
                    _ => continue,
                }
            }
            _ => continue,
        };
        let Some(attrs_of) = body.get(4..) else {
            continue;
        };
        if let Some(entry) = parse_entry(attrs_of) {
            out.push(Event {
                kind: what,
                entry,
                counters: counters(attrs_of),
            });
        }
    }
    out
}

/// The TCP state an update (or a dumped entry) carries.
pub(super) fn tcp_state(b: &[u8]) -> Option<u8> {
    let (_, info, _) = attrs(b).find(|(k, _, _)| *k == CTA_PROTOINFO)?;
    let (_, tcp, _) = attrs(info).find(|(k, _, _)| *k == CTA_PROTOINFO_TCP)?;
    let (_, state, _) = attrs(tcp).find(|(k, _, _)| *k == CTA_PROTOINFO_TCP_STATE)?;
    state.first().copied()
}

pub(super) fn counters(b: &[u8]) -> Option<(Counters, Counters)> {
    let one = |want: u16| -> Option<Counters> {
        let (_, payload, _) = attrs(b).find(|(k, _, _)| *k == want)?;
        let mut c = Counters::default();
        for (k, p, _) in attrs(payload) {
            let v = u64::from_be_bytes(p.try_into().ok()?);
            match k {
                CTA_COUNTERS_PACKETS => c.packets = v,
                CTA_COUNTERS_BYTES => c.bytes = v,
                _ => {}
            }
        }
        Some(c)
    };
    Some((one(CTA_COUNTERS_ORIG)?, one(CTA_COUNTERS_REPLY)?))
}
