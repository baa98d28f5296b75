//! ADD creates the veth pair complete in one request (names, MTU, bridge,
//! up) and configures the pod end in one more: what the kernel holds
//! afterwards is what the result says.

mod common;

use common::*;
use podnet_kernel::Netlink;
use serde_json::json;

#[test]
fn add_builds_both_ends_as_configured_and_reports_them_as_they_are() {
    let node = Node::new();
    let conf = node.config(
        "1.1.0",
        "10.66.30.0/24",
        json!({"mtu": 1400, "hairpinMode": true}),
    );
    let pod = TestNs::new("wire");
    let r = node
        .plugin("ADD", "pod-wire", Some(&pod.path()), "eth0")
        .run(&conf)
        .ok()
        .json();
    let ifaces = r["interfaces"].as_array().expect("interfaces");

    let mut host = Netlink::open_in(&node.ns.ns).expect("netlink in the node");
    let bridge = host.require_link("cni0").expect("bridge");
    let host_name = ifaces[1]["name"].as_str().expect("host end name");
    let host_end = host.require_link(host_name).expect("host end");
    assert_eq!(ifaces[1]["mac"], host_end.mac_string(), "{r}");
    assert_eq!(ifaces[1]["mtu"], 1400, "{r}");
    assert_eq!(host_end.mtu, 1400);
    assert!(host_end.up, "host end up");
    assert_eq!(
        host_end.master,
        Some(bridge.index),
        "host end on the bridge"
    );
    assert!(host.hairpin(host_end.index).expect("hairpin"), "hairpin on");

    let mut inside = Netlink::open_in(&pod.ns).expect("netlink in the pod");
    let eth0 = inside.require_link("eth0").expect("eth0");
    assert_eq!(ifaces[2]["mac"], eth0.mac_string(), "{r}");
    assert_eq!(eth0.mtu, 1400);
    assert!(eth0.up, "pod end up");
    assert_eq!(
        eth0.peer_index,
        Some(host_end.index),
        "the two ends are peers"
    );
    assert!(inside.require_link("lo").expect("lo").up, "lo up");
    // One queue each way on both ends, asked for at creation (the kernel's default is
    // one per CPU, which it then cuts down under the RTNL lock).
    assert_eq!(queues(&pod.name, "eth0"), (1, 1));
    assert_eq!(queues(&node.ns.name, host_name), (1, 1));
    let addrs = inside.addresses(Some(eth0.index)).expect("addresses");
    assert!(
        addrs.iter().any(|(_, a)| a.to_string() == "10.66.30.2/24"),
        "{addrs:?}"
    );
    let routes = inside
        .routes(podnet_kernel::route::MAIN_TABLE)
        .expect("routes");
    assert!(
        routes.iter().any(|rt| rt.dst.prefix_len() == 0
            && rt.gateway == Some("10.66.30.1".parse().expect("ip"))
            && rt.oif == Some(eth0.index)),
        "{routes:?}"
    );
    assert!(ping(&pod.name, "10.66.30.1".parse().expect("ip")));
}

/// The TX and RX queue counts of `dev` in namespace `ns`, as `ip -d link` shows them.
fn queues(ns: &str, dev: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-d", "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip link");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let count = |key: &str| links[0][key].as_u64().unwrap_or(0);
    (count("num_tx_queues"), count("num_rx_queues"))
}
