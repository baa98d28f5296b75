//! nf_tables over netlink, without the `nft` program: a batch of rule and set-element
//! changes sent as one atomic transaction (`NFNL_MSG_BATCH_BEGIN` … `BATCH_END`: the
//! kernel commits all of it or none).
//!
//! Why: `nft` reads every chain and set of every table before it applies anything, which
//! at 10,000 services is ≈ 100 ms of a service change's latency for a change of a few
//! hundred bytes. This covers what a service proxy changes most often (a chain's rules
//! rewritten, map and set elements added, deleted, flushed) with the few expressions
//! those rules use, encoded as `nft` encodes them, so `nft list` shows the same text
//! whichever way a rule was written. Everything else stays with `nft -f`.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_IPV4: u8 = 2;

const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;

/// Registers as `nft` uses them here: the verdict register, the first 16-byte register,
/// and the second 32-bit slice of it (where a concatenation's second field lands).
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG32_01: u32 = 9;

const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a payload load starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

/// A verdict: where a rule sends the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
        }
    }
}

/// The expressions of the rules this module writes; every load goes to register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `len` bytes of the packet at `base` + `offset`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    /// The transport protocol number (one byte).
    MetaL4Proto,
    /// Register 1 equal (or not) to `data`.
    Cmp {
        equal: bool,
        data: Vec<u8>,
    },
    /// Register 1 masked: `(reg & mask) ^ 0`.
    Mask {
        mask: Vec<u8>,
    },
    /// A random number in `offset..offset + modulus` (host byte order).
    NumgenRandom {
        modulus: u32,
        offset: u32,
    },
    /// Register 1 looked up in the map `set`, its value loaded into register 1 onwards.
    Map {
        set: String,
    },
    /// DNAT to the address in register 1 and the port in the next 32-bit register.
    DnatFromMap,
    Verdict(Verdict),
}

impl Expr {
    /// The expressions `nft` emits for `ip saddr|daddr <net>` (`!=` when not `equal`): a
    /// load of the prefix's bytes and a compare when the prefix ends on a byte, else a
    /// load of the whole address, a mask and a compare.
    pub fn ip_prefix(offset: u32, net: Ipv4Addr, prefix: u8, equal: bool) -> Vec<Expr> {
        let octets = net.octets();
        let payload = |len: u32| Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len,
        };
        if prefix.is_multiple_of(8) && prefix > 0 {
            let bytes = usize::from(prefix / 8);
            return vec![
                payload(bytes as u32),
                Expr::Cmp {
                    equal,
                    data: octets[..bytes].to_vec(),
                },
            ];
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        vec![
            payload(4),
            Expr::Mask {
                mask: mask.to_be_bytes().to_vec(),
            },
            Expr::Cmp {
                equal,
                data: (u32::from(net) & mask).to_be_bytes().to_vec(),
            },
        ]
    }
}

/// One map or set element: its key and, for a map, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The bytes of a concatenation, each field padded to 32 bits as the kernel stores it.
pub fn concat(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() * 4);
    for f in fields {
        out.extend_from_slice(f);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// A transaction being built: messages in order, each asking for an acknowledgement, with
/// a description for the error message if the kernel refuses it.
#[derive(Debug, Clone)]
pub struct Batch {
    messages: Vec<(u16, u16, Vec<u8>, String)>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch for the `ip` family.
    pub fn new() -> Batch {
        Batch {
            messages: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Deletes every rule of `chain` (what `flush chain` does).
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_RULE_TABLE, table);
        put_str(&mut a, NFTA_RULE_CHAIN, chain);
        self.messages.push((
            NFT_MSG_DELRULE,
            0,
            a,
            format!("flush chain ip {table} {chain}"),
        ));
    }

    /// Appends a rule to `chain`.
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_RULE_TABLE, table);
        put_str(&mut a, NFTA_RULE_CHAIN, chain);
        let mut list = Vec::new();
        for e in exprs {
            put_nested(&mut list, NFTA_LIST_ELEM, &encode_expr(e));
        }
        put_nested(&mut a, NFTA_RULE_EXPRESSIONS, &list);
        self.messages.push((
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            a,
            format!("add rule ip {table} {chain}"),
        ));
    }

    /// Deletes every element of `set` (what `flush set`/`flush map` does).
    pub fn flush_set(&mut self, table: &str, set: &str) {
        self.messages.push((
            NFT_MSG_DELSETELEM,
            0,
            set_header(table, set),
            format!("flush set ip {table} {set}"),
        ));
    }

    /// Adds elements to `set` (an element already there is not an error).
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) {
        if elements.is_empty() {
            return;
        }
        let mut a = set_header(table, set);
        put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, &element_list(elements));
        self.messages.push((
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            a,
            format!("add element ip {table} {set}"),
        ));
    }

    /// Deletes elements of `set` by key (one that is not there is an error, as with nft).
    pub fn delete_elements(&mut self, table: &str, set: &str, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let elements: Vec<Element> = keys
            .iter()
            .map(|k| Element {
                key: k.clone(),
                value: None,
            })
            .collect();
        let mut a = set_header(table, set);
        put_nested(
            &mut a,
            NFTA_SET_ELEM_LIST_ELEMENTS,
            &element_list(&elements),
        );
        self.messages.push((
            NFT_MSG_DELSETELEM,
            0,
            a,
            format!("delete element ip {table} {set}"),
        ));
    }

    /// The wire form: batch begin, the messages (sequence numbers from `first_seq`),
    /// batch end.
    fn encode(&self, first_seq: u32) -> Vec<u8> {
        let mut buf =
            Vec::with_capacity(64 + self.messages.iter().map(|m| m.2.len() + 24).sum::<usize>());
        put_message(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            &[],
        );
        for (i, (kind, flags, attrs, _)) in self.messages.iter().enumerate() {
            put_message(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                first_seq + 1 + i as u32,
                NFPROTO_IPV4,
                attrs,
            );
        }
        let end = first_seq + 1 + self.messages.len() as u32;
        put_message(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, &[]);
        buf
    }
}

/// Commits `batch` in `ns` (or here) as one transaction, on a socket of its own. The
/// error names the first message the kernel refused. Prefer [`NftSocket`] for repeated
/// transactions: closing a socket right after a commit waits for an RCU grace period
/// (nf_tables flushes its pending destroy work when a netfilter socket is released),
/// ≈ 15 ms here.
pub fn apply(ns: Option<&NetNs>, batch: &Batch) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    NftSocket::open(ns)?.apply(batch)
}

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
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let mut wire = Vec::new();
        put_message(
            &mut wire,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_IPV4,
            &set_header(table, set),
        );
        let listed = self
            .socket
            .send(&wire, 0)
            .and_then(|_| read_dump(&mut self.socket, seq));
        match listed {
            Ok(elements) => Ok(elements),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(source) => Err(KernelError::Netlink {
                action: format!("list the elements of set ip {table} {set}"),
                netns: self.netns.clone(),
                source,
            }),
        }
    }
}

/// A set element as the kernel lists it: its key and how long it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedElement {
    pub key: Vec<u8>,
    pub expires: Option<Duration>,
}

/// Reads a set element dump answering `seq` to its end.
fn read_dump(socket: &mut Socket, seq: u32) -> io::Result<Vec<TimedElement>> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    loop {
        buf.clear();
        let n = socket.recv(&mut buf, libc::MSG_TRUNC)?;
        if n > buf.capacity() {
            return Err(io::Error::other("nftables reply larger than the buffer"));
        }
        let mut off = 0;
        while off + NLMSG_HDR <= buf.len() {
            let len = u32_at(&buf, off) as usize;
            if len < NLMSG_HDR || off + len > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed nftables reply",
                ));
            }
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let reply_to = u32_at(&buf, off + 8);
            let body = &buf[off + NLMSG_HDR..off + len];
            off += (len + 3) & !3;
            if reply_to != seq {
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(0);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    return Ok(out);
                }
                _ if body.len() > 4 => out.extend(parse_elements(&body[4..])),
                _ => {}
            }
        }
    }
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

/// Iterates (type, payload) over a run of netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        // The type without the nested and byte-order flags.
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (kind, &b[4..len]);
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some(item)
    })
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
    let replies = read_acks(socket, &messages).map_err(plain)?;
    match replies.into_iter().find(|(_, code)| *code != 0) {
        None => Ok(()),
        Some((seq, code)) => {
            let what = batch
                .messages
                .get(seq.wrapping_sub(messages.start) as usize)
                .map(|m| m.3.clone())
                .unwrap_or_else(|| format!("message {seq}"));
            Err((what, io::Error::from_raw_os_error(-code)))
        }
    }
}

/// Reads acknowledgements until each message of the batch (sequence numbers `seqs`) has
/// one: the kernel answers every message that asked, and every refused one. Replies to
/// an earlier batch that timed out are skipped.
fn read_acks(socket: &mut Socket, seqs: &std::ops::Range<u32>) -> io::Result<BTreeMap<u32, i32>> {
    let expected = seqs.end.wrapping_sub(seqs.start) as usize;
    let mut replies = BTreeMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    while replies.len() < expected {
        buf.clear();
        let n = socket.recv(&mut buf, libc::MSG_TRUNC)?;
        if n > buf.capacity() {
            return Err(io::Error::other("nftables reply larger than the buffer"));
        }
        let mut off = 0;
        while off + NLMSG_HDR <= buf.len() {
            let len = u32_at(&buf, off) as usize;
            if len < NLMSG_HDR || off + len > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed nftables reply",
                ));
            }
            let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let seq = u32_at(&buf, off + 8);
            if kind == NLMSG_ERROR && len >= NLMSG_HDR + 4 && seqs.contains(&seq) {
                let code = i32::from_ne_bytes(
                    buf[off + NLMSG_HDR..off + NLMSG_HDR + 4]
                        .try_into()
                        .unwrap_or([0; 4]),
                );
                replies.insert(seq, code);
            }
            off += (len + 3) & !3;
        }
    }
    Ok(replies)
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

fn set_header(table: &str, set: &str) -> Vec<u8> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
    a
}

fn element_list(elements: &[Element]) -> Vec<u8> {
    let mut list = Vec::new();
    for e in elements {
        let mut el = Vec::new();
        put_nested(&mut el, NFTA_SET_ELEM_KEY, &data_value(&e.key));
        if let Some(v) = &e.value {
            put_nested(&mut el, NFTA_SET_ELEM_DATA, &data_value(v));
        }
        put_nested(&mut list, NFTA_LIST_ELEM, &el);
    }
    list
}

fn data_value(bytes: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    put_attr(&mut d, NFTA_DATA_VALUE, bytes);
    d
}

fn encode_expr(e: &Expr) -> Vec<u8> {
    let (name, data) = match e {
        Expr::Payload { base, offset, len } => (
            "payload",
            u32_attrs(&[(1, REG_1), (2, *base as u32), (3, *offset), (4, *len)]),
        ),
        // NFT_META_L4PROTO
        Expr::MetaL4Proto => ("meta", u32_attrs(&[(2, 16), (1, REG_1)])),
        Expr::Cmp { equal, data } => {
            let mut d = u32_attrs(&[(1, REG_1), (2, if *equal { 0 } else { 1 })]);
            put_nested(&mut d, 3, &data_value(data));
            ("cmp", d)
        }
        Expr::Mask { mask } => {
            let mut d = u32_attrs(&[(1, REG_1), (2, REG_1), (3, mask.len() as u32)]);
            put_nested(&mut d, 4, &data_value(mask));
            put_nested(&mut d, 5, &data_value(&vec![0; mask.len()]));
            ("bitwise", d)
        }
        // NFT_NG_RANDOM
        Expr::NumgenRandom { modulus, offset } => (
            "numgen",
            u32_attrs(&[(1, REG_1), (2, *modulus), (3, 1), (4, *offset)]),
        ),
        Expr::Map { set } => {
            let mut d = Vec::new();
            put_str(&mut d, 1, set);
            d.extend(u32_attrs(&[(2, REG_1), (3, REG_1)]));
            ("lookup", d)
        }
        // NFT_NAT_DNAT, NFPROTO_IPV4, address and port registers.
        Expr::DnatFromMap => (
            "nat",
            u32_attrs(&[
                (1, 1),
                (2, u32::from(NFPROTO_IPV4)),
                (3, REG_1),
                (5, REG32_01),
            ]),
        ),
        Expr::Verdict(v) => {
            let mut verdict = Vec::new();
            put_attr(&mut verdict, NFTA_VERDICT_CODE, &v.code().to_be_bytes());
            if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                put_str(&mut verdict, NFTA_VERDICT_CHAIN, c);
            }
            let mut data = Vec::new();
            put_nested(&mut data, NFTA_DATA_VERDICT, &verdict);
            let mut d = u32_attrs(&[(1, REG_VERDICT)]);
            put_nested(&mut d, 2, &data);
            ("immediate", d)
        }
    };
    let mut out = Vec::new();
    put_str(&mut out, NFTA_EXPR_NAME, name);
    put_nested(&mut out, NFTA_EXPR_DATA, &data);
    out
}

/// Big-endian u32 attributes, as nf_tables wants its numbers.
fn u32_attrs(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, v) in pairs {
        put_attr(&mut out, *kind, &v.to_be_bytes());
    }
    out
}

fn put_message(buf: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) {
    let len = NLMSG_HDR + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version, resource id (big endian; the subsystem for a batch).
    let res_id = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn put_nested(out: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    put_attr(out, kind | NLA_F_NESTED, inner);
}

fn put_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    put_attr(out, kind, &b);
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_load_whole_bytes_and_mask_the_rest() {
        let net = Ipv4Addr::new(10, 244, 0, 0);
        assert_eq!(
            Expr::ip_prefix(12, net, 16, false),
            vec![
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 2
                },
                Expr::Cmp {
                    equal: false,
                    data: vec![10, 244]
                }
            ]
        );
        let e = Expr::ip_prefix(12, Ipv4Addr::new(10, 96, 0, 0), 12, false);
        assert_eq!(
            e[1],
            Expr::Mask {
                mask: vec![0xff, 0xf0, 0, 0]
            }
        );
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_with_one_ack_per_message() {
        let mut b = Batch::new();
        b.flush_set("t", "s");
        b.add_elements(
            "t",
            "s",
            &[Element {
                key: vec![1, 2, 3, 4],
                value: None,
            }],
        );
        let wire = b.encode(7);
        // begin (seq 7), two messages (8, 9) asking for acks, end (10).
        let mut off = 0;
        let mut seen = Vec::new();
        while off < wire.len() {
            let len = u32_at(&wire, off) as usize;
            let kind = u16::from_ne_bytes([wire[off + 4], wire[off + 5]]);
            let flags = u16::from_ne_bytes([wire[off + 6], wire[off + 7]]);
            seen.push((kind, flags & NLM_F_ACK != 0, u32_at(&wire, off + 8)));
            off += len.next_multiple_of(4);
        }
        assert_eq!(
            seen,
            vec![
                (NFNL_MSG_BATCH_BEGIN, false, 7),
                ((10 << 8) | NFT_MSG_DELSETELEM, true, 8),
                ((10 << 8) | NFT_MSG_NEWSETELEM, true, 9),
                (NFNL_MSG_BATCH_END, false, 10),
            ]
        );
    }

    #[test]
    fn concatenations_pad_each_field() {
        assert_eq!(
            concat(&[&[10, 0, 0, 1], &8080u16.to_be_bytes()]),
            vec![10, 0, 0, 1, 0x1f, 0x90, 0, 0]
        );
    }
}
