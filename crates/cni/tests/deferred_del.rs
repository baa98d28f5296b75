//! DEL takes an attachment out of service at once and leaves the kernel's
//! slow link deletion to a detached process: what a runtime can observe when
//! DEL returns, that the links do go, and that GC collects what a dead
//! deleting process left.

mod common;

use std::time::{Duration, Instant};

use common::*;
use podnet_kernel::{Link, NetNs, Netlink};
use serde_json::{Value, json};

fn add(node: &Node, pod: &TestNs, id: &str, conf: &str) -> Value {
    node.plugin("ADD", id, Some(&pod.path()), "eth0")
        .run(conf)
        .ok()
        .json()
}

fn del(node: &Node, pod: &TestNs, id: &str, conf: &str) {
    node.plugin("DEL", id, Some(&pod.path()), "eth0")
        .run(conf)
        .ok();
}

fn links(ns: &NetNs) -> Vec<Link> {
    Netlink::open_in(ns)
        .expect("netlink")
        .links()
        .expect("links")
}

fn tombstones(ns: &NetNs) -> Vec<Link> {
    links(ns)
        .into_iter()
        .filter(|l| l.name.starts_with("pnd"))
        .collect()
}

/// Waits (at most 5 s) until `done` holds; returns whether it did.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

#[test]
fn when_del_returns_the_attachment_is_out_of_service_and_its_links_go_soon() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.20.0/24", json!({}));
    let (a, b) = (TestNs::new("out-a"), TestNs::new("out-b"));
    let ip_a = result_ip(&add(&node, &a, "pod-a", &conf));
    let ip_b = result_ip(&add(&node, &b, "pod-b", &conf));
    assert!(ping(&b.name, ip_a), "pods talk before the DEL");

    del(&node, &a, "pod-a", &conf);

    // At once: the pod has no eth0, and whatever is left of its end is down.
    for link in links(&a.ns) {
        assert_ne!(link.name, "eth0", "eth0 still in the pod after DEL");
        if link.name != "lo" {
            assert!(link.name.starts_with("pnd") && !link.up, "{link:?}");
        }
    }
    // The host end is off the bridge and down, under a tombstone name.
    let node_links = links(&node.ns.ns);
    assert_eq!(
        node_links
            .iter()
            .filter(|l| l.name.starts_with("pnv"))
            .count(),
        1,
        "only pod b's host end keeps its name: {node_links:?}"
    );
    for t in tombstones(&node.ns.ns) {
        assert!(!t.up && t.master.is_none(), "{t:?}");
    }
    assert_eq!(
        node.records(),
        vec![ip_b.to_string()],
        "a's address released"
    );
    assert!(!ping(&b.name, ip_a), "nothing answers at a's address");
    assert!(ping(&b.name, "10.66.20.1".parse().expect("ip")));

    // Soon: no link of a's attachment anywhere.
    assert!(
        eventually(|| tombstones(&node.ns.ns).is_empty() && tombstones(&a.ns).is_empty()),
        "tombstones left: node {:?}, pod {:?}",
        tombstones(&node.ns.ns),
        tombstones(&a.ns)
    );
    assert_eq!(links(&a.ns).len(), 1, "only lo: {:?}", links(&a.ns));
    assert!(
        ping(&b.name, "10.66.20.1".parse().expect("ip")),
        "b unharmed"
    );
}

#[test]
fn del_then_an_immediate_add_of_the_same_attachment_works() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.21.0/24", json!({}));
    let pod = TestNs::new("again");
    for round in 0..3 {
        let r = add(&node, &pod, "pod-again", &conf);
        let ip = result_ip(&r);
        assert!(ping(&node.ns.name, ip), "round {round}: node reaches {ip}");
        // No pause: the previous round's links may still be being deleted.
        del(&node, &pod, "pod-again", &conf);
    }
    let r = add(&node, &pod, "pod-again", &conf);
    assert!(ping(&node.ns.name, result_ip(&r)));
    let mut check: Value = serde_json::from_str(&conf).expect("conf");
    check["prevResult"] = r;
    node.plugin("CHECK", "pod-again", Some(&pod.path()), "eth0")
        .run(&check.to_string())
        .ok();
    del(&node, &pod, "pod-again", &conf);
    assert!(node.records().is_empty());
    assert!(eventually(|| tombstones(&node.ns.ns).is_empty()));
}

#[test]
fn gc_deletes_the_tombstones_of_a_deleting_process_that_died() {
    let node = Node::new();
    let conf = node.config("1.1.0", "10.66.22.0/24", json!({}));
    let pod = TestNs::new("dead");
    add(&node, &pod, "pod-dead", &conf);
    // The detached process exits without deleting anything, as if killed.
    node.plugin("DEL", "pod-dead", Some(&pod.path()), "eth0")
        .env("PODNET_CNI_FAULT", "deferred-delete")
        .run(&conf)
        .ok();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tombstones(&node.ns.ns).len(), 1, "{:?}", links(&node.ns.ns));
    assert_eq!(tombstones(&pod.ns).len(), 1, "{:?}", links(&pod.ns));

    // A re-ADD is not disturbed by them.
    let r = add(&node, &pod, "pod-dead", &conf);
    assert!(ping(&node.ns.name, result_ip(&r)));

    let mut gc: Value = serde_json::from_str(&conf).expect("conf");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "pod-dead", "ifname": "eth0"}]);
    node.plugin("GC", "", None, "").run(&gc.to_string()).ok();
    assert!(
        tombstones(&node.ns.ns).is_empty(),
        "{:?}",
        links(&node.ns.ns)
    );
    // Deleting the host end took its pod end with it.
    assert!(tombstones(&pod.ns).is_empty(), "{:?}", links(&pod.ns));
    assert!(
        ping(&node.ns.name, result_ip(&r)),
        "the valid attachment stays"
    );
}
