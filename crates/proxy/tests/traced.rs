//! The nftables mode's full sync proven without root: its batch applied to a simulated
//! ruleset (`podnet_kernel::nftnl::Simulated`), read back as tables and walked by the packet
//! tracer (`podnet_kernel::ruleset::trace`) as the kernel would walk a new connection:
//! where a ClusterIP, a NodePort, an external or load-balancer IP sends it, what
//! `externalTrafficPolicy: Local` and `internalTrafficPolicy: Local` do, ClientIP affinity,
//! and a service without endpoints (rejected). What the exact-text tests pin as text, this
//! pins as behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod parity;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use parity::{ctx, endpoint, port};
use podnet_kernel::nftnl::{Hook, Simulated};
use podnet_kernel::ruleset::Table;
use podnet_kernel::ruleset::trace::{Outcome, Packet, Trace, trace};
use podnet_proxy::fullsync;
use podnet_proxy::model::{self, Protocol, ServiceState};
use podnet_proxy::nftables::{KeptAffinity, TableConfig};

const TCP: u8 = 6;
const UDP: u8 = 17;
const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 11);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

fn services() -> Vec<ServiceState> {
    let both = || vec![endpoint(2, "node-a", true), endpoint(3, "node-b", true)];
    let mut web = port("web", 10, Protocol::Tcp);
    web.node_port = Some(30080);
    web.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    web.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 9)];
    let mut local = port("local", 16, Protocol::Tcp);
    local.node_port = Some(30082);
    local.external_local = true;
    let mut remote_only = port("remote-only", 17, Protocol::Udp);
    remote_only.node_port = Some(30083);
    remote_only.external_local = true;
    let mut internal = port("internal", 18, Protocol::Tcp);
    internal.internal_local = true;
    let mut sticky = port("sticky", 15, Protocol::Tcp);
    sticky.affinity_timeout = Some(600);
    vec![
        ServiceState {
            port: web,
            endpoints: both(),
        },
        ServiceState {
            port: port("dns", 11, Protocol::Udp),
            endpoints: vec![endpoint(4, "node-b", true)],
        },
        ServiceState {
            port: port("empty", 13, Protocol::Tcp),
            endpoints: vec![endpoint(6, "node-b", false)],
        },
        ServiceState {
            port: local,
            endpoints: both(),
        },
        ServiceState {
            port: remote_only,
            endpoints: vec![endpoint(7, "node-b", true)],
        },
        ServiceState {
            port: internal,
            endpoints: both(),
        },
        ServiceState {
            port: sticky,
            endpoints: both(),
        },
    ]
}

/// The tables a full sync of `services` leaves, as the kernel would hold them.
fn tables() -> Vec<Table> {
    let cfg = TableConfig {
        node_ips: vec![],
        service_cidr: Some("10.96.0.0/12".parse().unwrap()),
    };
    let rules: BTreeMap<_, _> = services()
        .iter()
        .map(|s| (s.port.name.clone(), model::service_rules(s, &ctx())))
        .collect();
    let (batch, _) = fullsync::full_batch(&cfg, rules, &KeptAffinity::new());
    let mut sim = Simulated::new();
    sim.apply(&batch).unwrap();
    sim.tables.iter().map(Table::from_listing).collect()
}

/// A new connection's walk through prerouting (or output, from the node itself).
fn walk(t: &[Table], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> Trace {
    let mut p = Packet::new(src, dst, proto, port);
    p.saddr_local = src == NODE_IP;
    p.daddr_local = dst == NODE_IP;
    let hook = if p.saddr_local {
        Hook::Output
    } else {
        Hook::Prerouting
    };
    trace(t, hook, &p)
}

fn endpoints(tr: &Trace) -> Vec<String> {
    let mut v: Vec<String> = tr
        .dnat
        .iter()
        .map(|(ip, port)| format!("{ip}:{port}"))
        .collect();
    v.sort();
    v
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn a_cluster_ip_from_a_pod_or_the_node_goes_to_every_ready_endpoint() {
    let t = tables();
    for src in [POD, NODE_IP] {
        let tr = walk(&t, src, ip("10.96.0.10"), TCP, 80);
        assert_eq!(
            endpoints(&tr),
            vec!["10.244.1.2:8080", "10.244.1.3:8080"],
            "{tr:?}"
        );
    }
    // The UDP service, and only over UDP.
    let tr = walk(&t, POD, ip("10.96.0.11"), UDP, 80);
    assert_eq!(endpoints(&tr), vec!["10.244.1.4:8080"]);
    let tr = walk(&t, POD, ip("10.96.0.11"), TCP, 80);
    assert!(tr.dnat.is_empty(), "{tr:?}");
}

#[test]
fn node_ports_external_and_load_balancer_ips_reach_the_same_endpoints() {
    let t = tables();
    for (dst, port) in [
        (NODE_IP, 30080),
        (ip("192.0.2.7"), 80),
        (ip("198.51.100.9"), 80),
    ] {
        let tr = walk(&t, OUTSIDE, dst, TCP, port);
        assert_eq!(
            endpoints(&tr),
            vec!["10.244.1.2:8080", "10.244.1.3:8080"],
            "{dst}:{port} {tr:?}"
        );
    }
}

#[test]
fn external_traffic_policy_local_keeps_outside_clients_on_this_nodes_endpoints() {
    let t = tables();
    // From outside, only node-a's endpoint; from a pod, both (Cluster inside).
    let tr = walk(&t, OUTSIDE, NODE_IP, TCP, 30082);
    assert_eq!(endpoints(&tr), vec!["10.244.1.2:8080"], "{tr:?}");
    let tr = walk(&t, POD, ip("10.96.0.16"), TCP, 80);
    assert_eq!(endpoints(&tr), vec!["10.244.1.2:8080", "10.244.1.3:8080"]);
    // No local endpoint: an outside client's packet is dropped, never sent elsewhere.
    let tr = walk(&t, OUTSIDE, NODE_IP, UDP, 30083);
    assert!(tr.dnat.is_empty(), "{tr:?}");
    assert_eq!(tr.outcome, Outcome::Dropped, "{tr:?}");
}

#[test]
fn internal_traffic_policy_local_keeps_pods_on_this_nodes_endpoints() {
    let t = tables();
    let tr = walk(&t, POD, ip("10.96.0.18"), TCP, 80);
    assert_eq!(endpoints(&tr), vec!["10.244.1.2:8080"], "{tr:?}");
}

#[test]
fn client_ip_affinity_goes_through_the_endpoint_chains() {
    let t = tables();
    let tr = walk(&t, POD, ip("10.96.0.15"), TCP, 80);
    // A new client is sent to one endpoint chain, which remembers it and DNATs.
    assert_eq!(tr.dnat.len(), 1, "{tr:?}");
    assert!(
        tr.steps.iter().any(|s| s.rule.starts_with("update @")),
        "{tr:?}"
    );
}

#[test]
fn a_service_without_ready_endpoints_is_rejected_and_an_unserved_cluster_ip_port_too() {
    let t = tables();
    let p = Packet::new(POD, ip("10.96.0.13"), TCP, 80);
    let filtered = trace(&t, Hook::Forward, &p);
    assert_eq!(filtered.outcome, Outcome::Rejected, "{filtered:?}");
    let nat = walk(&t, POD, ip("10.96.0.13"), TCP, 80);
    assert!(nat.dnat.is_empty());
    // A ClusterIP in use, on a port it does not serve.
    let p = Packet::new(POD, ip("10.96.0.10"), TCP, 81);
    assert_eq!(trace(&t, Hook::Forward, &p).outcome, Outcome::Rejected);
}
