//! What the tests comparing a sync over netlink with the same sync through `nft -f` share:
//! their namespaces, the ruleset `nft` lists, a node and its endpoints.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use podnet_kernel::netns::OwnedNetNs;
use podnet_proxy::model::{Endpoint, Layout, NodeContext, Protocol, ServicePort, ServicePortName};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace `pn-<prefix>-TAG-PID-N`, deleted when the guard drops.
pub fn test_ns(prefix: &str, tag: &str) -> OwnedNetNs {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("pn-{prefix}-{tag}-{}-{n}", std::process::id());
    OwnedNetNs::create(&name).expect("create test namespace")
}

/// What `nft <args>` prints inside `ns`.
pub fn nft(ns: &OwnedNetNs, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// What `nft list ruleset` shows inside `ns`.
pub fn ruleset(ns: &OwnedNetNs) -> String {
    nft(ns, &["list", "ruleset"])
}

/// The node the rules are for.
pub fn ctx() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        layout: Layout::Compact,
    }
}

/// Endpoint `10.244.1.<last>:8080` on `node`.
pub fn endpoint(last: u8, node: &str, ready: bool) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::new(10, 244, 1, last),
        port: 8080,
        node_name: Some(node.into()),
        ready,
        serving: ready,
        terminating: false,
    }
}

/// Port `p` of Service `default/<name>` at ClusterIP `10.96.0.<ip_last>`:80.
pub fn port(name: &str, ip_last: u8, protocol: Protocol) -> ServicePort {
    ServicePort::cluster_ip(
        ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port: "p".into(),
            protocol,
        },
        Ipv4Addr::new(10, 96, 0, ip_last),
        80,
    )
}
