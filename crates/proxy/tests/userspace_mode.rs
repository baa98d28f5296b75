//! The userspace mode through the proxy's entry point, as a user checks it: Services and
//! EndpointSlices in an in-process apiserver, `podnet_proxy::run` in userspace mode in the
//! node namespace, and connections from a pod, the node and a client outside the cluster.
//! Runs as root; everything lives in namespaces of its own and is removed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use podnet_proxy::ProxyMode;
use podnet_proxy::userspace::rules;
use serde_json::json;

fn userspace_table(c: &Cluster) -> Option<String> {
    podnet_kernel::nft::list_table(Some(&c.ns.node), "ip", rules::TABLE).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_mode_serves_cluster_ip_node_port_and_external_ip_and_follows_changes() {
    let mut c = Cluster::start_in(ProxyMode::Userspace).await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "externalIPs": ["192.0.2.100"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let all = [
        (0, NODE, true, true, false),
        (1, NODE, true, true, false),
        (2, NODE, true, true, false),
    ];
    c.set_endpoints("web", tcp_ports(), &all).await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    eventually(
        "the ClusterIP answers from a pod",
        Duration::from_secs(10),
        || connect_in(&c.ns.pods[0], cip).ok(),
    )
    .await;
    let every_pod = all_pods();

    // Round-robin: a few connects reach every endpoint, from a pod and from the node.
    assert_eq!(names(&connect_many(&c.ns.pods[0], cip, 9)), every_pod);
    assert_eq!(names(&connect_many(&c.ns.node, cip, 9)), every_pod);
    // From outside: the NodePort on the node's address, and the externalIP.
    let np = SocketAddrV4::new(NODE_IP, node_port(&svc));
    assert_eq!(names(&connect_many(&c.ns.client, np, 9)), every_pod);
    let ext = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 100), 80);
    assert_eq!(names(&connect_many(&c.ns.client, ext, 9)), every_pod);
    // The backends see the proxy (the node), as in kube-proxy's userspace mode.
    for a in connect_many(&c.ns.pods[0], cip, 3).iter().flatten() {
        assert!(a.ends_with(&BRIDGE_IP.to_string()), "{a}");
    }

    // The article's four chains carry the service.
    let text = userspace_table(&c).expect("the userspace table exists");
    for chain in rules::CHAINS {
        assert!(
            text.contains(&format!("chain {chain} {{")),
            "no {chain}:\n{text}"
        );
    }
    assert!(text.contains(&format!("ip daddr {} tcp dport 80 redirect to :", cip.ip())));

    // An endpoint going away leaves rotation.
    c.set_endpoints(
        "web",
        tcp_ports(),
        &[(0, NODE, true, true, false), (1, NODE, false, false, false)],
    )
    .await;
    let pod_a_only = BTreeSet::from([PODS[0].0.to_string()]);
    eventually("only pod-a answers", Duration::from_secs(5), || {
        (names(&connect_many(&c.ns.pods[1], cip, 4)) == pod_a_only).then_some(())
    })
    .await;

    // No endpoints: refused at once.
    c.set_endpoints("web", tcp_ports(), &[]).await;
    eventually("the service refuses", Duration::from_secs(5), || {
        let started = Instant::now();
        let refused = connect_in(&c.ns.pods[0], cip)
            .err()
            .is_some_and(|e| e.kind() == ErrorKind::ConnectionRefused);
        (refused && started.elapsed() < Duration::from_secs(1)).then_some(())
    })
    .await;

    // A restart keeps the listening ports, so the rules are the same.
    c.set_endpoints("web", tcp_ports(), &all).await;
    eventually("answers again", Duration::from_secs(5), || {
        connect_in(&c.ns.pods[0], cip).ok()
    })
    .await;
    let before = userspace_table(&c).unwrap();
    c.stop_proxy().await;
    c.start_proxy();
    eventually(
        "the restarted proxy answers",
        Duration::from_secs(10),
        || connect_in(&c.ns.pods[0], cip).ok(),
    )
    .await;
    assert_eq!(
        userspace_table(&c).unwrap(),
        before,
        "rules changed across a restart"
    );

    // The Service deleted: nothing of it is left.
    c.delete_service("web").await;
    eventually(
        "the service's rules are gone",
        Duration::from_secs(5),
        || {
            let text = userspace_table(&c)?;
            (!text.contains("default/web") && !text.contains(&cip.ip().to_string())).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_removes_the_other_modes_rules() {
    let mut c = Cluster::start_in(ProxyMode::Userspace).await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    c.set_endpoints("web", tcp_ports(), &[(0, NODE, true, true, false)])
        .await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    eventually("userspace answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[1], cip).ok()
    })
    .await;

    c.stop_proxy().await;
    c.mode = ProxyMode::Nftables;
    c.start_proxy();
    // The old mode's rules still answer until the new proxy has removed them: wait for the
    // switch itself, then check that the new mode answers.
    eventually(
        "the userspace table is replaced by the nftables mode's",
        Duration::from_secs(10),
        || (userspace_table(&c).is_none() && table_text(&c.ns).is_some()).then_some(()),
    )
    .await;
    eventually("nftables answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[1], cip).ok()
    })
    .await;

    c.stop_proxy().await;
    c.mode = ProxyMode::Userspace;
    c.start_proxy();
    eventually(
        "the nftables mode's tables are replaced by the userspace table",
        Duration::from_secs(10),
        || (table_text(&c.ns).is_none() && userspace_table(&c).is_some()).then_some(()),
    )
    .await;
    eventually("userspace answers again", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[1], cip).ok()
    })
    .await;
}
