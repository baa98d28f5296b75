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

mod expr;
mod objects;
mod socket;
mod wire;

pub use expr::{
    CtKey, Expr, MetaKey, PayloadBase, REG_1, REG_2, REG_VERDICT, REG32_01, REG32_02, SetRef,
    Verdict,
};
pub use objects::{BaseChain, ChainKind, Hook, SetSpec, SetValue, tlv, types};
pub use socket::{NftSocket, TimedElement};

use crate::error::Result;
use crate::netns::NetNs;
use expr::{encode_expr, verdict_data};
use wire::*;

/// One map or set element: its key and, for a map, its value; in a set with timeouts,
/// the time it has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Option<Value>,
    pub expires_ms: Option<u64>,
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
        }
    }

    /// A map element with data.
    pub fn data(key: Vec<u8>, data: Vec<u8>) -> Element {
        Element {
            value: Some(Value::Data(data)),
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

/// A transaction being built: messages in order, each asking for an acknowledgement, with
/// a description for the error message if the kernel refuses it.
#[derive(Debug, Clone)]
pub struct Batch {
    messages: Vec<(u16, u16, Vec<u8>, String)>,
    next_set_id: u32,
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
            next_set_id: 0,
        }
    }

    fn push(&mut self, kind: u16, flags: u16, attrs: Vec<u8>, what: String) {
        self.messages.push((kind, flags, attrs, what));
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
        self.push(
            NFT_MSG_DELRULE,
            0,
            a,
            format!("flush chain ip {table} {chain}"),
        );
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
        let mut a = Vec::new();
        put_str(&mut a, NFTA_RULE_TABLE, table);
        put_str(&mut a, NFTA_RULE_CHAIN, chain);
        let mut list = Vec::new();
        for e in exprs {
            put_nested(&mut list, NFTA_LIST_ELEM, &encode_expr(e));
        }
        put_nested(&mut a, NFTA_RULE_EXPRESSIONS, &list);
        if let Some(c) = comment {
            put_attr(&mut a, NFTA_RULE_USERDATA, &objects::comment_udata(0, c));
        }
        self.push(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            a,
            format!("add rule ip {table} {chain}"),
        );
    }

    /// Deletes every element of `set` (what `flush set`/`flush map` does).
    pub fn flush_set(&mut self, table: &str, set: &str) {
        self.push(
            NFT_MSG_DELSETELEM,
            0,
            set_header(table, set),
            format!("flush set ip {table} {set}"),
        );
    }

    /// Adds elements to `set` (an element already there is not an error).
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) {
        if elements.is_empty() {
            return;
        }
        let mut a = set_header(table, set);
        put_nested(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, &element_list(elements));
        self.push(
            NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            a,
            format!("add element ip {table} {set}"),
        );
    }

    /// Deletes elements of `set` by key (one that is not there is an error, as with nft).
    pub fn delete_elements(&mut self, table: &str, set: &str, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        let elements: Vec<Element> = keys.iter().map(|k| Element::key(k.clone())).collect();
        let mut a = set_header(table, set);
        put_nested(
            &mut a,
            NFTA_SET_ELEM_LIST_ELEMENTS,
            &element_list(&elements),
        );
        self.push(
            NFT_MSG_DELSETELEM,
            0,
            a,
            format!("delete element ip {table} {set}"),
        );
    }

    /// The wire form: batch begin, the messages (sequence numbers from `first_seq`),
    /// batch end. Only the last message asks for an acknowledgement: the kernel reports
    /// every refused message anyway, and processes the batch in order, so the last
    /// message's answer comes after all others. An acknowledgement per message would
    /// overflow the receive buffer on a batch of a whole ruleset (tens of thousands).
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
        let last = self.messages.len().saturating_sub(1);
        for (i, (kind, flags, attrs, _)) in self.messages.iter().enumerate() {
            let ack = if i == last { NLM_F_ACK } else { 0 };
            put_message(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                NLM_F_REQUEST | ack | flags,
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
        match &e.value {
            Some(Value::Data(v)) => put_nested(&mut el, NFTA_SET_ELEM_DATA, &data_value(v)),
            Some(Value::Verdict(v)) => put_nested(&mut el, NFTA_SET_ELEM_DATA, &verdict_data(v)),
            None => {}
        }
        if let Some(ms) = e.expires_ms {
            put_attr(&mut el, NFTA_SET_ELEM_EXPIRATION, &ms.to_be_bytes());
        }
        put_nested(&mut list, NFTA_LIST_ELEM, &el);
    }
    list
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
    fn concatenations_pad_each_field() {
        assert_eq!(
            concat(&[&[10, 0, 0, 1], &8080u16.to_be_bytes()]),
            vec![10, 0, 0, 1, 0x1f, 0x90, 0, 0]
        );
    }
}
