//! A rule as a list of matches and actions, each with its nft text (`Display`, as `nft
//! list` prints it, which `nft -f` also reads) and the kernel expressions nft 1.0.6
//! encodes it to. The same types come back from a listing ([`super::parse`]), so what
//! podnet wrote can be compared with what it wants, and shown as nft would show it.

use std::fmt;

use ipnet::Ipv4Net;

use super::data::{Datum, proto_name};
use crate::nftnl::{
    CmpOp, CtKey, Expr, Family, MetaKey, PayloadBase, REG_1, REG_2, REG_VERDICT, REG32_01, SetRef,
    Verdict,
};

/// Offsets of the IPv4 source and destination addresses, and of the ports in a transport
/// header.
pub(super) const IP_SADDR: u32 = 12;
pub(super) const IP_DADDR: u32 = 16;
pub(super) const TH_SPORT: u32 = 0;
pub(super) const TH_DPORT: u32 = 2;

/// The kernel's address type of a local address (`RTN_LOCAL`).
pub(super) const RTN_LOCAL: u32 = 2;

/// `NFPROTO_IPV4`, as `meta nfproto` loads it.
pub(super) const NFPROTO_IPV4: u8 = 2;

/// A field a rule loads: alone it is compared, several form a concatenation looked up in
/// a set or map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    IpSaddr,
    IpDaddr,
    L4Proto,
    ThSport,
    ThDport,
}

impl Key {
    pub(super) fn load(self, dreg: u32) -> Expr {
        match self {
            Key::IpSaddr => payload(PayloadBase::Network, IP_SADDR, 4, dreg),
            Key::IpDaddr => payload(PayloadBase::Network, IP_DADDR, 4, dreg),
            Key::L4Proto => Expr::Meta {
                key: MetaKey::L4Proto,
                dreg,
            },
            Key::ThSport => payload(PayloadBase::Transport, TH_SPORT, 2, dreg),
            Key::ThDport => payload(PayloadBase::Transport, TH_DPORT, 2, dreg),
        }
    }

    fn is_ip(self) -> bool {
        matches!(self, Key::IpSaddr | Key::IpDaddr)
    }

    fn name(self) -> &'static str {
        match self {
            Key::IpSaddr => "ip saddr",
            Key::IpDaddr => "ip daddr",
            Key::L4Proto => "meta l4proto",
            Key::ThSport => "th sport",
            Key::ThDport => "th dport",
        }
    }
}

fn payload(base: PayloadBase, offset: u32, len: u32, dreg: u32) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

/// `ip saddr` or `ip daddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Addr {
    Saddr,
    Daddr,
}

impl Addr {
    fn key(self) -> Key {
        match self {
            Addr::Saddr => Key::IpSaddr,
            Addr::Daddr => Key::IpDaddr,
        }
    }

    pub(super) fn offset(self) -> u32 {
        match self {
            Addr::Saddr => IP_SADDR,
            Addr::Daddr => IP_DADDR,
        }
    }
}

/// conntrack states, as `ct state` tests them.
pub mod ct_state {
    pub const INVALID: u32 = 0x1;
    pub const ESTABLISHED: u32 = 0x2;
    pub const RELATED: u32 = 0x4;
    pub const NEW: u32 = 0x8;
    pub const UNTRACKED: u32 = 0x40;
}

/// conntrack's `dnat` status bit.
pub const CT_STATUS_DNAT: u32 = 0x20;

/// One test of a packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `ip saddr|daddr [!=] <net>` (the address alone for a /32).
    Ip {
        addr: Addr,
        net: Ipv4Net,
        equal: bool,
    },
    /// `ip saddr|daddr [!=] @<set>`.
    IpInSet {
        addr: Addr,
        set: String,
        equal: bool,
    },
    /// `meta l4proto <proto>`.
    L4Proto(u8),
    /// `tcp|udp|sctp dport|sport <port or range>` (`th dport …` without a protocol).
    Port {
        proto: Option<u8>,
        dport: bool,
        first: u16,
        last: u16,
    },
    /// `fib saddr|daddr type local`.
    FibLocal { daddr: bool },
    /// `<key> . <key> … [!=] @<set>`.
    InSet {
        keys: Vec<Key>,
        set: String,
        equal: bool,
    },
    /// `ct state <states>`: any of the bits is set.
    CtState(u32),
    /// `ct status <bits>`: any of them is set.
    CtStatus(u32),
    /// `meta mark & <mask> == 0`.
    MarkClear(u32),
    /// `meta nfproto ipv4`, written explicitly.
    NfProtoIpv4,
}

/// What a rule does with a packet that matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Verdict(Verdict),
    /// `<keys> vmap @<map>`.
    Vmap {
        keys: Vec<Key>,
        map: String,
    },
    /// `numgen random mod N vmap { 0 : goto a, … }`.
    RandomVmap {
        chains: Vec<String>,
    },
    Masquerade {
        fully_random: bool,
    },
    /// `dnat to <ip>:<port>`.
    Dnat {
        ip: std::net::Ipv4Addr,
        port: u16,
    },
    /// `dnat ip to numgen random mod N [offset O] map @<map>`.
    DnatRandomMap {
        count: u32,
        offset: u32,
        map: String,
    },
    /// `redirect to :<port>`.
    Redirect {
        port: u16,
    },
    /// `reject` (ICMP port unreachable) or `reject with tcp reset`.
    Reject {
        tcp_reset: bool,
    },
    /// `update @<set> { <key> timeout <s>s }`.
    UpdateSet {
        set: String,
        key: Key,
        timeout_seconds: u32,
    },
    /// `meta mark set meta mark or <bits>`.
    MarkOr(u32),
    /// `meta mark set meta mark xor <bits>`.
    MarkXor(u32),
    /// `counter packets P bytes B`.
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// `log [prefix "…"] group N`.
    Log {
        group: u16,
        prefix: Option<String>,
    },
    /// Expressions no match or action here describes, as the kernel listed them.
    Raw(Vec<Expr>),
}

/// One rule: its matches, in order, then its actions, and a comment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub actions: Vec<Action>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(matches: Vec<Match>, actions: Vec<Action>) -> Rule {
        Rule {
            matches,
            actions,
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Rule {
        self.comment = Some(comment.into());
        self
    }

    /// Whether a `numgen … vmap { … }` needs an anonymous map created before the rule.
    pub fn anonymous_vmap(&self) -> Option<Vec<Verdict>> {
        self.actions.iter().find_map(|a| match a {
            Action::RandomVmap { chains } => {
                Some(chains.iter().map(|c| Verdict::Goto(c.clone())).collect())
            }
            _ => None,
        })
    }

    /// The kernel's expressions for the rule in a table of `family`; `anonymous_map` is
    /// the batch id of the map [`Self::anonymous_vmap`] asked for.
    pub fn exprs(&self, family: Family, anonymous_map: Option<u32>) -> Vec<Expr> {
        let mut out = Vec::new();
        // nft tests `meta nfproto ipv4` once, before the rule's first IPv4 field.
        let mut ipv4_known = family != Family::Inet;
        let steps = self
            .matches
            .iter()
            .map(|m| (m.loads_ip(), *m == Match::NfProtoIpv4, Step::Match(m)))
            .chain(
                self.actions
                    .iter()
                    .map(|a| (a.loads_ip(), false, Step::Action(a))),
            );
        for (loads_ip, is_dependency, step) in steps {
            if loads_ip && !ipv4_known {
                ipv4_dependency(&mut out);
            }
            ipv4_known |= loads_ip || is_dependency;
            match step {
                Step::Match(m) => m.encode(&mut out),
                Step::Action(a) => a.encode(anonymous_map, &mut out),
            }
        }
        out
    }
}

/// A rule's matches and actions in order, for encoding.
enum Step<'a> {
    Match(&'a Match),
    Action(&'a Action),
}

/// A 32-bit register compared with a number in host byte order (marks, address types).
pub(super) fn cmp_ne(op: CmpOp, value: u32) -> Expr {
    Expr::Cmp {
        op,
        data: value.to_ne_bytes().to_vec(),
    }
}

fn bits(mask: u32) -> Expr {
    Expr::Bitwise {
        mask: mask.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    }
}

/// In an `inet` table an IPv4 field is read only from IPv4 packets: nft puts a
/// `meta nfproto ipv4` test before it.
fn ipv4_dependency(out: &mut Vec<Expr>) {
    out.push(Expr::meta(MetaKey::NfProto));
    out.push(Expr::Cmp {
        op: CmpOp::Eq,
        data: vec![NFPROTO_IPV4],
    });
}

impl Match {
    /// Whether it reads an IPv4 header field.
    fn loads_ip(&self) -> bool {
        match self {
            Match::Ip { .. } | Match::IpInSet { .. } => true,
            Match::InSet { keys, .. } => keys.iter().any(|k| k.is_ip()),
            _ => false,
        }
    }

    fn encode(&self, out: &mut Vec<Expr>) {
        match self {
            Match::Ip { addr, net, equal } => {
                out.extend(Expr::ip_prefix(
                    addr.offset(),
                    net.network(),
                    net.prefix_len(),
                    *equal,
                ));
            }
            Match::IpInSet { addr, set, equal } => {
                out.push(addr.key().load(REG_1));
                out.push(lookup(set, None, !equal));
            }
            Match::L4Proto(p) => l4proto(*p, out),
            Match::Port {
                proto,
                dport,
                first,
                last,
            } => {
                if let Some(p) = proto {
                    l4proto(*p, out);
                }
                let key = if *dport { Key::ThDport } else { Key::ThSport };
                out.push(key.load(REG_1));
                port_compare(*first, *last, out);
            }
            Match::FibLocal { daddr } => {
                out.push(Expr::FibAddrType { daddr: *daddr });
                out.push(cmp_ne(CmpOp::Eq, RTN_LOCAL));
            }
            Match::InSet { keys, set, equal } => {
                load_keys(keys, out);
                out.push(lookup(set, None, !equal));
            }
            Match::CtState(b) => ct_bits(CtKey::State, *b, out),
            Match::CtStatus(b) => ct_bits(CtKey::Status, *b, out),
            Match::MarkClear(mask) => {
                out.push(Expr::meta(MetaKey::Mark));
                out.push(bits(*mask));
                out.push(cmp_ne(CmpOp::Eq, 0));
            }
            Match::NfProtoIpv4 => ipv4_dependency(out),
        }
    }
}

fn l4proto(p: u8, out: &mut Vec<Expr>) {
    out.push(Expr::meta(MetaKey::L4Proto));
    out.push(Expr::Cmp {
        op: CmpOp::Eq,
        data: vec![p],
    });
}

fn port_compare(first: u16, last: u16, out: &mut Vec<Expr>) {
    if first == last {
        out.push(Expr::Cmp {
            op: CmpOp::Eq,
            data: first.to_be_bytes().to_vec(),
        });
    } else {
        out.push(Expr::Cmp {
            op: CmpOp::Gte,
            data: first.to_be_bytes().to_vec(),
        });
        out.push(Expr::Cmp {
            op: CmpOp::Lte,
            data: last.to_be_bytes().to_vec(),
        });
    }
}

fn ct_bits(key: CtKey, b: u32, out: &mut Vec<Expr>) {
    out.push(Expr::Ct { key });
    out.push(bits(b));
    out.push(cmp_ne(CmpOp::Neq, 0));
}

/// A concatenation's fields loaded into consecutive registers: the first into register
/// 1, the next into the 32-bit registers after it (9, 10, …).
fn load_keys(keys: &[Key], out: &mut Vec<Expr>) {
    for (i, k) in keys.iter().enumerate() {
        let dreg = if i == 0 {
            REG_1
        } else {
            REG32_01 + i as u32 - 1
        };
        out.push(k.load(dreg));
    }
}

fn lookup(set: &str, dreg: Option<u32>, invert: bool) -> Expr {
    Expr::Lookup {
        set: SetRef::Named(set.to_string()),
        dreg,
        invert,
    }
}

impl Action {
    /// Whether it reads an IPv4 header field.
    fn loads_ip(&self) -> bool {
        match self {
            Action::Vmap { keys, .. } => keys.iter().any(|k| k.is_ip()),
            Action::UpdateSet { key, .. } => key.is_ip(),
            _ => false,
        }
    }

    fn encode(&self, anonymous_map: Option<u32>, out: &mut Vec<Expr>) {
        match self {
            Action::Verdict(v) => out.push(Expr::Verdict(v.clone())),
            Action::Vmap { keys, map } => {
                load_keys(keys, out);
                out.push(lookup(map, Some(REG_VERDICT), false));
            }
            Action::RandomVmap { chains } => {
                out.push(Expr::NumgenRandom {
                    modulus: chains.len() as u32,
                    offset: 0,
                });
                out.push(Expr::Lookup {
                    set: SetRef::Anonymous(anonymous_map.unwrap_or_default()),
                    dreg: Some(REG_VERDICT),
                    invert: false,
                });
            }
            Action::Masquerade { fully_random } => out.push(Expr::Masquerade {
                fully_random: *fully_random,
            }),
            Action::Dnat { ip, port } => {
                out.push(immediate(REG_1, ip.octets().to_vec()));
                out.push(immediate(REG_2, port.to_be_bytes().to_vec()));
                out.push(Expr::Dnat {
                    addr: REG_1,
                    port: REG_2,
                });
            }
            Action::DnatRandomMap { count, offset, map } => {
                out.push(Expr::NumgenRandom {
                    modulus: *count,
                    offset: *offset,
                });
                out.push(lookup(map, Some(REG_1), false));
                out.push(Expr::Dnat {
                    addr: REG_1,
                    port: REG32_01,
                });
            }
            Action::Redirect { port } => {
                out.push(immediate(REG_1, port.to_be_bytes().to_vec()));
                out.push(Expr::Redirect { port: REG_1 });
            }
            Action::Reject { tcp_reset } => out.push(Expr::Reject {
                tcp_reset: *tcp_reset,
            }),
            Action::UpdateSet {
                set,
                key,
                timeout_seconds,
            } => {
                out.push(key.load(REG_1));
                out.push(Expr::DynsetUpdate {
                    set: set.clone(),
                    timeout_ms: u64::from(*timeout_seconds) * 1000,
                });
            }
            Action::MarkOr(b) => mark_rewrite(!b, *b, out),
            Action::MarkXor(b) => mark_rewrite(u32::MAX, *b, out),
            Action::Counter { packets, bytes } => out.push(Expr::Counter {
                packets: *packets,
                bytes: *bytes,
            }),
            Action::Log { group, prefix } => out.push(Expr::Log {
                group: *group,
                prefix: prefix.clone(),
            }),
            Action::Raw(exprs) => out.extend(exprs.iter().cloned()),
        }
    }
}

fn immediate(dreg: u32, data: Vec<u8>) -> Expr {
    Expr::Immediate { dreg, data }
}

/// `meta mark set (meta mark & mask) ^ xor`.
fn mark_rewrite(mask: u32, xor: u32, out: &mut Vec<Expr>) {
    out.push(Expr::meta(MetaKey::Mark));
    out.push(Expr::Bitwise {
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    });
    out.push(Expr::MetaSetMark);
}

fn keys_text(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(" . ")
}

fn addr_text(addr: Addr) -> &'static str {
    addr.key().name()
}

/// conntrack states by name, in nft's order.
fn state_names(b: u32) -> String {
    let names = [
        (ct_state::INVALID, "invalid"),
        (ct_state::ESTABLISHED, "established"),
        (ct_state::RELATED, "related"),
        (ct_state::NEW, "new"),
        (ct_state::UNTRACKED, "untracked"),
    ];
    let found: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| b & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    found.join(",")
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ne = |equal: &bool| if *equal { "" } else { "!= " };
        match self {
            Match::Ip { addr, net, equal } => {
                write!(f, "{} {}{}", addr_text(*addr), ne(equal), Datum::Net(*net))
            }
            Match::IpInSet { addr, set, equal } => {
                write!(f, "{} {}@{set}", addr_text(*addr), ne(equal))
            }
            Match::L4Proto(p) => write!(f, "meta l4proto {}", Datum::Proto(*p)),
            Match::Port {
                proto,
                dport,
                first,
                last,
            } => {
                let proto = proto
                    .map(|p| proto_name(p).map(str::to_string).unwrap_or(p.to_string()))
                    .unwrap_or_else(|| "th".into());
                let dir = if *dport { "dport" } else { "sport" };
                write!(f, "{proto} {dir} {}", Datum::Ports(*first, *last))
            }
            Match::FibLocal { daddr } => {
                let which = if *daddr { "daddr" } else { "saddr" };
                write!(f, "fib {which} type local")
            }
            Match::InSet { keys, set, equal } => {
                write!(f, "{} {}@{set}", keys_text(keys), ne(equal))
            }
            Match::CtState(b) => write!(f, "ct state {}", state_names(*b)),
            Match::CtStatus(b) if *b == CT_STATUS_DNAT => f.write_str("ct status dnat"),
            Match::CtStatus(b) => write!(f, "ct status & {b:#x} != 0"),
            Match::MarkClear(m) => write!(f, "meta mark & {m:#010x} == 0x00000000"),
            Match::NfProtoIpv4 => f.write_str("meta nfproto ipv4"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, Family::Ip)
    }
}

impl Action {
    /// As nft prints it in a table of `family` (an inet table's NAT names its family).
    fn write(&self, f: &mut dyn fmt::Write, family: Family) -> fmt::Result {
        match self {
            Action::Verdict(v) => write!(f, "{v}"),
            Action::Vmap { keys, map } => write!(f, "{} vmap @{map}", keys_text(keys)),
            Action::RandomVmap { chains } => {
                write!(f, "numgen random mod {} vmap {{ ", chains.len())?;
                for (i, c) in chains.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(f, "{sep}{i} : goto {c}")?;
                }
                f.write_str(" }")
            }
            Action::Masquerade { fully_random: true } => f.write_str("masquerade fully-random"),
            Action::Masquerade { .. } => f.write_str("masquerade"),
            Action::Dnat { ip, port } if family == Family::Inet => {
                write!(f, "dnat ip to {ip}:{port}")
            }
            Action::Dnat { ip, port } => write!(f, "dnat to {ip}:{port}"),
            Action::DnatRandomMap { count, offset, map } => {
                write!(f, "dnat ip to numgen random mod {count}")?;
                if *offset != 0 {
                    write!(f, " offset {offset}")?;
                }
                write!(f, " map @{map}")
            }
            Action::Redirect { port } => write!(f, "redirect to :{port}"),
            Action::Reject { tcp_reset: true } => f.write_str("reject with tcp reset"),
            // An inet table's default would be ICMPX; this is IPv4's.
            Action::Reject { .. } if family == Family::Inet => {
                f.write_str("reject with icmp port-unreachable")
            }
            Action::Reject { .. } => f.write_str("reject"),
            Action::UpdateSet {
                set,
                key,
                timeout_seconds,
            } => write!(
                f,
                "update @{set} {{ {} timeout {timeout_seconds}s }}",
                key.name()
            ),
            Action::MarkOr(b) => write!(f, "meta mark set meta mark | {b:#010x}"),
            Action::MarkXor(b) => write!(f, "meta mark set meta mark ^ {b:#010x}"),
            Action::Counter { packets, bytes } => {
                write!(f, "counter packets {packets} bytes {bytes}")
            }
            Action::Log { group, prefix } => {
                f.write_str("log ")?;
                if let Some(p) = prefix {
                    write!(f, "prefix \"{p}\" ")?;
                }
                write!(f, "group {group}")
            }
            Action::Raw(exprs) => {
                let parts: Vec<String> = exprs.iter().map(|e| format!("[ {e:?} ]")).collect();
                write!(f, "# not understood: {}", parts.join(" "))
            }
        }
    }
}

impl Rule {
    /// The rule as nft prints it in a table of `family`.
    pub fn text(&self, family: Family) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(ToString::to_string).collect();
        for a in &self.actions {
            let mut s = String::new();
            let _ = a.write(&mut s, family);
            parts.push(s);
        }
        let mut out = parts.join(" ");
        if let Some(c) = &self.comment {
            out.push_str(&format!(" comment \"{c}\""));
        }
        out
    }
}

/// As nft prints it in an `ip` table.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(Family::Ip))
    }
}
