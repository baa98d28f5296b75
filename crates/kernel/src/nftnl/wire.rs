//! The netlink wire format of nf_tables messages: message headers, attributes, the
//! constants of the messages and attributes used here.

pub(super) const NLMSG_HDR: usize = 16;

pub(super) const NLMSG_ERROR: u16 = 2;

pub(super) const NLMSG_DONE: u16 = 3;

pub(super) const NLM_F_DUMP: u16 = 0x300;

pub(super) const NLM_F_REQUEST: u16 = 0x1;

pub(super) const NLM_F_ACK: u16 = 0x4;

pub(super) const NLM_F_CREATE: u16 = 0x400;

pub(super) const NLM_F_APPEND: u16 = 0x800;

pub(super) const NLA_F_NESTED: u16 = 0x8000;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;

pub(super) const NFNL_MSG_BATCH_BEGIN: u16 = 16;

pub(super) const NFNL_MSG_BATCH_END: u16 = 17;

pub(super) const NFPROTO_IPV4: u8 = 2;

pub(super) const NFT_MSG_NEWTABLE: u16 = 0;

pub(super) const NFT_MSG_DELTABLE: u16 = 2;

pub(super) const NFT_MSG_NEWCHAIN: u16 = 3;

pub(super) const NFT_MSG_DELCHAIN: u16 = 5;

pub(super) const NFT_MSG_NEWRULE: u16 = 6;

pub(super) const NFT_MSG_NEWSET: u16 = 9;

pub(super) const NFT_MSG_DELSET: u16 = 11;

pub(super) const NFTA_SET_NAME: u16 = 2;

pub(super) const NFTA_SET_ID: u16 = 10;

pub(super) const NFT_MSG_DELRULE: u16 = 8;

pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;

pub(super) const NFT_MSG_GETSETELEM: u16 = 13;

pub(super) const NFT_MSG_DELSETELEM: u16 = 14;

pub(super) const NFTA_RULE_TABLE: u16 = 1;

pub(super) const NFTA_RULE_CHAIN: u16 = 2;

pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;

pub(super) const NFTA_RULE_USERDATA: u16 = 7;

pub(super) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

pub(super) const NFTA_LIST_ELEM: u16 = 1;

pub(super) const NFTA_EXPR_NAME: u16 = 1;

pub(super) const NFTA_EXPR_DATA: u16 = 2;

pub(super) const NFTA_DATA_VALUE: u16 = 1;

pub(super) const NFTA_DATA_VERDICT: u16 = 2;

pub(super) const NFTA_VERDICT_CODE: u16 = 1;

pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;

pub(super) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;

pub(super) const NFTA_SET_ELEM_LIST_SET: u16 = 2;

pub(super) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;

pub(super) const NFTA_SET_ELEM_KEY: u16 = 1;

pub(super) const NFTA_SET_ELEM_DATA: u16 = 2;

pub(super) const NFTA_SET_ELEM_EXPIRATION: u16 = 5;

/// Iterates (type, payload) over a run of netlink attributes.
pub(super) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        // The type without the nested and byte-order flags.
        let kind = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (kind, &b[4..len]);
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some(item)
    })
}

/// `kind` { `NFTA_DATA_VALUE` bytes }: how nf_tables nests a value.
pub(super) fn put_data_value(out: &mut Vec<u8>, kind: u16, bytes: &[u8]) {
    nest(out, kind, |d| put_attr(d, NFTA_DATA_VALUE, bytes));
}

/// Big-endian u32 attributes, as nf_tables wants its numbers.
pub(super) fn put_u32s(out: &mut Vec<u8>, pairs: &[(u16, u32)]) {
    for (kind, v) in pairs {
        put_attr(out, *kind, &v.to_be_bytes());
    }
}

/// A nested attribute written in place: `inner` appends its attributes, then the header
/// gets their length (each already padded to 4 bytes).
pub(super) fn nest(out: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = nest_start(out);
    inner(out);
    nest_end(out, start, kind);
}

/// Opens a nested attribute; [`nest_end`] closes it.
pub(super) fn nest_start(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0; 4]);
    out.len() - 4
}

pub(super) fn nest_end(out: &mut [u8], start: usize, kind: u16) {
    let len = out.len() - start;
    assert!(
        len <= usize::from(u16::MAX),
        "netlink attribute of {len} bytes"
    );
    out[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

pub(super) fn put_message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[u8],
) {
    let len = NLMSG_HDR + 4 + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family, version, resource id (big endian; the subsystem for a batch).
    let res_id = if family == 0 { NFNL_SUBSYS_NFTABLES } else { 0 };
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

pub(super) fn put_attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    // A longer attribute would be cut by its 16-bit length and misread by the kernel.
    assert!(
        len <= usize::from(u16::MAX),
        "netlink attribute of {len} bytes"
    );
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

pub(super) fn put_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut b = Vec::with_capacity(s.len() + 1);
    b.extend_from_slice(s.as_bytes());
    b.push(0);
    put_attr(out, kind, &b);
}

pub(super) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
