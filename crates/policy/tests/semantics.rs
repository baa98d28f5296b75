//! NetworkPolicy semantics proven on the model, without root: the desired tables of the
//! nodes walked by podnet's packet tracer for every source × destination pod, compared
//! with the whole expected matrix (printed as a grid on failure, as the upstream e2e
//! framework prints its truth tables). Namespaces x, y, z; pods a, b, c in each, labelled
//! `pod=<name>`, serving TCP, UDP and SCTP on 80 and 81 under named ports
//! (`serve-80-tcp`, …), spread over three nodes. The cases are those of Kubernetes'
//! `test/e2e/network/netpol` suite, written from the API's semantics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_kernel::nftnl::Hook;
use podnet_kernel::ruleset::trace::{Outcome, Packet, trace};
use podnet_policy::{Cluster, NamedPort, PodInfo, PolicyConfig, desired};
use serde_json::{Value, json};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

fn pod_ip(ns: usize, pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, pod as u8, 10 + ns as u8)
}

fn node_of(pod: usize) -> String {
    format!("node{}", pod + 1)
}

fn cluster(policies: &[Value]) -> Cluster {
    cluster_with(policies, &[])
}

fn cluster_with(policies: &[Value], tiers: &[Value]) -> Cluster {
    let mut c = Cluster::default();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert("ns".to_string(), ns.to_string());
        labels.insert("kubernetes.io/metadata.name".to_string(), ns.to_string());
        c.namespaces.insert(ns.to_string(), labels);
        for (p, pod) in PODS.iter().enumerate() {
            let mut ports = Vec::new();
            for (proto, word) in [(TCP, "tcp"), (UDP, "udp"), (SCTP, "sctp")] {
                for port in [80u16, 81] {
                    ports.push(NamedPort {
                        name: format!("serve-{port}-{word}"),
                        protocol: proto,
                        port,
                    });
                }
            }
            c.pods.push(PodInfo {
                namespace: ns.to_string(),
                name: pod.to_string(),
                labels: [("pod".to_string(), pod.to_string())].into(),
                ip: Some(pod_ip(n, p)),
                node: Some(node_of(p)),
                ports,
            });
        }
    }
    c.policies = policies
        .iter()
        .map(|p| serde_json::from_value::<NetworkPolicy>(p.clone()).expect("policy"))
        .collect();
    c.cluster_policies = tiers
        .iter()
        .map(|p| serde_json::from_value(p.clone()).expect("cluster policy"))
        .collect();
    c
}

/// Whether a new connection from pod `from` to `to` on `proto`/`port` gets through: the
/// source node's forward hook, then the destination node's when it is another.
fn allowed(c: &Cluster, from: (usize, usize), to: (usize, usize), proto: u8, port: u16) -> bool {
    let packet = Packet::new(pod_ip(from.0, from.1), pod_ip(to.0, to.1), proto, port);
    let mut nodes = vec![node_of(from.1)];
    if node_of(to.1) != nodes[0] {
        nodes.push(node_of(to.1));
    }
    nodes.iter().all(|node| {
        let cfg = PolicyConfig {
            node: node.clone(),
            log_group: 100,
        };
        let tables: Vec<_> = desired(c, &cfg).into_iter().collect();
        trace(&tables, Hook::Forward, &packet).outcome == Outcome::Accepted
    })
}

fn all() -> Vec<(usize, usize)> {
    (0..3).flat_map(|n| (0..3).map(move |p| (n, p))).collect()
}

fn name((n, p): (usize, usize)) -> String {
    format!("{}/{}", NAMESPACES[n], PODS[p])
}

/// Probes every pair and compares with `expect`; the grids of both on failure.
fn check(policies: &[Value], proto: u8, port: u16, expect: impl Fn(&str, &str) -> bool) {
    check_tiers(policies, &[], proto, port, expect);
}

fn check_tiers(
    policies: &[Value],
    tiers: &[Value],
    proto: u8,
    port: u16,
    expect: impl Fn(&str, &str) -> bool,
) {
    let c = cluster_with(policies, tiers);
    let mut wrong = false;
    let mut grid = String::from("from\\to ");
    for to in all() {
        grid.push_str(&format!("{:>4}", name(to)));
    }
    grid.push('\n');
    for from in all() {
        grid.push_str(&format!("{:>7} ", name(from)));
        for to in all() {
            // A pod may always reach itself (upstream's `AllowLoopback`): to its own
            // address it never leaves its namespace; through its Service the bridge
            // hairpins it back, and the model lets it through.
            let got = allowed(&c, from, to, proto, port);
            let want = from == to || expect(&name(from), &name(to));
            wrong |= got != want;
            let cell = match (got, want) {
                (true, true) => ".",
                (false, false) => "X",
                (true, false) => "!.",
                (false, true) => "!X",
            };
            grid.push_str(&format!("{cell:>4}"));
        }
        grid.push('\n');
    }
    assert!(
        !wrong,
        "proto {proto} port {port}: '.' allowed, 'X' denied, '!' where that is wrong:\n{grid}"
    );
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn in_ns(pod: &str, ns: &str) -> bool {
    pod.starts_with(&format!("{ns}/"))
}

#[test]
fn no_policy_allows_everything() {
    check(&[], TCP, 80, |_, _| true);
}

#[test]
fn default_deny_ingress_isolates_the_namespace_for_ingress_only() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    check(&[deny], TCP, 80, |_, to| !in_ns(to, "x"));
}

#[test]
fn default_deny_egress_stops_what_leaves_the_namespace_and_what_stays_in_it() {
    let deny = policy(
        "x",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    check(&[deny], TCP, 80, |from, _| !in_ns(from, "x"));
}

#[test]
fn allow_from_the_same_namespace() {
    let p = policy(
        "x",
        "same-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    check(&[p], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "x")
    });
}

#[test]
fn allow_from_another_namespace_by_label_and_by_name() {
    let by_label = policy(
        "x",
        "from-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    check(&[by_label], TCP, 80, |from, to| {
        to != "x/a" || in_ns(from, "y")
    });
    let by_name = policy(
        "x",
        "from-z",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector":
               {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["z"]}]}}]}]}),
    );
    check(&[by_name], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "z")
    });
}

#[test]
fn a_pod_and_namespace_selector_together_select_those_pods_of_those_namespaces() {
    let together = policy(
        "x",
        "yb",
        json!({"podSelector": {}, "ingress": [{"from": [{
            "namespaceSelector": {"matchLabels": {"ns": "y"}},
            "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(&[together], TCP, 80, |from, to| {
        !in_ns(to, "x") || from == "y/b"
    });
    // Two peers instead (an OR): y's pods, or x's b.
    let either = policy(
        "x",
        "y-or-b",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
            {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    );
    check(&[either], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "y") || from == "x/b"
    });
}

#[test]
fn named_ports_resolve_on_the_destination_pod() {
    let p = policy(
        "x",
        "named",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
               "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
    );
    check(std::slice::from_ref(&p), TCP, 81, |_, _| true);
    check(&[p], TCP, 80, |_, to| to != "x/a");
}

#[test]
fn end_port_allows_the_range() {
    let p = policy(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP", "port": 81, "endPort": 82}]}]}),
    );
    check(std::slice::from_ref(&p), TCP, 81, |_, _| true);
    check(&[p], TCP, 80, |_, to| !in_ns(to, "x"));
}

#[test]
fn ip_blocks_with_and_without_except() {
    let p = policy(
        "x",
        "block",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock":
            {"cidr": "10.244.0.0/16", "except": [format!("{}/32", pod_ip(1, 1))]}}]}]}),
    );
    check(&[p], TCP, 80, |from, to| !in_ns(to, "x") || from != "y/b");
    let only = policy(
        "x",
        "block",
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock":
            {"cidr": format!("{}/32", pod_ip(2, 2))}}]}]}),
    );
    check(&[only], TCP, 80, |from, to| {
        !in_ns(to, "x") || from == "z/c"
    });
}

#[test]
fn egress_to_a_named_port_resolves_on_the_destination() {
    let p = policy(
        "x",
        "out",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                           "ports": [{"port": "serve-80-tcp"}]}]}),
    );
    check(std::slice::from_ref(&p), TCP, 80, |from, to| {
        from != "x/a" || in_ns(to, "y")
    });
    check(&[p], TCP, 81, |from, _| from != "x/a");
}

#[test]
fn stacked_policies_add_up() {
    let from_y = policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    let from_z_to_b = policy(
        "x",
        "from-z",
        json!({"podSelector": {"matchLabels": {"pod": "b"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    check(&[from_y, from_z_to_b], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "y") || (to == "x/b" && in_ns(from, "z"))
    });
}

#[test]
fn udp_only_does_not_allow_tcp_and_sctp_is_not_tcp() {
    let udp = policy(
        "x",
        "udp",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
    );
    check(std::slice::from_ref(&udp), UDP, 80, |_, _| true);
    check(std::slice::from_ref(&udp), TCP, 80, |_, to| !in_ns(to, "x"));
    let sctp = policy(
        "x",
        "sctp",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]}),
    );
    check(std::slice::from_ref(&sctp), SCTP, 80, |_, _| true);
    check(&[sctp], TCP, 80, |_, to| !in_ns(to, "x"));
}

#[test]
fn an_empty_rule_allows_all_and_no_rules_allow_none() {
    let all_in = policy("x", "all", json!({"podSelector": {}, "ingress": [{}]}));
    check(&[all_in], TCP, 80, |_, _| true);
    let none = policy("x", "none", json!({"podSelector": {}, "ingress": []}));
    check(&[none], TCP, 80, |_, to| !in_ns(to, "x"));
}

#[test]
fn replies_of_allowed_connections_pass_even_where_new_ones_would_not() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    let c = cluster(&[deny]);
    let cfg = PolicyConfig {
        node: node_of(0),
        log_group: 100,
    };
    let tables: Vec<_> = desired(&c, &cfg).into_iter().collect();
    let mut reply = Packet::new(pod_ip(1, 0), pod_ip(0, 0), TCP, 80);
    assert_eq!(
        trace(&tables, Hook::Forward, &reply).outcome,
        Outcome::Dropped
    );
    reply.ct_state = podnet_kernel::ruleset::ct_state::ESTABLISHED;
    assert_eq!(
        trace(&tables, Hook::Forward, &reply).outcome,
        Outcome::Accepted
    );
}

#[test]
fn a_refused_connection_is_counted_and_logged_with_the_policy_name() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    let c = cluster(&[deny]);
    let cfg = PolicyConfig {
        node: node_of(0),
        log_group: 7,
    };
    let tables: Vec<_> = desired(&c, &cfg).into_iter().collect();
    let t = trace(
        &tables,
        Hook::Forward,
        &Packet::new(pod_ip(1, 0), pod_ip(0, 0), TCP, 80),
    );
    let last = &t.steps.last().unwrap().rule;
    assert_eq!(
        last,
        "counter packets 0 bytes 0 log prefix \"podnet ingress drop x/deny\" group 7 drop comment \"x/deny\""
    );
}

#[test]
fn no_policies_no_table() {
    let cfg = PolicyConfig {
        node: node_of(0),
        log_group: 100,
    };
    assert!(desired(&cluster(&[]), &cfg).is_none());
}

fn tiered(name: &str, tier: &str, priority: i32, spec: Value) -> Value {
    let mut spec = spec;
    spec["tier"] = json!(tier);
    spec["priority"] = json!(priority);
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn ns_subject(ns: &str) -> Value {
    json!({"namespaces": {"matchLabels": {"ns": ns}}})
}

#[test]
fn an_admin_deny_beats_a_network_policy_allow() {
    let allow_all = policy("x", "all", json!({"podSelector": {}, "ingress": [{}]}));
    let deny_y = tiered(
        "deny-y-to-x",
        "Admin",
        10,
        json!({"subject": ns_subject("x"), "ingress": [{"action": "Deny",
               "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    check_tiers(&[allow_all], &[deny_y], TCP, 80, |from, to| {
        !(in_ns(to, "x") && in_ns(from, "y"))
    });
}

#[test]
fn an_admin_accept_beats_a_network_policy_deny_and_priorities_order_admin_rules() {
    let deny = policy("x", "deny", json!({"podSelector": {}}));
    let accept_z = tiered(
        "accept-z",
        "Admin",
        20,
        json!({"subject": ns_subject("x"), "ingress": [{"action": "Accept",
               "from": [{"namespaces": {"matchLabels": {"ns": "z"}}}]}]}),
    );
    // Lower priority numbers first: this Deny of z/a wins over the Accept of all z.
    let deny_za = tiered(
        "deny-za",
        "Admin",
        5,
        json!({"subject": ns_subject("x"), "ingress": [{"action": "Deny",
               "from": [{"pods": {"namespaceSelector": {"matchLabels": {"ns": "z"}},
                                  "podSelector": {"matchLabels": {"pod": "a"}}}}]}]}),
    );
    check_tiers(&[deny], &[accept_z, deny_za], TCP, 80, |from, to| {
        !in_ns(to, "x") || (in_ns(from, "z") && from != "z/a")
    });
}

#[test]
fn an_admin_pass_hands_the_decision_to_network_policy() {
    let from_y = policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    // Pass y (NetworkPolicy allows it), then deny everything else: y still gets in.
    let pass_then_deny = tiered(
        "pass-y",
        "Admin",
        1,
        json!({"subject": ns_subject("x"), "ingress": [
            {"action": "Pass", "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]},
            {"action": "Deny", "from": [{"namespaces": {}}]}]}),
    );
    check_tiers(&[from_y], &[pass_then_deny], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "y")
    });
}

#[test]
fn a_baseline_deny_applies_only_where_no_network_policy_selects_the_pod() {
    let baseline = tiered(
        "baseline-deny",
        "Baseline",
        1,
        json!({"subject": {"namespaces": {}}, "ingress": [{"action": "Deny",
               "from": [{"namespaces": {}}]}]}),
    );
    // x/a is selected by a NetworkPolicy allowing all: the baseline does not apply to it.
    let a_open = policy(
        "x",
        "a-open",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{}]}),
    );
    check_tiers(
        &[a_open],
        std::slice::from_ref(&baseline),
        TCP,
        80,
        |_, to| to == "x/a",
    );
    // Without it, the baseline denies all.
    check_tiers(&[], &[baseline], TCP, 80, |_, _| false);
}

#[test]
fn tier_rules_match_protocols_and_ports_and_egress_networks() {
    let deny_udp = tiered(
        "deny-udp-81",
        "Admin",
        1,
        json!({"subject": ns_subject("y"), "egress": [{"action": "Deny",
               "to": [{"networks": ["10.244.0.0/16"]}],
               "protocols": [{"udp": {"destinationPort": {"number": 81}}}]}]}),
    );
    check_tiers(&[], std::slice::from_ref(&deny_udp), UDP, 81, |from, _| {
        !in_ns(from, "y")
    });
    check_tiers(&[], std::slice::from_ref(&deny_udp), UDP, 80, |_, _| true);
    check_tiers(&[], &[deny_udp], TCP, 81, |_, _| true);
}

#[test]
fn what_cannot_be_expressed_is_noted_and_the_rest_holds() {
    let mixed = policy(
        "x",
        "mixed",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "2001:db8::/32"}},
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    );
    let nodes = tiered(
        "to-nodes",
        "Admin",
        1,
        json!({"subject": ns_subject("z"), "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]}),
    );
    let c = cluster_with(std::slice::from_ref(&mixed), std::slice::from_ref(&nodes));
    let cfg = PolicyConfig {
        node: node_of(0),
        log_group: 100,
    };
    let (_, notes) = podnet_policy::compile(&c, &cfg);
    let said: Vec<(String, String)> = notes
        .iter()
        .map(|n| {
            (
                format!("{} {}/{}", n.kind, n.namespace, n.name),
                n.message.clone(),
            )
        })
        .collect();
    assert_eq!(
        said,
        vec![
            (
                "ClusterNetworkPolicy /to-nodes".to_string(),
                "egress rule 0: nodes peers (experimental upstream) are not enforced by podnet: this peer selects nothing".to_string()
            ),
            (
                "NetworkPolicy x/mixed".to_string(),
                "ipBlock 2001:db8::/32 is not IPv4: podnet enforces IPv4 only, so this peer allows nothing".to_string()
            ),
        ]
    );
    check_tiers(&[mixed], &[nodes], TCP, 80, |from, to| {
        !in_ns(to, "x") || in_ns(from, "y")
    });
}
