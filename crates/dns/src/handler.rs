//! One query in, one decision out: a reply written from the zone (through a per-thread
//! cache of encoded answers, dropped whenever the cluster changes), an error reply, a
//! job for the forwarder, or nothing. Both transports use it; only the size limit
//! differs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};

use crate::answer::{Outcome, ZoneConfig, resolve};
use crate::forward::Forwarder;
use crate::index::Index;
use crate::wire::{self, Encoded, Parsed, ReplyOptions};

/// Encoded answers kept per thread at most; past it the cache starts over.
const CACHE_ENTRIES: usize = 100_000;

/// Server-wide settings of replies.
#[derive(Debug, Clone, Copy)]
pub struct ReplyConfig {
    /// The EDNS0 UDP payload size announced and honoured (1232, DNS flag day 2020).
    pub max_udp: u16,
}

impl Default for ReplyConfig {
    fn default() -> ReplyConfig {
        ReplyConfig { max_udp: 1232 }
    }
}

/// What every worker shares: the index, the zone, the forwarder.
pub struct Shared {
    index: RwLock<Index>,
    generation: AtomicU64,
    synced: AtomicBool,
    pub zone: ZoneConfig,
    pub replies: ReplyConfig,
    pub forwarder: Option<Arc<Forwarder>>,
}

impl Shared {
    pub fn new(
        zone: ZoneConfig,
        replies: ReplyConfig,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Shared {
        Shared {
            index: RwLock::new(Index::new()),
            generation: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            zone,
            replies,
            forwarder,
        }
    }

    /// Reads the index.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the index; cached answers older than the change are dropped.
    pub fn update<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut idx: RwLockWriteGuard<'_, Index> =
            self.index.write().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut idx);
        self.generation.store(idx.generation(), Ordering::Release);
        out
    }

    /// Whether every watch has listed once (before that, zone names get SERVFAIL).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    fn options(&self, limit: usize) -> ReplyOptions {
        ReplyOptions {
            recursion_available: self.forwarder.is_some(),
            server_payload: self.replies.max_udp,
            limit,
        }
    }
}

/// The answers one worker encoded, by question.
#[derive(Default)]
pub struct AnswerCache {
    map: HashMap<Box<[u8]>, (u64, Encoded)>,
    key: Vec<u8>,
}

/// A query for the forwarder.
#[derive(Debug, Clone)]
pub struct ForwardJob {
    pub id: u16,
    pub flags: u16,
    pub question: Vec<u8>,
    pub name: Name,
    pub qtype: RecordType,
    pub edns: Option<wire::Edns>,
    pub limit: usize,
    /// An ExternalName's CNAME, answered before what upstream says of its target.
    pub prefix: Vec<Record>,
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Action {
    /// Send what was written to the output buffer.
    Reply,
    Forward(ForwardJob),
    Drop,
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Decides what to do with `packet`; a reply is written to `out`.
pub fn handle(
    shared: &Shared,
    packet: &[u8],
    transport: Transport,
    cache: &mut AnswerCache,
    out: &mut Vec<u8>,
) -> Action {
    let q = match wire::parse(packet) {
        Parsed::Drop => return Action::Drop,
        Parsed::Error {
            id,
            flags,
            rcode,
            question,
        } => {
            wire::error_reply(
                out,
                id,
                flags,
                question,
                None,
                rcode,
                shared.options(wire::CLASSIC_UDP),
            );
            return Action::Reply;
        }
        Parsed::Query(q) => q,
    };
    let limit = match transport {
        Transport::Udp => q.udp_limit(shared.replies.max_udp),
        Transport::Tcp => wire::MAX_MESSAGE,
    };
    let opts = shared.options(limit);
    let error = |out: &mut Vec<u8>, rcode| {
        wire::error_reply(out, q.id, q.flags, Some(q.question), q.edns, rcode, opts);
        Action::Reply
    };
    if q.edns.is_some_and(|e| e.version != 0) {
        return error(out, ResponseCode::BADVERS);
    }
    if q.qclass != 1 {
        return error(out, ResponseCode::Refused);
    }
    q.key_into(&mut cache.key);
    let generation = shared.generation.load(Ordering::Acquire);
    if let Some((g, enc)) = cache.map.get(&cache.key[..])
        && *g == generation
    {
        wire::reply(out, q.id, q.flags, Some(q.question), q.edns, enc, opts);
        return Action::Reply;
    }
    let Some(name) = q.name() else {
        return error(out, ResponseCode::FormErr);
    };
    let qtype = q.record_type();
    let outcome = {
        let idx = shared.read();
        resolve(&idx, &shared.zone, &name, qtype)
    };
    let job = |prefix: Vec<Record>| ForwardJob {
        id: q.id,
        flags: q.flags,
        question: q.question.to_vec(),
        name: name.clone(),
        qtype,
        edns: q.edns,
        limit,
        prefix,
    };
    match outcome {
        Outcome::Zone(_) | Outcome::Chase(..) if !shared.synced() => {
            error(out, ResponseCode::ServFail)
        }
        Outcome::Zone(answer) => match wire::encode(q.question, &answer, true) {
            Ok(enc) => {
                wire::reply(out, q.id, q.flags, Some(q.question), q.edns, &enc, opts);
                if cache.map.len() >= CACHE_ENTRIES {
                    cache.map.clear();
                }
                cache
                    .map
                    .insert(cache.key.clone().into_boxed_slice(), (generation, enc));
                Action::Reply
            }
            Err(e) => {
                tracing::warn!(name = %name, qtype = %qtype, error = %e, "encode an answer");
                error(out, ResponseCode::ServFail)
            }
        },
        Outcome::Chase(answer, _) => match &shared.forwarder {
            // Without upstreams the CNAME alone is the answer.
            None => match wire::encode(q.question, &answer, true) {
                Ok(enc) => {
                    wire::reply(out, q.id, q.flags, Some(q.question), q.edns, &enc, opts);
                    Action::Reply
                }
                Err(_) => error(out, ResponseCode::ServFail),
            },
            Some(_) => Action::Forward(job(answer.answers)),
        },
        Outcome::Forward => match &shared.forwarder {
            None => error(out, ResponseCode::Refused),
            Some(f) if f.is_probe(&name) => error(out, ResponseCode::ServFail),
            Some(_) => Action::Forward(job(Vec::new())),
        },
    }
}

/// Runs a forward job: the reply for the client, or SERVFAIL.
pub async fn forward(shared: &Shared, job: ForwardJob) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = shared.options(job.limit);
    let Some(forwarder) = &shared.forwarder else {
        wire::error_reply(
            &mut out,
            job.id,
            job.flags,
            Some(&job.question),
            job.edns,
            ResponseCode::Refused,
            opts,
        );
        return out;
    };
    let target = match job.prefix.last().map(|r| &r.data) {
        Some(hickory_proto::rr::RData::CNAME(c)) => c.0.clone(),
        _ => job.name.clone(),
    };
    match forwarder.resolve(&target, job.qtype).await {
        Ok(message) => match crate::forward::client_reply(
            &message,
            job.id,
            job.flags,
            &job.question,
            job.edns,
            shared.replies.max_udp,
            &job.prefix,
        ) {
            Ok(mut bytes) => {
                wire::fit_forwarded(&mut bytes, job.id, job.limit, &job.question);
                return bytes;
            }
            Err(e) => tracing::warn!(name = %job.name, error = %e, "encode a forwarded answer"),
        },
        Err(e) => tracing::debug!(name = %job.name, error = %e, "forward"),
    }
    wire::error_reply(
        &mut out,
        job.id,
        job.flags,
        Some(&job.question),
        job.edns,
        ResponseCode::ServFail,
        opts,
    );
    out
}
