//! The nftables mode for real, as a user checks it: Services and EndpointSlices in an
//! in-process apiserver, the proxy syncing them into the node namespace, and connections
//! from pods, from the node itself and from a client outside the cluster. Runs as root;
//! everything lives in namespaces of its own and is removed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ip_node_port_external_ip_and_lb_ip_reach_every_endpoint() {
    let c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["192.0.2.100"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let local = [
        (0, NODE, true, true, false),
        (1, NODE, true, true, false),
        (2, NODE, true, true, false),
    ];
    c.set_endpoints("web", tcp_ports(), &local).await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    let pod_c = &c.ns.pods[2];
    eventually(
        "ClusterIP answers from a pod",
        Duration::from_secs(10),
        || connect_in(pod_c, cip).ok(),
    )
    .await;

    // From a pod: every endpoint gets connections, and the backends see the pod's own
    // address, except the pod reaching itself (hairpin), which is masqueraded.
    let answers = connect_many(&c.ns.pods[0], cip, 60);
    assert_eq!(
        names(&answers),
        all_pods(),
        "60 connects from pod-a spread over all endpoints"
    );
    for a in answers.iter().flatten() {
        let (who, peer) = a.split_once(' ').unwrap();
        let want = if who == "pod-a" { BRIDGE_IP } else { PODS[0].1 };
        assert_eq!(peer, want.to_string(), "client address seen by {who}");
    }
    // From the node itself.
    let answers = connect_many(&c.ns.node, cip, 60);
    assert_eq!(
        names(&answers),
        all_pods(),
        "60 connects from the node spread over all endpoints"
    );

    // From outside the cluster: the NodePort on the node's address, the externalIP and the
    // load-balancer IP; masqueraded (policy Cluster), so backends see the node's bridge IP.
    let np = SocketAddrV4::new(NODE_IP, node_port(&svc));
    let answers = connect_many(&c.ns.client, np, 30);
    assert_eq!(names(&answers), all_pods(), "NodePort from outside");
    assert!(
        answers
            .iter()
            .flatten()
            .all(|a| a.ends_with(&BRIDGE_IP.to_string()))
    );
    let ext = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 100), 80);
    assert_eq!(
        names(&connect_many(&c.ns.client, ext, 30)),
        all_pods(),
        "externalIP from outside"
    );
    let lb_ip: Ipv4Addr = eventually(
        "the load-balancer IP is allocated",
        Duration::from_secs(10),
        || {
            let s = futures::executor::block_on(c.services().get("web")).ok()?;
            s.status?
                .load_balancer?
                .ingress?
                .first()?
                .ip
                .as_ref()?
                .parse()
                .ok()
        },
    )
    .await;
    let lb = SocketAddrV4::new(lb_ip, 80);
    eventually(
        "the LB IP answers from outside",
        Duration::from_secs(10),
        || connect_in(&c.ns.client, lb).ok(),
    )
    .await;
    assert_eq!(
        names(&connect_many(&c.ns.client, lb, 30)),
        all_pods(),
        "LB IP from outside"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_refuses_at_once() {
    let c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "empty", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}
        }))
        .await;
    let cip = cluster_ip(&svc);
    // Wait until the proxy has the service (as a no-endpoint element).
    eventually(
        "the service's reject element",
        Duration::from_secs(10),
        || {
            let t = table_json(&c.ns)?;
            table_names(&t)
                .iter()
                .any(|n| n.starts_with("map-element") && n.contains(&cip.to_string()))
                .then_some(())
        },
    )
    .await;

    let target = SocketAddrV4::new(cip, 80);
    for (who, ns) in [("pod", &c.ns.pods[0]), ("node", &c.ns.node)] {
        let started = Instant::now();
        let err = connect_in(ns, target).expect_err("no endpoints: the connection fails");
        assert_eq!(
            err.kind(),
            ErrorKind::ConnectionRefused,
            "from the {who}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once from the {who}"
        );
    }
    let np = SocketAddrV4::new(NODE_IP, node_port(&svc));
    let err = connect_in(&c.ns.client, np).expect_err("NodePort without endpoints");
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "NodePort from outside: {err}"
    );

    // UDP: the datagram is answered with ICMP port unreachable, which a connected socket
    // reports as ECONNREFUSED.
    let udp = c.ns.pods[0]
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            s.connect(SocketAddrV4::new(cip, 53)).unwrap();
            s.send(b"hello").unwrap();
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|_| ())
        })
        .unwrap();
    assert_eq!(
        udp.unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "UDP gets port unreachable"
    );

    // An address of the service range that no Service has is refused too.
    let err = connect_in(
        &c.ns.pods[0],
        SocketAddrV4::new(Ipv4Addr::new(10, 96, 250, 250), 80),
    )
    .expect_err("unallocated ClusterIP");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // And a known ClusterIP on a port it does not serve.
    let err = connect_in(&c.ns.pods[0], SocketAddrV4::new(cip, 81)).expect_err("wrong port");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_go_live_quickly_and_a_deleted_service_leaves_nothing() {
    let mut c = Cluster::start().await;
    let keep = c
        .create_service(json!({
            "metadata": {"name": "keep", "namespace": "default"},
            "spec": {"externalIPs": ["192.0.2.50"], "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    c.set_endpoints("keep", tcp_ports(), &[(2, NODE, true, true, false)])
        .await;
    // Bad input: another Service claiming the same externalIP and port. It must not break
    // the first one's rules (nor anyone else's).
    c.create_service(json!({
        "metadata": {"name": "clash", "namespace": "default"},
        "spec": {"externalIPs": ["192.0.2.50"], "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .await;
    c.set_endpoints("clash", tcp_ports(), &[(0, NODE, true, true, false)])
        .await;

    let svc = c
        .create_service(json!({
            "metadata": {"name": "dyn", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    c.set_endpoints("dyn", tcp_ports(), &[(0, NODE, true, true, false)])
        .await;
    let client = &c.ns.pods[2];
    eventually("dyn answers", Duration::from_secs(10), || {
        connect_in(client, cip).ok()
    })
    .await;

    // A new endpoint: live within a second of the API write.
    let started = Instant::now();
    c.set_endpoints(
        "dyn",
        tcp_ports(),
        &[(0, NODE, true, true, false), (1, NODE, true, true, false)],
    )
    .await;
    eventually("pod-b gets connections", Duration::from_secs(1), || {
        names(&connect_many(client, cip, 10))
            .contains("pod-b")
            .then_some(())
    })
    .await;
    eprintln!("endpoint added -> live: {:?}", started.elapsed());

    // pod-a not ready: out of rotation.
    c.set_endpoints(
        "dyn",
        tcp_ports(),
        &[(0, NODE, false, false, false), (1, NODE, true, true, false)],
    )
    .await;
    eventually("only pod-b", Duration::from_secs(1), || {
        (names(&connect_many(client, cip, 20)) == BTreeSet::from(["pod-b".to_string()]))
            .then_some(())
    })
    .await;
    // Only a terminating-but-serving endpoint left: it is used (as kube-proxy does).
    c.set_endpoints(
        "dyn",
        tcp_ports(),
        &[(0, NODE, false, true, true), (1, NODE, false, false, true)],
    )
    .await;
    eventually(
        "the serving terminating endpoint",
        Duration::from_secs(1),
        || {
            (names(&connect_many(client, cip, 20)) == BTreeSet::from(["pod-a".to_string()]))
                .then_some(())
        },
    )
    .await;

    // The clashing externalIP belongs to the lowest name (clash), whichever synced first;
    // the ClusterIPs of both work.
    let ext = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 50), 80);
    assert_eq!(
        names(&connect_many(&c.ns.client, ext, 10)),
        BTreeSet::from(["pod-a".to_string()]),
        "the externalIP stays with the first Service in name order (clash)"
    );
    let keep_cip = SocketAddrV4::new(cluster_ip(&keep), 80);
    assert_eq!(
        names(&connect_many(client, keep_cip, 5)),
        BTreeSet::from(["pod-c".to_string()])
    );

    // Deleted: no chain, set or map element of it is left.
    let cip_text = cip.ip().to_string();
    c.delete_service("dyn").await;
    eventually(
        "nothing of dyn left in the table",
        Duration::from_secs(2),
        || {
            let t = table_json(&c.ns)?;
            let left: Vec<String> = table_names(&t)
                .into_iter()
                .filter(|n| n.contains("default/dyn/") || n.contains(&cip_text))
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    let err = connect_in(client, cip).expect_err("deleted service");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert!(
        connect_in(client, keep_cip).is_ok(),
        "other services untouched"
    );

    // The proxy stops (rules stay, so a restart drops nothing); cleanup removes the table.
    c.stop_proxy().await;
    assert!(
        table_json(&c.ns).is_some(),
        "rules stay after the proxy stops"
    );
    assert!(
        connect_in(&c.ns.pods[2], keep_cip).is_ok(),
        "and still work"
    );
    podnet_proxy::cleanup(Some(&c.ns.node)).unwrap();
    assert!(table_json(&c.ns).is_none(), "cleanup leaves no table");
    podnet_proxy::cleanup(Some(&c.ns.node)).expect("cleanup twice is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_keeps_a_client_on_one_backend() {
    let mut c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "sticky", "namespace": "default"},
            "spec": {"sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let all = [
        (0, NODE, true, true, false),
        (1, NODE, true, true, false),
        (2, NODE, true, true, false),
    ];
    c.set_endpoints("sticky", tcp_ports(), &all).await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    eventually("sticky answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[0], cip).ok()
    })
    .await;
    let mut chosen = Vec::new();
    for (who, ns) in [
        ("pod-a", &c.ns.pods[0]),
        ("pod-b", &c.ns.pods[1]),
        ("node", &c.ns.node),
    ] {
        let got = names(&connect_many(ns, cip, 30));
        assert_eq!(
            got.len(),
            1,
            "all 30 connects from {who} on one backend: {got:?}"
        );
        chosen.push(got);
    }
    let clients = affinity_clients(&table_text(&c.ns).unwrap());
    assert_eq!(clients.len(), 3, "three clients remembered: {clients:?}");

    // A restarted proxy's full sync replaces the tables: the clients stay remembered
    // (with the time they had left) and stay on their backends.
    c.stop_proxy().await;
    c.start_proxy();
    wait_for_a_full_sync(&c).await;
    assert_eq!(
        affinity_clients(&table_text(&c.ns).unwrap()),
        clients,
        "the affinity sets keep their clients over a full sync"
    );
    for ((who, ns), before) in [
        ("pod-a", &c.ns.pods[0]),
        ("pod-b", &c.ns.pods[1]),
        ("node", &c.ns.node),
    ]
    .into_iter()
    .zip(chosen)
    {
        let got = names(&connect_many(ns, cip, 10));
        assert_eq!(got, before, "{who} stays on its backend after the restart");
    }
}

/// The client addresses in the `affinity-…` sets of a ruleset listing, sorted. nft
/// breaks a long element list over several lines, so a set's lines are joined first.
fn affinity_clients(ruleset: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut set: Option<String> = None;
    for line in ruleset.lines().map(str::trim) {
        if line.starts_with("set affinity-") {
            set = Some(String::new());
        } else if line == "}" {
            if let Some(text) = set.take()
                && let Some((_, rest)) = text.split_once("elements = {")
            {
                let elements = rest.split('}').next().unwrap_or("");
                out.extend(
                    elements
                        .split(',')
                        .filter_map(|e| e.split_whitespace().next())
                        .map(str::to_string),
                );
            }
        } else if let Some(text) = set.as_mut() {
            text.push(' ');
            text.push_str(line);
        }
    }
    out.sort();
    out
}

/// Waits until a restarted proxy has synced: a marker Service appears in the rules.
/// Returns the marker's ClusterIP.
async fn wait_for_a_full_sync(c: &Cluster) -> String {
    let marker = c
        .create_service(json!({
            "metadata": {"name": "marker", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 81, "targetPort": 8080}]}
        }))
        .await;
    let marker_ip = cluster_ip(&marker).to_string();
    eventually(
        "the restarted proxy synced",
        Duration::from_secs(10),
        || {
            table_text(&c.ns)
                .filter(|t| t.contains(&marker_ip))
                .map(|_| ())
        },
    )
    .await;
    marker_ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_traffic_policy_local_preserves_the_source_and_serves_health() {
    let c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let hc = svc
        .spec
        .as_ref()
        .unwrap()
        .health_check_node_port
        .expect("healthCheckNodePort") as u16;
    // pod-a is on this node, pod-b on another one.
    c.set_endpoints(
        "local",
        tcp_ports(),
        &[
            (0, NODE, true, true, false),
            (1, "node-2", true, true, false),
        ],
    )
    .await;
    let np = SocketAddrV4::new(NODE_IP, node_port(&svc));
    eventually("NodePort answers", Duration::from_secs(10), || {
        connect_in(&c.ns.client, np).ok()
    })
    .await;
    let answers = connect_many(&c.ns.client, np, 20);
    for a in &answers {
        assert_eq!(
            a.as_ref().unwrap(),
            &format!("pod-a {CLIENT_IP}"),
            "only the local endpoint, and it sees the real client address"
        );
    }
    // Pods still reach every endpoint through the ClusterIP.
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    assert_eq!(names(&connect_many(&c.ns.pods[2], cip, 40)).len(), 2);

    let health = |ns: &podnet_kernel::NetNs| -> Option<String> {
        let addr = SocketAddrV4::new(NODE_IP, hc);
        ns.run(|| {
            use std::io::{Read, Write};
            let mut s =
                std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .unwrap()
    };
    let ok = eventually(
        "the health check port answers",
        Duration::from_secs(5),
        || health(&c.ns.client),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
    assert!(ok.contains("\"localEndpoints\":1"), "{ok}");

    // No local endpoint any more: the health check says 503, outside traffic is not served
    // here, and pods still reach the remote endpoint.
    c.set_endpoints("local", tcp_ports(), &[(1, "node-2", true, true, false)])
        .await;
    let down = eventually("health check says 503", Duration::from_secs(2), || {
        health(&c.ns.client).filter(|r| r.starts_with("HTTP/1.1 503"))
    })
    .await;
    assert!(down.contains("\"localEndpoints\":0"), "{down}");
    assert!(
        connect_in(&c.ns.client, np).is_err(),
        "no local endpoint: not served from outside"
    );
    assert_eq!(
        names(&connect_many(&c.ns.pods[2], cip, 5)),
        BTreeSet::from(["pod-b".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_udp_conntrack_entry_is_deleted_when_its_endpoint_goes() {
    let c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "dns", "namespace": "default"},
            "spec": {"ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}
        }))
        .await;
    let udp_ports = json!([{"name": "dns", "port": POD_UDP_PORT, "protocol": "UDP"}]);
    c.set_endpoints("dns", udp_ports.clone(), &[(0, NODE, true, true, false)])
        .await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 53);
    // One client socket (one source port, so one conntrack entry) used throughout.
    let sock = c.ns.pods[2]
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:40053").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s.connect(cip).unwrap();
            s
        })
        .unwrap();
    let ask = || -> Option<String> {
        sock.send(b"q").ok()?;
        let mut buf = [0u8; 128];
        let n = sock.recv(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .split_whitespace()
                .next()?
                .to_string(),
        )
    };
    let first = eventually("pod-a answers over UDP", Duration::from_secs(10), ask).await;
    assert_eq!(first, "pod-a");

    let conntrack_to_pod_a = || -> usize {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.ns.name("node"),
                "conntrack",
                "-L",
                "-p",
                "udp",
                "--orig-dst",
            ])
            .arg(cip.ip().to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("src={} ", PODS[0].1)))
            .count()
    };
    assert_eq!(conntrack_to_pod_a(), 1, "the flow is tracked to pod-a");

    // pod-a goes, pod-b comes: the same client flow must now reach pod-b (without the
    // cleanup the old entry would keep it on pod-a, which is still up).
    c.set_endpoints("dns", udp_ports, &[(1, NODE, true, true, false)])
        .await;
    let now = eventually(
        "the same flow reaches pod-b",
        Duration::from_secs(3),
        || ask().filter(|w| w == "pod-b"),
    )
    .await;
    assert_eq!(now, "pod-b");
    assert_eq!(conntrack_to_pod_a(), 0, "no entry to the removed endpoint");
}

#[tokio::test]
async fn userspace_mode_and_bad_configuration_are_refused_clearly() {
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut cfg = podnet_proxy::ProxyConfig::new("n1", vec![]);
    cfg.mode = podnet_proxy::ProxyMode::Userspace;
    let e = podnet_proxy::run(client.clone(), cfg, rx.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs the node's IP"), "{e}");
    let mut cfg = podnet_proxy::ProxyConfig::new("n1", vec![]);
    cfg.service_cidr = Some("10.244.0.0/20".parse().unwrap());
    let e = podnet_proxy::run(client, cfg, rx).await.unwrap_err();
    assert!(e.to_string().contains("overlaps"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_writes_the_same_rules_and_keeps_connections() {
    let mut c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    let all = [
        (0, NODE, true, true, false),
        (1, NODE, true, true, false),
        (2, NODE, true, true, false),
    ];
    c.set_endpoints("web", tcp_ports(), &all).await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    eventually("web answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[0], cip).ok()
    })
    .await;
    // A connection established through the service before the restart, not used yet.
    let held = c.ns.pods[1]
        .run(|| std::net::TcpStream::connect_timeout(&cip.into(), Duration::from_secs(2)))
        .unwrap()
        .expect("connection through the ClusterIP");
    let before = table_text(&c.ns).expect("rules installed");

    c.stop_proxy().await;
    c.start_proxy();
    // The new proxy's first sync rewrites the table; wait until it has, then compare
    // everything but the marker service that showed it.
    let marker_ip = wait_for_a_full_sync(&c).await;
    c.delete_service("marker").await;
    let after = eventually("the marker is gone again", Duration::from_secs(5), || {
        table_text(&c.ns).filter(|t| !t.contains(&marker_ip))
    })
    .await;
    assert_eq!(
        before, after,
        "rules identical before and after the restart"
    );

    // Used only now: the request and the answer cross the restarted proxy's rules.
    let mut held = held;
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    use std::io::{Read as _, Write as _};
    held.write_all(b"hello\n").unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer)
        .expect("the connection made before the restart still works");
    assert!(answer.starts_with("pod-"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_policy_local_keeps_cluster_traffic_on_this_node() {
    let c = Cluster::start().await;
    let svc = c
        .create_service(json!({
            "metadata": {"name": "itp", "namespace": "default"},
            "spec": {"type": "NodePort", "internalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .await;
    // pod-a is on this node; pod-b and pod-c are reported on another one.
    let eps = [
        (0, NODE, true, true, false),
        (1, "node-2", true, true, false),
        (2, "node-2", true, true, false),
    ];
    c.set_endpoints("itp", tcp_ports(), &eps).await;
    let cip = SocketAddrV4::new(cluster_ip(&svc), 80);
    eventually("itp answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[2], cip).ok()
    })
    .await;
    assert_eq!(
        names(&connect_many(&c.ns.pods[2], cip, 30)),
        BTreeSet::from(["pod-a".to_string()]),
        "ClusterIP traffic stays on this node's endpoint"
    );
    // External traffic (policy Cluster) still uses every endpoint, also from the node
    // itself through its own NodePort.
    let np = SocketAddrV4::new(NODE_IP, node_port(&svc));
    assert_eq!(names(&connect_many(&c.ns.client, np, 60)), all_pods());
    assert_eq!(names(&connect_many(&c.ns.node, np, 60)), all_pods());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sctp_and_named_target_ports_are_installed() {
    // This kernel may lack SCTP sockets, so the SCTP service is checked in the ruleset
    // (its transaction applied) rather than with a connection; a TCP service next to it
    // with a named targetPort (resolved in its EndpointSlice) is checked for real.
    let c = Cluster::start().await;
    let sctp = c
        .create_service(json!({
            "metadata": {"name": "sig", "namespace": "default"},
            "spec": {"ports": [{"name": "sig", "port": 3868, "targetPort": 3868, "protocol": "SCTP"}]}
        }))
        .await;
    c.set_endpoints(
        "sig",
        json!([{"name": "sig", "port": 3868, "protocol": "SCTP"}]),
        &[(0, NODE, true, true, false)],
    )
    .await;
    let named = c
        .create_service(json!({
            "metadata": {"name": "named", "namespace": "default"},
            "spec": {"ports": [{"name": "web", "port": 80, "targetPort": "http-alt"}]}
        }))
        .await;
    c.set_endpoints(
        "named",
        json!([{"name": "web", "port": POD_PORT, "protocol": "TCP"}]),
        &[(1, NODE, true, true, false)],
    )
    .await;
    let key = format!("{}", cluster_ip(&sctp));
    eventually(
        "the SCTP service's element",
        Duration::from_secs(10),
        || {
            let t = table_json(&c.ns)?;
            let text = t.to_string();
            (text.contains(&key) && text.contains("\"sctp\"")).then_some(())
        },
    )
    .await;
    let cip = SocketAddrV4::new(cluster_ip(&named), 80);
    let got = eventually("the named port answers", Duration::from_secs(10), || {
        connect_in(&c.ns.pods[2], cip).ok()
    })
    .await;
    assert!(got.starts_with("pod-b"), "{got}");
}
