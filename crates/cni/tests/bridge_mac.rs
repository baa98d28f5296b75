//! The bridge's MAC address is its own, fixed when podnet-cni creates it: a pod leaving never
//! changes it, so the other pods' ARP entries for the gateway stay right. (A bridge with a
//! kernel-assigned MAC takes the lowest MAC of its ports: when that pod leaves, the gateway's
//! MAC changes under the other pods, whose traffic to it is lost until their ARP entries
//! expire.)

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use common::*;
use podnet_kernel::Netlink;
use podnet_kernel::link::parse_mac;
use serde_json::{Value, json};

fn add(node: &Node, pod: &TestNs, id: &str, conf: &str) -> Value {
    node.plugin("ADD", id, Some(&pod.path()), "eth0")
        .run(conf)
        .ok()
        .json()
}

fn mac_of(result: &Value, i: usize) -> [u8; 6] {
    result["interfaces"][i]["mac"]
        .as_str()
        .and_then(parse_mac)
        .unwrap_or_else(|| panic!("no MAC for interface {i} in {result}"))
}

/// Runs `args` inside namespace `ns` (`ip netns exec`, which also mounts that namespace's
/// sysfs); its stdout.
fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The neighbour entry of `ip` in `ns`, as `ip neigh` shows it.
fn neigh(ns: &str, ip: Ipv4Addr) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "neigh", "show", &ip.to_string()])
        .output()
        .expect("ip neigh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Three pings, 200 ms apart, each answered within a second.
fn three_pings_answered(ns: &str, ip: Ipv4Addr) -> String {
    let out = in_ns(ns, &["ping", "-c3", "-i0.2", "-W1", "-q", &ip.to_string()]);
    assert!(out.contains("3 received"), "ping {ip} from {ns}: {out}");
    out
}

#[test]
fn the_bridge_keeps_its_mac_when_the_pod_with_the_lowest_mac_leaves() {
    let node = Node::new();
    let conf = node.config("1.0.0", "10.66.40.0/24", json!({}));
    let gateway: Ipv4Addr = "10.66.40.1".parse().expect("ip");
    let pods = [TestNs::new("bm0"), TestNs::new("bm1")];
    let results: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| add(&node, p, &format!("pod-bm{i}"), &conf))
        .collect();

    let mut host = Netlink::open_in(&node.ns.ns).expect("netlink in the node");
    let bridge = host.require_link("cni0").expect("bridge");
    let bridge_mac = bridge.mac.expect("the bridge has a MAC");
    let assign_type = in_ns(
        &node.ns.name,
        &["cat", "/sys/class/net/cni0/addr_assign_type"],
    );
    assert_eq!(
        assign_type.trim(),
        "3",
        "the bridge's address was set (NET_ADDR_SET), not taken from a port"
    );
    // Both results report the bridge's real MAC, which is none of its ports'.
    let host_macs = [mac_of(&results[0], 1), mac_of(&results[1], 1)];
    for r in &results {
        assert_eq!(mac_of(r, 0), bridge_mac, "{r}");
    }
    assert!(!host_macs.contains(&bridge_mac), "{host_macs:?}");
    assert_eq!(bridge_mac[0] & 0x03, 0x02, "unicast, locally administered");

    // The pod whose host veth has the lowest MAC (the one a kernel-assigned bridge MAC
    // would be) leaves; the other has learnt the gateway's MAC.
    let (leaving, staying) = if host_macs[0] < host_macs[1] {
        (0, 1)
    } else {
        (1, 0)
    };
    three_pings_answered(&pods[staying].name, gateway);
    let learnt = neigh(&pods[staying].name, gateway);
    let bridge_text = podnet_kernel::link::format_mac(&bridge_mac);
    assert!(learnt.contains(&bridge_text), "{learnt} vs {bridge_text}");

    node.plugin(
        "DEL",
        &format!("pod-bm{leaving}"),
        Some(&pods[leaving].path()),
        "eth0",
    )
    .run(&conf)
    .ok();
    let after = host.require_link("cni0").expect("bridge");
    assert_eq!(after.mac, Some(bridge_mac), "the bridge MAC did not change");
    assert_eq!(mac_of(&results[staying], 0), bridge_mac);

    // The remaining pod reaches the gateway at once, with the entry it already had (no
    // ARP refresh needed): ICMP and TCP to the node.
    three_pings_answered(&pods[staying].name, gateway);
    let still = neigh(&pods[staying].name, gateway);
    assert!(still.contains(&bridge_text), "{still}");
    let server = tcp_echo(&node.ns.ns, 7400, 1);
    let staying_ip = result_ip(&results[staying]);
    assert_eq!(
        tcp_send(
            &pods[staying].ns,
            std::net::SocketAddr::from((gateway, 7400)),
            "gw"
        ),
        format!("echo:gw|from:{staying_ip}")
    );
    server.join().expect("server");

    // A pod added later sees the same bridge MAC.
    let late = TestNs::new("bm2");
    let r = add(&node, &late, "pod-bm2", &conf);
    assert_eq!(mac_of(&r, 0), bridge_mac, "{r}");
    assert_eq!(
        host.require_link("cni0").expect("bridge").mac,
        Some(bridge_mac)
    );
}

#[test]
fn a_bridge_made_without_a_fixed_mac_is_fixed_when_it_takes_a_new_ports() {
    let node = Node::new();
    // As an earlier podnet-cni (or someone else) made it: a kernel-assigned MAC.
    let mut host = Netlink::open_in(&node.ns.ns).expect("netlink in the node");
    host.ensure_bridge("cni0", None).expect("bridge");
    let assign_type = || {
        in_ns(
            &node.ns.name,
            &["cat", "/sys/class/net/cni0/addr_assign_type"],
        )
        .trim()
        .to_string()
    };
    assert_eq!(assign_type(), "1", "kernel-assigned to begin with");

    let conf = node.config("1.0.0", "10.66.45.0/24", json!({}));
    let first = TestNs::new("bf0");
    let r0 = add(&node, &first, "pod-bf0", &conf);
    // The bridge took its only port's MAC, and keeps it from now on.
    assert_eq!(mac_of(&r0, 0), mac_of(&r0, 1), "{r0}");
    assert_eq!(assign_type(), "3");
    let fixed = mac_of(&r0, 0);

    let second = TestNs::new("bf1");
    let r1 = add(&node, &second, "pod-bf1", &conf);
    assert_eq!(mac_of(&r1, 0), fixed, "{r1}");
    node.plugin("DEL", "pod-bf0", Some(&first.path()), "eth0")
        .run(&conf)
        .ok();
    assert_eq!(
        host.require_link("cni0").expect("bridge").mac,
        Some(fixed),
        "the MAC stayed when the port it came from left"
    );
    three_pings_answered(&second.name, "10.66.45.1".parse().expect("ip"));
}
