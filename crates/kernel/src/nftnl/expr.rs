//! The expressions of the rules `nftnl` writes, encoded as `nft` encodes them.

use std::net::Ipv4Addr;

use super::wire::*;

/// Registers as `nft` uses them: the verdict register, the two 16-byte registers, and the
/// 32-bit slices a concatenation's later fields land in.
pub const REG_VERDICT: u32 = 0;
pub const REG_1: u32 = 1;
pub const REG_2: u32 = 2;
pub const REG32_01: u32 = 9;
pub const REG32_02: u32 = 10;

/// Where a payload load starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

/// A verdict: where a rule sends the packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Drop,
    Accept,
    Return,
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
            Verdict::Return => -5,
        }
    }
}

/// As nft writes it: `drop`, `jump <chain>`, ….
impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Drop => f.write_str("drop"),
            Verdict::Accept => f.write_str("accept"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// A packet or connection property `meta` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    Mark = 3,
    IifName = 6,
    OifName = 7,
    NfTrace = 12,
    NfProto = 15,
    L4Proto = 16,
}

impl MetaKey {
    pub(super) fn from_number(n: u32) -> Option<MetaKey> {
        Some(match n {
            3 => MetaKey::Mark,
            6 => MetaKey::IifName,
            7 => MetaKey::OifName,
            12 => MetaKey::NfTrace,
            15 => MetaKey::NfProto,
            16 => MetaKey::L4Proto,
            _ => return None,
        })
    }
}

/// A conntrack property `ct` loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    State = 0,
    Status = 2,
}

/// How `cmp` compares a register with its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
    Lt = 2,
    Lte = 3,
    Gt = 4,
    Gte = 5,
}

impl CmpOp {
    /// `==` when `equal`, else `!=`.
    pub fn of(equal: bool) -> CmpOp {
        if equal { CmpOp::Eq } else { CmpOp::Neq }
    }

    pub(super) fn from_number(n: u32) -> Option<CmpOp> {
        Some(match n {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

/// The set a lookup reads: a named one, or an anonymous one created in the same batch
/// (by the id [`super::Batch::add_anonymous_vmap`] returned).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetRef {
    Named(String),
    Anonymous(u32),
}

/// The expressions of the rules this module writes. Loads go to register 1 unless a
/// `dreg` says otherwise (the later fields of a concatenation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// `len` bytes of the packet at `base` + `offset`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    /// The packet mark set from register 1.
    MetaSetMark,
    Ct {
        key: CtKey,
    },
    /// The address type (`fib daddr|saddr type`) into register 1.
    FibAddrType {
        daddr: bool,
    },
    /// Register 1 compared with `data`.
    Cmp {
        op: CmpOp,
        data: Vec<u8>,
    },
    /// Register 1 rewritten as `(reg & mask) ^ xor`.
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// A random number in `offset..offset + modulus` (host byte order).
    NumgenRandom {
        modulus: u32,
        offset: u32,
    },
    /// Register 1 (and what follows, for a concatenation) looked up in a set: a match
    /// test, or (`dreg`) the map's value loaded into `dreg` (`REG_VERDICT`: a verdict map).
    Lookup {
        set: SetRef,
        dreg: Option<u32>,
        /// The match inverted (`!= @set`).
        invert: bool,
    },
    /// Register 1 added to the set, or its timeout refreshed (`update @set { ip saddr
    /// timeout … }`).
    DynsetUpdate {
        set: String,
        timeout_ms: u64,
    },
    /// Data into a register.
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// DNAT to the address in `addr` and the port in `port`.
    Dnat {
        addr: u32,
        port: u32,
    },
    Masquerade {
        fully_random: bool,
    },
    /// `reject with tcp reset` (`tcp_reset`) or an ICMP port unreachable.
    Reject {
        tcp_reset: bool,
    },
    /// `redirect to :<port>`, the port in `port`.
    Redirect {
        port: u32,
    },
    /// `log [prefix "…"] group N`: the packet to an NFLOG group.
    Log {
        group: u16,
        prefix: Option<String>,
    },
    /// `counter`: what it has counted (zero when written).
    Counter {
        packets: u64,
        bytes: u64,
    },
    Verdict(Verdict),
    /// An expression this module does not model, as the kernel listed it (its name and
    /// the raw attributes of its data); written back as it came.
    Other {
        name: String,
        data: Vec<u8>,
    },
}

impl Expr {
    /// A payload load into register 1.
    pub fn payload(base: PayloadBase, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg: REG_1,
        }
    }

    /// A `meta` load into register 1.
    pub fn meta(key: MetaKey) -> Expr {
        Expr::Meta { key, dreg: REG_1 }
    }

    /// The expressions `nft` emits for `ip saddr|daddr <net>` (`!=` when not `equal`): a
    /// load of the prefix's bytes and a compare when the prefix ends on a byte, else a
    /// load of the whole address, a mask and a compare.
    pub fn ip_prefix(offset: u32, net: Ipv4Addr, prefix: u8, equal: bool) -> Vec<Expr> {
        let octets = net.octets();
        let payload = |len: u32| Expr::payload(PayloadBase::Network, offset, len);
        if prefix.is_multiple_of(8) && prefix > 0 {
            let bytes = usize::from(prefix / 8);
            return vec![
                payload(bytes as u32),
                Expr::Cmp {
                    op: CmpOp::of(equal),
                    data: octets[..bytes].to_vec(),
                },
            ];
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        vec![
            payload(4),
            Expr::Bitwise {
                mask: mask.to_be_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                op: CmpOp::of(equal),
                data: (u32::from(net) & mask).to_be_bytes().to_vec(),
            },
        ]
    }
}

/// A verdict as `nft_data` under `kind`: `NFTA_DATA_VERDICT` { code, chain }.
pub(super) fn put_verdict(out: &mut Vec<u8>, kind: u16, v: &Verdict) {
    nest(out, kind, |data| {
        nest(data, NFTA_DATA_VERDICT, |verdict| {
            put_attr(verdict, NFTA_VERDICT_CODE, &v.code().to_be_bytes());
            if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                put_str(verdict, NFTA_VERDICT_CHAIN, c);
            }
        })
    });
}

/// The name an anonymous set is created under; the kernel picks the number.
pub(super) const ANONYMOUS_MAP_NAME: &str = "__map%d";

/// One `NFTA_LIST_ELEM` of a rule's expressions.
pub(super) fn put_expr(out: &mut Vec<u8>, e: &Expr) {
    nest(out, NFTA_LIST_ELEM, |item| {
        put_str(item, NFTA_EXPR_NAME, expr_name(e));
        nest(item, NFTA_EXPR_DATA, |d| put_expr_data(d, e));
    });
}

fn expr_name(e: &Expr) -> &str {
    match e {
        Expr::Payload { .. } => "payload",
        Expr::Meta { .. } | Expr::MetaSetMark => "meta",
        Expr::Ct { .. } => "ct",
        Expr::FibAddrType { .. } => "fib",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::NumgenRandom { .. } => "numgen",
        Expr::Lookup { .. } => "lookup",
        Expr::DynsetUpdate { .. } => "dynset",
        Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
        Expr::Dnat { .. } => "nat",
        Expr::Masquerade { .. } => "masq",
        Expr::Reject { .. } => "reject",
        Expr::Redirect { .. } => "redir",
        Expr::Log { .. } => "log",
        Expr::Counter { .. } => "counter",
        Expr::Other { name, .. } => name,
    }
}

fn put_expr_data(d: &mut Vec<u8>, e: &Expr) {
    match e {
        Expr::Payload {
            base,
            offset,
            len,
            dreg,
        } => put_u32s(d, &[(1, *dreg), (2, *base as u32), (3, *offset), (4, *len)]),
        Expr::Meta { key, dreg } => put_u32s(d, &[(2, *key as u32), (1, *dreg)]),
        Expr::MetaSetMark => put_u32s(d, &[(2, MetaKey::Mark as u32), (3, REG_1)]),
        Expr::Ct { key } => put_u32s(d, &[(2, *key as u32), (1, REG_1)]),
        // NFT_FIB_RESULT_ADDRTYPE; NFTA_FIB_F_SADDR 1, NFTA_FIB_F_DADDR 2.
        Expr::FibAddrType { daddr } => {
            put_u32s(d, &[(1, REG_1), (2, 3), (3, if *daddr { 2 } else { 1 })])
        }
        Expr::Cmp { op, data } => {
            put_u32s(d, &[(1, REG_1), (2, *op as u32)]);
            put_data_value(d, 3, data);
        }
        Expr::Bitwise { mask, xor } => {
            put_u32s(d, &[(1, REG_1), (2, REG_1), (3, mask.len() as u32)]);
            put_data_value(d, 4, mask);
            put_data_value(d, 5, xor);
        }
        // NFT_NG_RANDOM
        Expr::NumgenRandom { modulus, offset } => {
            put_u32s(d, &[(1, REG_1), (2, *modulus), (3, 1), (4, *offset)])
        }
        Expr::Lookup { set, dreg, invert } => put_lookup(d, set, *dreg, *invert),
        // NFT_DYNSET_OP_UPDATE
        Expr::DynsetUpdate { set, timeout_ms } => {
            put_str(d, 1, set);
            put_u32s(d, &[(3, 1), (4, REG_1)]);
            put_attr(d, 6, &timeout_ms.to_be_bytes());
        }
        Expr::Immediate { dreg, data } => {
            put_u32s(d, &[(1, *dreg)]);
            put_data_value(d, 2, data);
        }
        // NFT_NAT_DNAT, NFPROTO_IPV4; NF_NAT_RANGE_PROTO_SPECIFIED.
        Expr::Dnat { addr, port } => put_u32s(
            d,
            &[
                (1, 1),
                (2, u32::from(NFPROTO_IPV4)),
                (3, *addr),
                (5, *port),
                (7, 2),
            ],
        ),
        // NF_NAT_RANGE_PROTO_RANDOM_FULLY
        Expr::Masquerade { fully_random } => {
            put_u32s(d, &[(1, if *fully_random { 0x10 } else { 0 })])
        }
        // NFT_REJECT_TCP_RST, or NFT_REJECT_ICMP_UNREACH with port unreachable (3); the
        // code is one byte.
        Expr::Reject { tcp_reset } => {
            put_u32s(d, &[(1, if *tcp_reset { 1 } else { 0 })]);
            put_attr(d, 2, &[if *tcp_reset { 0 } else { 3 }]);
        }
        // NF_NAT_RANGE_PROTO_SPECIFIED, as nft sets it with a port.
        Expr::Redirect { port } => put_u32s(d, &[(1, *port), (3, 2)]),
        Expr::Log { group, prefix } => {
            put_attr(d, 1, &group.to_be_bytes());
            if let Some(p) = prefix {
                put_str(d, 2, p);
            }
        }
        // nft writes a new counter without values; the kernel starts it at zero.
        Expr::Counter { .. } => {}
        Expr::Verdict(v) => {
            put_u32s(d, &[(1, REG_VERDICT)]);
            put_verdict(d, 2, v);
        }
        Expr::Other { data, .. } => d.extend_from_slice(data),
    }
}

fn put_lookup(d: &mut Vec<u8>, set: &SetRef, dreg: Option<u32>, invert: bool) {
    match set {
        SetRef::Named(name) => put_str(d, 1, name),
        SetRef::Anonymous(_) => put_str(d, 1, ANONYMOUS_MAP_NAME),
    }
    put_u32s(d, &[(2, REG_1)]);
    if let Some(dreg) = dreg {
        put_u32s(d, &[(3, dreg)]);
    }
    if let SetRef::Anonymous(id) = set {
        put_u32s(d, &[(4, *id)]);
    }
    // NFT_LOOKUP_F_INV
    if invert {
        put_u32s(d, &[(5, 1)]);
    }
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
                Expr::payload(PayloadBase::Network, 12, 2),
                Expr::Cmp {
                    op: CmpOp::Neq,
                    data: vec![10, 244]
                }
            ]
        );
        let e = Expr::ip_prefix(12, Ipv4Addr::new(10, 96, 0, 0), 12, false);
        assert_eq!(
            e[1],
            Expr::Bitwise {
                mask: vec![0xff, 0xf0, 0, 0],
                xor: vec![0; 4]
            }
        );
    }
}
