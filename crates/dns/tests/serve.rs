//! The server on real sockets, asked by a real resolver client (`dig`, Debian's
//! bind9-dnsutils), inside a network namespace of the test's own: UDP and TCP, the
//! truncated answer dig retries over TCP, EDNS0, names outside the zone answered through
//! a fake upstream (in the same namespace) and cached, an ExternalName chased upstream,
//! a forwarding loop found and refused, and malformed packets answered or dropped
//! without a crash. Root and dig needed; skipped without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use podnet_dns::{Forwarder, ServerConfig};
use podnet_kernel::{Netlink, OwnedNetNs};
use serde_json::json;

mod common;
use common::{cluster_with, obj, slice};

fn usable() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let dig = Command::new("dig").arg("-v").output().is_ok();
    if !(root && dig) {
        eprintln!("skipped: needs root and dig (bind9-dnsutils)");
    }
    root && dig
}

/// A fake upstream: answers `*.example.test` A 192.0.2.1 (TTL 60), a long TXT for
/// `big.example.test`, NXDOMAIN otherwise; or, as a relay, sends every query on to
/// `relay_to` and its answer back. Counts what it was asked.
fn fake_upstream(sock: UdpSocket, relay_to: Option<SocketAddr>, asked: Arc<AtomicUsize>) {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        asked.fetch_add(1, Ordering::SeqCst);
        if let Some(to) = relay_to {
            let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
            relay
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let _ = relay.send_to(&buf[..n], to);
            let mut back = [0u8; 4096];
            if let Ok((m, _)) = relay.recv_from(&mut back) {
                let _ = sock.send_to(&back[..m], peer);
            }
            continue;
        }
        let Ok(q) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(query) = q.queries.first().cloned() else {
            continue;
        };
        let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.metadata.recursion_available = true;
        r.add_query(query.clone());
        let name = query.name().to_lowercase().to_string();
        if name.ends_with("example.test.") && query.query_type() == RecordType::A {
            r.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 1)),
            ));
        } else if name == "ext.interwebs.test." {
            r.add_answer(Record::from_rdata(
                query.name().clone(),
                30,
                RData::A(A::new(192, 0, 2, 53)),
            ));
        } else if name == "big.example.test." {
            r.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::TXT(TXT::new(vec!["x".repeat(200); 6])),
            ));
        } else {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        let _ = sock.send_to(&r.to_vec().unwrap(), peer);
    }
}

struct Lab {
    ns: OwnedNetNs,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    upstream_asked: Arc<AtomicUsize>,
    relay_asked: Arc<AtomicUsize>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Servers in a namespace of the test's own: the cluster DNS on 127.0.0.1:53
/// forwarding to the fake upstream on 127.0.0.2:53, and a second DNS on 127.0.0.4:53
/// whose upstream (127.0.0.3, a relay) sends everything back to it.
fn start() -> Lab {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let ns = OwnedNetNs::create(&format!("pndns-{}-{n}", std::process::id())).unwrap();
    let upstream_asked = Arc::new(AtomicUsize::new(0));
    let relay_asked = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = ns.try_clone().unwrap();
    let (ua, ra) = (upstream_asked.clone(), relay_asked.clone());
    let thread = std::thread::spawn(move || {
        handle.enter().unwrap();
        let mut nl = Netlink::current().unwrap();
        let lo = nl.require_link("lo").unwrap();
        nl.set_up(lo.index).unwrap();
        let up = UdpSocket::bind("127.0.0.2:53").unwrap();
        let relay = UdpSocket::bind("127.0.0.3:53").unwrap();
        std::thread::spawn(move || fake_upstream(up, None, ua));
        std::thread::spawn(move || fake_upstream(relay, Some("127.0.0.4:53".parse().unwrap()), ra));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let serve = |listen: &str, upstream: &str| {
                let bound = podnet_dns::bind(&ServerConfig { listen: vec![listen.parse().unwrap()], udp_workers: 2, health: None }).unwrap();
                let fwd = Forwarder::new(vec![upstream.parse().unwrap()], bound.addrs(), Duration::from_secs(2)).unwrap();
                let shared = Arc::new(cluster_with(Some(Arc::new(fwd))));
                shared.update(|idx| {
                    idx.apply_service(&obj(json!({"metadata": {"namespace": "testns", "name": "big"}, "spec": {"clusterIP": "None"}})));
                    let eps: Vec<_> = (1..=60).map(|i| json!({"addresses": [format!("10.9.0.{i}")]})).collect();
                    idx.apply_slice(&slice("testns", "big-a", "big", json!(eps), json!([])));
                });
                (bound, shared)
            };
            let (b1, s1) = serve("127.0.0.1:53", "127.0.0.2:53");
            let (b2, s2) = serve("127.0.0.4:53", "127.0.0.3:53");
            let t1 = tokio::spawn(b1.serve(s1, stop.clone()));
            let t2 = tokio::spawn(b2.serve(s2, stop));
            ready_tx.send(()).unwrap();
            let _ = t1.await;
            let _ = t2.await;
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("servers started");
    Lab {
        ns,
        stop: Some(stop_tx),
        thread: Some(thread),
        upstream_asked,
        relay_asked,
    }
}

impl Lab {
    /// dig's output, each line's fields separated by one space.
    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                "dig",
                "+time=2",
                "+tries=1",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn short(&self, args: &[&str]) -> Vec<String> {
        let mut a = vec!["@127.0.0.1", "+short"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = self.dig(&a).lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
}

#[test]
fn dig_answers_zone_and_upstream_names() {
    if !usable() {
        return;
    }
    let lab = start();
    assert_eq!(lab.short(&["svc1.testns.svc.cluster.local"]), ["10.0.0.1"]);
    assert_eq!(
        lab.short(&["+tcp", "svc1.testns.svc.cluster.local"]),
        ["10.0.0.1"]
    );
    assert_eq!(
        lab.short(&["svc6.testns.svc.cluster.local", "AAAA"]),
        ["1234:abcd::1"]
    );
    assert_eq!(
        lab.short(&["_http._tcp.svc1.testns.svc.cluster.local", "SRV"]),
        ["0 100 80 svc1.testns.svc.cluster.local."]
    );
    assert_eq!(
        lab.short(&["hdls1.testns.svc.cluster.local"]),
        ["172.0.0.2", "172.0.0.3", "172.0.0.4", "172.0.0.5"]
    );
    assert_eq!(
        lab.short(&["dns-version.cluster.local", "TXT"]),
        ["\"1.1.0\""]
    );
    assert_eq!(
        lab.short(&["-x", "10.0.0.1"]),
        ["svc1.testns.svc.cluster.local."]
    );
    assert_eq!(
        lab.short(&["10-244-1-5.testns.pod.cluster.local"]),
        ["10.244.1.5"]
    );

    // NXDOMAIN and NODATA, each with the zone's SOA, authoritative, TTL 5.
    let nx = lab.dig(&["@127.0.0.1", "svc0.testns.svc.cluster.local"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    assert!(
        nx.contains("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    assert!(nx.contains("flags: qr aa rd ra;"), "{nx}");
    let nodata = lab.dig(&["@127.0.0.1", "svc1.testns.svc.cluster.local", "AAAA"]);
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(nodata.contains("ANSWER: 0, AUTHORITY: 1"), "{nodata}");
    let a = lab.dig(&["@127.0.0.1", "svc1.testns.svc.cluster.local"]);
    assert!(
        a.contains("svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"),
        "{a}"
    );

    // 60 addresses do not fit in 512 bytes: TC, and dig asks again over TCP.
    let big = lab.dig(&["@127.0.0.1", "+noedns", "big.testns.svc.cluster.local"]);
    assert!(big.contains("Truncated, retrying in TCP mode"), "{big}");
    assert!(big.contains("ANSWER: 60"), "{big}");
    // With EDNS0 (dig offers 1232) they fit.
    let edns = lab.dig(&["@127.0.0.1", "big.testns.svc.cluster.local"]);
    assert!(!edns.contains("Truncated"), "{edns}");
    assert!(
        edns.contains("ANSWER: 60") && edns.contains("udp: 1232"),
        "{edns}"
    );
    let tiny = lab.dig(&[
        "@127.0.0.1",
        "+ignore",
        "+noedns",
        "big.testns.svc.cluster.local",
    ]);
    assert!(tiny.contains("flags: qr aa tc rd ra;"), "{tiny}");

    // Outside the zone: through the fake upstream, then from the cache.
    assert_eq!(lab.short(&["www.example.test"]), ["192.0.2.1"]);
    let asked = lab.upstream_asked.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1100));
    let again = lab.dig(&["@127.0.0.1", "www.example.test"]);
    assert_eq!(
        lab.upstream_asked.load(Ordering::SeqCst),
        asked,
        "answered from the cache"
    );
    assert!(
        again.contains("www.example.test. 59 IN A 192.0.2.1")
            || again.contains("www.example.test. 58 IN A 192.0.2.1"),
        "TTL counted down: {again}"
    );
    let nx = lab.dig(&["@127.0.0.1", "nope.invalid"]);
    assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
    // An upstream answer too big for UDP: TC to the client, whole over TCP.
    let big = lab.dig(&["@127.0.0.1", "+noedns", "big.example.test", "TXT"]);
    assert!(
        big.contains("Truncated, retrying in TCP mode") && big.contains("ANSWER: 1"),
        "{big}"
    );
    // ExternalName: the CNAME, and its target asked upstream.
    assert_eq!(
        lab.short(&["external.testns.svc.cluster.local"]),
        ["192.0.2.53", "ext.interwebs.test."]
    );

    // A loop: the second server's upstream sends its queries back to it.
    let looped = lab.dig(&["@127.0.0.4", "www.example.test"]);
    assert_eq!(status(&looped), "SERVFAIL", "{looped}");
    let relayed = lab.relay_asked.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&relayed),
        "the probe went round once, not for ever: {relayed}"
    );
    let looped = lab.dig(&["@127.0.0.4", "other.example.test"]);
    assert_eq!(status(&looped), "SERVFAIL", "{looped}");
    assert_eq!(
        lab.relay_asked.load(Ordering::SeqCst),
        relayed,
        "forwarding stays off"
    );
    // Its own zone still answers.
    let own = lab.dig(&["@127.0.0.4", "+short", "svc1.testns.svc.cluster.local"]);
    assert_eq!(own.trim(), "10.0.0.1");
}

#[test]
fn bad_packets_get_an_answer_or_nothing() {
    if !usable() {
        return;
    }
    let lab = start();
    let handle = lab.ns.try_clone().unwrap();
    handle
        .run(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 2048];
            let mut ask = |p: &[u8]| -> Option<Vec<u8>> {
                s.send_to(p, "127.0.0.1:53").unwrap();
                s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
            };
            let rcode = |r: &[u8]| r[3] & 0x0f;
            assert!(ask(&[1, 2, 3]).is_none(), "too short: dropped");
            // Header only, no question: FORMERR.
            let r = ask(&[0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
            assert_eq!((&r[..2], rcode(&r)), (&[0xab, 0xcd][..], 1));
            // A question cut in the middle of a label.
            let r = ask(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, b'a', b'b']).unwrap();
            assert_eq!(rcode(&r), 1);
            // A 4000-byte query of nonsense after a valid header.
            let mut huge = vec![0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            huge.extend(std::iter::repeat_n(0x3f, 4000));
            let r = ask(&huge).unwrap();
            assert_eq!(rcode(&r), 1);
            // Every single-byte corruption of a real query: some answer or none, and the
            // server still answers afterwards.
            let q = {
                let mut m = Message::new(7, MessageType::Query, hickory_proto::op::OpCode::Query);
                m.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii("svc1.testns.svc.cluster.local.").unwrap(),
                    RecordType::A,
                ));
                m.to_vec().unwrap()
            };
            for i in 0..q.len() {
                for x in [0x00, 0xff, 0xc0, 0x40] {
                    let mut bad = q.clone();
                    bad[i] = x;
                    let _ = ask(&bad);
                }
            }
            let r = ask(&q).expect("still answering");
            assert_eq!(rcode(&r), 0);
        })
        .unwrap();
    // Names with invalid labels, through dig.
    let out = lab.dig(&["@127.0.0.1", "we\\$b.testns.svc.cluster.local"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
}
