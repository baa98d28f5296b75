//! The engine's syncs into a namespace of the test's own (root): a full sync, then a
//! partial one that adds a policy whose chains sort before those already there (the
//! kernel lists them last), and the periodic check finds the kernel holding what was
//! written; a table removed behind the engine's back is drift, and the next sync writes
//! it whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_kernel::nftnl::Family;
use podnet_kernel::ruleset;
use podnet_kernel::ruleset::PlanKind;
use podnet_kernel::{NetNs, OwnedNetNs};
use podnet_policy::{Cluster, PodInfo, PolicyConfig, Syncer, TABLE};
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn pod(namespace: &str, name: &str, ip: [u8; 4]) -> PodInfo {
    PodInfo {
        namespace: namespace.into(),
        name: name.into(),
        labels: [("app".to_string(), name.to_string())].into(),
        ip: Some(Ipv4Addr::from(ip)),
        node: Some("node1".into()),
        ports: Vec::new(),
    }
}

fn deny_all(namespace: &str, name: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }))
    .unwrap()
}

#[test]
fn a_partial_sync_is_not_taken_for_drift_and_a_removed_table_is() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let name = format!("pn-polsync-{}", std::process::id());
    let _ = NetNs::delete(&name);
    let node = OwnedNetNs::create(&name).expect("create the test's namespace");
    let config = PolicyConfig {
        node: "node1".into(),
        log_group: 100,
    };
    let mut syncer = Syncer::new(config, Some(NetNs::open(&name).unwrap()));

    let mut cluster = Cluster::default();
    for ns in ["a", "zz"] {
        cluster.namespaces.insert(ns.into(), Default::default());
    }
    cluster.pods.push(pod("zz", "web", [10, 244, 0, 5]));
    cluster.pods.push(pod("a", "db", [10, 244, 0, 6]));
    cluster.policies.push(deny_all("zz", "deny"));
    let first = syncer.sync(&cluster).expect("first sync");
    assert_eq!(first.kind, PlanKind::Full);
    assert!(syncer.verify().unwrap(), "after a full sync");

    cluster.policies.push(deny_all("a", "deny"));
    let second = syncer.sync(&cluster).expect("second sync");
    assert_eq!(second.kind, PlanKind::Partial);
    let listed = ruleset::get(Some(&node), Family::Inet, TABLE)
        .unwrap()
        .expect("the table");
    let chains: Vec<&str> = listed.chains.iter().map(|c| c.name.as_str()).collect();
    let at = |c: &str| chains.iter().position(|n| *n == c);
    assert!(
        at("in-a/deny") > at("in-zz/deny"),
        "the kernel lists the new chain last: {chains:?}"
    );
    assert!(syncer.verify().unwrap(), "after a partial sync");

    ruleset::delete_table(Some(&node), Family::Inet, TABLE).unwrap();
    assert!(!syncer.verify().unwrap(), "the table was removed");
    let third = syncer.sync(&cluster).expect("third sync");
    assert_eq!(third.kind, PlanKind::Full);
    assert!(syncer.verify().unwrap(), "after the repair");
}
