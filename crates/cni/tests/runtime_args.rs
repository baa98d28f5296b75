//! What a runtime asks for besides the config, honoured as host-local and the reference
//! bridge plugin honour it, or refused by name: CNI_ARGS `IP=` and `MAC=` (`podman run --ip`,
//! `--mac-address`) and the `ips` / `mac` capabilities in `runtimeConfig`.

mod common;

use std::process::Command;

use common::*;
use podnet_kernel::Netlink;
use serde_json::{Value, json};

fn add_with_args(node: &Node, pod: &TestNs, id: &str, args: &str, conf: &str) -> Outcome {
    node.plugin("ADD", id, Some(&pod.path()), "eth0")
        .env("CNI_ARGS", args)
        .run(conf)
}

fn eth0_mac(pod: &TestNs) -> String {
    let mut nl = Netlink::open_in(&pod.ns).expect("netlink in the pod");
    nl.require_link("eth0").expect("eth0").mac_string()
}

fn eth0_addresses(pod: &TestNs) -> String {
    let out = Command::new("ip")
        .args(["-n", &pod.name, "-4", "addr", "show", "eth0"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_eth0(pod: &TestNs) -> bool {
    let mut nl = Netlink::open_in(&pod.ns).expect("netlink in the pod");
    nl.link_by_name("eth0").expect("look up eth0").is_some()
}

#[test]
fn ip_arg_gives_the_asked_address_and_reserves_it() {
    let node = Node::new();
    // Three addresses to hand out: .76, .77, .78.
    let conf = node.config(
        "1.0.0",
        "10.66.41.0/24",
        json!({"ipam": {"rangeStart": "10.66.41.76", "rangeEnd": "10.66.41.78"}}),
    );
    let pa = TestNs::new("ipa");
    let r = add_with_args(
        &node,
        &pa,
        "pod-a",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=a;IP=10.66.41.77",
        &conf,
    )
    .ok()
    .json();
    assert_eq!(r["ips"][0]["address"], "10.66.41.77/24", "{r}");
    assert!(
        eth0_addresses(&pa).contains("inet 10.66.41.77/24"),
        "{}",
        eth0_addresses(&pa)
    );
    assert!(node.records().contains(&"10.66.41.77".to_string()));
    assert!(ping(&node.ns.name, "10.66.41.77".parse().expect("ip")));

    // The same ADD again (a runtime retrying) gets the same address...
    let again = add_with_args(&node, &pa, "pod-a", "IP=10.66.41.77", &conf)
        .ok()
        .json();
    assert_eq!(again["ips"][0]["address"], "10.66.41.77/24");
    // ...another address for an attachment that has one is refused, naming both.
    let msg = add_with_args(&node, &pa, "pod-a", "IP=10.66.41.78", &conf).error(103);
    assert!(
        msg.contains("10.66.41.78") && msg.contains("10.66.41.77"),
        "{msg}"
    );

    // Later ADDs without a request never get the reserved address.
    let (pb, pc, pd) = (TestNs::new("ipb"), TestNs::new("ipc"), TestNs::new("ipd"));
    let rb = add_with_args(&node, &pb, "pod-b", "", &conf).ok().json();
    let rc = add_with_args(&node, &pc, "pod-c", "", &conf).ok().json();
    let mut others = vec![result_ip(&rb).to_string(), result_ip(&rc).to_string()];
    others.sort();
    assert_eq!(others, vec!["10.66.41.76", "10.66.41.78"]);
    let msg = add_with_args(&node, &pd, "pod-d", "", &conf).error(101);
    assert!(msg.contains("10.66.41.0/24"), "{msg}");

    // Released on DEL, then free for a request again.
    node.plugin("DEL", "pod-a", Some(&pa.path()), "eth0")
        .run(&conf)
        .ok();
    assert!(!node.records().contains(&"10.66.41.77".to_string()));
    let rd = add_with_args(&node, &pd, "pod-d", "IP=10.66.41.77/24", &conf)
        .ok()
        .json();
    assert_eq!(rd["ips"][0]["address"], "10.66.41.77/24");
}

#[test]
fn a_requested_ip_that_cannot_be_given_is_refused_by_name() {
    let node = Node::new();
    let conf = node.config(
        "1.1.0",
        "10.66.42.0/24",
        json!({"ipam": {"rangeEnd": "10.66.42.200"}}),
    );
    let pa = TestNs::new("ta");
    let ra = add_with_args(&node, &pa, "pod-a", "IP=10.66.42.10", &conf)
        .ok()
        .json();
    assert_eq!(result_ip(&ra).to_string(), "10.66.42.10");

    let pb = TestNs::new("tb");
    let refuse = |args: &str, code: u64, wants: &[&str]| {
        let msg = add_with_args(&node, &pb, "pod-b", args, &conf).error(code);
        for want in wants {
            assert!(msg.contains(want), "{args}: {msg}");
        }
    };
    // Taken: names the address and who has it.
    refuse(
        "IP=10.66.42.10",
        103,
        &["10.66.42.10", "already allocated", "pod-a"],
    );
    refuse(
        "IP=10.99.0.5",
        7,
        &["10.99.0.5", "outside the subnet 10.66.42.0/24"],
    );
    refuse("IP=10.66.42.1", 7, &["10.66.42.1", "gateway"]);
    refuse("IP=10.66.42.255", 7, &["10.66.42.255", "broadcast"]);
    refuse("IP=10.66.42.250", 7, &["10.66.42.250", "outside the range"]);
    refuse("IP=fd00::5", 4, &["CNI_ARGS IP", "IPv6"]);
    refuse("IP=10.66.42.x", 4, &["CNI_ARGS IP", "10.66.42.x"]);
    refuse(
        "IP=10.66.42.20,10.66.42.21",
        7,
        &["more than one IP address", "10.66.42.20", "10.66.42.21"],
    );
    refuse("MAC=01:00:5e:00:00:01", 4, &["CNI_ARGS MAC", "multicast"]);
    refuse("MAC=nonsense", 4, &["CNI_ARGS MAC", "nonsense"]);
    let mut conflicting: Value = serde_json::from_str(&conf).expect("conf");
    conflicting["runtimeConfig"] = json!({"ips": ["10.66.42.30/24"]});
    let msg = add_with_args(
        &node,
        &pb,
        "pod-b",
        "IP=10.66.42.31",
        &conflicting.to_string(),
    )
    .error(7);
    assert!(msg.contains("runtimeConfig.ips"), "{msg}");

    // Nothing of the refused ADDs is left.
    assert_eq!(node.records(), vec!["10.66.42.10".to_string()]);
    assert!(!has_eth0(&pb));
    let veths = node
        .links()
        .into_iter()
        .filter(|l| l.starts_with("pnv"))
        .count();
    assert_eq!(veths, 1, "{:?}", node.links());
}

#[test]
fn mac_arg_sets_the_pod_interface_mac() {
    let node = Node::new();
    let conf = node.config("1.0.0", "10.66.43.0/24", json!({}));
    let pod = TestNs::new("mac");
    let r = add_with_args(
        &node,
        &pod,
        "pod-mac",
        "IgnoreUnknown=1;MAC=0A:58:0a:42:2b:07",
        &conf,
    )
    .ok()
    .json();
    assert_eq!(eth0_mac(&pod), "0a:58:0a:42:2b:07");
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:42:2b:07", "{r}");
    assert!(ping(&pod.name, "10.66.43.1".parse().expect("ip")));
    // The gateway learnt the pod at its MAC.
    let out = Command::new("ip")
        .args([
            "-n",
            &node.ns.name,
            "neigh",
            "show",
            &result_ip(&r).to_string(),
        ])
        .output()
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&out.stdout);
    assert!(neigh.contains("0a:58:0a:42:2b:07"), "{neigh}");
}

#[test]
fn ips_and_mac_capabilities_through_runtime_config() {
    let node = Node::new();
    // As libcni passes them when the conflist declares "capabilities": {"ips": true, "mac": true}.
    let conf = node.config(
        "1.1.0",
        "10.66.44.0/24",
        json!({"runtimeConfig": {"ips": ["10.66.44.50/24"], "mac": "0a:58:0a:42:2c:32"}}),
    );
    let pod = TestNs::new("cap");
    let r = add_with_args(&node, &pod, "pod-cap", "", &conf).ok().json();
    assert_eq!(r["ips"][0]["address"], "10.66.44.50/24", "{r}");
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:42:2c:32", "{r}");
    assert_eq!(eth0_mac(&pod), "0a:58:0a:42:2c:32");
    assert!(eth0_addresses(&pod).contains("inet 10.66.44.50/24"));
    // The conventions' args.cni works alike.
    let conf = node.config(
        "1.1.0",
        "10.66.44.0/24",
        json!({"args": {"cni": {"ips": ["10.66.44.51"]}}}),
    );
    let other = TestNs::new("cap2");
    let r = add_with_args(&node, &other, "pod-cap2", "", &conf)
        .ok()
        .json();
    assert_eq!(r["ips"][0]["address"], "10.66.44.51/24", "{r}");
}
