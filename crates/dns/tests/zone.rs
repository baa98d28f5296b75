//! The zone's answers, checked through the same handler the sockets use (bytes in,
//! bytes out), against the Kubernetes DNS specification's examples and CoreDNS's
//! kubernetes plugin tests: records, NXDOMAIN vs NODATA with the SOA, TTLs, SRV, headless,
//! ExternalName, pods, PTR; and the wire rules: EDNS0, TC, FORMERR, NOTIMP, BADVERS.
#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use podnet_dns::handler::{self, Action, AnswerCache, Transport};
use podnet_dns::{ReplyConfig, Shared, ZoneConfig};
use serde_json::json;

mod common;
use common::{cluster, obj, slice};

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask_raw(shared: &Shared, packet: &[u8], t: Transport) -> Option<Vec<u8>> {
    let mut cache = AnswerCache::default();
    let mut out = Vec::new();
    match handler::handle(shared, packet, t, &mut cache, &mut out) {
        Action::Reply => Some(out),
        Action::Drop => None,
        Action::Forward(_) => panic!("forwarded"),
    }
}

fn ask(shared: &Shared, name: &str, qtype: RecordType) -> Message {
    Message::from_vec(&ask_raw(shared, &query(name, qtype, None), Transport::Udp).unwrap()).unwrap()
}

/// The answer section as `name ttl type data` lines, sorted.
fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

fn assert_negative(m: &Message, rcode: ResponseCode) {
    assert_eq!(m.metadata.response_code, rcode, "{m:?}");
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1, "SOA in authority: {m:?}");
    let soa = &m.authorities[0];
    assert_eq!(soa.name.to_string(), "cluster.local.");
    assert_eq!(soa.ttl, 5);
    let RData::SOA(s) = &soa.data else {
        panic!("not a SOA")
    };
    assert_eq!(s.mname.to_string(), "ns.dns.cluster.local.");
    assert_eq!(s.rname.to_string(), "hostmaster.cluster.local.");
    assert_eq!(
        (s.refresh, s.retry, s.expire, s.minimum),
        (7200, 1800, 86400, 5)
    );
    assert!(m.metadata.authoritative);
}

#[test]
fn cluster_ip_services() {
    let c = cluster();
    let m = ask(&c, "svc1.testns.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(
        lines(&m.answers),
        ["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"]
    );
    // Case-insensitive.
    let m = ask(&c, "SVC1.TestNS.svc.Cluster.Local.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    let m = ask(&c, "svc6.testns.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        lines(&m.answers),
        ["svc6.testns.svc.cluster.local. 5 AAAA 1234:abcd::1"]
    );
    // An IPv4 service asked AAAA: NODATA.
    assert_negative(
        &ask(&c, "svc1.testns.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&c, "svc1.testns.svc.cluster.local.", RecordType::TXT),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&c, "svc1.testns.svc.cluster.local.", RecordType::SOA),
        ResponseCode::NoError,
    );
    // Missing service, missing namespace: NXDOMAIN.
    assert_negative(
        &ask(&c, "svc0.testns.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "svc0.svc-nons.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "svc1.nons.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(
            &c,
            "bogusendpoint.svc0.testns.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
    // An endpoint of a ClusterIP service by its name (CoreDNS answers it too).
    let m = ask(
        &c,
        "10-244-0-7.svc1.testns.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        lines(&m.answers),
        ["10-244-0-7.svc1.testns.svc.cluster.local. 5 A 10.244.0.7"]
    );
}

#[test]
fn structure_names_are_nodata_others_nxdomain() {
    let c = cluster();
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "testns.svc.cluster.local.",
        "testns.pod.cluster.local.",
        "dns.cluster.local.",
    ] {
        assert_negative(&ask(&c, name, RecordType::A), ResponseCode::NoError);
    }
    for name in [
        "foo.cluster.local.",
        "foo.svc.cluster.local.",
        "nons.pod.cluster.local.",
        "a.b.c.d.e.svc.cluster.local.",
    ] {
        assert_negative(&ask(&c, name, RecordType::A), ResponseCode::NXDomain);
    }
    assert_negative(
        &ask(&c, "svc.cluster.local.", RecordType::NS),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&c, "foo.svc.cluster.local.", RecordType::NS),
        ResponseCode::NXDomain,
    );
    let m = ask(&c, "cluster.local.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask(&c, "cluster.local.", RecordType::NS);
    assert_eq!(
        lines(&m.answers),
        ["cluster.local. 5 NS ns.dns.cluster.local."]
    );
    assert_eq!(
        lines(&m.additionals),
        ["ns.dns.cluster.local. 5 A 10.96.0.10"]
    );
    let m = ask(&c, "ns.dns.cluster.local.", RecordType::A);
    assert_eq!(lines(&m.answers), ["ns.dns.cluster.local. 5 A 10.96.0.10"]);
}

#[test]
fn schema_version() {
    let c = cluster();
    let m = ask(&c, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(
        lines(&m.answers),
        ["dns-version.cluster.local. 28800 TXT 1.1.0"]
    );
    assert_negative(
        &ask(&c, "dns-version.cluster.local.", RecordType::A),
        ResponseCode::NoError,
    );
}

#[test]
fn srv_for_named_ports() {
    let c = cluster();
    let m = ask(
        &c,
        "_http._tcp.svc1.testns.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&m.answers),
        ["_http._tcp.svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."]
    );
    assert_eq!(
        lines(&m.additionals),
        ["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"]
    );
    let m = ask(
        &c,
        "_dns._udp.dns.testns.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&m.answers),
        ["_dns._udp.dns.testns.svc.cluster.local. 5 SRV 0 100 53 dns.testns.svc.cluster.local."]
    );
    // The service name asked SRV: one per named port (CoreDNS).
    let m = ask(&c, "svc1.testns.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        lines(&m.answers),
        ["svc1.testns.svc.cluster.local. 5 SRV 0 100 80 svc1.testns.svc.cluster.local."]
    );
    // Wrong protocol or port: NXDOMAIN; the protocol label alone: an empty non-terminal.
    assert_negative(
        &ask(
            &c,
            "_http._udp.svc1.testns.svc.cluster.local.",
            RecordType::SRV,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(
            &c,
            "_nope._tcp.svc1.testns.svc.cluster.local.",
            RecordType::SRV,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "_tcp.svc1.testns.svc.cluster.local.", RecordType::SRV),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(
            &c,
            "_http._tcp.svc1.testns.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NoError,
    );
}

#[test]
fn headless_services() {
    let c = cluster();
    let m = ask(&c, "hdls1.testns.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&m.answers),
        [
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.2",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.3",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "hdls1.testns.svc.cluster.local. 5 A 172.0.0.5",
        ]
    );
    let m = ask(
        &c,
        "dup-name.hdls1.testns.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        lines(&m.answers),
        [
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.4",
            "dup-name.hdls1.testns.svc.cluster.local. 5 A 172.0.0.5"
        ]
    );
    let m = ask(
        &c,
        "172-0-0-2.hdls1.testns.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        lines(&m.answers),
        ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 A 172.0.0.2"]
    );
    // Not ready: not there.
    assert_negative(
        &ask(
            &c,
            "172-0-0-9.hdls1.testns.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(
            &c,
            "bogusendpoint.hdls1.testns.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
    let m = ask(
        &c,
        "_http._tcp.hdls1.testns.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&m.answers),
        [
            "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 25 8080 172-0-0-2.hdls1.testns.svc.cluster.local.",
            "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 25 8080 172-0-0-3.hdls1.testns.svc.cluster.local.",
            "_http._tcp.hdls1.testns.svc.cluster.local. 5 SRV 0 25 8080 dup-name.hdls1.testns.svc.cluster.local.",
        ]
    );
    assert_eq!(m.additionals.len(), 4);
    // No ready endpoint: NXDOMAIN (spec 2.4.1), for every type.
    assert_negative(
        &ask(&c, "hdls-empty.testns.svc.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "hdls-empty.testns.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NXDomain,
    );
    // publishNotReadyAddresses: every endpoint counts.
    let m = ask(&c, "hdls-pub.testns.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&m.answers),
        ["hdls-pub.testns.svc.cluster.local. 5 A 172.0.2.1"]
    );
    // IPv4 endpoints asked AAAA: NODATA.
    assert_negative(
        &ask(&c, "hdls1.testns.svc.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
    );
}

#[test]
fn external_names() {
    let c = cluster();
    let m = ask(&c, "external.testns.svc.cluster.local.", RecordType::CNAME);
    assert_eq!(
        lines(&m.answers),
        ["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."]
    );
    // Without upstreams, the CNAME alone.
    let m = ask(&c, "external.testns.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&m.answers),
        ["external.testns.svc.cluster.local. 5 CNAME ext.interwebs.test."]
    );
    // A target in the zone is followed.
    let m = ask(
        &c,
        "external-to-service.testns.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(
        lines(&m.answers[1..]),
        ["svc1.testns.svc.cluster.local. 5 A 10.0.0.1"]
    );
    assert_negative(
        &ask(
            &c,
            "endpoint.external.testns.svc.cluster.local.",
            RecordType::CNAME,
        ),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(
            &c,
            "sub.sub.external.testns.svc.cluster.local.",
            RecordType::CNAME,
        ),
        ResponseCode::NXDomain,
    );
}

#[test]
fn pods_and_reverse() {
    let c = cluster();
    let m = ask(&c, "10-244-1-5.testns.pod.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&m.answers),
        ["10-244-1-5.testns.pod.cluster.local. 5 A 10.244.1.5"]
    );
    // Verified: the address must be a pod's of that namespace.
    assert_negative(
        &ask(&c, "10-244-1-5.default.pod.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "10-244-1-6.testns.pod.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "not-an-ip.testns.pod.cluster.local.", RecordType::A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&c, "10-244-1-5.testns.pod.cluster.local.", RecordType::AAAA),
        ResponseCode::NoError,
    );
    let m = ask(&c, "1.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        lines(&m.answers),
        ["1.0.0.10.in-addr.arpa. 5 PTR svc1.testns.svc.cluster.local."]
    );
    let m = ask(&c, "4.0.0.172.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        lines(&m.answers),
        ["4.0.0.172.in-addr.arpa. 5 PTR dup-name.hdls1.testns.svc.cluster.local."]
    );
    let m = ask(
        &c,
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.",
        RecordType::PTR,
    );
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].data.to_string(),
        "svc6.testns.svc.cluster.local."
    );
}

#[test]
fn changes_show_at_once() {
    let c = cluster();
    let mut cache = AnswerCache::default();
    let mut out = Vec::new();
    let q = query("new.testns.svc.cluster.local.", RecordType::A, None);
    handler::handle(&c, &q, Transport::Udp, &mut cache, &mut out);
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::NXDomain
    );
    let svc: k8s_openapi::api::core::v1::Service = obj(
        json!({"metadata": {"namespace": "testns", "name": "new"}, "spec": {"clusterIP": "10.0.0.9"}}),
    );
    c.update(|idx| idx.apply_service(&svc));
    handler::handle(&c, &q, Transport::Udp, &mut cache, &mut out);
    assert_eq!(
        lines(&Message::from_vec(&out).unwrap().answers),
        ["new.testns.svc.cluster.local. 5 A 10.0.0.9"]
    );
    c.update(|idx| idx.delete_service(&svc));
    handler::handle(&c, &q, Transport::Udp, &mut cache, &mut out);
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn out_of_zone_without_upstream_is_refused_and_unsynced_is_servfail() {
    let c = cluster();
    let m = ask(&c, "example.org.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    let c2 = Shared::new(
        ZoneConfig::new("cluster.local", 5).unwrap(),
        ReplyConfig::default(),
        None,
    );
    let m = ask(&c2, "svc1.testns.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn edns_and_truncation() {
    let c = cluster();
    // Many endpoints: an answer larger than 512 bytes.
    c.update(|idx| {
        idx.apply_service(&obj(json!({"metadata": {"namespace": "testns", "name": "big"}, "spec": {"clusterIP": "None"}})));
        let eps: Vec<_> = (1..=60).map(|i| json!({"addresses": [format!("10.9.0.{i}")]})).collect();
        idx.apply_slice(&slice("testns", "big-a", "big", json!(eps), json!([])));
    });
    let name = "big.testns.svc.cluster.local.";
    let udp = ask_raw(&c, &query(name, RecordType::A, None), Transport::Udp).unwrap();
    let m = Message::from_vec(&udp).unwrap();
    assert!(m.metadata.truncation, "TC over UDP without EDNS0");
    assert!(udp.len() <= 512);
    assert!(m.answers.is_empty());
    assert_eq!(m.queries.len(), 1);
    // With EDNS0 4096 the answer fits in 1232 (the server's limit)? 60 A records ≈ 1000 bytes.
    let big = ask_raw(&c, &query(name, RecordType::A, Some(4096)), Transport::Udp).unwrap();
    let m = Message::from_vec(&big).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    // A client payload below 512 counts as 512.
    let small = ask_raw(&c, &query(name, RecordType::A, Some(100)), Transport::Udp).unwrap();
    assert!(Message::from_vec(&small).unwrap().metadata.truncation);
    // TCP: whole.
    let tcp = ask_raw(&c, &query(name, RecordType::A, None), Transport::Tcp).unwrap();
    let m = Message::from_vec(&tcp).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[test]
fn bad_packets() {
    let c = cluster();
    // Too short, or a response: dropped.
    assert!(ask_raw(&c, &[0u8; 5], Transport::Udp).is_none());
    let mut resp = query("svc1.testns.svc.cluster.local.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(ask_raw(&c, &resp, Transport::Udp).is_none());
    let rcode = |p: &[u8]| {
        Message::from_vec(&ask_raw(&c, p, Transport::Udp).unwrap())
            .unwrap()
            .metadata
            .response_code
    };
    // Question cut short.
    let q = query("svc1.testns.svc.cluster.local.", RecordType::A, None);
    assert_eq!(rcode(&q[..20]), ResponseCode::FormErr);
    // Two questions.
    let mut two = q.clone();
    two[5] = 2;
    assert_eq!(rcode(&two), ResponseCode::FormErr);
    // A label longer than 63 (a length byte of 0x40+ is not a plain label).
    let mut long = q[..12].to_vec();
    long.push(0x45);
    long.extend(std::iter::repeat_n(b'a', 0x45));
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&long), ResponseCode::FormErr);
    // A name longer than 255.
    let mut huge = q[..12].to_vec();
    for _ in 0..5 {
        huge.push(63);
        huge.extend(std::iter::repeat_n(b'a', 63));
    }
    huge.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&huge), ResponseCode::FormErr);
    // Another opcode.
    let mut notify = q.clone();
    notify[2] |= 4 << 3;
    assert_eq!(rcode(&notify), ResponseCode::NotImp);
    // EDNS version 1: BADVERS (16: the high bits are in the OPT record).
    let mut v1 = query("svc1.testns.svc.cluster.local.", RecordType::A, Some(1232));
    let at = v1.len() - 5; // OPT: ... ext-rcode, version (here), flags(2), rdlen(2)
    v1[at] = 1;
    let m = Message::from_vec(&ask_raw(&c, &v1, Transport::Udp).unwrap()).unwrap();
    assert_eq!(
        u16::from(m.metadata.response_code),
        16,
        "BADVERS (hickory reads 16 as BADSIG)"
    );
    // Chaos class: refused.
    let mut ch = q.clone();
    let n = ch.len();
    ch[n - 1] = 3;
    assert_eq!(rcode(&ch), ResponseCode::Refused);
    // Invalid characters in labels: a proper NXDOMAIN.
    let mut odd = q[..12].to_vec();
    for label in [&b"we!b $"[..], b"testns", b"svc", b"cluster", b"local"] {
        odd.push(label.len() as u8);
        odd.extend_from_slice(label);
    }
    odd.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(rcode(&odd), ResponseCode::NXDomain);
    // Random bytes never panic.
    let mut x: u32 = 12345;
    for len in 0..400 {
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let _ = ask_raw(&c, &p, Transport::Udp);
        let mut q2 = q.clone();
        if !q2.is_empty() {
            let i = len % q2.len();
            q2[i] ^= (x >> 8) as u8;
        }
        let mut cache = AnswerCache::default();
        let mut out = Vec::new();
        let _ = handler::handle(&c, &q2, Transport::Udp, &mut cache, &mut out);
    }
}
