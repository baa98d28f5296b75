//! NFLOG: packets a rule sent to a log group (`log group N prefix "…"`), received over
//! netfilter netlink (nfnetlink_log) with their prefix and the start of the packet, from
//! which the addresses, protocol and ports are read. One listener binds a group in a
//! namespace.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr};

use crate::error::Result;
use crate::netns::NetNs;
use crate::nflisten::Listener;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// Enough of a packet for its IPv4 and transport headers' addresses and ports.
const COPY_RANGE: u32 = 64;

/// A logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub prefix: String,
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// A listener bound to one log group.
pub struct Nflog {
    listener: Listener,
}

fn message(kind: u16, flags: u16, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | kind).to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    b.extend_from_slice(&res_id.to_be_bytes());
    b.extend_from_slice(attrs);
    b
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut a = Vec::with_capacity(len.next_multiple_of(4));
    a.extend_from_slice(&(len as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(len.next_multiple_of(4), 0);
    a
}

fn bind(socket: &mut Socket, group: u16) -> io::Result<()> {
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    let mut attrs = attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    attrs.extend(attr(NFULA_CFG_MODE, &mode));
    socket.send(&message(NFULNL_MSG_CONFIG, NLM_F_ACK, group, &attrs), 0)?;
    let mut buf = Vec::with_capacity(4096);
    socket.recv(&mut buf, 0)?;
    // NLMSG_ERROR (2) with an error code after the header.
    if buf.len() >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == 2 {
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

impl Nflog {
    /// Binds log `group` in `ns` (or here). `EBUSY`: another listener has it.
    pub fn bind(ns: Option<&NetNs>, group: u16) -> Result<Nflog> {
        let listener = Listener::open(
            ns,
            &format!("listen to NFLOG group {group}"),
            64 * 1024,
            Duration::from_millis(500),
            |socket| {
                socket.bind_auto()?;
                socket.connect(&SocketAddr::new(0, 0))?;
                bind(socket, group)
            },
        )?;
        Ok(Nflog { listener })
    }

    /// The packets of the next datagram; empty after half a second without one.
    pub fn receive(&mut self) -> io::Result<Vec<Logged>> {
        Ok(self
            .listener
            .datagram()?
            .map(parse_datagram)
            .unwrap_or_default())
    }
}

/// The logged packets of one datagram.
pub fn parse_datagram(buf: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 20 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 20 || off + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let body = &buf[off + 20..off + len];
        off += len.next_multiple_of(4);
        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            continue;
        }
        if let Some(l) = parse_packet(body) {
            out.push(l);
        }
    }
    out
}

fn parse_packet(attrs: &[u8]) -> Option<Logged> {
    let mut prefix = String::new();
    let mut payload: &[u8] = &[];
    let mut rest = attrs;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        let value = &rest[4..len];
        match kind {
            NFULA_PREFIX => {
                prefix =
                    String::from_utf8_lossy(value.strip_suffix(&[0]).unwrap_or(value)).into_owned()
            }
            NFULA_PAYLOAD => payload = value,
            _ => {}
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    ipv4(payload).map(|(saddr, daddr, proto, sport, dport)| Logged {
        prefix,
        saddr,
        daddr,
        proto,
        sport,
        dport,
    })
}

type Headers = (Ipv4Addr, Ipv4Addr, u8, Option<u16>, Option<u16>);

/// Addresses, protocol and ports of an IPv4 packet's start.
pub fn ipv4(p: &[u8]) -> Option<Headers> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let addr = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let proto = p[9];
    let ports = matches!(proto, 6 | 17 | 132) && p.len() >= ihl + 4;
    let port = |o: usize| ports.then(|| u16::from_be_bytes([p[ihl + o], p[ihl + o + 1]]));
    Some((addr(12), addr(16), proto, port(0), port(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_tcp_packet_reads_back_with_its_prefix_addresses_and_ports() {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 244, 0, 2, 10, 244, 1, 2]);
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&8080u16.to_be_bytes());
        let mut attrs = attr(NFULA_PREFIX, b"podnet ingress drop x/deny\0");
        attrs.extend(attr(NFULA_PAYLOAD, &ip));
        let msg = message(NFULNL_MSG_PACKET, 0, 100, &attrs);
        let got = parse_datagram(&msg);
        assert_eq!(
            got,
            vec![Logged {
                prefix: "podnet ingress drop x/deny".into(),
                saddr: Ipv4Addr::new(10, 244, 0, 2),
                daddr: Ipv4Addr::new(10, 244, 1, 2),
                proto: 6,
                sport: Some(40000),
                dport: Some(8080),
            }]
        );
    }
}
