//! Names outside the cluster zone go to upstream resolvers (by default the nameservers of
//! the node's `/etc/resolv.conf`, as CoreDNS's `forward . /etc/resolv.conf`): over UDP,
//! again over TCP when the answer comes back truncated, the next upstream on a timeout.
//! Answers are cached for their TTL (at most an hour, a denial at most half an hour, as
//! CoreDNS's cache does) and served with the TTLs counted down.
//!
//! A loop (an upstream that sends queries back to this server, e.g. a DNS pod whose own
//! resolv.conf names the cluster DNS) is found as CoreDNS's `loop` plugin finds it: a
//! probe for a random name is sent upstream, and if that name arrives here as a query the
//! loop is there. The probe goes out before the first query is forwarded — not at start,
//! so a server that is never asked for an outside name sends nothing upstream — and,
//! found, forwarding is refused (SERVFAIL, and an error in the log) instead of looping.
//! An upstream that is one of the server's own addresses is refused at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::OnceCell;

/// The longest a forwarded answer is cached.
const MAX_TTL: u32 = 3600;
/// The longest a denial (NXDOMAIN, NODATA) is cached.
const MAX_DENIAL_TTL: u32 = 1800;
/// Cached answers at most; past it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver is configured")]
    NoUpstream,
    #[error(
        "forwarding loop: a probe sent to {upstreams} came back to this server, so forwarding is off; \
         give upstreams that do not lead back here (a DNS pod needs dnsPolicy: Default)"
    )]
    Loop { upstreams: String },
    #[error("no upstream answered {name} {qtype}: {why}")]
    Failed {
        name: String,
        qtype: String,
        why: String,
    },
    #[error("upstream {upstream} is this server's own address {own}: that is a loop")]
    OwnAddress {
        upstream: SocketAddr,
        own: SocketAddr,
    },
}

struct Cached {
    message: Message,
    stored: Instant,
    ttl: u32,
}

/// The forwarder with its cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    cache: Mutex<HashMap<(Name, RecordType), Cached>>,
    probe: Name,
    probe_seen: AtomicU32,
    checked: OnceCell<bool>,
}

impl Forwarder {
    /// A forwarder to `upstreams`; refuses one that is among `own` (the server's
    /// listening addresses).
    pub fn new(
        upstreams: Vec<SocketAddr>,
        own: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Forwarder, ForwardError> {
        for u in &upstreams {
            if let Some(o) = own.iter().find(|o| {
                o.port() == u.port()
                    && (o.ip() == u.ip() || (o.ip().is_unspecified() && u.ip().is_loopback()))
            }) {
                return Err(ForwardError::OwnAddress {
                    upstream: *u,
                    own: *o,
                });
            }
        }
        let probe = format!(
            "{:016x}.{:016x}.podnet-loop-probe.",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        Ok(Forwarder {
            upstreams,
            timeout,
            cache: Mutex::new(HashMap::new()),
            probe: Name::from_ascii(&probe).unwrap_or_else(|_| Name::root()),
            probe_seen: AtomicU32::new(0),
            checked: OnceCell::new(),
        })
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Whether a query for `name` is this server's loop probe (counted: it arrived).
    pub fn is_probe(&self, name: &Name) -> bool {
        if name.eq_ignore_root(&self.probe) {
            self.probe_seen.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// The probe, once: false when a loop was found.
    async fn loop_free(&self) -> bool {
        *self
            .checked
            .get_or_init(|| async {
                let _ = self.ask(&self.probe, RecordType::HINFO).await;
                let looped = self.probe_seen.load(Ordering::Relaxed) > 0;
                if looped {
                    tracing::error!(upstreams = %self.upstream_list(), "forwarding loop detected: queries sent upstream come back to this server; forwarding is off");
                }
                !looped
            })
            .await
    }

    fn upstream_list(&self) -> String {
        self.upstreams
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What upstream says of `name`/`qtype`, from the cache while it is fresh. The
    /// message's TTLs are counted down by the time it was cached.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let key = (name.to_lowercase(), qtype);
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        if !self.loop_free().await {
            return Err(ForwardError::Loop {
                upstreams: self.upstream_list(),
            });
        }
        let message = self.ask(name, qtype).await?;
        if let Some(ttl) = cache_ttl(&message) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    message: message.clone(),
                    stored: Instant::now(),
                    ttl,
                },
            );
        }
        Ok(message)
    }

    fn cached(&self, key: &(Name, RecordType)) -> Option<Message> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(key)?;
        let age = entry.stored.elapsed().as_secs() as u32;
        if age >= entry.ttl {
            cache.remove(key);
            return None;
        }
        let mut m = entry.message.clone();
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    /// Asks each upstream in turn until one answers.
    async fn ask(&self, name: &Name, qtype: RecordType) -> Result<Message, ForwardError> {
        let mut why = String::from("no upstream");
        for upstream in &self.upstreams {
            match self.ask_one(*upstream, name, qtype).await {
                Ok(m) => return Ok(m),
                Err(e) => why = format!("{upstream}: {e}"),
            }
        }
        Err(ForwardError::Failed {
            name: name.to_string(),
            qtype: qtype.to_string(),
            why,
        })
    }

    async fn ask_one(
        &self,
        upstream: SocketAddr,
        name: &Name,
        qtype: RecordType,
    ) -> Result<Message, String> {
        let (id, query) = crate::wire::query_message(name, qtype)?;
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
        } else {
            "[::]:0".parse().map_err(|e| format!("{e}"))?
        };
        let sock = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
        sock.connect(upstream).await.map_err(|e| e.to_string())?;
        sock.send(&query).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + self.timeout;
        let message = loop {
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                .await
                .map_err(|_| format!("no answer in {:?}", self.timeout))?
                .map_err(|e| e.to_string())?;
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if m.metadata.id == id && answers(&m, name, qtype) {
                break m;
            }
        };
        if !message.metadata.truncation {
            return Ok(message);
        }
        tokio::time::timeout_at(deadline, self.ask_tcp(upstream, &query, id))
            .await
            .map_err(|_| format!("no answer over TCP in {:?}", self.timeout))?
    }

    async fn ask_tcp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Message, String> {
        let mut s = TcpStream::connect(upstream)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        let len = u16::try_from(query.len()).map_err(|e| e.to_string())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        s.write_all(&framed)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        let n = s.read_u16().await.map_err(|e| format!("TCP: {e}"))? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf)
            .await
            .map_err(|e| format!("TCP: {e}"))?;
        let m = Message::from_vec(&buf).map_err(|e| format!("TCP: {e}"))?;
        if m.metadata.id != id {
            return Err("TCP: the answer's ID is not the query's".into());
        }
        Ok(m)
    }
}

/// Whether `m` is the answer to the question.
fn answers(m: &Message, name: &Name, qtype: RecordType) -> bool {
    m.queries
        .first()
        .is_some_and(|q| q.query_type() == qtype && q.name().eq_ignore_root(name))
}

/// How long an upstream answer may be kept: the smallest TTL of its records (a denial:
/// of its SOA, bounded by the SOA's minimum); `None` for what is not cached (SERVFAIL,
/// REFUSED, a truncated answer).
fn cache_ttl(m: &Message) -> Option<u32> {
    match m.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        _ => return None,
    }
    if m.metadata.truncation {
        return None;
    }
    if !m.answers.is_empty() {
        let ttl = m.answers.iter().map(|r| r.ttl).min()?;
        return Some(ttl.min(MAX_TTL));
    }
    let soa = m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    Some(soa.unwrap_or(0).min(MAX_DENIAL_TTL)).filter(|t| *t > 0)
}

/// The reply to a client from an upstream message: the client's ID and question, its
/// EDNS0 (or none), `prefix` (an ExternalName's CNAME) before the upstream's answers.
pub fn client_reply(
    upstream: &Message,
    id: u16,
    client_flags: u16,
    question: &[u8],
    client_edns: Option<crate::wire::Edns>,
    server_payload: u16,
    prefix: &[Record],
) -> Result<Vec<u8>, String> {
    let mut m = Message::new(
        id,
        hickory_proto::op::MessageType::Response,
        hickory_proto::op::OpCode::Query,
    );
    m.metadata.response_code = upstream.metadata.response_code;
    m.metadata.recursion_desired = client_flags & 0x0100 != 0;
    m.metadata.checking_disabled = client_flags & 0x0010 != 0;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = !prefix.is_empty();
    let mut d = hickory_proto::serialize::binary::BinDecoder::new(question);
    let q =
        <hickory_proto::op::Query as hickory_proto::serialize::binary::BinDecodable>::read(&mut d)
            .map_err(|e| e.to_string())?;
    m.add_query(q);
    m.add_answers(prefix.iter().cloned());
    m.add_answers(upstream.answers.iter().cloned());
    m.add_authorities(upstream.authorities.iter().cloned());
    m.add_additionals(upstream.additionals.iter().cloned());
    if let Some(e) = client_edns {
        let mut edns = Edns::new();
        edns.set_max_payload(server_payload);
        edns.set_dnssec_ok(e.dnssec_ok);
        m.set_edns(edns);
    }
    m.to_vec().map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn own_address_is_refused() {
        let own: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let up: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert!(matches!(
            Forwarder::new(vec![up], &[own], Duration::from_secs(1)),
            Err(ForwardError::OwnAddress { .. })
        ));
        let other: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        assert!(Forwarder::new(vec![other], &[own], Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn probe_is_recognised_and_counted() {
        let f = Forwarder::new(vec![], &[], Duration::from_secs(1)).unwrap();
        let probe = f.probe.clone();
        assert!(!f.is_probe(&Name::from_ascii("example.org.").unwrap()));
        assert!(f.is_probe(&probe));
        assert_eq!(f.probe_seen.load(Ordering::Relaxed), 1);
    }
}
