//! `podnet trace --live` on a real 2-node vxlan lab: a probe sent from a pod to a pod of
//! the other node is traced by the kernel through the same nodes and devices that the
//! explain mode names (the route's device on the source node, the bridge on the
//! destination node), and delivered; with a NetworkPolicy denying it, the trace ends at the
//! hop on the destination node where the policy's chain drops it, named. The trace tables
//! are gone afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Lab, is_root, run, text};
use serde_json::Value;

fn hops(v: &Value) -> &Vec<Value> {
    v["hops"].as_array().unwrap()
}

/// The places of a trace in order, each once.
fn places(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in hops(v) {
        let at = h["at"].as_str().unwrap().to_string();
        if out.last() != Some(&at) {
            out.push(at);
        }
    }
    out
}

fn live(lab: &Lab, src: &str, dst: &str) -> (Value, String) {
    let json = lab.ok(&["trace", "--live", src, dst, "-o", "json"]);
    (serde_json::from_str(&json).unwrap(), json)
}

/// The hop of `hook` at `at`.
fn hop<'a>(v: &'a Value, at: &str, hook: &str, shown: &str) -> &'a Value {
    hops(v)
        .iter()
        .find(|h| h["at"] == at && h["hook"] == hook)
        .unwrap_or_else(|| panic!("no {hook} hop at {at}:\n{shown}"))
}

/// A rule's text with its counter's values left out (they move with every packet).
fn without_counts(rule: &str) -> String {
    let mut out = Vec::new();
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        out.push(w);
        if w == "packets" || w == "bytes" {
            words.next();
        }
    }
    out.join(" ")
}

fn no_trace_tables(lab: &Lab) {
    for i in 1..=2 {
        let listing = text(&run(
            "ip",
            &["netns", "exec", &lab.node(i), "nft", "list", "tables"],
        ));
        assert!(!listing.contains("podnet-trace"), "{listing}");
    }
}

#[test]
fn a_live_probe_follows_the_explained_path_and_dies_at_the_denying_policy() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new("tlv", "172.31.86.0/24");
    lab.up(2, &["--backend", "vxlan"]);
    lab.server_pod("p1", 1);
    lab.server_pod("p3", 2);
    lab.ready_ips(&["p1", "p3"]);
    let (node1, node2) = (lab.node(1), lab.node(2));

    let explained: Value =
        serde_json::from_str(&lab.ok(&["trace", "default/p1", "default/p3:8080", "-o", "json"]))
            .unwrap();
    let (v, shown) = live(&lab, "default/p1", "default/p3:8080");
    assert_eq!(v["verdict"], "delivered", "{shown}");
    assert_eq!(places(&v), places(&explained), "{shown}");
    // Node 1 sends it out by the device of the route explain names.
    let route = hops(&explained)
        .iter()
        .filter_map(|h| h["what"].as_str())
        .find(|w| w.starts_with("route 10.244.") && w.contains(" dev "))
        .unwrap()
        .to_string();
    let dev = route
        .split(" dev ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let forward = hop(&v, &node1, "forward", &shown);
    assert_eq!(forward["out"], dev, "{shown}");
    assert_eq!(forward["in"], "cni0", "{shown}");
    // Node 2 takes it from that device and hands it to the bridge explain names.
    let forward = hop(&v, &node2, "forward", &shown);
    assert_eq!(forward["in"], dev, "{shown}");
    assert_eq!(forward["out"], "cni0", "{shown}");
    assert!(
        hops(&explained)
            .iter()
            .any(|h| h["at"] == node2.as_str()
                && h["what"].as_str().unwrap().starts_with("bridge cni0")),
        "{explained:#}"
    );
    let last = hops(&v).last().unwrap();
    assert_eq!(
        (&last["at"], &last["hook"]),
        (&"pod default/p3".into(), &"input".into()),
        "{shown}"
    );
    let people = lab.ok(&["trace", "--live", "default/p1", "default/p3:8080"]);
    eprintln!("{people}");
    assert!(
        people.contains(&format!("[{node2}] forward {dev} → cni0")),
        "{people}"
    );
    assert!(people.contains("=> delivered"), "{people}");
    no_trace_tables(&lab);
    services_and_udp(&lab);

    lab.apply("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec:\n  podSelector: {matchLabels: {app: p3}}\n  policyTypes: [Ingress]\n");
    let (v, shown) = common::wait_for(
        Duration::from_secs(10),
        "the policy in the live trace",
        || {
            let (v, shown) = live(&lab, "default/p1", "default/p3:8080");
            (v["verdict"] == "dropped")
                .then_some((v, shown.clone()))
                .ok_or(shown)
        },
    )
    .0;
    let last = hops(&v).last().unwrap();
    assert_eq!(last["at"], node2.as_str(), "{shown}");
    assert_eq!(last["hook"], "forward", "{shown}");
    assert_eq!(last["verdict"], "drop", "{shown}");
    assert_eq!(last["policy"], "default/deny", "{shown}");
    let rule = last["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verdict"] == "drop")
        .unwrap_or_else(|| panic!("no dropping rule:\n{shown}"));
    assert_eq!(rule["table"], "podnet-policy", "{shown}");
    let listing = text(&run(
        "ip",
        &["netns", "exec", &node2, "nft", "list", "ruleset"],
    ));
    let said = without_counts(rule["rule"].as_str().unwrap());
    assert!(
        listing.lines().any(|l| without_counts(l) == said),
        "{said} not in node 2's ruleset:\n{listing}"
    );
    let people = lab.ok(&["trace", "--live", "default/p1", "default/p3:8080"]);
    eprintln!("{people}");
    assert!(people.contains("by NetworkPolicy default/deny"), "{people}");
    no_trace_tables(&lab);
}

/// To a ClusterIP: node 1's prerouting DNATs the probe to the pod (the rule shown, the
/// packet shown anew in the next hop), and it is delivered there. A UDP probe is delivered too.
fn services_and_udp(lab: &Lab) {
    lab.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: p3}\n  ports:\n  - {port: 80, targetPort: 8080}\n");
    let svc: Value = serde_json::from_str(&lab.ok(&["get", "svc", "web", "-o", "json"])).unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let p3 = lab.ready_ips(&["p3"])["p3"].clone();
    let (v, shown) = common::wait_for(
        Duration::from_secs(10),
        "the Service in the live trace",
        || {
            let (v, shown) = live(lab, "default/p1", "svc/default/web:80");
            (v["verdict"] == "delivered")
                .then_some((v, shown.clone()))
                .ok_or(shown)
        },
    )
    .0;
    let pre = hop(&v, &lab.node(1), "prerouting", &shown);
    let dnat = pre["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["rule"].as_str())
        .find(|r| r.contains("dnat"))
        .unwrap_or_else(|| panic!("no dnat rule in node 1's prerouting:\n{shown}"));
    // The endpoint comes from the rule's map: the packet after the hook shows it.
    assert!(dnat.contains("map @endpoints-"), "{dnat}");
    let forward = hop(&v, &lab.node(1), "forward", &shown);
    assert!(
        forward["what"]
            .as_str()
            .unwrap()
            .contains(&format!("→ {p3}:8080")),
        "{shown}"
    );
    assert!(shown.contains(&format!("{cluster_ip}:80")), "{shown}");
    eprintln!(
        "{}",
        lab.ok(&["trace", "--live", "default/p1", "svc/default/web:80"])
    );

    let (v, shown) = live(lab, "default/p1", "default/p3:8081/udp");
    assert_eq!(v["verdict"], "delivered", "{shown}");
    assert_eq!(hops(&v).last().unwrap()["hook"], "input", "{shown}");
    eprintln!(
        "{}",
        lab.ok(&["trace", "--live", "default/p1", "default/p3:8081/udp"])
    );
}
