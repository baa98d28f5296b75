//! Expressions read back from the kernel: the inverse of [`super::expr`]'s encoding, so a
//! rule listed over netlink compares equal to the [`Expr`]s it was written with. What this
//! module does not model comes back as [`Expr::Other`], with its raw attributes.

use super::expr::{CmpOp, CtKey, Expr, MetaKey, PayloadBase, REG_1, REG_VERDICT, SetRef, Verdict};
use super::wire::*;

/// The expressions of a rule's `NFTA_RULE_EXPRESSIONS` list.
pub(super) fn expressions(list: &[u8]) -> Vec<Expr> {
    attrs(list)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .map(|(_, item)| {
            let name = text(item, NFTA_EXPR_NAME).unwrap_or_default();
            let data = attr(item, NFTA_EXPR_DATA).unwrap_or_default();
            decode(&name, data).unwrap_or_else(|| Expr::Other {
                name,
                data: data.to_vec(),
            })
        })
        .collect()
}

/// One expression from its name and data; `None` for what is not modelled.
fn decode(name: &str, d: &[u8]) -> Option<Expr> {
    let u = |k: u16| be_u32(d, k);
    Some(match name {
        "payload" if attr(d, 5).is_none() => Expr::Payload {
            base: match u(2)? {
                1 => PayloadBase::Network,
                2 => PayloadBase::Transport,
                _ => return None,
            },
            offset: u(3)?,
            len: u(4)?,
            dreg: u(1)?,
        },
        "meta" => match (u(1), u(3)) {
            (Some(dreg), None) => Expr::Meta {
                key: MetaKey::from_number(u(2)?)?,
                dreg,
            },
            (None, Some(REG_1)) if u(2)? == MetaKey::Mark as u32 => Expr::MetaSetMark,
            _ => return None,
        },
        "ct" if u(1) == Some(REG_1) && attr(d, 3).is_none() => Expr::Ct {
            key: match u(2)? {
                0 => CtKey::State,
                2 => CtKey::Status,
                _ => return None,
            },
        },
        "fib" if u(1) == Some(REG_1) && u(2) == Some(3) => Expr::FibAddrType {
            daddr: match u(3)? {
                2 => true,
                1 => false,
                _ => return None,
            },
        },
        "cmp" if u(1) == Some(REG_1) => Expr::Cmp {
            op: CmpOp::from_number(u(2)?)?,
            data: value(d, 3)?,
        },
        "bitwise"
            if u(1) == Some(REG_1)
                && u(2) == Some(REG_1)
                && attr(d, 6).is_none_or(|op| op == [0; 4]) =>
        {
            Expr::Bitwise {
                mask: value(d, 4)?,
                xor: value(d, 5)?,
            }
        }
        "numgen" if u(1) == Some(REG_1) && u(3) == Some(1) => Expr::NumgenRandom {
            modulus: u(2)?,
            offset: u(4).unwrap_or(0),
        },
        "lookup" if u(2) == Some(REG_1) => Expr::Lookup {
            // A set created in the same batch is named by its id there (a batch read back
            // by `simulate`); the kernel lists it by its name.
            set: match (text(d, 1)?, u(4)) {
                (name, Some(id)) if name.contains('%') => SetRef::Anonymous(id),
                (name, _) => SetRef::Named(name),
            },
            dreg: u(3),
            invert: u(5).is_some_and(|f| f & 1 != 0),
        },
        "dynset" if u(3) == Some(1) && u(4) == Some(REG_1) && attr(d, 5).is_none() => {
            Expr::DynsetUpdate {
                set: text(d, 1)?,
                timeout_ms: be_u64(d, 6).unwrap_or(0),
            }
        }
        "immediate" => immediate(d)?,
        // The kernel lists a single address and port with max = min.
        "nat"
            if u(1) == Some(1)
                && u(4).is_none_or(|m| Some(m) == u(3))
                && u(6).is_none_or(|m| Some(m) == u(5)) =>
        {
            Expr::Dnat {
                addr: u(3)?,
                port: u(5)?,
            }
        }
        "masq" if attr(d, 2).is_none() => Expr::Masquerade {
            fully_random: u(1).unwrap_or(0) & 0x10 != 0,
        },
        "reject" => Expr::Reject {
            tcp_reset: u(1)? == 1,
        },
        "redir" if u(2).is_none_or(|m| Some(m) == u(1)) => Expr::Redirect { port: u(1)? },
        "log" if attr(d, 3).is_none() && attr(d, 5).is_none() => Expr::Log {
            group: be_u16(d, 1)?,
            prefix: text(d, 2),
        },
        "counter" => Expr::Counter {
            bytes: be_u64(d, 1).unwrap_or(0),
            packets: be_u64(d, 2).unwrap_or(0),
        },
        _ => return None,
    })
}

/// `immediate`: a verdict (into the verdict register) or data into a register.
fn immediate(d: &[u8]) -> Option<Expr> {
    let dreg = be_u32(d, 1)?;
    let data = attr(d, 2)?;
    if dreg == REG_VERDICT {
        return Some(Expr::Verdict(verdict(attr(data, NFTA_DATA_VERDICT)?)?));
    }
    Some(Expr::Immediate {
        dreg,
        data: attr(data, NFTA_DATA_VALUE)?.to_vec(),
    })
}

/// A verdict from its `NFTA_DATA_VERDICT` nest.
pub(super) fn verdict(v: &[u8]) -> Option<Verdict> {
    let code = i32::from_be_bytes(attr(v, NFTA_VERDICT_CODE)?.try_into().ok()?);
    let chain = || text(v, NFTA_VERDICT_CHAIN);
    Some(match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        -3 => Verdict::Jump(chain()?),
        -4 => Verdict::Goto(chain()?),
        -5 => Verdict::Return,
        _ => return None,
    })
}

/// The payload of the first attribute `kind`.
pub(super) fn attr(body: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(body).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub(super) fn text(body: &[u8], kind: u16) -> Option<String> {
    let v = attr(body, kind)?;
    Some(String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned())
}

pub(super) fn be_u32(body: &[u8], kind: u16) -> Option<u32> {
    Some(u32::from_be_bytes(attr(body, kind)?.try_into().ok()?))
}

pub(super) fn be_u64(body: &[u8], kind: u16) -> Option<u64> {
    Some(u64::from_be_bytes(attr(body, kind)?.try_into().ok()?))
}

fn be_u16(body: &[u8], kind: u16) -> Option<u16> {
    Some(u16::from_be_bytes(attr(body, kind)?.try_into().ok()?))
}

/// The bytes of a nested `NFTA_DATA_VALUE` under `kind`.
pub(super) fn value(body: &[u8], kind: u16) -> Option<Vec<u8>> {
    attr(attr(body, kind)?, NFTA_DATA_VALUE).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::super::expr::{REG_2, REG32_01, put_expr};
    use super::*;

    /// Every modelled expression decodes to itself.
    #[test]
    fn what_is_written_reads_back_the_same() {
        let all = vec![
            Expr::payload(PayloadBase::Network, 12, 4),
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: REG32_01,
            },
            Expr::meta(MetaKey::L4Proto),
            Expr::Meta {
                key: MetaKey::NfProto,
                dreg: REG32_01,
            },
            Expr::MetaSetMark,
            Expr::Ct { key: CtKey::State },
            Expr::FibAddrType { daddr: true },
            Expr::Cmp {
                op: CmpOp::Gte,
                data: vec![0, 80],
            },
            Expr::Bitwise {
                mask: vec![0xff, 0xf0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::NumgenRandom {
                modulus: 3,
                offset: 2,
            },
            Expr::Lookup {
                set: SetRef::Named("s".into()),
                dreg: Some(REG_1),
                invert: false,
            },
            Expr::Lookup {
                set: SetRef::Named("s".into()),
                dreg: None,
                invert: true,
            },
            Expr::DynsetUpdate {
                set: "aff".into(),
                timeout_ms: 10_800_000,
            },
            Expr::Immediate {
                dreg: REG_2,
                data: vec![0x1f, 0x90],
            },
            Expr::Dnat { addr: 1, port: 9 },
            Expr::Masquerade { fully_random: true },
            Expr::Masquerade {
                fully_random: false,
            },
            Expr::Reject { tcp_reset: true },
            Expr::Reject { tcp_reset: false },
            Expr::Redirect { port: 1 },
            Expr::Log {
                group: 5,
                prefix: Some("ns/name".into()),
            },
            Expr::Counter {
                packets: 0,
                bytes: 0,
            },
            Expr::Verdict(Verdict::Jump("KUBE-PORTALS-HOST".into())),
            Expr::Verdict(Verdict::Drop),
        ];
        let mut list = Vec::new();
        for e in &all {
            put_expr(&mut list, e);
        }
        assert_eq!(expressions(&list), all);
    }

    #[test]
    fn unknown_expressions_come_back_raw_and_are_written_as_they_came() {
        let other = Expr::Other {
            name: "quota".into(),
            data: vec![8, 0, 1, 0, 0, 0, 0, 1],
        };
        let mut list = Vec::new();
        put_expr(&mut list, &other);
        assert_eq!(expressions(&list), vec![other]);
    }
}
