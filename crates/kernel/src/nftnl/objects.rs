//! Tables, chains and sets in a batch: the objects a whole ruleset is made of, encoded as
//! `nft` encodes them (comments and `typeof` descriptions in the user data `nft` reads
//! back), so `nft list ruleset` prints the same text whichever way they were written.

use super::expr::ANONYMOUS_MAP_NAME;
use super::wire::*;
use super::{Batch, Element, Verdict};

/// A base chain's hook: what `type filter hook input priority -110; policy accept;` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainKind,
    pub hook: Hook,
    pub priority: i32,
    /// `policy accept` (true) or `policy drop`.
    pub accept: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// What a set holds and how, in the kernel's terms (nft's data type numbers; a
/// concatenation's type is its fields' types, six bits each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub name: String,
    pub key_type: u32,
    pub key_len: u32,
    pub value: SetValue,
    /// Elements expire after this many milliseconds unless they say otherwise; the set
    /// may then be updated from the packet path (`flags dynamic,timeout`).
    pub timeout_ms: Option<u64>,
    /// `nft`'s description of the set (byte order, `typeof` expressions, comment).
    pub userdata: Vec<u8>,
    /// Flags beyond those the value and timeout imply (e.g. `NFT_SET_INTERVAL`).
    pub flags: u32,
}

/// What a key maps to: nothing (a set), a verdict, or data of a type and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetValue {
    None,
    Verdict,
    Data { kind: u32, len: u32 },
}

/// nft's data type numbers and the concatenation of several.
pub mod types {
    pub const INTEGER: u32 = 4;
    pub const IPV4_ADDR: u32 = 7;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;

    pub fn concat(fields: &[u32]) -> u32 {
        fields.iter().fold(0, |acc, t| (acc << 6) | t)
    }
}

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_DESC_SIZE: u16 = 1;
const NFTA_SET_TIMEOUT: u16 = 11;
const NFTA_SET_USERDATA: u16 = 13;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;

/// The user data type nft files a table's or a rule's comment under.
const UDATA_COMMENT: u8 = 0;

/// A comment as nft stores it in user data: type, length, the text with its NUL.
pub(super) fn comment_udata(kind: u8, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    tlv(&mut out, kind, &[text.as_bytes(), &[0]].concat());
    out
}

/// What nft 1.0.6 writes for an anonymous `numgen … vmap`: key byte order host, data
/// byte order unknown, the data described as a verdict, not an interval.
fn anonymous_vmap_udata() -> Vec<u8> {
    let mut u = Vec::new();
    tlv(&mut u, 0, &1u32.to_ne_bytes());
    tlv(&mut u, 1, &0u32.to_ne_bytes());
    let mut typeof_verdict = Vec::new();
    tlv(&mut typeof_verdict, 0, &1u32.to_ne_bytes());
    tlv(&mut typeof_verdict, 1, &[]);
    tlv(&mut u, 4, &typeof_verdict);
    tlv(&mut u, 6, &0u32.to_ne_bytes());
    u
}

/// One user data field (type, length byte, value); nft's fields are short.
pub fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(&value[..value.len().min(255)]);
}

impl Batch {
    /// Creates `table` if it does not exist (an existing one is left as it is).
    pub fn add_table(&mut self, name: &str, comment: Option<&str>) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, name);
        put_attr(&mut a, NFTA_TABLE_FLAGS, &0u32.to_be_bytes());
        if let Some(c) = comment {
            put_attr(
                &mut a,
                NFTA_TABLE_USERDATA,
                &comment_udata(UDATA_COMMENT, c),
            );
        }
        self.push(NFT_MSG_NEWTABLE, NLM_F_CREATE, &a);
    }

    /// Deletes `table` and everything in it (an error if it does not exist: add it
    /// first in the same batch to delete it whether or not it exists).
    pub fn delete_table(&mut self, name: &str) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_TABLE_NAME, name);
        self.push(NFT_MSG_DELTABLE, 0, &a);
    }

    /// Deletes the (empty, unreferenced) chain `name` of `table`.
    pub fn delete_chain(&mut self, table: &str, name: &str) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_CHAIN_TABLE, table);
        put_str(&mut a, NFTA_CHAIN_NAME, name);
        self.push(NFT_MSG_DELCHAIN, 0, &a);
    }

    /// Deletes the (unreferenced) set or map `name` of `table`.
    pub fn delete_set(&mut self, table: &str, name: &str) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_TABLE, table);
        put_str(&mut a, NFTA_SET_NAME, name);
        self.push(NFT_MSG_DELSET, 0, &a);
    }

    /// Creates chain `name` in `table`, a base chain when `base` says how it hooks in.
    pub fn add_chain(&mut self, table: &str, name: &str, base: Option<BaseChain>) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_CHAIN_TABLE, table);
        put_str(&mut a, NFTA_CHAIN_NAME, name);
        if let Some(b) = base {
            let kind = match b.kind {
                ChainKind::Filter => "filter",
                ChainKind::Nat => "nat",
            };
            put_str(&mut a, NFTA_CHAIN_TYPE, kind);
            put_attr(
                &mut a,
                NFTA_CHAIN_POLICY,
                &u32::from(b.accept).to_be_bytes(),
            );
            nest(&mut a, NFTA_CHAIN_HOOK, |hook| {
                put_u32s(
                    hook,
                    &[
                        (NFTA_HOOK_HOOKNUM, b.hook as u32),
                        (NFTA_HOOK_PRIORITY, b.priority as u32),
                    ],
                )
            });
        }
        self.push(NFT_MSG_NEWCHAIN, NLM_F_CREATE, &a);
    }

    /// Creates the named set `spec` in `table`; returns its id in the batch.
    pub fn add_set(&mut self, table: &str, spec: &SetSpec) -> u32 {
        let mut flags = match spec.value {
            SetValue::None => 0,
            SetValue::Verdict | SetValue::Data { .. } => NFT_SET_MAP,
        };
        if spec.timeout_ms.is_some() {
            flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
        }
        flags |= spec.flags;
        let a = self.set_attrs(table, &spec.name, flags, spec);
        self.push(NFT_MSG_NEWSET, NLM_F_CREATE, &a);
        self.next_set_id
    }

    /// Adds elements to a set created earlier in this batch, found by its id: the kernel
    /// finds a set by name by walking every set of the table, by id among the sets of
    /// the batch from the newest.
    pub fn add_elements_by_id(&mut self, table: &str, set_id: u32, elements: &[Element]) {
        self.element_messages(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements, |a| {
            put_str(a, NFTA_SET_ELEM_LIST_TABLE, table);
            put_u32s(a, &[(NFTA_SET_ELEM_LIST_SET_ID, set_id)]);
        });
    }

    /// Creates an anonymous verdict map keyed by a random number (`numgen random mod N
    /// vmap { 0 : goto a, 1 : goto b }`), bound to the next rule that looks it up by the
    /// returned id.
    pub fn add_anonymous_vmap(&mut self, table: &str, verdicts: &[Verdict]) -> u32 {
        let spec = SetSpec {
            name: ANONYMOUS_MAP_NAME.to_string(),
            key_type: types::INTEGER,
            key_len: 4,
            value: SetValue::Verdict,
            timeout_ms: None,
            userdata: anonymous_vmap_udata(),
            flags: 0,
        };
        let flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP;
        let mut a = self.set_attrs(table, ANONYMOUS_MAP_NAME, flags, &spec);
        let id = self.next_set_id;
        nest(&mut a, NFTA_SET_DESC, |desc| {
            put_u32s(desc, &[(NFTA_SET_DESC_SIZE, verdicts.len() as u32)])
        });
        self.push(NFT_MSG_NEWSET, NLM_F_CREATE, &a);
        let elements: Vec<Element> = verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| Element::verdict((i as u32).to_ne_bytes().to_vec(), v.clone()))
            .collect();
        self.element_messages(NFT_MSG_NEWSETELEM, NLM_F_CREATE, &elements, |e| {
            put_str(e, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(e, NFTA_SET_ELEM_LIST_SET, ANONYMOUS_MAP_NAME);
            put_u32s(e, &[(NFTA_SET_ELEM_LIST_SET_ID, id)]);
        });
        id
    }

    /// The attributes of a NEWSET message; every set gets an id unique in the batch, as
    /// nft gives it.
    fn set_attrs(&mut self, table: &str, name: &str, flags: u32, spec: &SetSpec) -> Vec<u8> {
        self.next_set_id += 1;
        let mut a = Vec::new();
        put_str(&mut a, NFTA_SET_TABLE, table);
        put_str(&mut a, NFTA_SET_NAME, name);
        put_u32s(
            &mut a,
            &[
                (NFTA_SET_FLAGS, flags),
                (NFTA_SET_KEY_TYPE, spec.key_type),
                (NFTA_SET_KEY_LEN, spec.key_len),
            ],
        );
        match spec.value {
            SetValue::None => {}
            SetValue::Verdict => put_u32s(
                &mut a,
                &[(NFTA_SET_DATA_TYPE, 0xffff_ff00), (NFTA_SET_DATA_LEN, 0)],
            ),
            SetValue::Data { kind, len } => put_u32s(
                &mut a,
                &[(NFTA_SET_DATA_TYPE, kind), (NFTA_SET_DATA_LEN, len)],
            ),
        }
        put_u32s(&mut a, &[(NFTA_SET_ID, self.next_set_id)]);
        if let Some(ms) = spec.timeout_ms {
            put_attr(&mut a, NFTA_SET_TIMEOUT, &ms.to_be_bytes());
        }
        if !spec.userdata.is_empty() {
            put_attr(&mut a, NFTA_SET_USERDATA, &spec.userdata);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_types_take_six_bits_a_field() {
        use types::*;
        assert_eq!(concat(&[IPV4_ADDR, INET_SERVICE]), 0x1cd);
        assert_eq!(concat(&[IPV4_ADDR, INET_PROTO, INET_SERVICE]), 0x730d);
    }

    #[test]
    fn comments_carry_their_nul() {
        assert_eq!(comment_udata(7, "x"), vec![7, 2, b'x', 0]);
    }
}
