//! nftables tracing (`nft monitor trace` without the `nft` program): a table of podnet's own
//! whose rule marks one probe flow for tracing (`meta nftrace set 1`), the kernel's trace
//! events for it received over netfilter netlink (group `NFNLGRP_NFTRACE`, messages
//! `NFT_MSG_TRACE`), and the probe itself: a TCP SYN or UDP datagram sent from a fixed
//! source port (the marker the rule matches) inside a namespace.
//!
//! The kernel clears a packet's trace bit whenever it crosses into another namespace (a
//! veth, a tunnel's encapsulation), so every namespace the probe crosses gets a table.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use netlink_sys::SocketAddr;

use crate::error::{KernelError, Result};
use crate::netns::NetNs;
use crate::nflisten::Listener;
use crate::nftnl::{self, BaseChain, Batch, ChainKind, CmpOp, Expr, Family, Hook, MetaKey};
use crate::nftnl::{NftSocket, PayloadBase, REG_1};

/// `NFNLGRP_NFTRACE`.
const GROUP_NFTRACE: u32 = 9;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_TRACE: u16 = 17;
const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;

/// The names of podnet's trace tables start so; the rest is the tracing process's id.
pub const TABLE_PREFIX: &str = "podnet-trace-";
/// The chain of a trace table that marks the probe.
pub const PROBE_CHAIN: &str = "probe";
/// An empty chain late in postrouting: its policy event says by which device the probe
/// leaves.
pub const LEAVE_CHAIN: &str = "leave";
/// An empty chain late in input: its policy event says the probe reached the local stack.
pub const ARRIVE_CHAIN: &str = "arrive";
/// Before everything else on the hook (conntrack is at -200, raw at -300), so every
/// other chain of the hook sees the probe already marked.
const PROBE_PRIORITY: i32 = -350;
/// After everything else (NAT at 100, podnet's filters around 0).
const LATE_PRIORITY: i32 = 400;

/// Why the kernel sent an event: a rule that matched, a chain that ended without a
/// verdict (return to the caller), or a base chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    Policy,
    Return,
    Rule,
}

/// A verdict as the trace reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceVerdict {
    Drop,
    Accept,
    Stolen,
    Queue,
    Repeat,
    Continue,
    Break,
    Jump(String),
    Goto(String),
    Return,
    Other(i32),
}

impl TraceVerdict {
    /// From `NFTA_VERDICT_CODE` (the netfilter verdicts keep flags in the upper bits).
    fn from_code(code: i32, chain: Option<String>) -> TraceVerdict {
        match code {
            -1 => TraceVerdict::Continue,
            -2 => TraceVerdict::Break,
            -3 => TraceVerdict::Jump(chain.unwrap_or_default()),
            -4 => TraceVerdict::Goto(chain.unwrap_or_default()),
            -5 => TraceVerdict::Return,
            c if c >= 0 => match c & 0xff {
                0 => TraceVerdict::Drop,
                1 => TraceVerdict::Accept,
                2 => TraceVerdict::Stolen,
                3 => TraceVerdict::Queue,
                4 => TraceVerdict::Repeat,
                _ => TraceVerdict::Other(c),
            },
            c => TraceVerdict::Other(c),
        }
    }

    /// Whether the packet's walk ends here (accepted or not).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TraceVerdict::Drop | TraceVerdict::Accept | TraceVerdict::Stolen | TraceVerdict::Queue
        )
    }
}

/// As nft says it.
impl std::fmt::Display for TraceVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceVerdict::Drop => f.write_str("drop"),
            TraceVerdict::Accept => f.write_str("accept"),
            TraceVerdict::Stolen => f.write_str("stolen"),
            TraceVerdict::Queue => f.write_str("queue"),
            TraceVerdict::Repeat => f.write_str("repeat"),
            TraceVerdict::Continue => f.write_str("continue"),
            TraceVerdict::Break => f.write_str("break"),
            TraceVerdict::Jump(c) => write!(f, "jump {c}"),
            TraceVerdict::Goto(c) => write!(f, "goto {c}"),
            TraceVerdict::Return => f.write_str("return"),
            TraceVerdict::Other(c) => write!(f, "verdict {c}"),
        }
    }
}

/// The addresses, protocol and ports of the packet as the event saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracedPacket {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One trace event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The same for every event of one packet in one namespace (a hash of the packet).
    pub id: u32,
    /// The family of the table (`NFPROTO_INET` 1, `NFPROTO_IPV4` 2, …).
    pub family: u8,
    pub kind: TraceKind,
    pub table: String,
    pub chain: String,
    pub rule_handle: Option<u64>,
    pub verdict: Option<TraceVerdict>,
    /// A policy event's base chain policy.
    pub policy: Option<TraceVerdict>,
    /// Interface indexes; the kernel reports them (and the headers) in the first event of
    /// each base chain only.
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
    pub nfproto: Option<u32>,
    pub packet: Option<TracedPacket>,
}

/// A subscription to a namespace's trace events.
pub struct Tracer {
    listener: Listener,
}

impl Tracer {
    /// Subscribes in `ns` (or here); the socket stays in that namespace. Waits at most
    /// `wait` for each datagram.
    pub fn subscribe(ns: Option<&NetNs>, wait: Duration) -> Result<Tracer> {
        let listener = Listener::open(
            ns,
            "subscribe to nftables trace events",
            64 * 1024,
            wait,
            |socket| {
                socket.bind(&SocketAddr::new(0, 0))?;
                socket.add_membership(GROUP_NFTRACE)
            },
        )?;
        Ok(Tracer { listener })
    }

    /// The events of the next datagram; empty when none came in time. Lost events
    /// (`ENOBUFS`) are not an error: what comes next is read.
    pub fn receive(&mut self) -> io::Result<Vec<TraceEvent>> {
        Ok(self
            .listener
            .datagram()?
            .map(parse_datagram)
            .unwrap_or_default())
    }
}

/// Iterates (type, payload) over netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (kind, &b[4..len]);
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some(item)
    })
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned()
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// The trace events in one datagram (other messages are skipped).
pub fn parse_datagram(buf: &[u8]) -> Vec<TraceEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 20 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 20 || off + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let family = buf[off + 16];
        let body = &buf[off + 20..off + len];
        off += len.next_multiple_of(4);
        if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
            && let Some(e) = parse_event(family, body)
        {
            out.push(e);
        }
    }
    out
}

fn parse_verdict(nest: &[u8]) -> Option<TraceVerdict> {
    let mut code = None;
    let mut chain = None;
    for (k, v) in attrs(nest) {
        match k {
            NFTA_VERDICT_CODE => code = be32(v).map(|c| c as i32),
            NFTA_VERDICT_CHAIN => chain = Some(text(v)),
            _ => {}
        }
    }
    Some(TraceVerdict::from_code(code?, chain))
}

fn parse_event(family: u8, body: &[u8]) -> Option<TraceEvent> {
    let mut e = TraceEvent {
        id: 0,
        family,
        kind: TraceKind::Rule,
        table: String::new(),
        chain: String::new(),
        rule_handle: None,
        verdict: None,
        policy: None,
        iif: None,
        oif: None,
        mark: None,
        nfproto: None,
        packet: None,
    };
    let (mut network, mut transport): (&[u8], &[u8]) = (&[], &[]);
    let mut kind = None;
    for (k, v) in attrs(body) {
        match k {
            NFTA_TRACE_TABLE => e.table = text(v),
            NFTA_TRACE_CHAIN => e.chain = text(v),
            NFTA_TRACE_RULE_HANDLE => e.rule_handle = v.try_into().ok().map(u64::from_be_bytes),
            NFTA_TRACE_TYPE => kind = be32(v),
            NFTA_TRACE_VERDICT => e.verdict = parse_verdict(v),
            // The id is in host byte order (`nla_put_u32`).
            NFTA_TRACE_ID => e.id = v.try_into().ok().map(u32::from_ne_bytes)?,
            NFTA_TRACE_NETWORK_HEADER => network = v,
            NFTA_TRACE_TRANSPORT_HEADER => transport = v,
            NFTA_TRACE_IIF => e.iif = be32(v),
            NFTA_TRACE_OIF => e.oif = be32(v),
            NFTA_TRACE_MARK => e.mark = be32(v),
            NFTA_TRACE_NFPROTO => e.nfproto = be32(v),
            NFTA_TRACE_POLICY => {
                e.policy = be32(v).map(|p| TraceVerdict::from_code(p as i32, None))
            }
            _ => {}
        }
    }
    e.kind = match kind? {
        1 => TraceKind::Policy,
        2 => TraceKind::Return,
        3 => TraceKind::Rule,
        _ => return None,
    };
    if !network.is_empty() {
        let whole = [network, transport].concat();
        e.packet =
            crate::nflog::ipv4(&whole).map(|(saddr, daddr, proto, sport, dport)| TracedPacket {
                saddr,
                daddr,
                proto,
                sport,
                dport,
            });
    }
    Some(e)
}

/// The flow a trace table marks: IPv4 from `saddr`, protocol `proto`, from source port
/// `sport` (the probe's marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeMatch {
    pub saddr: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
}

/// `meta nfproto ipv4 ip saddr S meta l4proto P th sport N [tcp flags & (syn|ack) == syn]
/// meta nftrace set 1`. For TCP only the SYN is marked: the handshake's other packets
/// (the client's ACK, its FIN) would be traced as probes too.
fn probe_rule(m: &ProbeMatch) -> Vec<Expr> {
    let cmp = |data: Vec<u8>| Expr::Cmp {
        op: CmpOp::Eq,
        data,
    };
    // `meta nftrace set 1` has no expression of its own in nftnl: the meta expression
    // with a source register, written raw.
    let mut meta_set = Vec::new();
    for (k, v) in [
        (NFTA_META_KEY, MetaKey::NfTrace as u32),
        (NFTA_META_SREG, REG_1),
    ] {
        meta_set.extend_from_slice(&8u16.to_ne_bytes());
        meta_set.extend_from_slice(&k.to_ne_bytes());
        meta_set.extend_from_slice(&v.to_be_bytes());
    }
    let mut rule = vec![
        Expr::meta(MetaKey::NfProto),
        cmp(vec![libc::NFPROTO_IPV4 as u8]),
        Expr::payload(PayloadBase::Network, 12, 4),
        cmp(m.saddr.octets().to_vec()),
        Expr::meta(MetaKey::L4Proto),
        cmp(vec![m.proto]),
        Expr::payload(PayloadBase::Transport, 0, 2),
        cmp(m.sport.to_be_bytes().to_vec()),
    ];
    if m.proto == 6 {
        rule.extend([
            Expr::payload(PayloadBase::Transport, 13, 1),
            Expr::Bitwise {
                mask: vec![TCP_SYN | TCP_ACK],
                xor: vec![0],
            },
            cmp(vec![TCP_SYN]),
        ]);
    }
    rule.extend([
        Expr::Immediate {
            dreg: REG_1,
            data: vec![1],
        },
        Expr::Other {
            name: "meta".into(),
            data: meta_set,
        },
    ]);
    rule
}

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A trace table in one namespace, deleted when dropped (also on an error or a panic).
pub struct TraceTable {
    ns: Option<NetNs>,
    name: String,
}

impl TraceTable {
    /// The name this process's trace tables have.
    pub fn name() -> String {
        format!("{TABLE_PREFIX}{}", std::process::id())
    }

    /// Creates (or replaces) this process's trace table in `ns` (or here): the probe marked
    /// on `hook` (prerouting where it arrives from elsewhere, output where it is sent), and
    /// the late postrouting and input chains whose policy events tell where it went.
    /// Trace tables left by processes that are gone are removed on the way.
    pub fn install(ns: Option<&NetNs>, hook: Hook, probe: &ProbeMatch) -> Result<TraceTable> {
        let name = TraceTable::name();
        let mut batch = Batch::for_family(Family::Inet);
        for stale in stale_tables(ns)? {
            batch.delete_table(&stale);
        }
        batch.add_table(&name, None);
        batch.delete_table(&name);
        batch.add_table(
            &name,
            Some("podnet trace --live: marks its probe for tracing"),
        );
        let base = |hook, priority| {
            Some(BaseChain {
                kind: ChainKind::Filter,
                hook,
                priority,
                accept: true,
            })
        };
        batch.add_chain(&name, PROBE_CHAIN, base(hook, PROBE_PRIORITY));
        batch.add_chain(&name, LEAVE_CHAIN, base(Hook::Postrouting, LATE_PRIORITY));
        batch.add_chain(&name, ARRIVE_CHAIN, base(Hook::Input, LATE_PRIORITY));
        batch.add_rule_with_comment(
            &name,
            PROBE_CHAIN,
            &probe_rule(probe),
            Some("podnet trace probe"),
        );
        nftnl::apply(ns, &batch)?;
        Ok(TraceTable {
            ns: ns.map(NetNs::try_clone).transpose()?,
            name,
        })
    }
}

/// Trace tables whose process has ended (killed before it could clean up).
fn stale_tables(ns: Option<&NetNs>) -> Result<Vec<String>> {
    let tables = NftSocket::open(ns)?.list_tables(Some(Family::Inet), |n| {
        n.strip_prefix(TABLE_PREFIX)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    })?;
    Ok(tables.into_iter().map(|t| t.name).collect())
}

impl Drop for TraceTable {
    fn drop(&mut self) {
        let _ = crate::ruleset::delete_table(self.ns.as_ref(), Family::Inet, &self.name);
    }
}

/// What became of a probe, as its socket sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// No answer yet.
    Pending,
    /// Answered: a TCP handshake completed, or a UDP reply came.
    Answered,
    /// Refused: a TCP reset or an ICMP port unreachable.
    Refused,
    /// An ICMP error other than port unreachable (the errno).
    Unreachable(i32),
}

/// A probe socket: a TCP connection attempt or a connected UDP socket, from a fixed
/// source port, opened in a namespace and watched without blocking.
pub struct ProbeSocket {
    fd: OwnedFd,
    proto: u8,
}

impl ProbeSocket {
    /// Sends the probe in `ns`: a TCP SYN (`proto` 6; the kernel retransmits it after a
    /// second without an answer) or one UDP datagram (17) from `src` to `dst`.
    pub fn send(ns: &NetNs, proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> Result<Self> {
        let open = || open_probe(proto, src, dst);
        let fd = ns.run(open)?.map_err(|source| KernelError::Netlink {
            action: format!("send a probe from {src} to {dst}"),
            netns: ns.label().to_string(),
            source,
        })?;
        Ok(ProbeSocket { fd, proto })
    }

    /// Sends the UDP datagram again (a TCP probe is retransmitted by the kernel).
    pub fn resend(&self) {
        if self.proto == 17 {
            // SAFETY: the buffer is live for the call; the fd is ours.
            unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    PAYLOAD.as_ptr().cast(),
                    PAYLOAD.len(),
                    0,
                )
            };
        }
    }

    /// What has come back so far.
    pub fn answer(&self) -> ProbeAnswer {
        let fd = self.fd.as_raw_fd();
        let mut p = libc::pollfd {
            fd,
            events: if self.proto == 6 {
                libc::POLLOUT
            } else {
                libc::POLLIN
            },
            revents: 0,
        };
        // SAFETY: one live pollfd.
        if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
            return ProbeAnswer::Pending;
        }
        match socket_error(fd) {
            0 => ProbeAnswer::Answered,
            libc::ECONNREFUSED => ProbeAnswer::Refused,
            e => ProbeAnswer::Unreachable(e),
        }
    }
}

/// What a UDP probe carries.
const PAYLOAD: &[u8] = b"podnet trace probe\n";

fn socket_error(fd: i32) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live and sized for SO_ERROR.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    err
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A non-blocking socket bound to `src`, connecting to `dst` (a UDP one also sends).
fn open_probe(proto: u8, src: SocketAddrV4, dst: SocketAddrV4) -> io::Result<OwnedFd> {
    let kind = if proto == 6 {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let raw = libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let (s, d) = (sockaddr(src), sockaddr(dst));
        if libc::bind(raw, (&s as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::connect(raw, (&d as *const libc::sockaddr_in).cast(), len);
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        if proto == 17 && libc::send(raw, PAYLOAD.as_ptr().cast(), PAYLOAD.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = 4 + payload.len();
        let mut a = Vec::new();
        a.extend_from_slice(&(len as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(payload);
        a.resize(len.next_multiple_of(4), 0);
        a
    }

    fn message(family: u8, attrs: &[u8]) -> Vec<u8> {
        let len = 20 + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(attrs);
        m
    }

    /// A rule event as the kernel writes it (nf_tables_trace.c): the policy chain's drop
    /// rule, with the packet's devices and headers.
    fn drop_event() -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 244, 0, 2, 10, 244, 1, 3]);
        let mut tcp = 61234u16.to_be_bytes().to_vec();
        tcp.extend_from_slice(&8080u16.to_be_bytes());
        tcp.extend_from_slice(&[0; 16]);
        let mut a = attr(NFTA_TRACE_NFPROTO, &2u32.to_be_bytes());
        a.extend(attr(NFTA_TRACE_TYPE, &3u32.to_be_bytes()));
        a.extend(attr(NFTA_TRACE_ID, &0xdead_beefu32.to_ne_bytes()));
        a.extend(attr(NFTA_TRACE_CHAIN, b"ingress-1a2b3c\0"));
        a.extend(attr(NFTA_TRACE_TABLE, b"podnet-policy\0"));
        a.extend(attr(NFTA_TRACE_RULE_HANDLE, &7u64.to_be_bytes()));
        let code = attr(NFTA_VERDICT_CODE, &0u32.to_be_bytes());
        a.extend(attr(NFTA_TRACE_VERDICT | 0x8000, &code));
        a.extend(attr(NFTA_TRACE_IIF, &4u32.to_be_bytes()));
        a.extend(attr(NFTA_TRACE_OIF, &3u32.to_be_bytes()));
        a.extend(attr(NFTA_TRACE_NETWORK_HEADER, &ip));
        a.extend(attr(NFTA_TRACE_TRANSPORT_HEADER, &tcp));
        message(1, &a)
    }

    #[test]
    fn a_rule_event_reads_back_with_its_rule_verdict_devices_and_packet() {
        let got = parse_datagram(&drop_event());
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!((e.id, e.family, e.kind), (0xdead_beef, 1, TraceKind::Rule));
        assert_eq!(
            (e.table.as_str(), e.chain.as_str()),
            ("podnet-policy", "ingress-1a2b3c")
        );
        assert_eq!(e.rule_handle, Some(7));
        assert_eq!(e.verdict, Some(TraceVerdict::Drop));
        assert_eq!((e.iif, e.oif, e.nfproto), (Some(4), Some(3), Some(2)));
        assert_eq!(
            e.packet,
            Some(TracedPacket {
                saddr: Ipv4Addr::new(10, 244, 0, 2),
                daddr: Ipv4Addr::new(10, 244, 1, 3),
                proto: 6,
                sport: Some(61234),
                dport: Some(8080),
            })
        );
    }

    #[test]
    fn policy_and_jump_events_and_other_messages() {
        let mut a = attr(NFTA_TRACE_TYPE, &1u32.to_be_bytes());
        a.extend(attr(NFTA_TRACE_ID, &1u32.to_ne_bytes()));
        a.extend(attr(NFTA_TRACE_CHAIN, b"leave\0"));
        a.extend(attr(NFTA_TRACE_TABLE, b"podnet-trace-1\0"));
        a.extend(attr(NFTA_TRACE_POLICY, &1u32.to_be_bytes()));
        let mut datagram = message(1, &a);
        // Not a trace message: skipped.
        let mut other = message(1, &[]);
        other[4] = 0;
        datagram.extend(other);
        let mut v = attr(NFTA_VERDICT_CODE, &(-3i32).to_be_bytes());
        v.extend(attr(NFTA_VERDICT_CHAIN, b"in-default/web\0"));
        let mut b = attr(NFTA_TRACE_TYPE, &3u32.to_be_bytes());
        b.extend(attr(NFTA_TRACE_ID, &1u32.to_ne_bytes()));
        b.extend(attr(NFTA_TRACE_VERDICT | 0x8000, &v));
        datagram.extend(message(1, &b));
        let got = parse_datagram(&datagram);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, TraceKind::Policy);
        assert_eq!(got[0].policy, Some(TraceVerdict::Accept));
        assert_eq!(got[0].packet, None);
        assert_eq!(
            got[1].verdict,
            Some(TraceVerdict::Jump("in-default/web".into()))
        );
        assert_eq!(
            got[1].verdict.as_ref().map(|v| v.to_string()).as_deref(),
            Some("jump in-default/web")
        );
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Two datagrams received from a 6.18 kernel on a lab node whose NetworkPolicy denies
    /// the probe: the ingress-forward chain's verdict map sending it to the policy chain
    /// (the chain's first event, with devices and headers; the kernel adds conntrack
    /// attributes this parser skips), then that chain's drop rule.
    const GOTO: &str = "08010000110a000000000000000000000100000008000f000000000208000400000000030800060019abe33114000200696e67726573732d666f72776172640012000100706f646e65742d706f6c6963790000000c00030000000000000000152400050008000100fffffffc17000200696e67726573732d36613263653662373039000008000a000000000306000b000001000008000c000000000406000d0000010000180008004500003c3e5940003e06e7750af400030af4010318000900f0171f90a5c4a03800000000a002fd5c171c000012000700c68a9811390432c76d786f2e080000000800150000000008050013000000000008001200eb79a2590800140000000100";
    const DROP: &str = "70000000110a000000000000000000000100000008000f000000000208000400000000030800060019abe33117000200696e67726573732d36613263653662373039000012000100706f646e65742d706f6c6963790000000c000300000000000000001d0c0005000800010000000000";

    #[test]
    fn events_captured_from_the_kernel_read_back() {
        let goto = parse_datagram(&unhex(GOTO));
        let drop = parse_datagram(&unhex(DROP));
        assert_eq!((goto.len(), drop.len()), (1, 1));
        let (g, d) = (&goto[0], &drop[0]);
        assert_eq!(g.id, d.id, "one packet");
        assert_eq!((g.family, g.kind, g.nfproto), (1, TraceKind::Rule, Some(2)));
        assert_eq!(
            (g.table.as_str(), g.chain.as_str()),
            ("podnet-policy", "ingress-forward")
        );
        assert_eq!(g.rule_handle, Some(21));
        assert_eq!(
            g.verdict,
            Some(TraceVerdict::Goto("ingress-6a2ce6b709".into()))
        );
        assert_eq!((g.iif, g.oif), (Some(3), Some(4)));
        assert_eq!(
            g.packet,
            Some(TracedPacket {
                saddr: Ipv4Addr::new(10, 244, 0, 3),
                daddr: Ipv4Addr::new(10, 244, 1, 3),
                proto: 6,
                sport: Some(61463),
                dport: Some(8080),
            })
        );
        assert_eq!(d.chain, "ingress-6a2ce6b709");
        assert_eq!(
            (d.rule_handle, d.verdict.clone()),
            (Some(29), Some(TraceVerdict::Drop))
        );
        // Devices and headers come with a base chain's first event only.
        assert_eq!((d.iif, d.packet), (None, None));
    }

    #[test]
    fn the_probe_rule_marks_only_the_probe_flow() {
        let m = ProbeMatch {
            saddr: Ipv4Addr::new(10, 244, 0, 2),
            proto: 6,
            sport: 61234,
        };
        let rule = probe_rule(&m);
        assert!(rule.contains(&Expr::Cmp {
            op: CmpOp::Eq,
            data: vec![10, 244, 0, 2]
        }));
        assert!(rule.contains(&Expr::Cmp {
            op: CmpOp::Eq,
            data: 61234u16.to_be_bytes().to_vec()
        }));
        assert!(matches!(rule.last(), Some(Expr::Other { name, .. }) if name == "meta"));
    }
}
