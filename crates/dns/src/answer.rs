//! What the cluster zone answers, as a pure function of the index: the Kubernetes DNS
//! specification (schema 1.1.0) with CoreDNS's kubernetes plugin behaviour where the spec
//! leaves room — NXDOMAIN for a name that does not exist, NODATA (NOERROR, no answer) for
//! a name that exists without records of the type asked (an IPv4 Service asked AAAA, a
//! namespace, `svc.<zone>`), the zone's SOA in the authority section of both, the
//! schema version TXT, SRV for named ports, headless Services by endpoint, ExternalName
//! as a CNAME, pod records `a-b-c-d.<ns>.pod.<zone>` and PTR for cluster IPs and
//! endpoints. Kept free of sockets so every rule is tested without a network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::index::{Index, ServiceKind, dashed};

/// The schema version `dns-version.<zone>` answers.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// The TTL of the schema version record (CoreDNS's).
pub const VERSION_TTL: u32 = 28800;

/// How pod records `a-b-c-d.<ns>.pod.<zone>` are answered (CoreDNS's `pods` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodMode {
    /// Not at all: NXDOMAIN.
    Disabled,
    /// Only when a pod of that namespace has the address (the default here).
    #[default]
    Verified,
    /// Any well-formed address, as kube-dns did (kubeadm's Corefile default).
    Insecure,
}

impl FromStr for PodMode {
    type Err = String;
    fn from_str(s: &str) -> Result<PodMode, String> {
        match s {
            "disabled" => Ok(PodMode::Disabled),
            "verified" => Ok(PodMode::Verified),
            "insecure" => Ok(PodMode::Insecure),
            other => Err(format!(
                "unknown pod mode {other:?}: use verified, insecure or disabled"
            )),
        }
    }
}

/// The cluster zone's settings.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, lower-case, e.g. `cluster.local`.
    pub domain: String,
    labels: Vec<String>,
    zone: Name,
    mname: Name,
    rname: Name,
    ns_name: Name,
    /// TTL of every record (and of negative answers).
    pub ttl: u32,
    pub pods: PodMode,
    /// Addresses of `ns.dns.<zone>`; when empty, the cluster IPs of `dns_service`.
    pub ns_addrs: Vec<IpAddr>,
    /// The Service in front of the DNS servers (`kube-system/kube-dns`).
    pub dns_service: Option<(String, String)>,
}

/// A cluster domain that is not a DNS name.
#[derive(Debug, thiserror::Error)]
#[error("cluster domain {domain:?} is not a valid DNS name: {why}")]
pub struct BadDomain {
    pub domain: String,
    pub why: String,
}

impl ZoneConfig {
    pub fn new(domain: &str, ttl: u32) -> Result<ZoneConfig, BadDomain> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let bad = |why: String| BadDomain {
            domain: domain.clone(),
            why,
        };
        if domain.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let name = |s: String| Name::from_ascii(&s).map_err(|e| bad(e.to_string()));
        let zone = name(format!("{domain}."))?;
        Ok(ZoneConfig {
            labels: domain.split('.').map(str::to_string).collect(),
            mname: name(format!("ns.dns.{domain}."))?,
            rname: name(format!("hostmaster.{domain}."))?,
            ns_name: name(format!("ns.dns.{domain}."))?,
            zone,
            domain,
            ttl,
            pods: PodMode::default(),
            ns_addrs: Vec::new(),
            dns_service: Some(("kube-system".into(), "kube-dns".into())),
        })
    }

    /// The zone's apex name.
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    fn soa(&self, serial: u32) -> Record {
        Record::from_rdata(
            self.zone.clone(),
            self.ttl,
            RData::SOA(SOA::new(
                self.mname.clone(),
                self.rname.clone(),
                serial,
                7200,
                1800,
                86400,
                self.ttl,
            )),
        )
    }
}

/// An answer from the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

impl Answer {
    fn new(rcode: ResponseCode) -> Answer {
        Answer {
            rcode,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by the cluster zone (authoritatively).
    Zone(Answer),
    /// An ExternalName CNAME to a name outside the zone: answer with it, and add what
    /// the upstream resolvers say of the target.
    Chase(Answer, Name),
    /// Not the cluster's: ask upstream.
    Forward,
}

/// Labels of a name, lower-case, left to right (`web`, `default`, `svc`, …).
fn labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

/// Answers `qname`/`qtype` (class IN) from the index.
pub fn resolve(index: &Index, cfg: &ZoneConfig, qname: &Name, qtype: RecordType) -> Outcome {
    let all = labels(qname);
    if let Some(ip) = reverse_address(&all) {
        return reverse(index, cfg, qname, qtype, ip);
    }
    let zl = cfg.labels.len();
    if all.len() < zl || all[all.len() - zl..] != cfg.labels[..] {
        return Outcome::Forward;
    }
    let rel = &all[..all.len() - zl];
    let mut z = Zone {
        index,
        cfg,
        qname,
        qtype,
        answer: Answer::new(ResponseCode::NoError),
    };
    let exists = z.lookup(rel);
    let mut answer = z.answer;
    match exists {
        Found::Chase(target) => return Outcome::Chase(answer, target),
        Found::NoName => {
            answer.rcode = ResponseCode::NXDomain;
            answer.answers.clear();
            answer.additional.clear();
        }
        Found::Name => {}
    }
    if answer.answers.is_empty() {
        answer.authority.push(cfg.soa(index.serial()));
    }
    Outcome::Zone(answer)
}

/// Whether a name was found (its records, if any, are in the answer).
enum Found {
    /// The name exists (NODATA when no record of the type was added).
    Name,
    /// NXDOMAIN.
    NoName,
    /// A CNAME out of the zone (already in the answer).
    Chase(Name),
}

struct Zone<'a> {
    index: &'a Index,
    cfg: &'a ZoneConfig,
    qname: &'a Name,
    qtype: RecordType,
    answer: Answer,
}

impl Zone<'_> {
    fn wants(&self, t: RecordType) -> bool {
        self.qtype == t || self.qtype == RecordType::ANY
    }

    fn add(&mut self, owner: &Name, ttl: u32, data: RData) {
        self.answer
            .answers
            .push(Record::from_rdata(owner.clone(), ttl, data));
    }

    /// A/AAAA of `ips` owned by `owner`, those the query type asks for.
    fn add_addresses(&mut self, owner: &Name, ips: impl IntoIterator<Item = IpAddr>) {
        let ttl = self.cfg.ttl;
        for ip in ips {
            match ip {
                IpAddr::V4(v4) if self.wants(RecordType::A) => {
                    self.add(owner, ttl, RData::A(A(v4)))
                }
                IpAddr::V6(v6) if self.wants(RecordType::AAAA) => {
                    self.add(owner, ttl, RData::AAAA(AAAA(v6)))
                }
                _ => {}
            }
        }
    }

    fn additional_address(&mut self, owner: &Name, ip: IpAddr) {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.answer
            .additional
            .push(Record::from_rdata(owner.clone(), self.cfg.ttl, data));
    }

    /// The addresses of `ns.dns.<zone>`.
    fn ns_addrs(&self) -> Vec<IpAddr> {
        if !self.cfg.ns_addrs.is_empty() {
            return self.cfg.ns_addrs.clone();
        }
        let Some((ns, name)) = &self.cfg.dns_service else {
            return Vec::new();
        };
        match self.index.service(ns, name).map(|s| &s.kind) {
            Some(ServiceKind::ClusterIp(ips)) => ips.clone(),
            _ => Vec::new(),
        }
    }

    fn name(&self, relative: &str) -> Option<Name> {
        Name::from_ascii(format!("{relative}.{}.", self.cfg.domain)).ok()
    }

    fn lookup(&mut self, rel: &[String]) -> Found {
        let ttl = self.cfg.ttl;
        match rel {
            [] => {
                let zone = self.cfg.zone.clone();
                if self.wants(RecordType::SOA) {
                    let soa = self.cfg.soa(self.index.serial());
                    self.answer.answers.push(soa);
                }
                if self.wants(RecordType::NS) {
                    let ns = self.cfg.ns_name.clone();
                    self.add(&zone, ttl, RData::NS(NS(ns.clone())));
                    for ip in self.ns_addrs() {
                        self.additional_address(&ns, ip);
                    }
                }
                Found::Name
            }
            [v] if v == "dns-version" => {
                if self.wants(RecordType::TXT) {
                    let owner = self.qname.to_lowercase();
                    self.add(
                        &owner,
                        VERSION_TTL,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
                    );
                }
                Found::Name
            }
            [d] if d == "dns" => Found::Name,
            [n, d] if n == "ns" && d == "dns" => {
                let owner = self.qname.to_lowercase();
                let addrs = self.ns_addrs();
                self.add_addresses(&owner, addrs);
                Found::Name
            }
            [.., last] if last == "svc" => self.svc(&rel[..rel.len() - 1]),
            [.., last] if last == "pod" => self.pod(&rel[..rel.len() - 1]),
            _ => Found::NoName,
        }
    }

    fn namespace(&self, ns: &str) -> Found {
        if self.index.namespace_exists(ns) {
            Found::Name
        } else {
            Found::NoName
        }
    }

    /// Names under `svc.<zone>`; `rel` without the `svc` label.
    fn svc(&mut self, rel: &[String]) -> Found {
        match rel {
            [] => Found::Name,
            [ns] => self.namespace(ns),
            [svc, ns] => self.service(ns, svc),
            [first, svc, ns] => {
                if let Some(proto) = first.strip_prefix('_') {
                    // `_tcp.<svc>`: an empty non-terminal when a named port of that
                    // protocol exists.
                    return self.srv(ns, svc, None, proto);
                }
                self.endpoint(ns, svc, first)
            }
            [port, proto, svc, ns] => match (port.strip_prefix('_'), proto.strip_prefix('_')) {
                (Some(port), Some(proto)) => self.srv(ns, svc, Some(port), proto),
                _ => Found::NoName,
            },
            _ => Found::NoName,
        }
    }

    fn service(&mut self, ns: &str, name: &str) -> Found {
        if !self.index.namespace_exists(ns) {
            return Found::NoName;
        }
        let Some(svc) = self.index.service(ns, name) else {
            return Found::NoName;
        };
        let owner = self.qname.to_lowercase();
        let ttl = self.cfg.ttl;
        match &svc.kind {
            ServiceKind::ExternalName(target) => {
                let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                    return Found::Name;
                };
                self.add(&owner, ttl, RData::CNAME(CNAME(target.clone())));
                if self.qtype == RecordType::CNAME {
                    return Found::Name;
                }
                // A target inside the cluster zone is followed here; one outside is
                // asked of upstream.
                if self.cfg.zone.zone_of(&target) {
                    let labels = labels(&target);
                    let rel = labels[..labels.len() - self.cfg.labels.len()].to_vec();
                    let mut inner = Zone {
                        index: self.index,
                        cfg: self.cfg,
                        qname: &target,
                        qtype: self.qtype,
                        answer: Answer::new(ResponseCode::NoError),
                    };
                    if let [.., last] = rel.as_slice()
                        && last == "svc"
                        && rel.len() == 3
                    {
                        inner.lookup(&rel);
                        self.answer.answers.extend(inner.answer.answers);
                    }
                    return Found::Name;
                }
                Found::Chase(target)
            }
            ServiceKind::ClusterIp(ips) => {
                let ips = ips.clone();
                self.add_addresses(&owner, ips.iter().copied());
                if self.qtype == RecordType::SRV {
                    // CoreDNS answers SRV for the service name too: one per port.
                    let ports = svc.ports.clone();
                    self.cluster_srv(&owner, &ips, ports.iter().map(|p| p.port));
                }
                Found::Name
            }
            ServiceKind::Headless => {
                let ready = self.index.ready_addresses(ns, name);
                if ready.is_empty() {
                    return Found::NoName;
                }
                self.add_addresses(&owner, ready.iter().map(|a| a.ip));
                if self.qtype == RecordType::SRV {
                    let ports: Vec<u16> = self
                        .index
                        .endpoint_ports(ns, name)
                        .iter()
                        .map(|p| p.port)
                        .collect();
                    self.headless_srv(ns, name, &ready, &ports);
                }
                Found::Name
            }
        }
    }

    /// SRV records of a cluster IP service, the target being the service's name.
    fn cluster_srv(&mut self, owner: &Name, ips: &[IpAddr], ports: impl Iterator<Item = u16>) {
        let Some(target) = self.service_name_of(owner) else {
            return;
        };
        let ports: Vec<u16> = ports.collect();
        let weight = weight_of(ports.len());
        for port in &ports {
            self.add(
                owner,
                self.cfg.ttl,
                RData::SRV(SRV::new(0, weight, *port, target.clone())),
            );
        }
        if !ports.is_empty() {
            for ip in ips {
                self.additional_address(&target, *ip);
            }
        }
    }

    /// `<svc>.<ns>.svc.<zone>` from a name that ends with it.
    fn service_name_of(&self, owner: &Name) -> Option<Name> {
        let n = self.cfg.labels.len() + 3;
        let labels = labels(owner);
        (labels.len() >= n)
            .then(|| Name::from_ascii(format!("{}.", labels[labels.len() - n..].join("."))).ok())?
    }

    fn headless_srv(
        &mut self,
        ns: &str,
        svc: &str,
        ready: &[crate::index::ReadyAddress],
        ports: &[u16],
    ) {
        let owner = self.qname.to_lowercase();
        let weight = weight_of(ready.len() * ports.len());
        let mut targets: Vec<(Name, IpAddr)> = Vec::new();
        for addr in ready {
            let Some(target) = self.name(&format!("{}.{svc}.{ns}.svc", addr.name)) else {
                continue;
            };
            for port in ports {
                let data = RData::SRV(SRV::new(0, weight, *port, target.clone()));
                if !self.answer.answers.iter().any(|r| r.data == data) {
                    self.add(&owner, self.cfg.ttl, data);
                }
            }
            if !ports.is_empty() {
                targets.push((target, addr.ip));
            }
        }
        for (target, ip) in targets {
            self.additional_address(&target, ip);
        }
    }

    /// `_<port>._<proto>.<svc>` (`port` set) or the empty non-terminal `_<proto>.<svc>`.
    fn srv(&mut self, ns: &str, name: &str, port: Option<&str>, proto: &str) -> Found {
        if !self.index.namespace_exists(ns) {
            return Found::NoName;
        }
        let Some(svc) = self.index.service(ns, name) else {
            return Found::NoName;
        };
        let matching: Vec<_> = svc
            .ports
            .iter()
            .filter(|p| p.protocol == proto && port.is_none_or(|n| n == p.name))
            .cloned()
            .collect();
        if matching.is_empty() || matches!(svc.kind, ServiceKind::ExternalName(_)) {
            return Found::NoName;
        }
        if port.is_none() || !self.wants(RecordType::SRV) {
            return Found::Name;
        }
        let owner = self.qname.to_lowercase();
        match &svc.kind {
            ServiceKind::ClusterIp(ips) => {
                let ips = ips.clone();
                self.cluster_srv(&owner, &ips, matching.iter().map(|p| p.port));
                Found::Name
            }
            ServiceKind::Headless => {
                let ready = self.index.ready_addresses(ns, name);
                if ready.is_empty() {
                    return Found::NoName;
                }
                // The endpoint's (target) port of the same name and protocol.
                let ports: Vec<u16> = self
                    .index
                    .endpoint_ports(ns, name)
                    .iter()
                    .filter(|p| {
                        matching
                            .iter()
                            .any(|m| m.name == p.name && m.protocol == p.protocol)
                    })
                    .map(|p| p.port)
                    .collect();
                self.headless_srv(ns, name, &ready, &ports);
                Found::Name
            }
            ServiceKind::ExternalName(_) => Found::NoName,
        }
    }

    /// `<endpoint>.<svc>.<ns>.svc.<zone>`: the ready endpoints of that name.
    fn endpoint(&mut self, ns: &str, svc: &str, endpoint: &str) -> Found {
        if !self.index.namespace_exists(ns) {
            return Found::NoName;
        }
        match self.index.service(ns, svc) {
            None => return Found::NoName,
            Some(s) if matches!(s.kind, ServiceKind::ExternalName(_)) => return Found::NoName,
            Some(_) => {}
        }
        let ips: Vec<IpAddr> = self
            .index
            .ready_addresses(ns, svc)
            .into_iter()
            .filter(|a| a.name == endpoint)
            .map(|a| a.ip)
            .collect();
        if ips.is_empty() {
            return Found::NoName;
        }
        let owner = self.qname.to_lowercase();
        self.add_addresses(&owner, ips);
        Found::Name
    }

    /// Names under `pod.<zone>`; `rel` without the `pod` label.
    fn pod(&mut self, rel: &[String]) -> Found {
        match rel {
            [] => Found::Name,
            [ns] => self.namespace(ns),
            [ip, ns] => {
                if self.cfg.pods == PodMode::Disabled || !self.index.namespace_exists(ns) {
                    return Found::NoName;
                }
                let Some(ip) = pod_address(ip) else {
                    return Found::NoName;
                };
                if self.cfg.pods == PodMode::Verified && !self.index.pod_at(ns, &ip) {
                    return Found::NoName;
                }
                let owner = self.qname.to_lowercase();
                self.add_addresses(&owner, [ip]);
                Found::Name
            }
            _ => Found::NoName,
        }
    }
}

/// SRV weight when `n` records share priority 0 (CoreDNS's: 100 split evenly).
fn weight_of(n: usize) -> u16 {
    (100 / n.max(1)).max(1) as u16
}

/// The address of a pod label: `10-244-1-5`, or an IPv6 address with `-` for `:`.
fn pod_address(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        label
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        label
            .replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    }
}

/// The address of a full reverse name (`d.c.b.a.in-addr.arpa`, 32 nibbles of
/// `ip6.arpa`); `None` for anything else.
fn reverse_address(labels: &[String]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, inaddr, arpa] if inaddr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &str| -> Option<u8> {
                (!s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse().ok())?
            };
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                let [c] = nibble.as_bytes() else {
                    return None;
                };
                let digit = (*c as char).to_digit(16)?;
                value = (value << 4) | u128::from(digit);
            }
            Some(IpAddr::V6(Ipv6Addr::from(value)))
        }
        _ => None,
    }
}

/// PTR for cluster IPs (first) and endpoint addresses; unknown addresses go upstream
/// (CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
fn reverse(
    index: &Index,
    cfg: &ZoneConfig,
    qname: &Name,
    qtype: RecordType,
    ip: IpAddr,
) -> Outcome {
    let mut targets: Vec<String> = Vec::new();
    if let Some((ns, name)) = index.services_at(&ip).next() {
        targets.push(format!("{name}.{ns}.svc.{}.", cfg.domain));
    } else {
        for ((ns, svc), endpoint) in index.endpoints_at(&ip) {
            targets.push(format!("{endpoint}.{svc}.{ns}.svc.{}.", cfg.domain));
        }
    }
    if targets.is_empty() {
        return Outcome::Forward;
    }
    let mut answer = Answer::new(ResponseCode::NoError);
    if qtype == RecordType::PTR || qtype == RecordType::ANY {
        let owner = qname.to_lowercase();
        for t in targets {
            if let Ok(target) = Name::from_ascii(&t) {
                answer.answers.push(Record::from_rdata(
                    owner.clone(),
                    cfg.ttl,
                    RData::PTR(PTR(target)),
                ));
            }
        }
    }
    if answer.answers.is_empty() {
        // The reverse zones have no SOA of ours; the cluster zone's stands in, as
        // CoreDNS's does.
        answer.authority.push(cfg.soa(index.serial()));
    }
    Outcome::Zone(answer)
}

/// The dashed label of an address (re-exported for callers building pod names).
pub fn address_label(ip: &IpAddr) -> String {
    dashed(ip)
}
