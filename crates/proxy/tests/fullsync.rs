//! Full syncs over netlink against the same full syncs through `nft -f`: two namespaces,
//! one written by each path, must list the identical ruleset, for services of every shape
//! the proxy writes (ClusterIP over TCP, UDP and SCTP, NodePorts, external and load
//! balancer IPs, ClientIP affinity, both traffic policies, no endpoints, a clashing
//! address), with NodePorts on all local addresses or on listed ones. `nft` must then be
//! able to work on what netlink wrote (a partial sync through `nft -f` after it), and a
//! full sync over existing tables must replace them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod parity;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use parity::{ctx, endpoint, port, ruleset, test_ns};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::nftnl::{self, NftSocket};
use podnet_proxy::fullsync;
use podnet_proxy::model::{self, Endpoint, Protocol, ServicePortName, ServiceRules, ServiceState};
use podnet_proxy::nftables::{self, KeptAffinity, TableConfig};

/// One service of every shape.
fn every_shape() -> Vec<ServiceState> {
    let both = || vec![endpoint(2, "node-a", true), endpoint(3, "node-b", true)];
    let mut out = vec![
        ServiceState {
            port: port("web", 10, Protocol::Tcp),
            endpoints: both(),
        },
        ServiceState {
            port: port("dns", 11, Protocol::Udp),
            endpoints: vec![endpoint(4, "node-a", true)],
        },
        ServiceState {
            port: port("signal", 12, Protocol::Sctp),
            endpoints: vec![endpoint(5, "node-b", true)],
        },
        ServiceState {
            port: port("empty", 13, Protocol::Tcp),
            endpoints: vec![endpoint(6, "node-b", false)],
        },
    ];
    let mut np = port("nodeport", 14, Protocol::Tcp);
    np.node_port = Some(30080);
    np.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    np.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 9)];
    out.push(ServiceState {
        port: np,
        endpoints: both(),
    });
    let mut sticky = port("sticky", 15, Protocol::Tcp);
    sticky.affinity_timeout = Some(600);
    sticky.node_port = Some(30081);
    out.push(ServiceState {
        port: sticky,
        endpoints: both(),
    });
    let mut local = port("local", 16, Protocol::Tcp);
    local.node_port = Some(30082);
    local.external_local = true;
    local.health_check_node_port = Some(32000);
    out.push(ServiceState {
        port: local,
        endpoints: both(),
    });
    let mut remote_only = port("remote-only", 17, Protocol::Udp);
    remote_only.node_port = Some(30083);
    remote_only.external_local = true;
    out.push(ServiceState {
        port: remote_only,
        endpoints: vec![endpoint(7, "node-b", true)],
    });
    let mut internal = port("internal", 18, Protocol::Tcp);
    internal.internal_local = true;
    internal.node_port = Some(30084);
    out.push(ServiceState {
        port: internal,
        endpoints: both(),
    });
    let mut no_eps_external = port("gone", 19, Protocol::Tcp);
    no_eps_external.node_port = Some(30085);
    no_eps_external.external_ips = vec![Ipv4Addr::new(192, 0, 2, 8)];
    out.push(ServiceState {
        port: no_eps_external,
        endpoints: vec![],
    });
    // Claims the external IP:port of `nodeport` too: only one may own it.
    let mut clash = port("clash", 20, Protocol::Tcp);
    clash.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
    out.push(ServiceState {
        port: clash,
        endpoints: vec![endpoint(8, "node-a", true)],
    });
    out
}

fn rules_of(states: &[ServiceState]) -> BTreeMap<ServicePortName, ServiceRules> {
    states
        .iter()
        .map(|s| (s.port.name.clone(), model::service_rules(s, &ctx())))
        .collect()
}

/// Full syncs of `states` by both paths, each in its own namespace.
fn full_sync_both(
    cfg: &TableConfig,
    states: &[ServiceState],
    by_nft: &OwnedNetNs,
    by_netlink: &OwnedNetNs,
    kept: &KeptAffinity,
) -> nftables::Installed {
    let (text, installed) = nftables::render_full_keeping(cfg, rules_of(states), kept);
    nftables::apply(Some(by_nft), &text).expect("full sync through nft");
    let (batch, over_netlink) = fullsync::full_batch(cfg, rules_of(states), kept);
    nftnl::apply(Some(by_netlink), &batch).expect("full sync over netlink");
    assert_eq!(
        format!("{:?}", over_netlink.claims),
        format!("{:?}", installed.claims)
    );
    installed
}

fn configs() -> Vec<(&'static str, TableConfig)> {
    vec![
        (
            "listed node addresses, a service CIDR",
            TableConfig {
                node_ips: vec![Ipv4Addr::new(172, 31, 0, 1), Ipv4Addr::new(172, 31, 0, 2)],
                service_cidr: Some("10.96.0.0/12".parse().unwrap()),
            },
        ),
        (
            "every local address, no service CIDR",
            TableConfig {
                node_ips: vec![],
                service_cidr: None,
            },
        ),
    ]
}

#[test]
fn a_full_sync_over_netlink_lists_as_the_one_through_nft() {
    for (what, cfg) in configs() {
        let a = test_ns("fs", "nft");
        let b = test_ns("fs", "nl");
        let states = every_shape();
        full_sync_both(&cfg, &states, &a, &b, &KeptAffinity::new());
        let listed = ruleset(&a);
        assert_eq!(ruleset(&b), listed, "{what}");
        assert!(listed.contains("update @affinity-"), "{what}: {listed}");
        assert!(
            listed.contains("numgen random mod 2 vmap"),
            "{what}: {listed}"
        );

        // Again over the existing tables, with one service fewer and one endpoint more.
        let mut fewer = states.clone();
        fewer.retain(|s| s.port.name.name != "dns");
        fewer[0].endpoints.push(endpoint(9, "node-a", true));
        full_sync_both(&cfg, &fewer, &a, &b, &KeptAffinity::new());
        let listed = ruleset(&a);
        assert_eq!(ruleset(&b), listed, "{what}, over the existing tables");
        assert!(!listed.contains("10.96.0.11"), "{what}: {listed}");
    }
}

#[test]
fn nft_works_on_what_a_full_sync_over_netlink_wrote() {
    let (_, cfg) = configs().remove(0);
    let a = test_ns("fs", "nft");
    let b = test_ns("fs", "nl");
    let states = every_shape();
    let mut installed = full_sync_both(&cfg, &states, &a, &b, &KeptAffinity::new());
    // Every kind of partial sync goes through nft: new endpoints of a UDP service (its
    // map's typeof read back from the kernel), an affinity service changed, one removed.
    let mut changed = BTreeMap::new();
    let mut dns = states[1].clone();
    dns.endpoints.push(endpoint(10, "node-b", true));
    let mut sticky = states[5].clone();
    sticky.endpoints.pop();
    for s in [&dns, &sticky] {
        changed.insert(s.port.name.clone(), Some(model::service_rules(s, &ctx())));
    }
    changed.insert(states[2].port.name.clone(), None);
    let text = nftables::render_partial(&mut installed, changed);
    nftables::apply(Some(&a), &text).expect("partial sync over nft's own tables");
    nftables::apply(Some(&b), &text).expect("partial sync over netlink's tables");
    assert_eq!(ruleset(&b), ruleset(&a));
}

#[test]
fn kept_affinity_clients_come_back_with_the_time_they_had_left() {
    let (_, cfg) = configs().remove(0);
    let states = every_shape();
    let rules = rules_of(&states);
    let set = rules
        .values()
        .flat_map(|r| r.sets.iter())
        .next()
        .expect("an affinity set")
        .name
        .clone();
    let shard = rules
        .iter()
        .find(|(_, r)| r.sets.iter().any(|s| s.name == set))
        .map(|(n, _)| nftables::shard_table(nftables::shard_of(n)))
        .unwrap();
    let client = Ipv4Addr::new(10, 244, 3, 3);
    let kept: KeptAffinity = [(set.clone(), vec![(client, Duration::from_secs(42))])].into();
    let a = test_ns("fs", "nft");
    let b = test_ns("fs", "nl");
    full_sync_both(&cfg, &states, &a, &b, &kept);
    for ns in [&a, &b] {
        let mut socket = NftSocket::open(Some(ns)).unwrap();
        let elements = socket.set_elements(&shard, &set).unwrap();
        assert_eq!(elements.len(), 1, "{elements:?}");
        assert_eq!(elements[0].key, client.octets().to_vec());
        let left = elements[0].expires.expect("an expiry");
        assert!(
            left <= Duration::from_secs(42) && left > Duration::from_secs(30),
            "{left:?}"
        );
    }
}

#[test]
fn each_path_replaces_what_the_other_wrote() {
    let (_, cfg) = configs().remove(0);
    let a = test_ns("fs", "nft");
    let b = test_ns("fs", "nl");
    let states = every_shape();
    full_sync_both(&cfg, &states, &a, &b, &KeptAffinity::new());
    // Swapped: netlink over nft's tables, nft over netlink's.
    let (batch, _) = fullsync::full_batch(&cfg, rules_of(&states), &KeptAffinity::new());
    nftnl::apply(Some(&a), &batch).expect("netlink over nft's tables");
    let (text, _) = nftables::render_full(&cfg, rules_of(&states));
    nftables::apply(Some(&b), &text).expect("nft over netlink's tables");
    assert_eq!(ruleset(&a), ruleset(&b));
}

/// Enough services that the shared sets' elements (hairpin, ClusterIPs, dispatch) need
/// more than one netlink attribute (16-bit lengths).
#[test]
fn a_large_full_sync_lists_as_the_one_through_nft() {
    let (_, cfg) = configs().remove(0);
    let states: Vec<ServiceState> = (0..1000u32)
        .map(|i| {
            let mut p = port(&format!("s{i}"), 0, Protocol::Tcp);
            p.cluster_ip = Ipv4Addr::from(0x0a60_0000 + i + 1);
            let endpoints = (0..10u32)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::from(0x0af4_0000 + i * 10 + e),
                    ..endpoint(1, if e % 3 == 0 { "node-a" } else { "node-b" }, true)
                })
                .collect();
            ServiceState { port: p, endpoints }
        })
        .collect();
    let a = test_ns("fs", "nft");
    let b = test_ns("fs", "nl");
    full_sync_both(&cfg, &states, &a, &b, &KeptAffinity::new());
    let listed = ruleset(&a);
    assert_eq!(ruleset(&b), listed);
    assert!(
        listed.contains("10.244.39.15 . 10.244.39.15"),
        "hairpin of the last service"
    );
}
