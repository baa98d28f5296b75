//! The udp backend against the real kernel: three hand-built nodes on one underlay
//! segment, each with a pod, all in namespaces of the test's own (deleted on drop, also on
//! failure). Runs as root.

mod common_udp;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common_udp::{Lab, POD_MTU, exec_in, net, ping, tcp_transfer, udp_echo};
use podnet_overlay::udp::{DEVICE, UdpBackend};
use podnet_overlay::{Backend, BackendKind, DEFAULT_UDP_PORT, new_backend};

/// A lab with a running udp backend per node. Backends drop (threads stopped, devices
/// gone) before the namespaces.
struct Cluster {
    backends: Vec<UdpBackend>,
    lab: Lab,
}

impl Cluster {
    fn new(tag: &str) -> Cluster {
        let lab = Lab::new(tag, 3, POD_MTU);
        let mut backends = Vec::new();
        for node in &lab.nodes {
            let mut backend = UdpBackend::new(node.udp_config()).expect("udp backend");
            assert_eq!(backend.pod_mtu(), POD_MTU, "1500 underlay − 28");
            let data = backend.ensure_device().expect("ensure_device");
            assert_eq!(data.0, None, "udp publishes no backend data");
            backends.push(backend);
        }
        let mut cluster = Cluster { backends, lab };
        for i in 0..3 {
            let sync = cluster.sync(i);
            assert_eq!(sync.installed.len(), 2, "node {i}: {sync:?}");
        }
        cluster
    }

    fn sync(&mut self, i: usize) -> podnet_overlay::PeerSync {
        let peers = self.lab.peers_of(i);
        let sync = self.backends[i].sync_peers(&peers).expect("sync_peers");
        assert!(sync.failed.is_empty(), "node {i}: {:?}", sync.failed);
        sync
    }

    fn ping_ok(&self, from: usize, to: usize) {
        let (a, b) = (&self.lab.nodes[from], &self.lab.nodes[to]);
        ping(&a.pod, b.pod_ip).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn pods_reach_each_other_across_nodes_over_icmp_tcp_and_udp_with_sources_kept() {
    let cluster = Cluster::new("mesh");
    let nodes = &cluster.lab.nodes;
    for a in nodes {
        for b in nodes {
            if a.name == b.name {
                continue;
            }
            ping(&a.pod, b.pod_ip).unwrap_or_else(|e| panic!("{e}"));
            let (seen, n) = tcp_transfer(&a.pod, &b.pod, b.pod_ip, 100_000)
                .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", a.pod_ip, b.pod_ip));
            assert_eq!(seen.ip(), a.pod_ip, "TCP source kept");
            assert_eq!(n, 100_000);
            let (seen, echo_from) = udp_echo(&a.pod, &b.pod, b.pod_ip)
                .unwrap_or_else(|e| panic!("udp {} -> {}: {e}", a.pod_ip, b.pod_ip));
            assert_eq!(seen.ip(), a.pod_ip, "UDP source kept");
            assert_eq!(echo_from.ip(), b.pod_ip, "UDP reply source kept");
        }
    }
    for (i, backend) in cluster.backends.iter().enumerate() {
        let c = backend.counters();
        assert!(
            c.udp_sent_datagrams > 0 && c.tun_written_packets > 0,
            "node {i}: {c:?}"
        );
        assert_eq!(
            c.drop_unknown_source + c.drop_malformed,
            0,
            "node {i}: {c:?}"
        );
    }
}

#[test]
fn a_10_mb_tcp_transfer_with_df_set_crosses_the_tunnel_in_super_packets() {
    let cluster = Cluster::new("df");
    let (a, b) = (&cluster.lab.nodes[0], &cluster.lab.nodes[2]);
    let size = 10 * 1024 * 1024;
    let (seen, n) = tcp_transfer(&a.pod, &b.pod, b.pod_ip, size).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((seen.ip(), n), (std::net::IpAddr::V4(a.pod_ip), size));
    let sender = cluster.backends[0].counters();
    let receiver = cluster.backends[2].counters();
    // TSO: far fewer reads from the TUN device than datagrams on the wire, and the
    // receiver merges them back.
    assert!(
        sender.udp_sent_datagrams > 2 * sender.tun_read_packets,
        "sender: {sender:?}"
    );
    assert!(
        receiver.udp_received_datagrams > 2 * receiver.tun_written_packets,
        "receiver: {receiver:?}"
    );
    // Counted before unwrapping (the TUN write may deliver the last bytes to the pod
    // before the receiver thread counts them).
    assert!(
        receiver.udp_received_bytes >= size as u64,
        "receiver: {receiver:?}"
    );
    assert_eq!(sender.drop_send_error + receiver.drop_tun_write_error, 0);
}

#[test]
fn routes_send_the_cluster_range_to_the_tun_device_and_the_own_subnet_to_the_bridge() {
    let cluster = Cluster::new("routes");
    for (i, node) in cluster.lab.nodes.iter().enumerate() {
        let out = exec_in(&node.ns.name, &["ip", "-4", "route", "show"]);
        let routes = String::from_utf8_lossy(&out.stdout);
        assert!(
            routes.contains(&format!(
                "10.244.0.0/16 dev {DEVICE} proto kernel scope link src 10.244.{}.0",
                i + 1
            )),
            "node {i}:\n{routes}"
        );
        assert!(
            routes.contains(&format!("10.244.{}.0/24 dev cni0", i + 1)),
            "node {i}:\n{routes}"
        );
        let out = exec_in(&node.ns.name, &["ip", "-d", "link", "show", DEVICE]);
        let link = String::from_utf8_lossy(&out.stdout);
        assert!(
            link.contains(&format!("mtu {POD_MTU}")) && link.contains("tun type tun"),
            "{link}"
        );
        assert!(
            link.contains(",UP,") || link.contains("<POINTOPOINT"),
            "{link}"
        );
    }
}

#[test]
fn a_destination_no_node_owns_gets_net_unreachable_quickly() {
    let cluster = Cluster::new("unreach");
    let pod = &cluster.lab.nodes[0].pod;
    let started = Instant::now();
    let err = ping(pod, Ipv4Addr::new(10, 244, 200, 5)).expect_err("nobody owns 10.244.200.0/24");
    assert!(err.contains("Destination Net Unreachable"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered, not timed out: {err}"
    );

    // A UDP socket that asks for ICMP errors (net unreachable is not a hard error for
    // UDP otherwise) hears it too.
    let refused = pod.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        sock.connect((Ipv4Addr::new(10, 244, 200, 5), 9))
            .expect("connect");
        set_recverr(&sock);
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        sock.send(b"anyone?").expect("send");
        let mut buf = [0u8; 16];
        sock.recv(&mut buf)
            .expect_err("an ICMP error, not data")
            .raw_os_error()
    });
    let c = cluster.backends[0].counters();
    assert_eq!(refused, Some(libc::ENETUNREACH), "{c:?}");
    assert!(
        c.icmp_unreachable_sent >= 2 && c.drop_no_route >= 2,
        "{c:?}"
    );
}

#[test]
fn a_tun_device_deleted_by_hand_is_restored_and_traffic_flows_again() {
    let mut cluster = Cluster::new("restore");
    cluster.ping_ok(0, 1);
    let node = &cluster.lab.nodes[0];
    let out = exec_in(&node.ns.name, &["ip", "link", "del", DEVICE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ping(&node.pod, cluster.lab.nodes[1].pod_ip).is_err(),
        "no device, no path"
    );

    cluster.backends[0]
        .ensure_device()
        .expect("ensure_device recreates");
    cluster.ping_ok(0, 1);
    cluster.ping_ok(1, 0);
    let (a, b) = (&cluster.lab.nodes[0], &cluster.lab.nodes[1]);
    tcp_transfer(&a.pod, &b.pod, b.pod_ip, 1_000_000).unwrap_or_else(|e| panic!("{e}"));
    // A second call finds everything right and changes nothing.
    cluster.backends[0]
        .ensure_device()
        .expect("ensure_device again");
    cluster.ping_ok(0, 2);
}

#[test]
fn a_removed_peer_becomes_unreachable_and_comes_back_when_synced_again() {
    let mut cluster = Cluster::new("depart");
    cluster.ping_ok(0, 2);
    let others = vec![cluster.lab.nodes[1].as_peer()];
    let sync = cluster.backends[0].sync_peers(&others).expect("sync");
    assert_eq!(
        sync.removed,
        vec!["udp peer 10.244.3.0/24 via 172.31.50.13:8285".to_string()]
    );
    assert!(sync.installed.is_empty(), "{sync:?}");
    let err = ping(&cluster.lab.nodes[0].pod, cluster.lab.nodes[2].pod_ip).expect_err("peer gone");
    assert!(err.contains("Destination Net Unreachable"), "{err}");
    cluster.ping_ok(0, 1);

    let again = cluster.sync(0);
    assert_eq!(
        again.installed,
        vec!["udp peer 10.244.3.0/24 via 172.31.50.13:8285".to_string()]
    );
    cluster.ping_ok(0, 2);
    let unchanged = cluster.sync(0);
    assert!(!unchanged.changed(), "{unchanged:?}");
}

#[test]
fn datagrams_from_an_unknown_sender_are_dropped_and_counted() {
    let cluster = Cluster::new("stranger");
    let target = &cluster.lab.nodes[0];
    // A well-formed inner packet for node 1's pod, from an address no peer has.
    let mut inner = [0u8; 28];
    inner[0] = 0x45;
    inner[2..4].copy_from_slice(&28u16.to_be_bytes());
    inner[8] = 64;
    inner[9] = 17;
    inner[12..16].copy_from_slice(&[10, 244, 9, 9]);
    inner[16..20].copy_from_slice(&target.pod_ip.octets());
    let to = SocketAddr::from((target.public_ip, DEFAULT_UDP_PORT));
    cluster.lab.underlay.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::new(172, 31, 50, 99), 0)).expect("bind");
        for _ in 0..5 {
            sock.send_to(&inner, to).expect("send");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.backends[0].counters().drop_unknown_source < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = cluster.backends[0].counters();
    assert_eq!(c.drop_unknown_source, 5, "{c:?}");
    assert_eq!(c.tun_written_packets, 0, "{c:?}");
}

#[test]
fn peers_of_another_backend_or_a_wrong_subnet_fail_with_a_reason() {
    let lab = Lab::new("badpeer", 2, POD_MTU);
    let mut backend = UdpBackend::new(lab.nodes[0].udp_config()).expect("backend");
    let mut vx = lab.nodes[1].as_peer();
    vx.backend_type = Some("vxlan".into());
    let mut outside = lab.nodes[1].as_peer();
    outside.node = "far".into();
    outside.subnet = net("10.99.0.0/24");
    let mut mine = lab.nodes[1].as_peer();
    mine.node = "twin".into();
    mine.subnet = lab.nodes[0].subnet;
    let sync = backend.sync_peers(&[vx, outside, mine]).expect("sync");
    assert!(sync.installed.is_empty());
    let reasons: Vec<&str> = sync.failed.iter().map(|(_, why)| why.as_str()).collect();
    assert!(reasons[0].contains("vxlan backend"), "{reasons:?}");
    assert!(
        reasons[1].contains("not a /24 of the cluster range"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("this node's"), "{reasons:?}");
}

#[test]
fn bad_configuration_is_refused_with_what_to_change() {
    let lab = Lab::new("badcfg", 1, POD_MTU);
    let node = &lab.nodes[0];
    let mut cfg = node.udp_config();
    cfg.local.subnet = net("10.99.1.0/24");
    let err = new_backend(cfg)
        .err()
        .expect("subnet outside the range")
        .to_string();
    assert!(err.contains("not inside the cluster range"), "{err}");
    let mut cfg = node.udp_config();
    cfg.local.public_ip = Ipv4Addr::new(10, 244, 7, 7);
    let err = new_backend(cfg)
        .err()
        .expect("public IP in the range")
        .to_string();
    assert!(err.contains("inside the cluster range"), "{err}");
    let mut cfg = node.udp_config();
    cfg.mtu_override = Some(20);
    let err = new_backend(cfg).err().expect("tiny MTU").to_string();
    assert!(err.contains("MTU 20"), "{err}");
    let backend = new_backend(node.udp_config()).expect("a good one");
    assert_eq!(backend.kind(), BackendKind::Udp);
}

#[test]
fn teardown_removes_the_device_and_stops_the_forwarder() {
    let mut cluster = Cluster::new("teardown");
    cluster.ping_ok(0, 1);
    cluster.backends[0].teardown().expect("teardown");
    let node = &cluster.lab.nodes[0];
    let out = exec_in(&node.ns.name, &["ip", "link", "show", DEVICE]);
    assert!(!out.status.success(), "device still there");
    // The port is free again: a new backend on the same node starts.
    cluster.backends[0] = UdpBackend::new(node.udp_config()).expect("backend");
    cluster.backends[0].ensure_device().expect("ensure_device");
    cluster.sync(0);
    cluster.ping_ok(0, 1);
}

fn set_recverr(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: passes one c_int of the size given to a valid socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(rc, 0, "IP_RECVERR: {}", std::io::Error::last_os_error());
}

#[test]
fn an_underlay_without_checksum_offload_still_carries_super_packets_one_datagram_at_a_time() {
    if std::process::Command::new("ethtool")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs ethtool (apt-get install -y ethtool)");
        return;
    }
    let cluster = Cluster::new("nocsum");
    let node = &cluster.lab.nodes[0];
    // Without TX checksum offload the kernel refuses UDP GSO (EIO).
    let out = exec_in(&node.ns.name, &["ethtool", "-K", "eth0", "tx", "off"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (&cluster.lab.nodes[0], &cluster.lab.nodes[1]);
    let size = 4 * 1024 * 1024;
    let (_, n) = tcp_transfer(&a.pod, &b.pod, b.pod_ip, size).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, size);
    let c = cluster.backends[0].counters();
    assert!(c.udp_sent_bytes >= size as u64, "{c:?}");
}

#[test]
fn each_node_is_one_ip_hop_and_the_forwarder_leaves_the_ttl_alone() {
    let cluster = Cluster::new("ttl");
    let (a, b) = (&cluster.lab.nodes[0], &cluster.lab.nodes[1]);
    let to = b.pod_ip.to_string();
    // Pod → node 1 (TTL − 1, into the tunnel) → node 2 (TTL − 1, out of it) → pod.
    let out = exec_in(&a.pod.name, &["ping", "-c1", "-W2", "-t", "3", &to]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "TTL 3 reaches: {text}");
    assert!(
        text.contains("ttl=62"),
        "the reply crossed two routers: {text}"
    );
    let out = exec_in(&a.pod.name, &["ping", "-c1", "-W2", "-t", "2", &to]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "TTL 2 must not reach: {text}");
    assert!(
        text.contains("Time to live exceeded"),
        "node 2 says why: {text}"
    );
}

#[test]
fn a_hand_changed_mtu_address_or_state_is_put_back_by_ensure_device() {
    let mut cluster = Cluster::new("repair");
    let ns = cluster.lab.nodes[0].ns.name.clone();
    for args in [
        &["ip", "link", "set", DEVICE, "mtu", "1300"][..],
        &["ip", "addr", "flush", "dev", DEVICE],
        &["ip", "addr", "add", "10.244.77.1/16", "dev", DEVICE],
        &["ip", "link", "set", DEVICE, "down"],
    ] {
        let out = exec_in(&ns, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(ping(&cluster.lab.nodes[0].pod, cluster.lab.nodes[1].pod_ip).is_err());
    cluster.backends[0]
        .ensure_device()
        .expect("ensure_device repairs");
    let out = exec_in(&ns, &["ip", "-4", "addr", "show", "dev", DEVICE]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("mtu {POD_MTU}")) && text.contains(",UP"),
        "{text}"
    );
    assert!(text.contains("inet 10.244.1.0/16"), "{text}");
    assert!(
        !text.contains("10.244.77.1"),
        "the stray address is gone: {text}"
    );
    cluster.ping_ok(0, 1);
    cluster.ping_ok(2, 0);
}

#[test]
fn dropping_the_backend_stops_its_threads_and_removes_the_device() {
    let lab = Lab::new("drop", 1, POD_MTU);
    let node = &lab.nodes[0];
    let mut backend = UdpBackend::new(node.udp_config()).expect("backend");
    backend.ensure_device().expect("ensure_device");
    // A new thread names itself once it runs: give both a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while forwarder_threads() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(forwarder_threads(), 2, "one tx and one rx thread");
    drop(backend);
    assert_eq!(forwarder_threads(), 0, "threads joined on drop");
    let out = exec_in(&node.ns.name, &["ip", "link", "show", DEVICE]);
    assert!(!out.status.success(), "the device went with its last fd");
}

/// Forwarder threads of this process (other tests' included: this one runs alone in its
/// process under nextest).
fn forwarder_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("podnet-udp"))
        })
        .count()
}
