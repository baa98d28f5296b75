//! The DNS wire format at the server's edge: a query is read straight from the packet
//! (header, the one question, an optional EDNS0 OPT record) without building a message,
//! and an answer is kept as the bytes that follow the question, so a cached answer is
//! sent by copying the client's own question (its ID, flags and letter case) in front of
//! it. Answers are encoded once with hickory-proto (name compression against the
//! question at offset 12, which every echo of the question keeps in place). The size
//! rules live here too: 512 bytes over UDP without EDNS0, the smaller of the client's
//! and the server's EDNS0 payload size with it, TC set and the sections dropped when an
//! answer does not fit, and 65535 over TCP.

use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::answer::Answer;

pub const HEADER_LEN: usize = 12;
/// What a UDP answer may be without EDNS0 (RFC 1035).
pub const CLASSIC_UDP: usize = 512;
/// The largest DNS message (TCP's length prefix).
pub const MAX_MESSAGE: usize = 65535;
/// The EDNS0 OPT record this server adds (no options).
const OPT_LEN: usize = 11;

const TYPE_OPT: u16 = 41;

/// EDNS0 as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query read from a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub id: u16,
    /// Header bytes 2 and 3 as sent.
    pub flags: u16,
    /// The question as sent: name, type and class.
    pub question: &'a [u8],
    /// The name's wire form (within `question`).
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

/// What reading a packet gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    Query(Request<'a>),
    /// Not to be answered at all: too short for a header, or a response.
    Drop,
    /// Answer with this code and no sections (the question echoed when it was read).
    Error {
        id: u16,
        flags: u16,
        rcode: ResponseCode,
        question: Option<&'a [u8]>,
    },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a query packet.
pub fn parse(packet: &[u8]) -> Parsed<'_> {
    if packet.len() < HEADER_LEN {
        return Parsed::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Parsed::Drop;
    }
    let err = |rcode, question| Parsed::Error {
        id,
        flags,
        rcode,
        question,
    };
    let opcode = (flags >> 11) & 0xf;
    let counts = [
        u16::from_be_bytes([packet[4], packet[5]]),
        u16::from_be_bytes([packet[6], packet[7]]),
        u16::from_be_bytes([packet[8], packet[9]]),
        u16::from_be_bytes([packet[10], packet[11]]),
    ];
    if opcode != 0 {
        return err(ResponseCode::NotImp, None);
    }
    if counts[0] != 1 || counts[1] != 0 || counts[2] != 0 || counts[3] > 1 {
        return err(ResponseCode::FormErr, None);
    }
    let Some(name_len) = name_len(&packet[HEADER_LEN..]) else {
        return err(ResponseCode::FormErr, None);
    };
    let qend = HEADER_LEN + name_len + 4;
    if packet.len() < qend {
        return err(ResponseCode::FormErr, None);
    }
    let question = &packet[HEADER_LEN..qend];
    let qname = &question[..name_len];
    let qtype = u16::from_be_bytes([question[name_len], question[name_len + 1]]);
    let qclass = u16::from_be_bytes([question[name_len + 2], question[name_len + 3]]);
    let mut edns = None;
    if counts[3] == 1 {
        match parse_opt(&packet[qend..]) {
            Some(e) => edns = Some(e),
            None => return err(ResponseCode::FormErr, Some(question)),
        }
    }
    Parsed::Query(Request {
        id,
        flags,
        question,
        qname,
        qtype,
        qclass,
        edns,
    })
}

/// The length of an uncompressed name at the start of `b` (labels of at most 63
/// bytes, at most 255 in all); `None` if it is not one.
fn name_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = *b.get(at)? as usize;
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
        if at > 255 {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// The one additional record, which must be an OPT owned by the root.
fn parse_opt(b: &[u8]) -> Option<Edns> {
    if *b.first()? != 0 || u16_at(b, 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(b, 3)?;
    let version = *b.get(6)?;
    let dnssec_ok = *b.get(7)? & 0x80 != 0;
    let rdlen = u16_at(b, 9)? as usize;
    if b.len() < OPT_LEN + rdlen {
        return None;
    }
    Some(Edns {
        payload,
        version,
        dnssec_ok,
    })
}

impl Request<'_> {
    /// The most an answer over UDP may be: 512 without EDNS0, else the client's
    /// payload size (at least 512) capped at the server's.
    pub fn udp_limit(&self, server_max: u16) -> usize {
        match self.edns {
            None => CLASSIC_UDP,
            Some(e) => (e.payload.min(server_max) as usize).max(CLASSIC_UDP),
        }
    }

    /// The lookup key of the question: the name in lower case, then type and class.
    pub fn key_into(&self, key: &mut Vec<u8>) {
        key.clear();
        key.extend(self.qname.iter().map(u8::to_ascii_lowercase));
        key.extend_from_slice(&self.qtype.to_be_bytes());
        key.extend_from_slice(&self.qclass.to_be_bytes());
    }

    /// The question's name, decoded.
    pub fn name(&self) -> Option<Name> {
        let mut d = BinDecoder::new(self.qname);
        Name::read(&mut d).ok()
    }

    pub fn record_type(&self) -> RecordType {
        RecordType::from(self.qtype)
    }

    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x0100 != 0
    }
}

/// An answer encoded once: the header's answer bits and counts, and the sections after
/// the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub authoritative: bool,
    pub rcode: ResponseCode,
    /// answer, authority, additional (without OPT).
    pub counts: [u16; 3],
    pub body: Vec<u8>,
}

impl Encoded {
    /// No sections, only a code.
    pub fn code(rcode: ResponseCode) -> Encoded {
        Encoded {
            authoritative: false,
            rcode,
            counts: [0; 3],
            body: Vec::new(),
        }
    }
}

/// Encodes an answer to `question` (its name in any case; it stays at offset 12).
pub fn encode(question: &[u8], answer: &Answer, authoritative: bool) -> Result<Encoded, String> {
    let mut d = BinDecoder::new(question);
    let q = HQuery::read(&mut d).map_err(|e| e.to_string())?;
    let mut msg = Message::new(0, MessageType::Response, OpCode::Query);
    msg.add_query(q);
    msg.add_answers(answer.answers.iter().cloned());
    msg.add_authorities(answer.authority.iter().cloned());
    msg.add_additionals(answer.additional.iter().cloned());
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let start = HEADER_LEN + question.len();
    if bytes.len() < start {
        return Err("the encoded answer is shorter than its question".into());
    }
    let count = |n: usize| u16::try_from(n).map_err(|_| "too many records".to_string());
    Ok(Encoded {
        authoritative,
        rcode: answer.rcode,
        counts: [
            count(answer.answers.len())?,
            count(answer.authority.len())?,
            count(answer.additional.len())?,
        ],
        body: bytes[start..].to_vec(),
    })
}

/// The server side of a reply.
#[derive(Debug, Clone, Copy)]
pub struct ReplyOptions {
    /// Set RA: the server forwards names outside its zone.
    pub recursion_available: bool,
    /// The EDNS0 payload size the server announces.
    pub server_payload: u16,
    /// The most this reply may be (UDP limit, or 65535).
    pub limit: usize,
}

/// Writes the reply to a query: header, the client's question, the encoded sections
/// (dropped with TC set when they do not fit in `limit`), and an OPT record when the
/// client sent one.
pub fn reply(
    out: &mut Vec<u8>,
    id: u16,
    req_flags: u16,
    question: Option<&[u8]>,
    edns: Option<Edns>,
    enc: &Encoded,
    opts: ReplyOptions,
) {
    out.clear();
    let rcode = u16::from(enc.rcode);
    let qlen = question.map_or(0, <[u8]>::len);
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let full = HEADER_LEN + qlen + enc.body.len() + opt_len;
    let truncated = full > opts.limit;
    let mut flags: u16 = 0x8000 | (req_flags & 0x0110); // QR, and RD and CD as asked
    if enc.authoritative {
        flags |= 0x0400;
    }
    if truncated {
        flags |= 0x0200;
    }
    if opts.recursion_available {
        flags |= 0x0080;
    }
    flags |= rcode & 0x000f;
    let counts = if truncated { [0; 3] } else { enc.counts };
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&u16::from(question.is_some()).to_be_bytes());
    out.extend_from_slice(&counts[0].to_be_bytes());
    out.extend_from_slice(&counts[1].to_be_bytes());
    out.extend_from_slice(&(counts[2] + u16::from(edns.is_some())).to_be_bytes());
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
    if !truncated {
        out.extend_from_slice(&enc.body);
    }
    if let Some(e) = edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&opts.server_payload.to_be_bytes());
        out.push((rcode >> 4) as u8);
        out.push(0);
        out.push(if e.dnssec_ok { 0x80 } else { 0 });
        out.push(0);
        out.extend_from_slice(&0u16.to_be_bytes());
    }
}

/// An error reply (FORMERR, NOTIMP, REFUSED, SERVFAIL, BADVERS…).
pub fn error_reply(
    out: &mut Vec<u8>,
    id: u16,
    req_flags: u16,
    question: Option<&[u8]>,
    edns: Option<Edns>,
    rcode: ResponseCode,
    opts: ReplyOptions,
) {
    reply(
        out,
        id,
        req_flags,
        question,
        edns,
        &Encoded::code(rcode),
        opts,
    );
}

/// Fits an upstream's response to the client: its ID, and TC with no sections when it
/// is larger than `limit` (the client then asks again over TCP).
pub fn fit_forwarded(response: &mut Vec<u8>, id: u16, limit: usize, question: &[u8]) {
    if response.len() < HEADER_LEN {
        return;
    }
    response[0..2].copy_from_slice(&id.to_be_bytes());
    if response.len() <= limit {
        return;
    }
    let flags = u16::from_be_bytes([response[2], response[3]]) | 0x0200;
    let mut out = Vec::with_capacity(HEADER_LEN + question.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    *response = out;
}

/// A query message for `name`/`qtype` with a random ID and RD set, as sent upstream.
pub fn query_message(name: &Name, qtype: RecordType) -> Result<(u16, Vec<u8>), String> {
    let id: u16 = rand::random();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut q = HQuery::query(name.clone(), qtype);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().map(|b| (id, b)).map_err(|e| e.to_string())
}
