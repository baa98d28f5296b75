//! `podnet-cni` executed as a runtime executes it, against the real kernel.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn add(node: &Node, pod: &TestNs, id: &str, conf: &str) -> Value {
    node.plugin("ADD", id, Some(&pod.path()), "eth0")
        .run(conf)
        .ok()
        .json()
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn two_pods_exchange_tcp_and_udp_and_the_node_reaches_both() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.1.0/24", json!({}));
    let (pa, pb) = (TestNs::new("pa"), TestNs::new("pb"));
    let ra = add(&node, &pa, "pod-a", &conf);
    let rb = add(&node, &pb, "pod-b", &conf);
    let (ia, ib) = (result_ip(&ra), result_ip(&rb));
    assert_ne!(ia, ib);

    // TCP both ways, source addresses preserved.
    let srv = tcp_echo(&pb.ns, 7000, 1);
    assert_eq!(
        tcp_send(&pa.ns, sa(ib, 7000), "a2b"),
        format!("echo:a2b|from:{ia}")
    );
    srv.join().expect("server");
    let srv = tcp_echo(&pa.ns, 7001, 2);
    assert_eq!(
        tcp_send(&pb.ns, sa(ia, 7001), "b2a"),
        format!("echo:b2a|from:{ib}")
    );
    // The node reaches the pod from the bridge's gateway address.
    assert_eq!(
        tcp_send(&node.ns.ns, sa(ia, 7001), "n2a"),
        "echo:n2a|from:10.66.1.1"
    );
    srv.join().expect("server");

    // UDP both ways.
    let srv = udp_echo(&pa.ns, 7002, 1);
    assert_eq!(
        udp_send(&pb.ns, sa(ia, 7002), "u-b2a"),
        format!("echo:u-b2a|from:{ib}")
    );
    srv.join().expect("server");
    let srv = udp_echo(&pb.ns, 7003, 2);
    assert_eq!(
        udp_send(&pa.ns, sa(ib, 7003), "u-a2b"),
        format!("echo:u-a2b|from:{ia}")
    );
    assert_eq!(
        udp_send(&node.ns.ns, sa(ib, 7003), "u-n2b"),
        "echo:u-n2b|from:10.66.1.1"
    );
    srv.join().expect("server");
    assert!(ping(&node.ns.name, ib), "ICMP node -> pod-b");
    assert!(ping(&pa.name, ib), "ICMP pod-a -> pod-b");

    // Exact kernel state a user would check.
    let routes = Command::new("ip")
        .args(["-n", &pa.name, "route"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("default via 10.66.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.66.1.0/24 dev eth0 proto kernel scope link src"),
        "{routes}"
    );
    let fwd = podnet_kernel::sysctl::read(&node.ns.ns, "net.ipv4.ip_forward").expect("sysctl");
    assert_eq!(fwd, "1");
}

/// The hairpin flag of the pod's bridge port, as `bridge -d link` shows it.
fn hairpin_flag(node: &Node) -> String {
    let out = Command::new("bridge")
        .args(["-n", &node.ns.name, "-d", "link", "show"])
        .output()
        .expect("bridge link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for flag in ["hairpin on", "hairpin off"] {
        if text.contains(flag) {
            return flag.to_string();
        }
    }
    panic!("no hairpin flag in {text}")
}

#[test]
fn hairpin_mode_is_set_only_when_asked() {
    let node = Node::new();
    let pod = TestNs::new("nohp");
    add(
        &node,
        &pod,
        "pod-nohp",
        &node.config("1.0.0", "10.66.2.0/24", json!({})),
    );
    assert_eq!(hairpin_flag(&node), "hairpin off");

    let node = Node::new();
    let conf = node.config("1.0.0", "10.66.2.0/24", json!({"hairpinMode": true}));
    let pod = TestNs::new("hp");
    let ip = result_ip(&add(&node, &pod, "pod-hp", &conf));
    assert_eq!(hairpin_flag(&node), "hairpin on");
    // A virtual IP on the node that leads back to the pod itself, as a
    // Service does: DNAT plus masquerade of the hairpin traffic.
    let rules = format!(
        "table ip hairpintest {{\n chain pre {{ type nat hook prerouting priority dstnat; ip daddr 10.66.200.1 tcp dport 80 dnat to {ip}:7100\n }}\n \
         chain post {{ type nat hook postrouting priority srcnat; ip saddr {ip} ip daddr {ip} masquerade\n }}\n}}\n"
    );
    podnet_kernel::nft::apply(Some(&node.ns.ns), &rules).expect("nat rules");
    let srv = tcp_echo(&pod.ns, 7100, 1);
    let reply = tcp_send(&pod.ns, sa("10.66.200.1".parse().expect("ip"), 80), "self");
    assert_eq!(reply, "echo:self|from:10.66.2.1");
    srv.join().expect("server");
}

#[test]
fn add_result_follows_the_spec_and_check_del_behave() {
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let node = Node::new();
        let conf = node.config(
            version,
            "10.66.3.0/24",
            json!({"dns": {"nameservers": ["10.96.0.10"]}}),
        );
        let pod = TestNs::new("spec");
        let r = add(&node, &pod, "pod-spec", &conf);
        assert_eq!(r["cniVersion"], version);
        let ifaces = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifaces.len(), 3, "{r}");
        assert_eq!(ifaces[0]["name"], "cni0");
        assert_eq!(ifaces[2]["name"], "eth0");
        assert_eq!(ifaces[2]["sandbox"], pod.path().display().to_string());
        for iface in ifaces {
            let mac = iface["mac"].as_str().expect("mac");
            assert!(podnet_kernel::link::parse_mac(mac).is_some(), "mac {mac}");
        }
        assert!(ifaces[0].get("sandbox").is_none() && ifaces[1].get("sandbox").is_none());
        // Interface MTUs are part of the result from 1.1.0 on.
        for iface in ifaces {
            assert_eq!(iface.get("mtu").is_some(), version == "1.1.0", "{r}");
        }
        if version == "1.1.0" {
            assert_eq!(ifaces[2]["mtu"], 1500, "{r}");
        }
        let ip = &r["ips"][0];
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip["gateway"], "10.66.3.1");
        assert_eq!(ip["address"], "10.66.3.2/24");
        assert_eq!(
            ip.get("version").is_some(),
            version == "0.4.0",
            "ips[].version only in 0.4.0: {r}"
        );
        assert!(
            r["routes"]
                .as_array()
                .expect("routes")
                .iter()
                .any(|rt| rt["dst"] == "0.0.0.0/0")
        );
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
        // The MAC reported is the pod interface's real one.
        let mut nl = podnet_kernel::Netlink::open_in(&pod.ns).expect("netlink");
        assert_eq!(
            ifaces[2]["mac"],
            nl.require_link("eth0").expect("eth0").mac_string()
        );

        // CHECK with prevResult passes...
        let mut check_conf: Value = serde_json::from_str(&conf).expect("conf");
        check_conf["prevResult"] = r.clone();
        let check_conf = check_conf.to_string();
        node.plugin("CHECK", "pod-spec", Some(&pod.path()), "eth0")
            .run(&check_conf)
            .ok();
        // ...and fails clearly once the interface is removed by hand.
        let eth0 = nl.require_link("eth0").expect("eth0");
        nl.delete_link(eth0.index).expect("remove eth0");
        let out = node
            .plugin("CHECK", "pod-spec", Some(&pod.path()), "eth0")
            .run(&check_conf);
        assert_ne!(out.code, 0);
        let msg = out.json()["msg"].as_str().expect("msg").to_string();
        assert!(msg.contains("eth0") && msg.contains("missing"), "{msg}");

        // DEL twice succeeds, and DEL after the namespace is gone too.
        node.plugin("DEL", "pod-spec", Some(&pod.path()), "eth0")
            .run(&conf)
            .ok();
        node.plugin("DEL", "pod-spec", Some(&pod.path()), "eth0")
            .run(&conf)
            .ok();
        assert!(node.records().is_empty());
        let gone = TestNs::new("gone");
        add(&node, &gone, "pod-gone", &conf);
        let path = gone.path();
        drop(gone);
        node.plugin("DEL", "pod-gone", Some(&path), "eth0")
            .run(&conf)
            .ok();
        assert!(node.records().is_empty());
        assert!(
            !node.links().iter().any(|l| l.starts_with("pnv")),
            "{:?}",
            node.links()
        );
    }
}

#[test]
fn fifty_concurrent_adds_get_distinct_reachable_addresses() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.4.0/24", json!({}));
    let pods: Vec<TestNs> = (0..50).map(|_| TestNs::new("c")).collect();
    let children: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            node.plugin("ADD", &format!("pod-{i}"), Some(&p.path()), "eth0")
                .spawn(&conf)
        })
        .collect();
    let mut ips = std::collections::HashSet::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        ips.insert(result_ip(&v));
    }
    assert_eq!(ips.len(), 50, "50 distinct addresses");
    for ip in &ips {
        assert!(ping(&node.ns.name, *ip), "{ip} reachable from the node");
    }
    for (i, p) in pods.iter().enumerate() {
        node.plugin("DEL", &format!("pod-{i}"), Some(&p.path()), "eth0")
            .run(&conf)
            .ok();
    }
    assert!(
        node.records().is_empty(),
        "pool empty after DEL: {:?}",
        node.records()
    );
    assert!(!node.links().iter().any(|l| l.starts_with("pnv")));
}

#[test]
fn an_exhausted_pool_gives_a_clear_error_and_leaves_nothing() {
    let node = Node::new();
    // A /29 holds 8 addresses: network, gateway and broadcast leave 5.
    let conf = node.config("1.1.0", "10.66.5.0/29", json!({}));
    let pods: Vec<TestNs> = (0..6).map(|_| TestNs::new("x")).collect();
    for (i, p) in pods.iter().take(5).enumerate() {
        add(&node, p, &format!("pod-{i}"), &conf);
    }
    let out = node
        .plugin("ADD", "pod-5", Some(&pods[5].path()), "eth0")
        .run(&conf);
    let msg = out.error(101);
    assert!(msg.contains("10.66.5.0/29"), "{msg}");
    assert_eq!(node.records().len(), 5);
    let mut nl = podnet_kernel::Netlink::open_in(&pods[5].ns).expect("netlink");
    assert!(
        nl.link_by_name("eth0").expect("lookup").is_none(),
        "no interface for the refused pod"
    );
    let status = node.plugin("STATUS", "", None, "").run(&conf);
    status.error(50);
}

#[test]
fn bad_input_gets_the_right_error_codes() {
    let node = Node::new();
    let pod = TestNs::new("bad");
    let good = node.config("1.1.0", "10.66.6.0/24", json!({}));
    let add = || node.plugin("ADD", "pod-bad", Some(&pod.path()), "eth0");

    add().run("{not json").error(6);
    add().run("").error(6);
    let msg = add()
        .run(&node.config("9.9.9", "10.66.6.0/24", json!({})))
        .error(1);
    assert!(msg.contains("9.9.9"), "{msg}");
    let msg = add()
        .run(&node.config("1.1.0", "10.66.6.0/33", json!({})))
        .error(7);
    assert!(msg.contains("10.66.6.0/33"), "{msg}");
    add()
        .run(&node.config("1.1.0", "not-a-cidr", json!({})))
        .error(7);
    let msg = add().env_remove("CNI_CONTAINERID").run(&good).error(4);
    assert!(msg.contains("CNI_CONTAINERID"), "{msg}");
    add().env_remove("CNI_COMMAND").run(&good).error(4);
    add().env("CNI_COMMAND", "FROB").run(&good).error(4);
    add().env_remove("CNI_NETNS").run(&good).error(4);
    add()
        .env("CNI_IFNAME", "this-name-is-too-long")
        .run(&good)
        .error(4);
    add()
        .env("CNI_NETNS", "/run/netns/does-not-exist-pnc")
        .run(&good)
        .error(3);

    assert!(
        node.records().is_empty(),
        "nothing allocated: {:?}",
        node.records()
    );
    assert!(!node.links().iter().any(|l| l.starts_with("pnv")));

    let version = add()
        .env("CNI_COMMAND", "VERSION")
        .run("{\"cniVersion\":\"1.1.0\"}")
        .ok()
        .json();
    assert_eq!(
        version["supportedVersions"],
        json!(["0.4.0", "1.0.0", "1.1.0"])
    );
    node.plugin("STATUS", "", None, "").run(&good).ok();
}

#[test]
fn a_plugin_killed_half_way_leaks_nothing_after_gc_or_re_add() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.7.0/24", json!({}));
    for point in ["after-alloc", "after-wire"] {
        let pod = TestNs::new("kill");
        let mut inv = node.plugin("ADD", "pod-k", Some(&pod.path()), "eth0");
        let mut child = inv.env("PODNET_CNI_FAULT", point).spawn(&conf);
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read");
        assert!(line.contains(point), "{line}");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        assert_eq!(
            node.records().len(),
            1,
            "the allocation was made before the kill"
        );

        // A re-ADD of the same attachment reuses its address and repairs it.
        let again = add(&node, &pod, "pod-k", &conf);
        assert_eq!(node.records().len(), 1, "no second address");
        assert_eq!(result_ip(&again).to_string(), node.records()[0]);

        // GC with no valid attachments releases it and removes its links.
        let mut gc: Value = serde_json::from_str(&conf).expect("conf");
        gc["cni.dev/valid-attachments"] = json!([]);
        node.plugin("GC", "", None, "").run(&gc.to_string()).ok();
        assert!(node.records().is_empty(), "{:?}", node.records());
        assert!(
            !node.links().iter().any(|l| l.starts_with("pnv")),
            "{:?}",
            node.links()
        );
    }

    // GC keeps valid attachments.
    let keep = TestNs::new("keep");
    let kept = add(&node, &keep, "pod-keep", &conf);
    let mut gc: Value = serde_json::from_str(&conf).expect("conf");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "pod-keep", "ifname": "eth0"}]);
    node.plugin("GC", "", None, "").run(&gc.to_string()).ok();
    assert_eq!(node.records(), vec![result_ip(&kept).to_string()]);
    assert!(ping(&node.ns.name, result_ip(&kept)));
}

#[test]
fn without_a_subnet_it_uses_the_nodes_subnet_env() {
    let node = Node::new();
    let env_file = node.data.path().join("subnet.env");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "type": "podnet-cni",
        "bridge": "cni0",
        "isDefaultGateway": true,
        "ipam": { "type": "podnet-cni", "dataDir": node.data.path(), "subnetFile": env_file },
    })
    .to_string();
    let pod = TestNs::new("senv");
    // No subnet.env yet: the agent has not written it; the runtime should retry.
    let msg = node
        .plugin("ADD", "pod-env", Some(&pod.path()), "eth0")
        .run(&conf)
        .error(11);
    assert!(msg.contains("subnet.env"), "{msg}");
    std::fs::write(
        &env_file,
        "FLANNEL_NETWORK=10.67.0.0/16\nFLANNEL_SUBNET=10.67.3.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
    )
    .expect("write subnet.env");
    let r = add(&node, &pod, "pod-env", &conf);
    assert_eq!(r["ips"][0]["address"], "10.67.3.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.67.3.1");
    let mut nl = podnet_kernel::Netlink::open_in(&pod.ns).expect("netlink");
    assert_eq!(
        nl.require_link("eth0").expect("eth0").mtu,
        1400,
        "FLANNEL_MTU reaches the pod"
    );
    let routes = Command::new("ip")
        .args(["-n", &pod.name, "route"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("10.67.0.0/16 via 10.67.3.1 dev eth0"),
        "{routes}"
    );
    // FLANNEL_IPMASQ=true: the node masquerades, so the plugin adds nothing.
    assert!(
        podnet_kernel::nft::list_table(Some(&node.ns.ns), "ip", "podnet-cni")
            .expect("nft")
            .is_none()
    );
}

#[test]
fn ip_masq_adds_and_removes_the_pod_in_one_nftables_set() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.9.0/24", json!({"ipMasq": true}));
    let (pa, pb) = (TestNs::new("ma"), TestNs::new("mb"));
    let ia = result_ip(&add(&node, &pa, "pod-ma", &conf));
    let ib = result_ip(&add(&node, &pb, "pod-mb", &conf));
    let table = podnet_kernel::nft::list_table(Some(&node.ns.ns), "ip", "podnet-cni")
        .expect("nft")
        .expect("table exists");
    assert!(
        table.contains(&ia.to_string()) && table.contains(&ib.to_string()),
        "{table}"
    );
    assert!(table.contains("ip daddr != 10.66.9.0/24"), "{table}");
    assert_eq!(
        table.matches(" masquerade comment").count(),
        1,
        "one rule per network: {table}"
    );
    // Written over netlink, it is what nft makes of the same table's text.
    let by_nft = TestNs::new("mnft");
    let mut text = podnet_cni::plugin::masq::table(
        &node_conf_name(&conf),
        "10.66.9.0/24".parse().expect("cidr"),
    )
    .to_string();
    let set = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("set ")
                .map(|s| s.trim_end_matches(" {").to_string())
        })
        .expect("a set");
    for ip in [ia, ib] {
        text.push_str(&format!("add element ip podnet-cni {set} {{ {ip} }}\n"));
    }
    podnet_kernel::nft::apply(Some(&by_nft.ns), &text).expect("nft -f");
    let by_nft = podnet_kernel::nft::list_table(Some(&by_nft.ns), "ip", "podnet-cni")
        .expect("nft")
        .expect("table");
    // (A hash set lists its elements in an order of its own.)
    assert_eq!(
        podnet_kernel::nft::sorted_elements(&by_nft),
        podnet_kernel::nft::sorted_elements(&table)
    );
    node.plugin("DEL", "pod-ma", Some(&pa.path()), "eth0")
        .run(&conf)
        .ok();
    let table = podnet_kernel::nft::list_table(Some(&node.ns.ns), "ip", "podnet-cni")
        .expect("nft")
        .expect("table exists");
    assert!(
        !table.contains(&ia.to_string()) && table.contains(&ib.to_string()),
        "{table}"
    );
}

/// The network name of a conflist.
fn node_conf_name(conf: &str) -> String {
    let v: Value = serde_json::from_str(conf).expect("json");
    v["name"].as_str().expect("name").to_string()
}
