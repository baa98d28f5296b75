//! A ruleset read back over netlink (what `nft list ruleset` reads): tables, chains, sets
//! with their elements, and rules with their expressions decoded, without the `nft`
//! program. [`crate::ruleset`] turns a listing into nft's text.

use std::time::Duration;

use super::decode::{attr, be_u32, be_u64, expressions, text, value, verdict};
use super::expr::Expr;
use super::objects::{BaseChain, ChainKind, Hook, SetValue};
use super::wire::*;
use super::{Element, Family, Value};

/// One table as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTable {
    pub family: Family,
    pub name: String,
    /// nft's comment, from the table's user data.
    pub comment: Option<String>,
    pub chains: Vec<ListedChain>,
    pub sets: Vec<ListedSet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedChain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<ListedRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub handle: u64,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSet {
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    pub value: SetValue,
    pub timeout: Option<Duration>,
    pub userdata: Vec<u8>,
    pub elements: Vec<ListedElement>,
}

/// A set element: key, value, and for sets with intervals whether it closes one (its key
/// is then the first address after the interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    pub element: Element,
    pub interval_end: bool,
}

/// `NFT_SET_ANONYMOUS`, `NFT_SET_INTERVAL`.
pub const SET_ANONYMOUS: u32 = 0x1;
pub const SET_INTERVAL: u32 = 0x4;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;

/// One message of a dump: the family of its object and its attributes.
pub(super) struct Dumped {
    pub family: u8,
    pub body: Vec<u8>,
}

/// What a dump request asks for: the message type, the family (0: all) and attributes
/// naming the object (e.g. a table and set for a set's elements).
pub(super) struct DumpRequest {
    pub kind: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
}

impl DumpRequest {
    fn all(kind: u16, family: Option<Family>) -> DumpRequest {
        DumpRequest {
            kind,
            family: family.map(|f| f as u8).unwrap_or(0),
            attrs: Vec::new(),
        }
    }
}

/// Reads every table of `family` (all families with `None`) whose name `wanted` accepts,
/// with its chains, rules, sets and elements, through `dump` (one netlink dump per call).
pub(super) fn ruleset(
    family: Option<Family>,
    wanted: &dyn Fn(&str) -> bool,
    dump: &mut dyn FnMut(DumpRequest) -> std::io::Result<Vec<Dumped>>,
) -> std::io::Result<Vec<ListedTable>> {
    let mut tables: Vec<ListedTable> = dump(DumpRequest::all(NFT_MSG_GETTABLE, family))?
        .iter()
        .filter_map(table)
        .filter(|t| wanted(&t.name))
        .collect();
    if tables.is_empty() {
        return Ok(tables);
    }
    let find = |tables: &mut Vec<ListedTable>, family: u8, name: &str| {
        let f = Family::from_number(family);
        tables
            .iter_mut()
            .position(|t| Some(t.family) == f && t.name == name)
    };
    for m in dump(DumpRequest::all(NFT_MSG_GETCHAIN, family))? {
        if let Some((table_name, c)) = chain(&m.body)
            && let Some(i) = find(&mut tables, m.family, &table_name)
        {
            tables[i].chains.push(c);
        }
    }
    for m in dump(DumpRequest::all(NFT_MSG_GETRULE, family))? {
        if let Some((table_name, chain_name, r)) = rule(&m.body)
            && let Some(i) = find(&mut tables, m.family, &table_name)
            && let Some(c) = tables[i].chains.iter_mut().find(|c| c.name == chain_name)
        {
            c.rules.push(r);
        }
    }
    for m in dump(DumpRequest::all(NFT_MSG_GETSET, family))? {
        if let Some((table_name, s)) = set(&m.body)
            && let Some(i) = find(&mut tables, m.family, &table_name)
        {
            tables[i].sets.push(s);
        }
    }
    for t in &mut tables {
        for s in &mut t.sets {
            let request = DumpRequest {
                kind: NFT_MSG_GETSETELEM,
                family: t.family as u8,
                attrs: super::set_header(&t.name, &s.name),
            };
            s.elements = dump(request)?
                .iter()
                .flat_map(|m| elements(&m.body))
                .collect();
        }
    }
    Ok(tables)
}

pub(super) fn table(m: &Dumped) -> Option<ListedTable> {
    Some(ListedTable {
        family: Family::from_number(m.family)?,
        name: text(&m.body, NFTA_TABLE_NAME)?,
        comment: attr(&m.body, NFTA_TABLE_USERDATA).and_then(|u| comment(u, 0)),
        chains: Vec::new(),
        sets: Vec::new(),
    })
}

pub(super) fn chain(body: &[u8]) -> Option<(String, ListedChain)> {
    let base = attr(body, NFTA_CHAIN_HOOK).and_then(|hook| {
        Some(BaseChain {
            kind: match text(body, NFTA_CHAIN_TYPE)?.as_str() {
                "nat" => ChainKind::Nat,
                _ => ChainKind::Filter,
            },
            hook: match be_u32(hook, 1)? {
                0 => Hook::Prerouting,
                1 => Hook::Input,
                2 => Hook::Forward,
                3 => Hook::Output,
                4 => Hook::Postrouting,
                _ => return None,
            },
            priority: be_u32(hook, 2)? as i32,
            accept: be_u32(body, NFTA_CHAIN_POLICY) != Some(0),
        })
    });
    Some((
        text(body, NFTA_CHAIN_TABLE)?,
        ListedChain {
            name: text(body, NFTA_CHAIN_NAME)?,
            base,
            rules: Vec::new(),
        },
    ))
}

pub(super) fn rule(body: &[u8]) -> Option<(String, String, ListedRule)> {
    Some((
        text(body, NFTA_RULE_TABLE)?,
        text(body, NFTA_RULE_CHAIN)?,
        ListedRule {
            handle: be_u64(body, NFTA_RULE_HANDLE).unwrap_or(0),
            exprs: attr(body, NFTA_RULE_EXPRESSIONS)
                .map(expressions)
                .unwrap_or_default(),
            comment: attr(body, NFTA_RULE_USERDATA).and_then(|u| comment(u, 0)),
        },
    ))
}

pub(super) fn set(body: &[u8]) -> Option<(String, ListedSet)> {
    let flags = be_u32(body, NFTA_SET_FLAGS).unwrap_or(0);
    let value = match be_u32(body, NFTA_SET_DATA_TYPE) {
        Some(0xffff_ff00) => SetValue::Verdict,
        Some(kind) => SetValue::Data {
            kind,
            len: be_u32(body, NFTA_SET_DATA_LEN).unwrap_or(0),
        },
        None => SetValue::None,
    };
    Some((
        text(body, 1)?,
        ListedSet {
            name: text(body, NFTA_SET_NAME)?,
            flags,
            key_type: be_u32(body, NFTA_SET_KEY_TYPE).unwrap_or(0),
            key_len: be_u32(body, NFTA_SET_KEY_LEN).unwrap_or(0),
            value,
            timeout: be_u64(body, NFTA_SET_TIMEOUT).map(Duration::from_millis),
            userdata: attr(body, NFTA_SET_USERDATA).unwrap_or_default().to_vec(),
            elements: Vec::new(),
        },
    ))
}

/// The elements of one `NEWSETELEM` dump message.
pub(super) fn elements(body: &[u8]) -> Vec<ListedElement> {
    let Some(list) = attr(body, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return Vec::new();
    };
    attrs(list)
        .filter_map(|(_, e)| {
            let data = attr(e, NFTA_SET_ELEM_DATA);
            let value = match data {
                Some(d) => match attr(d, NFTA_DATA_VERDICT) {
                    Some(v) => Some(Value::Verdict(verdict(v)?)),
                    None => Some(Value::Data(value(e, NFTA_SET_ELEM_DATA)?)),
                },
                None => None,
            };
            let key = value_or_empty(e);
            let interval_end =
                be_u32(e, NFTA_SET_ELEM_FLAGS).is_some_and(|f| f & NFT_SET_ELEM_INTERVAL_END != 0);
            Some(ListedElement {
                element: Element {
                    key,
                    value,
                    expires_ms: be_u64(e, NFTA_SET_ELEM_EXPIRATION),
                    interval_end,
                },
                interval_end,
            })
        })
        .collect()
}

/// An element's key (an interval's closing element of a set of addresses from 0 may
/// have none).
fn value_or_empty(e: &[u8]) -> Vec<u8> {
    value(e, NFTA_SET_ELEM_KEY).unwrap_or_default()
}

/// A comment of user data type `kind` (tables, rules: 0; sets: 7).
pub(crate) fn comment(userdata: &[u8], kind: u8) -> Option<String> {
    let mut rest = userdata;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], usize::from(rest[1]));
        let v = rest.get(2..2 + len)?;
        if t == kind {
            return Some(String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}
