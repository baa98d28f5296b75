//! A listed rule's expressions read back as matches and actions, the inverse of
//! [`super::rule`]'s encoding (what nft does when it lists a rule). A run of expressions
//! that no match or action explains is kept as [`Action::Raw`], so nothing is hidden.

use ipnet::Ipv4Net;

use super::rule::{
    Action, Addr, IP_DADDR, IP_SADDR, Key, Match, NFPROTO_IPV4, RTN_LOCAL, Rule, TH_DPORT, TH_SPORT,
};
use crate::nftnl::{
    CmpOp, CtKey, Expr, MetaKey, PayloadBase, REG_1, REG_2, REG_VERDICT, REG32_01, SetRef,
};

/// The chains an anonymous verdict map of the table sends to, by the map's name.
pub type AnonymousMaps<'a> = &'a dyn Fn(&str) -> Option<Vec<String>>;

/// The rule that `exprs` encode.
pub fn rule(exprs: &[Expr], comment: Option<String>, anonymous: AnonymousMaps<'_>) -> Rule {
    let mut rule = Rule {
        comment,
        ..Rule::default()
    };
    let mut rest = exprs;
    let mut raw = Vec::new();
    while !rest.is_empty() {
        if let Some((m, used)) = one_match(rest) {
            flush_raw(&mut raw, &mut rule);
            rule.matches.push(m);
            rest = &rest[used..];
        } else if let Some((a, used)) = one_action(rest, anonymous) {
            flush_raw(&mut raw, &mut rule);
            rule.actions.push(a);
            rest = &rest[used..];
        } else {
            raw.push(rest[0].clone());
            rest = &rest[1..];
        }
    }
    flush_raw(&mut raw, &mut rule);
    // The dependency test nft adds before the first IPv4 field of an inet rule is not
    // shown (nor kept: writing the rule adds it again).
    drop_ipv4_dependency(&mut rule);
    rule
}

fn flush_raw(raw: &mut Vec<Expr>, rule: &mut Rule) {
    if !raw.is_empty() {
        rule.actions.push(Action::Raw(std::mem::take(raw)));
    }
}

/// Drops a `meta nfproto ipv4` that only guards the IPv4 fields after it.
fn drop_ipv4_dependency(rule: &mut Rule) {
    let Some(i) = rule.matches.iter().position(|m| *m == Match::NfProtoIpv4) else {
        return;
    };
    let next_is_ip = match rule.matches.get(i + 1) {
        Some(Match::Ip { .. } | Match::IpInSet { .. }) => true,
        Some(Match::InSet { keys, .. }) => keys
            .iter()
            .any(|k| matches!(k, Key::IpSaddr | Key::IpDaddr)),
        Some(_) => false,
        None => rule.actions.first().is_some_and(|a| match a {
            Action::Vmap { keys, .. } => keys
                .iter()
                .any(|k| matches!(k, Key::IpSaddr | Key::IpDaddr)),
            Action::UpdateSet { key, .. } => matches!(key, Key::IpSaddr | Key::IpDaddr),
            _ => false,
        }),
    };
    if next_is_ip {
        rule.matches.remove(i);
    }
}

fn cmp(e: Option<&Expr>) -> Option<(CmpOp, &[u8])> {
    match e? {
        Expr::Cmp { op, data } => Some((*op, data.as_slice())),
        _ => None,
    }
}

fn ne_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.try_into().ok()?))
}

fn be_u16(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(data.try_into().ok()?))
}

/// The match at the start of `e`, and how many expressions it took.
fn one_match(e: &[Expr]) -> Option<(Match, usize)> {
    match e.first()? {
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len,
            dreg: REG_1,
        } => ip_match(*offset, *len, &e[1..]),
        Expr::Payload {
            base: PayloadBase::Transport,
            offset,
            len: 2,
            dreg: REG_1,
        } => port_match(None, *offset, &e[1..]).map(|(m, n)| (m, n + 1)),
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: REG_1,
        } => l4proto_match(e),
        Expr::Meta {
            key: MetaKey::NfProto,
            dreg: REG_1,
        } => match cmp(e.get(1))? {
            (CmpOp::Eq, [NFPROTO_IPV4]) => Some((Match::NfProtoIpv4, 2)),
            _ => None,
        },
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        } => mark_clear(e),
        Expr::FibAddrType { daddr } => match cmp(e.get(1))? {
            (CmpOp::Eq, data) if ne_u32(data) == Some(RTN_LOCAL) => {
                Some((Match::FibLocal { daddr: *daddr }, 2))
            }
            _ => None,
        },
        Expr::Ct { key } => ct_match(*key, e),
        _ => None,
    }
    .or_else(|| set_match(e))
}

fn addr_at(offset: u32) -> Option<Addr> {
    match offset {
        IP_SADDR => Some(Addr::Saddr),
        IP_DADDR => Some(Addr::Daddr),
        _ => None,
    }
}

/// `ip saddr|daddr [!=] <net>`, `… @set`: the expressions after the payload load.
fn ip_match(offset: u32, len: u32, after: &[Expr]) -> Option<(Match, usize)> {
    let addr = addr_at(offset)?;
    let net = |bytes: &[u8], prefix: u8| -> Option<Ipv4Net> {
        let mut octets = [0u8; 4];
        octets.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Ipv4Net::new(octets.into(), prefix).ok()
    };
    match after.first()? {
        Expr::Cmp { op, data } if len < 4 || data.len() == 4 => {
            let equal = op_equal(*op)?;
            let prefix = u8::try_from(len * 8).ok()?;
            let net = net(data, prefix)?;
            Some((Match::Ip { addr, net, equal }, 2))
        }
        Expr::Bitwise { mask, xor } if len == 4 && xor.iter().all(|b| *b == 0) => {
            let (op, data) = cmp(after.get(1))?;
            let mask = u32::from_be_bytes(mask.as_slice().try_into().ok()?);
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return None;
            }
            let prefix = u8::try_from(mask.leading_ones()).ok()?;
            let net = net(data, prefix)?;
            let equal = op_equal(op)?;
            Some((Match::Ip { addr, net, equal }, 3))
        }
        Expr::Lookup {
            set: SetRef::Named(set),
            dreg: None,
            invert,
        } if len == 4 => Some((
            Match::IpInSet {
                addr,
                set: set.clone(),
                equal: !invert,
            },
            2,
        )),
        _ => None,
    }
}

fn op_equal(op: CmpOp) -> Option<bool> {
    match op {
        CmpOp::Eq => Some(true),
        CmpOp::Neq => Some(false),
        _ => None,
    }
}

/// `tcp dport 80`, `th dport 80-90`: the compares after a transport payload load.
fn port_match(proto: Option<u8>, offset: u32, after: &[Expr]) -> Option<(Match, usize)> {
    let dport = match offset {
        TH_DPORT => true,
        TH_SPORT => false,
        _ => return None,
    };
    let (first, last, used) = match (cmp(after.first())?, cmp(after.get(1))) {
        ((CmpOp::Gte, lo), Some((CmpOp::Lte, hi))) => (be_u16(lo)?, be_u16(hi)?, 2),
        ((CmpOp::Eq, p), _) => (be_u16(p)?, be_u16(p)?, 1),
        _ => return None,
    };
    Some((
        Match::Port {
            proto,
            dport,
            first,
            last,
        },
        used,
    ))
}

/// `meta l4proto tcp`, and `tcp dport …` when a port test follows it.
fn l4proto_match(e: &[Expr]) -> Option<(Match, usize)> {
    let (CmpOp::Eq, [p]) = cmp(e.get(1))? else {
        return None;
    };
    if let Some(Expr::Payload {
        base: PayloadBase::Transport,
        offset,
        len: 2,
        dreg: REG_1,
    }) = e.get(2)
        && let Some((m, used)) = port_match(Some(*p), *offset, &e[3..])
    {
        return Some((m, 3 + used));
    }
    Some((Match::L4Proto(*p), 2))
}

fn mark_clear(e: &[Expr]) -> Option<(Match, usize)> {
    let Some(Expr::Bitwise { mask, xor }) = e.get(1) else {
        return None;
    };
    let (CmpOp::Eq, zero) = cmp(e.get(2))? else {
        return None;
    };
    if ne_u32(zero)? != 0 || xor.iter().any(|b| *b != 0) {
        return None;
    }
    Some((Match::MarkClear(ne_u32(mask)?), 3))
}

fn ct_match(key: CtKey, e: &[Expr]) -> Option<(Match, usize)> {
    let Some(Expr::Bitwise { mask, xor }) = e.get(1) else {
        return None;
    };
    let (CmpOp::Neq, zero) = cmp(e.get(2))? else {
        return None;
    };
    if ne_u32(zero)? != 0 || xor.iter().any(|b| *b != 0) {
        return None;
    }
    let b = ne_u32(mask)?;
    Some((
        match key {
            CtKey::State => Match::CtState(b),
            CtKey::Status => Match::CtStatus(b),
        },
        3,
    ))
}

/// The key a load into `dreg` reads, if it is one of the modelled ones.
fn key_of(e: &Expr) -> Option<(Key, u32)> {
    match e {
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg,
        } => Some((
            match addr_at(*offset)? {
                Addr::Saddr => Key::IpSaddr,
                Addr::Daddr => Key::IpDaddr,
            },
            *dreg,
        )),
        Expr::Payload {
            base: PayloadBase::Transport,
            offset,
            len: 2,
            dreg,
        } => Some((
            match *offset {
                TH_DPORT => Key::ThDport,
                TH_SPORT => Key::ThSport,
                _ => return None,
            },
            *dreg,
        )),
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg,
        } => Some((Key::L4Proto, *dreg)),
        _ => None,
    }
}

/// Consecutive loads into registers 1, 9, 10, …: a concatenation's keys.
fn keys(e: &[Expr]) -> (Vec<Key>, usize) {
    let mut keys = Vec::new();
    for (i, x) in e.iter().enumerate() {
        let want = if i == 0 {
            REG_1
        } else {
            REG32_01 + i as u32 - 1
        };
        match key_of(x) {
            Some((k, dreg)) if dreg == want => keys.push(k),
            _ => break,
        }
    }
    let n = keys.len();
    (keys, n)
}

/// `<keys> @set` (a lookup without a destination register).
fn set_match(e: &[Expr]) -> Option<(Match, usize)> {
    let (keys, n) = keys(e);
    if n < 2 {
        return None;
    }
    match e.get(n)? {
        Expr::Lookup {
            set: SetRef::Named(set),
            dreg: None,
            invert,
        } => Some((
            Match::InSet {
                keys,
                set: set.clone(),
                equal: !invert,
            },
            n + 1,
        )),
        _ => None,
    }
}

/// The action at the start of `e`, and how many expressions it took.
fn one_action(e: &[Expr], anonymous: AnonymousMaps<'_>) -> Option<(Action, usize)> {
    let one = |a: Action| Some((a, 1));
    match e.first()? {
        Expr::Verdict(v) => one(Action::Verdict(v.clone())),
        Expr::Masquerade { fully_random } => one(Action::Masquerade {
            fully_random: *fully_random,
        }),
        Expr::Reject { tcp_reset } => one(Action::Reject {
            tcp_reset: *tcp_reset,
        }),
        Expr::Counter { packets, bytes } => one(Action::Counter {
            packets: *packets,
            bytes: *bytes,
        }),
        Expr::Log { group, prefix } => one(Action::Log {
            group: *group,
            prefix: prefix.clone(),
        }),
        Expr::Immediate { dreg: REG_1, data } => immediate_action(data, &e[1..]),
        Expr::NumgenRandom { modulus, offset } => numgen_action(*modulus, *offset, e, anonymous),
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        } => mark_set(e),
        _ => None,
    }
    .or_else(|| keyed_action(e))
}

/// `dnat to ip:port` and `redirect to :port`: immediates, then the NAT.
fn immediate_action(first: &[u8], after: &[Expr]) -> Option<(Action, usize)> {
    match after.first()? {
        Expr::Redirect { port: REG_1 } => Some((
            Action::Redirect {
                port: be_u16(first)?,
            },
            2,
        )),
        Expr::Immediate { dreg: REG_2, data } => match after.get(1)? {
            Expr::Dnat {
                addr: REG_1,
                port: REG_2,
            } => {
                let ip: [u8; 4] = first.try_into().ok()?;
                let port = be_u16(data)?;
                Some((
                    Action::Dnat {
                        ip: ip.into(),
                        port,
                    },
                    3,
                ))
            }
            _ => None,
        },
        _ => None,
    }
}

fn numgen_action(
    modulus: u32,
    offset: u32,
    e: &[Expr],
    anonymous: AnonymousMaps<'_>,
) -> Option<(Action, usize)> {
    let Some(Expr::Lookup {
        set: SetRef::Named(map),
        dreg: Some(dreg),
        invert: false,
    }) = e.get(1)
    else {
        return None;
    };
    match (*dreg, e.get(2)) {
        (REG_VERDICT, _) if offset == 0 => Some((
            Action::RandomVmap {
                chains: anonymous(map)?,
            },
            2,
        )),
        (
            REG_1,
            Some(Expr::Dnat {
                addr: REG_1,
                port: REG32_01,
            }),
        ) => Some((
            Action::DnatRandomMap {
                count: modulus,
                offset,
                map: map.clone(),
            },
            3,
        )),
        _ => None,
    }
}

/// `meta mark set meta mark | bits` or `^ bits`.
fn mark_set(e: &[Expr]) -> Option<(Action, usize)> {
    let Some(Expr::Bitwise { mask, xor }) = e.get(1) else {
        return None;
    };
    if e.get(2) != Some(&Expr::MetaSetMark) {
        return None;
    }
    let (mask, xor) = (ne_u32(mask)?, ne_u32(xor)?);
    let action = if mask == u32::MAX {
        Action::MarkXor(xor)
    } else if mask == !xor {
        Action::MarkOr(xor)
    } else {
        return None;
    };
    Some((action, 3))
}

/// `<keys> vmap @map` and `update @set { <key> timeout … }`.
fn keyed_action(e: &[Expr]) -> Option<(Action, usize)> {
    let (keys, n) = keys(e);
    if n == 0 {
        return None;
    }
    match e.get(n)? {
        Expr::Lookup {
            set: SetRef::Named(map),
            dreg: Some(REG_VERDICT),
            invert: false,
        } => Some((
            Action::Vmap {
                keys,
                map: map.clone(),
            },
            n + 1,
        )),
        Expr::DynsetUpdate { set, timeout_ms } if n == 1 => Some((
            Action::UpdateSet {
                set: set.clone(),
                key: keys[0],
                timeout_seconds: u32::try_from(timeout_ms / 1000).ok()?,
            },
            2,
        )),
        _ => None,
    }
}
