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

mod decode;
mod dump;
mod expr;
mod objects;
mod simulate;
mod socket;
mod wire;

pub use dump::{
    ListedChain, ListedElement, ListedRule, ListedSet, ListedTable, SET_ANONYMOUS, SET_INTERVAL,
};
pub use expr::{
    CmpOp, CtKey, Expr, MetaKey, PayloadBase, REG_1, REG_2, REG_VERDICT, REG32_01, REG32_02,
    SetRef, Verdict,
};
pub use objects::{BaseChain, ChainKind, Hook, SetSpec, SetValue, tlv, types};
pub use simulate::Simulated;
pub use socket::{NftSocket, TimedElement};

use crate::error::Result;
use crate::netns::NetNs;
use expr::{put_expr, put_verdict};
use wire::*;

/// One map or set element: its key and, for a map, its value; in a set with timeouts,
/// the time it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Option<Value>,
    pub expires_ms: Option<u64>,
    /// In a set with intervals: this key is the first one after an interval (the
    /// interval's start is the element before it).
    pub interval_end: bool,
}

/// What a map element maps its key to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Data(Vec<u8>),
    Verdict(Verdict),
}

impl Element {
    /// A set element.
    pub fn key(key: Vec<u8>) -> Element {
        Element {
            key,
            value: None,
            expires_ms: None,
            interval_end: false,
        }
    }

    /// A map element with data.
    pub fn data(key: Vec<u8>, data: Vec<u8>) -> Element {
        Element {
            value: Some(Value::Data(data)),
            ..Element::key(key)
        }
    }

    /// The end of an interval, in a set with intervals.
    pub fn interval_end(key: Vec<u8>) -> Element {
        Element {
            interval_end: true,
            ..Element::key(key)
        }
    }

    /// A verdict map element.
    pub fn verdict(key: Vec<u8>, verdict: Verdict) -> Element {
        Element {
            value: Some(Value::Verdict(verdict)),
            ..Element::key(key)
        }
    }
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

/// An nftables address family: which packets a table's chains see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 and IPv6 both (`inet`).
    Inet = 1,
    Ip = 2,
    Bridge = 7,
    Ip6 = 10,
}

impl Family {
    pub fn from_number(n: u8) -> Option<Family> {
        Some(match n {
            1 => Family::Inet,
            2 => Family::Ip,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }

    /// As nft names it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A transaction being built: its messages encoded back to back in one buffer (sequence
/// numbers and the acknowledgement flag are filled in when it is sent). Every message of
/// a batch is for one address family.
#[derive(Debug, Clone)]
pub struct Batch {
    buf: Vec<u8>,
    /// Where each message starts in `buf`.
    pub(super) starts: Vec<usize>,
    next_set_id: u32,
    family: Family,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch for the `ip` family.
    pub fn new() -> Batch {
        Batch::for_family(Family::Ip)
    }

    /// An empty batch for tables of `family`.
    pub fn for_family(family: Family) -> Batch {
        Batch {
            buf: Vec::new(),
            starts: Vec::new(),
            next_set_id: 0,
            family,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    fn push(&mut self, kind: u16, flags: u16, attrs: &[u8]) {
        let start = self.begin(kind, flags);
        self.buf.extend_from_slice(attrs);
        self.finish(start);
    }

    /// Starts a message whose attributes the caller appends to `buf`; [`Self::finish`]
    /// ends it.
    fn begin(&mut self, kind: u16, flags: u16) -> usize {
        let start = self.buf.len();
        self.starts.push(start);
        put_message(
            &mut self.buf,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | flags,
            0,
            self.family as u8,
            &[],
        );
        start
    }

    fn finish(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// What message `index` asks, as nft would say it (for error messages).
    pub(super) fn describe(&self, index: usize) -> String {
        let Some(&start) = self.starts.get(index) else {
            return "the batch as a whole".to_string();
        };
        let (kind, body) = self.message(start);
        let set_by_id = attrs(body)
            .find(|(k, _)| *k == NFTA_SET_ELEM_LIST_SET_ID)
            .and_then(|(_, id)| self.set_named_by(id));
        describe_message(self.family, kind, body, set_by_id)
    }

    /// The type and attributes of the message at `start`.
    pub(super) fn message(&self, start: usize) -> (u16, &[u8]) {
        let len = u32_at(&self.buf, start) as usize;
        let kind = u16::from_ne_bytes([self.buf[start + 4], self.buf[start + 5]]) & 0xff;
        (kind, &self.buf[start + NLMSG_HDR + 4..start + len])
    }

    /// The name of the set this batch creates with `id` (big endian, as on the wire).
    fn set_named_by(&self, id: &[u8]) -> Option<String> {
        self.starts.iter().find_map(|&start| {
            let (kind, body) = self.message(start);
            let ours =
                kind == NFT_MSG_NEWSET && attrs(body).any(|(k, v)| k == NFTA_SET_ID && v == id);
            ours.then(|| text_attr(body, NFTA_SET_NAME)).flatten()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Deletes every rule of `chain` (what `flush chain` does).
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let mut a = Vec::new();
        put_str(&mut a, NFTA_RULE_TABLE, table);
        put_str(&mut a, NFTA_RULE_CHAIN, chain);
        self.push(NFT_MSG_DELRULE, 0, &a);
    }

    /// Appends a rule to `chain`.
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        self.add_rule_with_comment(table, chain, exprs, None);
    }

    /// Appends a rule to `chain`, with a comment (`comment "…"`) if given.
    pub fn add_rule_with_comment(
        &mut self,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
    ) {
        let start = self.begin(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        let a = &mut self.buf;
        put_str(a, NFTA_RULE_TABLE, table);
        put_str(a, NFTA_RULE_CHAIN, chain);
        nest(a, NFTA_RULE_EXPRESSIONS, |list| {
            for e in exprs {
                put_expr(list, e);
            }
        });
        if let Some(c) = comment {
            put_attr(a, NFTA_RULE_USERDATA, &objects::comment_udata(0, c));
        }
        self.finish(start);
    }

    /// Deletes every element of `set` (what `flush set`/`flush map` does).
    pub fn flush_set(&mut self, table: &str, set: &str) {
        self.push(NFT_MSG_DELSETELEM, 0, &set_header(table, set));
    }

    /// Adds elements to `set` (an element already there is not an error).
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) {
        self.element_messages(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements, |a| {
            put_str(a, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(a, NFTA_SET_ELEM_LIST_SET, set);
        });
    }

    /// Deletes elements of `set` by key (one that is not there is an error, as with nft).
    pub fn delete_elements(&mut self, table: &str, set: &str, keys: &[Vec<u8>]) {
        let elements: Vec<Element> = keys.iter().map(|k| Element::key(k.clone())).collect();
        self.element_messages(NFT_MSG_DELSETELEM, 0, &elements, |a| {
            put_str(a, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(a, NFTA_SET_ELEM_LIST_SET, set);
        });
    }

    /// Element messages for `elements`, as many as their 16-bit attribute lengths need
    /// (nft splits long lists too), each starting with the attributes `header` writes.
    fn element_messages(
        &mut self,
        kind: u16,
        flags: u16,
        elements: &[Element],
        header: impl Fn(&mut Vec<u8>),
    ) {
        let mut rest = elements;
        while !rest.is_empty() {
            let start = self.begin(kind, flags);
            header(&mut self.buf);
            let list = nest_start(&mut self.buf);
            let mut taken = 0;
            for e in rest {
                if taken > 0 && self.buf.len() - list > MAX_ELEMENT_LIST {
                    break;
                }
                put_element(&mut self.buf, e);
                taken += 1;
            }
            nest_end(&mut self.buf, list, NFTA_SET_ELEM_LIST_ELEMENTS);
            self.finish(start);
            rest = &rest[taken..];
        }
    }

    /// The wire form: batch begin, the messages (sequence numbers from `first_seq`),
    /// batch end. Only the last message asks for an acknowledgement: the kernel reports
    /// every refused message anyway, and processes the batch in order, so the last
    /// message's answer comes after all others. An acknowledgement per message would
    /// overflow the receive buffer on a batch of a whole ruleset (tens of thousands).
    fn encode(&self, first_seq: u32) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.buf.len() + 64);
        put_message(
            &mut wire,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            0,
            &[],
        );
        let base = wire.len();
        wire.extend_from_slice(&self.buf);
        for (i, start) in self.starts.iter().enumerate() {
            let at = base + start + 8;
            wire[at..at + 4].copy_from_slice(&(first_seq + 1 + i as u32).to_ne_bytes());
        }
        if let Some(last) = self.starts.last() {
            let at = base + last + 6;
            let flags = u16::from_ne_bytes([wire[at], wire[at + 1]]) | NLM_F_ACK;
            wire[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
        }
        let end = first_seq + 1 + self.starts.len() as u32;
        put_message(&mut wire, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, &[]);
        wire
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

/// The comment in a set's user data, as nft files it.
pub fn set_comment(userdata: &[u8]) -> Option<String> {
    dump::comment(userdata, 7)
}

/// A string attribute of a message.
fn text_attr(body: &[u8], want: u16) -> Option<String> {
    attrs(body)
        .find(|(k, _)| *k == want)
        .map(|(_, v)| String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned())
}

/// A message described from its type and attributes: the verb, the table, the object
/// (`set_by_id`: the name of a set the message names by its id in the batch).
fn describe_message(family: Family, kind: u16, body: &[u8], set_by_id: Option<String>) -> String {
    let has = |want: u16| attrs(body).any(|(k, _)| k == want);
    let table = text_attr(body, 1).unwrap_or_default();
    let (verb, object) = match kind {
        NFT_MSG_NEWTABLE => ("add table", None),
        NFT_MSG_DELTABLE => ("delete table", None),
        NFT_MSG_NEWCHAIN => ("add chain", text_attr(body, 3)),
        NFT_MSG_DELCHAIN => ("delete chain", text_attr(body, 3)),
        NFT_MSG_DELSET => ("delete set", text_attr(body, 2)),
        NFT_MSG_NEWRULE => ("add rule", text_attr(body, 2)),
        NFT_MSG_DELRULE => ("flush chain", text_attr(body, 2)),
        NFT_MSG_NEWSET => ("add set", text_attr(body, 2)),
        NFT_MSG_NEWSETELEM => ("add element", text_attr(body, 2).or(set_by_id)),
        NFT_MSG_DELSETELEM if has(NFTA_SET_ELEM_LIST_ELEMENTS) => {
            ("delete element", text_attr(body, 2))
        }
        NFT_MSG_DELSETELEM => ("flush set", text_attr(body, 2)),
        _ => ("message", None),
    };
    match object {
        Some(o) => format!("{verb} {family} {table} {o}"),
        None => format!("{verb} {family} {table}"),
    }
}

pub(super) fn set_header(table: &str, set: &str) -> Vec<u8> {
    let mut a = Vec::new();
    put_str(&mut a, NFTA_SET_ELEM_LIST_TABLE, table);
    put_str(&mut a, NFTA_SET_ELEM_LIST_SET, set);
    a
}

/// An attribute's length is 16 bits: a list of elements longer than this (plus one
/// element) goes into several messages.
const MAX_ELEMENT_LIST: usize = 32 * 1024;

/// One `NFTA_LIST_ELEM`: key, value, expiry.
fn put_element(out: &mut Vec<u8>, e: &Element) {
    nest(out, NFTA_LIST_ELEM, |el| {
        put_data_value(el, NFTA_SET_ELEM_KEY, &e.key);
        match &e.value {
            Some(Value::Data(v)) => put_data_value(el, NFTA_SET_ELEM_DATA, v),
            Some(Value::Verdict(v)) => put_verdict(el, NFTA_SET_ELEM_DATA, v),
            None => {}
        }
        if let Some(ms) = e.expires_ms {
            put_attr(el, NFTA_SET_ELEM_EXPIRATION, &ms.to_be_bytes());
        }
        if e.interval_end {
            // NFTA_SET_ELEM_FLAGS: NFT_SET_ELEM_INTERVAL_END
            put_attr(el, 3, &1u32.to_be_bytes());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_its_last_message_asks_for_the_ack() {
        let mut b = Batch::new();
        b.flush_set("t", "s");
        b.add_elements("t", "s", &[Element::key(vec![1, 2, 3, 4])]);
        let wire = b.encode(7);
        // begin (seq 7), two messages (8, 9), the last asking for the ack, end (10).
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
                ((10 << 8) | NFT_MSG_DELSETELEM, false, 8),
                ((10 << 8) | NFT_MSG_NEWSETELEM, true, 9),
                (NFNL_MSG_BATCH_END, false, 10),
            ]
        );
    }

    #[test]
    fn long_element_lists_are_split_over_messages() {
        let many: Vec<Element> = (0..10_000u32)
            .map(|i| Element::key(i.to_be_bytes().to_vec()))
            .collect();
        let mut b = Batch::new();
        b.add_elements("t", "s", &many);
        assert!(b.len() > 1);
        let mut listed = 0;
        for i in 0..b.len() {
            let start = b.starts[i];
            let len = u32_at(&b.buf, start) as usize;
            let body = &b.buf[start + NLMSG_HDR + 4..start + len];
            let list = attrs(body)
                .find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS)
                .map(|(_, l)| l)
                .unwrap_or_default();
            assert!(list.len() <= MAX_ELEMENT_LIST + 64);
            listed += attrs(list).count();
        }
        assert_eq!(listed, many.len());
    }

    #[test]
    fn refused_messages_are_described_as_nft_says_them() {
        let mut b = Batch::new();
        b.flush_set("t", "s");
        let id = b.add_set(
            "t",
            &SetSpec {
                name: "targets".into(),
                key_type: types::INTEGER,
                key_len: 4,
                value: SetValue::None,
                timeout_ms: None,
                userdata: vec![],
                flags: 0,
            },
        );
        b.add_elements_by_id("t", id, &[Element::key(vec![0; 4])]);
        b.add_rule("t", "c", &[Expr::Verdict(Verdict::Drop)]);
        let said: Vec<String> = (0..5).map(|i| b.describe(i)).collect();
        assert_eq!(
            said,
            vec![
                "flush set ip t s",
                "add set ip t targets",
                "add element ip t targets",
                "add rule ip t c",
                "the batch as a whole"
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
