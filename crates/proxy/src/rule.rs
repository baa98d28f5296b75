//! Every rule shape the proxy installs, once: as nft writes it (its `Display`, for
//! `nft -f`) and as the kernel's expressions (`exprs`, for a netlink batch), so both ways
//! of writing a rule give the same ruleset (`tests/fastpath.rs` and `tests/fullsync.rs`
//! compare `nft list ruleset` after each).

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::nftnl::{
    CmpOp, CtKey, Expr, MetaKey, PayloadBase, REG_1, REG_2, REG_VERDICT, REG32_01, REG32_02,
    SetRef, Verdict,
};

use crate::model::{ENDPOINT_HAIRPIN, MARK_FOR_MASQUERADE, MASQUERADE_MARK, Protocol};

/// Offsets of the IPv4 source and destination addresses, and of a port in the transport
/// header (`th dport`).
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
const TH_DPORT: u32 = 2;

/// conntrack's `new` state and `dnat` status bits.
const CT_STATE_NEW: u32 = 0x8;
const CT_STATUS_DNAT: u32 = 0x20;

/// The kernel's address type of a local address (`RTN_LOCAL`).
const RTN_LOCAL: u32 = 2;

/// A service chain's first rule: traffic to the ClusterIP from outside the cluster is
/// marked for masquerade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeCheck {
    pub cluster_ip: Ipv4Addr,
    pub protocol: Protocol,
    pub port: u16,
    pub cluster_cidr: Ipv4Net,
}

/// The compact pick: a random number in `offset..offset + count`, looked up in the port's
/// endpoint map, is the endpoint to DNAT to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedPick {
    pub protocol: Protocol,
    pub count: usize,
    pub offset: usize,
    pub map: String,
}

/// Where NodePorts answer: every local address but loopback, or the listed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodePortAddresses {
    AllLocal,
    /// The addresses in the `nodeport-ips` set.
    Listed,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    MasqueradeCheck(MasqueradeCheck),
    Pick(MappedPick),
    /// `ip saddr <net> <verdict>` (the address alone for a /32).
    FromNet {
        net: Ipv4Net,
        verdict: Verdict,
    },
    /// `fib saddr type local <verdict>`: from the node itself.
    FromLocal(Verdict),
    /// A verdict alone.
    Always(Verdict),
    /// `ip saddr @<set> goto <chain>`: a client seen recently goes back to its endpoint.
    AffinityHit {
        set: String,
        chain: String,
    },
    /// `numgen random mod N vmap { 0 : goto <chain>, … }`.
    RandomVmap {
        chains: Vec<String>,
    },
    /// `update @<set> { ip saddr timeout <s>s }`: the client remembered.
    AffinityUpdate {
        set: String,
        timeout_seconds: u32,
    },
    /// `meta l4proto <p> dnat to <ip>:<port>`.
    Dnat {
        protocol: Protocol,
        ip: Ipv4Addr,
        port: u16,
    },
    /// `ct state new <verdict>`.
    NewConnection(Verdict),
    /// A connection DNATed to an endpoint that is its own client is masqueraded.
    HairpinMasquerade,
    /// `ip daddr @<set> reject comment "…"`.
    RejectToSet {
        set: &'static str,
        comment: &'static str,
    },
    /// `ip daddr <net> reject comment "…"`.
    RejectToNet {
        net: Ipv4Net,
        comment: &'static str,
    },
    /// `ip daddr . meta l4proto . th dport vmap @<map>`.
    DispatchServices {
        map: &'static str,
    },
    /// `<node address match> meta l4proto . th dport vmap @<map>`.
    DispatchNodePorts {
        map: &'static str,
        addresses: NodePortAddresses,
    },
    /// `meta mark & <mark> == 0 return`.
    ReturnUnlessMarked,
    /// `meta mark set meta mark xor <mark>`: the mark cleared (it is known to be set).
    ClearMark,
    /// `meta mark set meta mark or <mark>`.
    SetMark,
    /// `masquerade fully-random`.
    Masquerade,
    /// `meta l4proto tcp reject with tcp reset comment "…"`.
    RejectTcpWithReset {
        comment: &'static str,
    },
    /// `reject comment "…"` (ICMP port unreachable).
    Reject {
        comment: &'static str,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::MasqueradeCheck(m) => write!(
                f,
                "ip daddr {} {} dport {} ip saddr != {} jump {MARK_FOR_MASQUERADE}",
                m.cluster_ip,
                m.protocol.nft(),
                m.port,
                m.cluster_cidr
            ),
            Rule::Pick(p) => {
                write!(
                    f,
                    "meta l4proto {} dnat to numgen random mod {}",
                    p.protocol.nft(),
                    p.count
                )?;
                if p.offset != 0 {
                    write!(f, " offset {}", p.offset)?;
                }
                write!(f, " map @{}", p.map)
            }
            Rule::FromNet { net, verdict } if net.prefix_len() == 32 => {
                write!(f, "ip saddr {} {verdict}", net.addr())
            }
            Rule::FromNet { net, verdict } => write!(f, "ip saddr {net} {verdict}"),
            Rule::FromLocal(v) => write!(f, "fib saddr type local {v}"),
            Rule::Always(v) => write!(f, "{v}"),
            Rule::AffinityHit { set, chain } => write!(f, "ip saddr @{set} goto {chain}"),
            Rule::RandomVmap { chains } => {
                write!(f, "numgen random mod {} vmap {{ ", chains.len())?;
                for (i, c) in chains.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{i} : goto {c}")?;
                }
                f.write_str(" }")
            }
            Rule::AffinityUpdate {
                set,
                timeout_seconds,
            } => write!(f, "update @{set} {{ ip saddr timeout {timeout_seconds}s }}"),
            Rule::Dnat { protocol, ip, port } => {
                write!(f, "meta l4proto {} dnat to {ip}:{port}", protocol.nft())
            }
            Rule::NewConnection(v) => write!(f, "ct state new {v}"),
            Rule::HairpinMasquerade => write!(
                f,
                "ct status dnat ip saddr . ip daddr @{ENDPOINT_HAIRPIN} masquerade fully-random"
            ),
            Rule::RejectToSet { set, comment } => {
                write!(f, "ip daddr @{set} reject comment \"{comment}\"")
            }
            Rule::RejectToNet { net, comment } => {
                write!(f, "ip daddr {net} reject comment \"{comment}\"")
            }
            Rule::DispatchServices { map } => {
                write!(f, "ip daddr . meta l4proto . th dport vmap @{map}")
            }
            Rule::DispatchNodePorts { map, addresses } => {
                match addresses {
                    NodePortAddresses::AllLocal => {
                        f.write_str("fib daddr type local ip daddr != 127.0.0.0/8")?
                    }
                    NodePortAddresses::Listed => f.write_str("ip daddr @nodeport-ips")?,
                }
                write!(f, " meta l4proto . th dport vmap @{map}")
            }
            Rule::ReturnUnlessMarked => {
                write!(f, "meta mark & {MASQUERADE_MARK:#x} == 0 return")
            }
            Rule::ClearMark => write!(f, "meta mark set meta mark xor {MASQUERADE_MARK:#x}"),
            Rule::SetMark => write!(f, "meta mark set meta mark or {MASQUERADE_MARK:#x}"),
            Rule::Masquerade => f.write_str("masquerade fully-random"),
            Rule::RejectTcpWithReset { comment } => write!(
                f,
                "meta l4proto tcp reject with tcp reset comment \"{comment}\""
            ),
            Rule::Reject { comment } => write!(f, "reject comment \"{comment}\""),
        }
    }
}

impl Rule {
    /// The rule's comment, if it has one.
    pub fn comment(&self) -> Option<&'static str> {
        match self {
            Rule::RejectToSet { comment, .. }
            | Rule::RejectToNet { comment, .. }
            | Rule::RejectTcpWithReset { comment }
            | Rule::Reject { comment } => Some(comment),
            _ => None,
        }
    }

    /// The kernel's expressions for the rule, as nft 1.0.6 encodes them. `RandomVmap`
    /// needs its anonymous map created first: `anonymous_map` is its id in the batch.
    pub fn exprs(&self, anonymous_map: Option<u32>) -> Vec<Expr> {
        match self {
            Rule::MasqueradeCheck(m) => masquerade_check(m),
            Rule::Pick(p) => pick(p),
            Rule::FromNet { net, verdict } => {
                let mut e = Expr::ip_prefix(IP_SADDR, net.network(), net.prefix_len(), true);
                e.push(Expr::Verdict(verdict.clone()));
                e
            }
            Rule::FromLocal(v) => {
                vec![
                    Expr::FibAddrType { daddr: false },
                    cmp_u32(true, RTN_LOCAL),
                    Expr::Verdict(v.clone()),
                ]
            }
            Rule::Always(v) => vec![Expr::Verdict(v.clone())],
            Rule::AffinityHit { set, chain } => vec![
                Expr::payload(PayloadBase::Network, IP_SADDR, 4),
                lookup(set, None),
                Expr::Verdict(Verdict::Goto(chain.clone())),
            ],
            Rule::RandomVmap { chains } => vec![
                Expr::NumgenRandom {
                    modulus: chains.len() as u32,
                    offset: 0,
                },
                Expr::Lookup {
                    set: SetRef::Anonymous(anonymous_map.unwrap_or_default()),
                    dreg: Some(REG_VERDICT),
                    invert: false,
                },
            ],
            Rule::AffinityUpdate {
                set,
                timeout_seconds,
            } => vec![
                Expr::payload(PayloadBase::Network, IP_SADDR, 4),
                Expr::DynsetUpdate {
                    set: set.clone(),
                    timeout_ms: u64::from(*timeout_seconds) * 1000,
                },
            ],
            Rule::Dnat { protocol, ip, port } => {
                let mut e = l4proto(*protocol);
                e.push(Expr::Immediate {
                    dreg: REG_1,
                    data: ip.octets().to_vec(),
                });
                e.push(Expr::Immediate {
                    dreg: REG_2,
                    data: port.to_be_bytes().to_vec(),
                });
                e.push(Expr::Dnat {
                    addr: REG_1,
                    port: REG_2,
                });
                e
            }
            Rule::NewConnection(v) => {
                let mut e = ct_bit(CtKey::State, CT_STATE_NEW);
                e.push(Expr::Verdict(v.clone()));
                e
            }
            Rule::HairpinMasquerade => {
                let mut e = ct_bit(CtKey::Status, CT_STATUS_DNAT);
                e.push(Expr::payload(PayloadBase::Network, IP_SADDR, 4));
                e.push(Expr::Payload {
                    base: PayloadBase::Network,
                    offset: IP_DADDR,
                    len: 4,
                    dreg: REG32_01,
                });
                e.push(lookup(ENDPOINT_HAIRPIN, None));
                e.push(Expr::Masquerade { fully_random: true });
                e
            }
            Rule::RejectToSet { set, .. } => vec![
                Expr::payload(PayloadBase::Network, IP_DADDR, 4),
                lookup(set, None),
                Expr::Reject { tcp_reset: false },
            ],
            Rule::RejectToNet { net, .. } => {
                let mut e = Expr::ip_prefix(IP_DADDR, net.network(), net.prefix_len(), true);
                e.push(Expr::Reject { tcp_reset: false });
                e
            }
            Rule::DispatchServices { map } => vec![
                Expr::payload(PayloadBase::Network, IP_DADDR, 4),
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: REG32_01,
                },
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: TH_DPORT,
                    len: 2,
                    dreg: REG32_02,
                },
                lookup(map, Some(REG_VERDICT)),
            ],
            Rule::DispatchNodePorts { map, addresses } => {
                let mut e = node_addresses(*addresses);
                e.push(Expr::meta(MetaKey::L4Proto));
                e.push(Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: TH_DPORT,
                    len: 2,
                    dreg: REG32_01,
                });
                e.push(lookup(map, Some(REG_VERDICT)));
                e
            }
            Rule::ReturnUnlessMarked => vec![
                Expr::meta(MetaKey::Mark),
                Expr::Bitwise {
                    mask: MASQUERADE_MARK.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                cmp_u32(true, 0),
                Expr::Verdict(Verdict::Return),
            ],
            Rule::ClearMark => mark_rewrite(u32::MAX, MASQUERADE_MARK),
            Rule::SetMark => mark_rewrite(!MASQUERADE_MARK, MASQUERADE_MARK),
            Rule::Masquerade => vec![Expr::Masquerade { fully_random: true }],
            Rule::RejectTcpWithReset { .. } => {
                let mut e = l4proto(Protocol::Tcp);
                e.push(Expr::Reject { tcp_reset: true });
                e
            }
            Rule::Reject { .. } => vec![Expr::Reject { tcp_reset: false }],
        }
    }
}

/// `ip daddr C <proto> dport P ip saddr != <cluster CIDR> jump mark-for-masquerade`.
fn masquerade_check(m: &MasqueradeCheck) -> Vec<Expr> {
    let mut e = vec![
        Expr::payload(PayloadBase::Network, IP_DADDR, 4),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: m.cluster_ip.octets().to_vec(),
        },
    ];
    e.extend(l4proto(m.protocol));
    e.push(Expr::payload(PayloadBase::Transport, TH_DPORT, 2));
    e.push(Expr::Cmp {
        op: CmpOp::Eq,
        data: m.port.to_be_bytes().to_vec(),
    });
    e.extend(Expr::ip_prefix(
        IP_SADDR,
        m.cluster_cidr.network(),
        m.cluster_cidr.prefix_len(),
        false,
    ));
    e.push(Expr::Verdict(Verdict::Jump(
        MARK_FOR_MASQUERADE.to_string(),
    )));
    e
}

/// `meta l4proto <proto> dnat to numgen random mod N [offset O] map @<map>`.
fn pick(p: &MappedPick) -> Vec<Expr> {
    let mut e = l4proto(p.protocol);
    e.push(Expr::NumgenRandom {
        modulus: p.count as u32,
        offset: p.offset as u32,
    });
    e.push(lookup(&p.map, Some(REG_1)));
    e.push(Expr::Dnat {
        addr: REG_1,
        port: REG32_01,
    });
    e
}

fn l4proto(protocol: Protocol) -> Vec<Expr> {
    vec![
        Expr::meta(MetaKey::L4Proto),
        Expr::Cmp {
            op: CmpOp::Eq,
            data: vec![protocol.number()],
        },
    ]
}

fn lookup(set: &str, dreg: Option<u32>) -> Expr {
    Expr::Lookup {
        set: SetRef::Named(set.to_string()),
        dreg,
        invert: false,
    }
}

/// A 32-bit register compared with a number in host byte order (marks, address types).
fn cmp_u32(equal: bool, value: u32) -> Expr {
    Expr::Cmp {
        op: CmpOp::of(equal),
        data: value.to_ne_bytes().to_vec(),
    }
}

/// `ct state|status <bit>`: the bit is set.
fn ct_bit(key: CtKey, bit: u32) -> Vec<Expr> {
    vec![
        Expr::Ct { key },
        Expr::Bitwise {
            mask: bit.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp_u32(false, 0),
    ]
}

/// `meta mark set (meta mark & mask) ^ xor`.
fn mark_rewrite(mask: u32, xor: u32) -> Vec<Expr> {
    vec![
        Expr::meta(MetaKey::Mark),
        Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: xor.to_ne_bytes().to_vec(),
        },
        Expr::MetaSetMark,
    ]
}

fn node_addresses(addresses: NodePortAddresses) -> Vec<Expr> {
    match addresses {
        NodePortAddresses::AllLocal => vec![
            Expr::FibAddrType { daddr: true },
            cmp_u32(true, RTN_LOCAL),
            Expr::payload(PayloadBase::Network, IP_DADDR, 1),
            Expr::Cmp {
                op: CmpOp::Neq,
                data: vec![127],
            },
        ],
        NodePortAddresses::Listed => vec![
            Expr::payload(PayloadBase::Network, IP_DADDR, 4),
            lookup("nodeport-ips", None),
        ],
    }
}
