//! `podnet trace` on real labs, one per backend (with both proxy modes among them): pod to
//! pod on one node and across nodes, pod to a ClusterIP, an outside client to a NodePort.
//! Each trace must name the devices and routes the kernel itself gives for the path (`ip
//! route get` in the namespaces, read by the test) and the rules that decided it (found in
//! `nft list ruleset` of the node); paths broken on purpose (a route deleted, a policy that
//! denies, a Service without endpoints) must be reported at the hop where they break.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Lab, is_root, run, text};
use serde_json::Value;

fn ip_route_get(netns: &str, dst: &str) -> String {
    text(&run("ip", &["-n", netns, "route", "get", dst]))
}

fn trace(lab: &Lab, src: &str, dst: &str) -> (Value, String) {
    let json: Value = serde_json::from_str(&lab.ok(&["trace", src, dst, "-o", "json"])).unwrap();
    (json, lab.ok(&["trace", src, dst]))
}

fn hops(v: &Value) -> Vec<String> {
    v["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "[{}] {}",
                h["at"].as_str().unwrap(),
                h["what"].as_str().unwrap()
            )
        })
        .collect()
}

fn has(v: &Value, needle: &str, shown: &str) {
    assert!(
        hops(v).iter().any(|h| h.contains(needle)),
        "no hop with {needle:?}:\n{shown}"
    );
}

fn setup(lab: &Lab) -> (Value, String) {
    lab.server_pod("p1", 1);
    lab.server_pod("p2", 1);
    lab.server_pod("p3", 2);
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: p3}\n  ports:\n  - {port: 80, targetPort: 8080}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec:\n  selector: {app: nobody}\n  ports:\n  - {port: 80}\n");
    let ips = lab.ready_ips(&["p1", "p2", "p3"]);
    let svc: Value = serde_json::from_str(&lab.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    (serde_json::to_value(ips).unwrap(), svc.to_string())
}

/// The checks of one lab.
fn exercise(prefix: &str, underlay: &str, backend: &str, mode: &str) {
    let lab = Lab::new(prefix, underlay);
    lab.up(2, &["--backend", backend, "--proxy-mode", mode]);
    let (ips, svc) = setup(&lab);
    let svc: Value = serde_json::from_str(&svc).unwrap();
    let p3 = ips["p3"].as_str().unwrap();
    let node1 = lab.node(1);

    // Same node: over the bridge to the pod's port, delivered to the listener.
    let (v, shown) = trace(&lab, "default/p1", "default/p2:8080");
    assert_eq!(v["verdict"], "delivered", "{shown}");
    has(&v, "bridge cni0 → port pnv", &shown);
    has(
        &v,
        &format!("listens (source {})", ips["p1"].as_str().unwrap()),
        &shown,
    );

    // Across nodes: the route the kernel gives, through the backend's device.
    let (v, shown) = trace(&lab, "default/p1", "default/p3:8080");
    assert_eq!(v["verdict"], "delivered", "{shown}");
    let kernel = ip_route_get(&node1, p3);
    let dev = kernel
        .split(" dev ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    has(&v, &format!("[{node1}] route "), &shown);
    let route_hop = hops(&v)
        .into_iter()
        .find(|h| h.starts_with(&format!("[{node1}] route ")))
        .unwrap();
    assert!(
        route_hop.contains(&format!("dev {dev}")),
        "trace: {route_hop}; kernel: {kernel}"
    );
    match backend {
        "vxlan" => {
            let fdb = text(&run("bridge", &["-n", &node1, "fdb", "show", "dev", &dev]));
            assert!(fdb.contains(&format!("dst {}", lab.node_ip(2))), "{fdb}");
            has(&v, &format!("vxlan {dev}: VNI 1"), &shown);
            has(
                &v,
                &format!(
                    "→ {}; outer UDP {} → {}:8472",
                    lab.node_ip(2),
                    lab.node_ip(1),
                    lab.node_ip(2)
                ),
                &shown,
            );
        }
        "host-gw" => has(&v, &format!("to next hop {}", lab.node_ip(2)), &shown),
        _ => has(
            &v,
            &format!(
                "udp tunnel {dev}: wrapped in UDP {} → {}:8285",
                lab.node_ip(1),
                lab.node_ip(2)
            ),
            &shown,
        ),
    }

    // To the ClusterIP: the DNAT (nftables mode) or the userspace proxy.
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap();
    let (v, shown) = trace(&lab, "default/p1", "svc/default/web:80");
    if mode == "nftables" {
        assert_eq!(v["verdict"], "delivered", "{shown}");
        has(
            &v,
            &format!("DNAT {cluster_ip}:80 → pod default/p3 ({p3}):8080"),
            &shown,
        );
        let listing = text(&run(
            "ip",
            &["netns", "exec", &node1, "nft", "list", "ruleset"],
        ));
        let dnat_rule = v["hops"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| h["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r.as_str().map(str::to_string))
            .find(|r| r.contains("dnat"))
            .unwrap_or_else(|| panic!("no dnat rule shown:\n{shown}"));
        let rule = dnat_rule.split(": ").nth(1).unwrap();
        assert!(listing.contains(rule), "{rule} not in node1's ruleset");
    } else {
        has(&v, "redirected to the userspace service proxy", &shown);
    }

    // An outside client (the underlay switch) to the NodePort on node 1.
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let (v, shown) = trace(&lab, &lab.bridge_ip(), &format!("node/{node1}:{node_port}"));
    if mode == "nftables" {
        assert_eq!(v["verdict"], "delivered", "{shown}");
        has(
            &v,
            &format!("[{node1}] enters node {node1} by eth0"),
            &shown,
        );
        has(&v, &format!("→ pod default/p3 ({p3}):8080"), &shown);
    }
    if backend == "vxlan" {
        broken_paths(&lab, p3);
    }
}

/// A Service without endpoints, a denying policy and a deleted route, each at its hop.
fn broken_paths(lab: &Lab, p3: &str) {
    let node1 = lab.node(1);
    let (v, shown) = trace(lab, "default/p1", "svc/default/empty:80");
    assert_eq!(v["verdict"], "broken", "{shown}");
    assert!(shown.contains("rejected"), "{shown}");
    assert!(shown.contains("reject"), "{shown}");

    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {matchLabels: {app: p3}}\n  policyTypes: [Ingress]\n");
    let node2 = lab.node(2);
    let (v, shown) = common::wait_for(Duration::from_secs(10), "the policy in the trace", || {
        let (v, shown) = trace(lab, "default/p1", "default/p3:8080");
        (v["verdict"] == "broken")
            .then_some((v, shown.clone()))
            .ok_or(shown)
    })
    .0;
    has(&v, &format!("[{node2}] forward: dropped"), &shown);
    assert!(
        shown.contains("podnet-policy") && shown.contains("default/deny"),
        "{shown}"
    );
    lab.ok(&["delete", "networkpolicy", "deny"]);

    // The agent would put the route back at once: stopped first (SIGKILL, no clean-up).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lab.agent_pid(1)),
        nix::sys::signal::Signal::SIGKILL,
    );
    let subnet = ip_route_get(&node1, p3);
    let route = text(&run("ip", &["-n", &node1, "route", "show", "proto", "80"]));
    let line = route
        .lines()
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| panic!("no podnet route: {subnet}"));
    let prefix = line.split_whitespace().next().unwrap();
    let deleted = run("ip", &["-n", &node1, "route", "del", prefix]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let (v, shown) = trace(lab, "default/p1", "default/p3:8080");
    assert_eq!(v["verdict"], "broken", "{shown}");
    has(&v, "the route to that node's subnet is missing", &shown);
}

#[test]
fn traces_follow_the_kernel_on_every_backend_and_proxy_mode() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    exercise("trv", "172.31.81.0/24", "vxlan", "nftables");
    exercise("trh", "172.31.82.0/24", "host-gw", "userspace");
    exercise("tru", "172.31.83.0/24", "udp", "nftables");
}
