//! The expressions of the rules `nftnl` writes, encoded as `nft` encodes them.

use std::net::Ipv4Addr;

use super::wire::*;

/// Registers as `nft` uses them here: the verdict register, the first 16-byte register,
/// and the second 32-bit slice of it (where a concatenation's second field lands).
const REG_VERDICT: u32 = 0;

const REG_1: u32 = 1;

const REG32_01: u32 = 9;

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

pub(super) fn encode_expr(e: &Expr) -> Vec<u8> {
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
}
