//! The node side of the agent against a real apiserver started in-process (embedded store in
//! a temp dir): Node registration and status, the Lease, `subnet.env` and the conflist, and
//! peer routes — the kernel parts only inside network namespaces the tests create (removed
//! on drop, even on failure). Runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use podnet_agent::agent::{self, AgentConfig};
use podnet_agent::node::NodeTimings;
use podnet_agent::node::files::NodeFiles;
use podnet_agent::node::health::{self, Health, NetworkHealth, Part, PartHealth};
use podnet_agent::node::lease::{self, NODE_LEASE_NAMESPACE, NodeLease};
use podnet_agent::node::network::{self, NetworkConfig, OverlaySettings};
use podnet_agent::node::registration::{self, NodeIdentity, Readiness};
use podnet_agent::node::sysinfo::SystemInfo;
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::route::{MAIN_TABLE, PROTO_PODNET};
use podnet_kernel::{NetNs, Netlink, sysctl};
use serde_json::json;
use tokio::sync::watch;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh namespace `pna-TAG-PID-N`, deleted when the guard drops.
fn test_ns(tag: &str) -> OwnedNetNs {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("pna-{tag}-{}-{n}", std::process::id());
    OwnedNetNs::create(&name).expect("create test namespace")
}

/// A test namespace with an underlay inside: veth `und0` (172.30.0.1/24, MTU 1400) and
/// its peer `und1`, both up, and `lo` up.
fn with_underlay(tag: &str) -> OwnedNetNs {
    let t = test_ns(tag);
    let mut nl = Netlink::open_in(&t).expect("netlink in test namespace");
    let lo = nl.require_link("lo").expect("lo");
    nl.set_up(lo.index).expect("lo up");
    nl.create_veth("und0", "und1", None, Some(1400))
        .expect("veth");
    let a = nl.require_link("und0").expect("und0");
    let b = nl.require_link("und1").expect("und1");
    nl.ensure_address(a.index, "172.30.0.1/24".parse().unwrap())
        .expect("address");
    nl.set_up(a.index).expect("up");
    nl.set_up(b.index).expect("up");
    t
}

/// `ip -n NS ARGS`, which must succeed; its output.
fn ip_in(ns: &OwnedNetNs, args: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.name()])
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -n {} {args}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apiserver_config(dir: &Path) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        store: StoreConfig::Embedded,
        allocators: AllocatorConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            nodeport_range: 30000..=32767,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_size: 24,
            lb_pool: None,
        },
        controllers: ControllerConfig {
            node_monitor_grace: Duration::from_secs(40),
            ..ControllerConfig::default()
        },
        bookmark_interval: Duration::from_secs(1),
        tls: Default::default(),
        extra_listeners: Vec::new(),
        versions: Default::default(),
    }
}

async fn start_apiserver(dir: &Path) -> (ApiServer, kube::Client) {
    let server = ApiServer::start(apiserver_config(dir))
        .await
        .expect("apiserver starts");
    let client = agent::client_from_kubeconfig(server.kubeconfig_path())
        .await
        .expect("client from the apiserver's kubeconfig");
    (server, client)
}

/// Waits (bounded) until `check` passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: not true within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn fast_timings() -> NodeTimings {
    NodeTimings {
        lease_renew: Duration::from_millis(300),
        lease_duration_seconds: 40,
        status_report: Duration::from_millis(500),
        network_resync: Duration::from_secs(1),
        max_backoff: Duration::from_millis(500),
    }
}

fn condition<'a>(node: &'a Node, kind: &str) -> &'a k8s_openapi::api::core::v1::NodeCondition {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .unwrap_or_else(|| panic!("Node has no {kind} condition: {node:?}"))
}

fn ready_status(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// The backend these tests run: plain routes, what the node network did before the overlay.
/// The network part's config of node "self" (host-gw, resync every second) in `ns`.
fn self_network(id: &NodeIdentity, files: &NodeFiles, ns: &OwnedNetNs) -> NetworkConfig {
    NetworkConfig {
        node_name: "self".into(),
        node_ip: id.internal_ip,
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        files: files.clone(),
        resync: Duration::from_secs(1),
        netns: Some(ns.try_clone().unwrap()),
        overlay: host_gw(),
        metrics: None,
    }
}

fn host_gw() -> OverlaySettings {
    OverlaySettings {
        backend: podnet_overlay::BackendKind::HostGw,
        ..OverlaySettings::default()
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref().and_then(|s| s.pod_cidr.clone())
}

#[tokio::test]
async fn node_registers_ready_keeps_its_pod_cidr_and_renews_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_apiserver(dir.path()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let id = NodeIdentity {
        name: "reg-node".into(),
        internal_ip: Ipv4Addr::new(172, 30, 9, 1),
        system: SystemInfo::detect(),
    };

    // Registration: labels, addresses, nodeInfo, capacity, conditions.
    let registered = registration::register(&nodes, &id, &Readiness::ready())
        .await
        .expect("register");
    let node = nodes.get("reg-node").await.unwrap();
    assert_eq!(node.metadata.uid, registered.metadata.uid);
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "reg-node");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], id.system.architecture);
    let status = node.status.clone().unwrap();
    let addresses: Vec<(String, String)> = status
        .addresses
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        vec![
            ("InternalIP".to_string(), "172.30.9.1".to_string()),
            ("Hostname".to_string(), "reg-node".to_string()),
        ]
    );
    let info = status.node_info.clone().unwrap();
    assert_eq!(info.kubelet_version, "v1.35.0-podnet");
    assert_eq!(
        info.container_runtime_version,
        format!("podnet://{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(info.operating_system, "linux");
    assert_eq!(info.architecture, id.system.architecture);
    assert_eq!(info.os_image, id.system.os_image);
    assert!(!info.os_image.is_empty());
    assert_eq!(
        info.kernel_version,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap()
            .trim()
    );
    for resources in [status.capacity.clone(), status.allocatable.clone()] {
        let r = resources.unwrap();
        assert_eq!(r["pods"].0, "110");
        assert_eq!(r["cpu"].0, id.system.cpus.to_string());
        assert_eq!(r["memory"].0, format!("{}Ki", id.system.memory_kib));
    }
    let ready = condition(&node, "Ready");
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("podnet agent is posting ready status")
    );
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&node, kind).status, "False", "{kind}");
    }
    let cidr = pod_cidr(&node).expect("the apiserver allocated a podCIDR");
    let cidr_net: Ipv4Net = cidr.parse().unwrap();
    assert!(
        "10.244.0.0/16"
            .parse::<Ipv4Net>()
            .unwrap()
            .contains(&cidr_net)
    );

    // An agent restart adopts the Node: same uid and podCIDR, labels repaired.
    nodes
        .patch(
            "reg-node",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"kubernetes.io/arch": "wrong", "team": "x"}}}),
            ),
        )
        .await
        .unwrap();
    let again = registration::register(&nodes, &id, &Readiness::ready())
        .await
        .expect("register again");
    assert_eq!(again.metadata.uid, node.metadata.uid);
    assert_eq!(pod_cidr(&again).as_deref(), Some(cidr.as_str()));
    let labels = again.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/arch"], id.system.architecture);
    assert_eq!(labels["team"], "x", "other labels are kept");

    // The Lease: created, held by the node, owned by the Node, renewed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let (stop_tx, stop_rx) = watch::channel(false);
    let timings = fast_timings();
    let lease_loop = tokio::spawn(lease::run_lease_loop(
        leases.clone(),
        NodeLease {
            node_name: "reg-node".into(),
            duration_seconds: timings.lease_duration_seconds,
            owner: lease::owner_reference(&again),
        },
        timings,
        stop_rx.clone(),
    ));
    let first = eventually("the Lease exists", Duration::from_secs(10), || async {
        leases
            .get_opt("reg-node")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no Lease yet".to_string())
    })
    .await;
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("reg-node"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owners = first.metadata.owner_references.clone().unwrap();
    assert_eq!(owners[0].kind, "Node");
    assert_eq!(owners[0].name, "reg-node");
    assert_eq!(Some(owners[0].uid.clone()), node.metadata.uid);
    let renewed_at = spec.renew_time.clone().unwrap();
    eventually("renewTime advances", Duration::from_secs(10), || {
        let leases = leases.clone();
        let before = renewed_at.clone();
        async move {
            let lease = leases.get("reg-node").await.map_err(|e| e.to_string())?;
            let now = lease
                .spec
                .and_then(|s| s.renew_time)
                .ok_or("no renewTime")?;
            if now > before {
                Ok(())
            } else {
                Err(format!("renewTime still {:?}", now.0))
            }
        }
    })
    .await;

    // Status: re-posted periodically (heartbeat advances) and at once when readiness or the
    // network's health changes.
    let (ready_tx, ready_rx) = watch::channel(Readiness::ready());
    let (health, health_rx) = Health::channel(NetworkHealth::new(true));
    let status_loop = tokio::spawn(registration::run_status_loop(
        nodes.clone(),
        id.clone(),
        ready_rx,
        health_rx,
        NodeTimings {
            status_report: Duration::from_secs(60),
            ..timings
        },
        stop_rx.clone(),
    ));
    ready_tx
        .send(Readiness::not_ready(
            "container runtime network not ready: test",
        ))
        .unwrap();
    eventually(
        "Ready turns False on a readiness change",
        Duration::from_secs(5),
        || async {
            let n = nodes.get("reg-node").await.map_err(|e| e.to_string())?;
            let c = condition(&n, "Ready").clone();
            if c.status == "False"
                && c.reason.as_deref() == Some("KubeletNotReady")
                && c.message.as_deref() == Some("container runtime network not ready: test")
            {
                Ok(())
            } else {
                Err(format!("{c:?}"))
            }
        },
    )
    .await;
    ready_tx.send(Readiness::ready()).unwrap();
    eventually("Ready turns True again", Duration::from_secs(5), || async {
        let n = nodes.get("reg-node").await.map_err(|e| e.to_string())?;
        (ready_status(&n) == "True")
            .then_some(())
            .ok_or_else(|| format!("{:?}", condition(&n, "Ready")))
    })
    .await;
    for part in [Part::Overlay, Part::Masquerade, Part::ServiceProxy] {
        health.report(part, Ok(()));
    }
    network_condition_becomes(&nodes, "False", "PodnetNetworkReady").await;
    for _ in 0..health::FAILURES_BEFORE_UNAVAILABLE {
        health.report(Part::ServiceProxy, Err("Operation not permitted".into()));
    }
    let c = network_condition_becomes(&nodes, "True", "ServiceProxyFailing").await;
    assert_eq!(
        c.message.as_deref(),
        Some("service proxy: Operation not permitted")
    );
    let n = nodes.get("reg-node").await.unwrap();
    assert_eq!(ready_status(&n), "True", "Ready keeps kubelet's meaning");
    health.report(Part::ServiceProxy, Ok(()));
    network_condition_becomes(&nodes, "False", "PodnetNetworkReady").await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), lease_loop)
        .await
        .expect("the lease loop stops on shutdown")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), status_loop)
        .await
        .expect("the status loop stops on shutdown")
        .unwrap();

    // Periodic re-post: the heartbeat advances with no change.
    let (_ready_tx, ready_rx) = watch::channel(Readiness::ready());
    let (_health, health_rx) = Health::channel(NetworkHealth::new(true));
    let (stop_tx, stop_rx) = watch::channel(false);
    let before = condition(&nodes.get("reg-node").await.unwrap(), "Ready")
        .last_heartbeat_time
        .clone()
        .unwrap();
    let status_loop = tokio::spawn(registration::run_status_loop(
        nodes.clone(),
        id.clone(),
        ready_rx,
        health_rx,
        NodeTimings {
            status_report: Duration::from_millis(300),
            ..timings
        },
        stop_rx,
    ));
    eventually(
        "lastHeartbeatTime advances",
        Duration::from_secs(5),
        || async {
            let n = nodes.get("reg-node").await.map_err(|e| e.to_string())?;
            let c = condition(&n, "Ready").clone();
            match c.last_heartbeat_time {
                Some(t) if t > before => Ok(()),
                other => Err(format!("heartbeat still {other:?}")),
            }
        },
    )
    .await;
    // Not known to this loop (nothing reported): the condition posted before is kept.
    let n = nodes.get("reg-node").await.unwrap();
    assert_eq!(condition(&n, "NetworkUnavailable").status, "False");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), status_loop)
        .await
        .expect("the status loop stops")
        .unwrap();
    server.stop().await;
}

/// Waits (5 s at most: far less than the 60 s report period) for the Node's
/// `NetworkUnavailable` condition to have `status` and `reason`.
async fn network_condition_becomes(
    nodes: &Api<Node>,
    status: &str,
    reason: &str,
) -> k8s_openapi::api::core::v1::NodeCondition {
    eventually(
        &format!("NetworkUnavailable {status} ({reason})"),
        Duration::from_secs(5),
        || async {
            let n = nodes.get("reg-node").await.map_err(|e| e.to_string())?;
            let c = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "NetworkUnavailable"))
                .cloned()
                .ok_or("no NetworkUnavailable condition")?;
            if c.status == status && c.reason.as_deref() == Some(reason) {
                Ok(c)
            } else {
                Err(format!("{c:?}"))
            }
        },
    )
    .await
}

/// Creates a peer Node with a requested podCIDR and an InternalIP.
async fn peer(nodes: &Api<Node>, name: &str, cidr: &str, ip: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            // As its agent would have published it (a peer that has not yet is waited for,
            // not counted as this node's overlay failing).
            annotations: Some(
                [("podnet.io/backend-type".to_string(), "host-gw".to_string())].into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.into()),
            ..NodeSpec::default()
        }),
        ..Node::default()
    };
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(pod_cidr(&created).as_deref(), Some(cidr));
    set_internal_ip(nodes, name, ip).await;
}

async fn set_internal_ip(nodes: &Api<Node>, name: &str, ip: &str) {
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ]}})),
        )
        .await
        .unwrap();
}

/// podnet's routes in the namespace's main table, as (destination, gateway).
fn podnet_routes(ns: &NetNs) -> BTreeSet<(String, String)> {
    let mut nl = Netlink::open_in(ns).unwrap();
    nl.routes(MAIN_TABLE)
        .unwrap()
        .into_iter()
        .filter(|r| r.protocol == PROTO_PODNET)
        .map(|r| {
            (
                r.dst.to_string(),
                r.gateway.map(|g| g.to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn routes(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter()
        .map(|(d, g)| (d.to_string(), g.to_string()))
        .collect()
}

fn root_podnet_routes() -> String {
    let out = Command::new("ip")
        .args(["route", "show", "table", "all", "proto", "80"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn node_network_writes_files_and_keeps_peer_routes() {
    let root_before = root_podnet_routes();
    let t = with_underlay("net");
    // Routes that are not podnet's to manage, and a stale one of podnet's.
    ip_in(&t, "route add 10.244.50.0/24 via 172.30.0.50");
    ip_in(&t, "route add 10.99.0.0/24 via 172.30.0.99 proto 80");
    ip_in(&t, "route add 10.244.60.0/24 via 172.30.0.60 proto 80");
    // Someone else's route holding a peer's subnet: reported, never replaced.
    ip_in(&t, "route add 10.244.13.0/24 via 172.30.0.53");

    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_apiserver(&dir.path().join("api")).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let id = NodeIdentity {
        name: "self".into(),
        internal_ip: Ipv4Addr::new(172, 30, 0, 1),
        system: SystemInfo::detect(),
    };
    let own = registration::register(&nodes, &id, &Readiness::not_ready("starting"))
        .await
        .expect("register");
    let own_cidr: Ipv4Net = pod_cidr(&own).expect("podCIDR").parse().unwrap();
    peer(&nodes, "peer-a", "10.244.11.0/24", "172.30.0.11").await;
    peer(&nodes, "peer-b", "10.244.12.0/24", "172.30.0.12").await;
    peer(&nodes, "peer-c", "10.244.13.0/24", "172.30.0.13").await;

    let files = NodeFiles {
        subnet_file: dir.path().join("run/flannel/subnet.env"),
        cni_conf_dir: dir.path().join("etc/cni/net.d"),
        state_dir: dir.path().join("state"),
    };
    let (ready_tx, mut ready_rx) = watch::channel(Readiness::not_ready("starting"));
    let (health, health_rx) = Health::channel(NetworkHealth::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let net = tokio::spawn(network::run(
        client.clone(),
        self_network(&id, &files, &t),
        ready_tx,
        health,
        stop_rx,
    ));
    tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| r.ready))
        .await
        .expect("the node network becomes ready")
        .unwrap();
    // The masquerade table was programmed, but peer-c's route cannot be (someone else's is
    // in the way): the overlay fails, and after a retry or two the network is unavailable.
    let mut health_rx = health_rx;
    let reported = tokio::time::timeout(
        Duration::from_secs(10),
        health_rx.wait_for(|h| h.condition().is_some()),
    )
    .await
    .expect("the overlay and masquerade are reported")
    .unwrap()
    .clone();
    assert_eq!(reported.masquerade, PartHealth::Healthy, "{reported:?}");
    let c = reported.condition().unwrap();
    assert!(c.unavailable, "{reported:?}");
    assert_eq!(c.reason, "OverlayFailing");
    assert!(
        c.message.starts_with(
            "overlay: peer peer-c not set up: a route to 10.244.13.0/24 of another owner"
        ),
        "{c:?}"
    );

    // subnet.env and the conflist, exactly.
    let gateway = Ipv4Addr::from(u32::from(own_cidr.network()) + 1);
    assert_eq!(
        std::fs::read_to_string(&files.subnet_file).unwrap(),
        format!(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={gateway}/{}\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
            own_cidr.prefix_len()
        )
    );
    let conflist = std::fs::read_to_string(files.cni_conf_dir.join("10-podnet.conflist")).unwrap();
    let expected = format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "podnet",
  "plugins": [
    {{
      "type": "podnet-cni",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "capabilities": {{
        "ips": true,
        "mac": true
      }},
      "ipam": {{
        "type": "podnet-cni",
        "subnetFile": "{}",
        "dataDir": "{}"
      }}
    }}
  ]
}}
"#,
        files.subnet_file.display(),
        files.state_dir.join("ipam").display()
    );
    assert_eq!(conflist, expected);
    assert_eq!(
        sysctl::read(&t, "net.ipv4.ip_forward").unwrap(),
        "1",
        "forwarding on in the node's namespace"
    );

    // Peer routes appear; the stale podnet route goes; others' routes stay.
    eventually("peer routes installed", Duration::from_secs(10), || async {
        let got = podnet_routes(&t);
        let want = routes(&[
            ("10.244.11.0/24", "172.30.0.11"),
            ("10.244.12.0/24", "172.30.0.12"),
            ("10.99.0.0/24", "172.30.0.99"),
        ]);
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    let shown = ip_in(&t, "route show");
    assert!(
        shown.contains("10.244.11.0/24 via 172.30.0.11 dev und0"),
        "{shown}"
    );
    assert!(
        shown.contains("10.244.12.0/24 via 172.30.0.12 dev und0"),
        "{shown}"
    );
    assert!(
        shown.contains("10.244.50.0/24 via 172.30.0.50 dev und0"),
        "{shown}"
    );
    assert!(!shown.contains("10.244.60.0/24"), "{shown}");
    assert!(
        shown.contains("10.244.13.0/24 via 172.30.0.53 dev und0"),
        "{shown}"
    );

    // A route deleted by hand comes back at the next resync (no Node changed).
    ip_in(&t, "route del 10.244.11.0/24");
    assert!(!ip_in(&t, "route show").contains("10.244.11.0/24"));
    eventually(
        "the deleted route is restored",
        Duration::from_secs(5),
        || async {
            let got = podnet_routes(&t);
            got.contains(&("10.244.11.0/24".to_string(), "172.30.0.11".to_string()))
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;

    // A peer's new InternalIP moves its route.
    set_internal_ip(&nodes, "peer-a", "172.30.0.21").await;
    eventually(
        "the route follows the new InternalIP",
        Duration::from_secs(5),
        || async {
            let got = podnet_routes(&t);
            let want = routes(&[
                ("10.244.11.0/24", "172.30.0.21"),
                ("10.244.12.0/24", "172.30.0.12"),
                ("10.99.0.0/24", "172.30.0.99"),
            ]);
            (got == want).then_some(()).ok_or(format!("{got:?}"))
        },
    )
    .await;

    // A deleted Node's route disappears.
    nodes
        .delete("peer-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the departed node's route is removed",
        Duration::from_secs(5),
        || async {
            let got = podnet_routes(&t);
            let want = routes(&[
                ("10.244.11.0/24", "172.30.0.21"),
                ("10.99.0.0/24", "172.30.0.99"),
            ]);
            (got == want).then_some(()).ok_or(format!("{got:?}"))
        },
    )
    .await;
    let shown = ip_in(&t, "route show");
    assert!(shown.contains("10.244.50.0/24 via 172.30.0.50"), "{shown}");
    assert!(shown.contains("10.244.13.0/24 via 172.30.0.53"), "{shown}");

    // A file changed by hand is rewritten.
    std::fs::write(&files.subnet_file, "FLANNEL_MTU=9000\n").unwrap();
    eventually(
        "subnet.env is rewritten",
        Duration::from_secs(5),
        || async {
            let text = std::fs::read_to_string(&files.subnet_file).map_err(|e| e.to_string())?;
            text.contains("FLANNEL_MTU=1400").then_some(()).ok_or(text)
        },
    )
    .await;

    // The route in the way removed: peer-c is routed and the overlay healthy again, within
    // the retry back-off rather than only at a resync.
    ip_in(&t, "route del 10.244.13.0/24 via 172.30.0.53");
    let healed = tokio::time::timeout(
        Duration::from_secs(10),
        health_rx.wait_for(|h| h.overlay == PartHealth::Healthy),
    )
    .await
    .expect("the overlay recovers")
    .unwrap()
    .clone();
    assert_eq!(
        healed.condition(),
        Some(health::NetworkCondition::available())
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), net)
        .await
        .expect("the node network stops on shutdown")
        .unwrap()
        .expect("and ends without error");
    server.stop().await;
    assert_eq!(
        root_podnet_routes(),
        root_before,
        "the root namespace is untouched"
    );
}

/// How many PATCHes of Node objects (not of their status) the apiserver has served, from
/// its `apiserver_request_total`.
async fn node_patches(client: &kube::Client) -> u64 {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains("verb=\"PATCH\"")
                && l.contains("resource=\"nodes\"")
                && l.contains("subresource=\"\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Writes to the Node's status every 20 ms while `stop` is false, as the node role's status
/// reports and a busy cluster do: each one is a watch event, so a network pass.
fn status_churn(nodes: Api<Node>, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u32;
        while !*stop.borrow() {
            n += 1;
            let patch = json!({"status": {"nodeInfo": {"bootID": format!("churn-{n}")}}});
            let _ = nodes
                .patch_status("self", &PatchParams::default(), &Patch::Merge(patch))
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test]
async fn overlay_annotations_are_written_once_and_not_again_on_restart() {
    let t = with_underlay("annot");
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_apiserver(&dir.path().join("api")).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let id = NodeIdentity {
        name: "self".into(),
        internal_ip: Ipv4Addr::new(172, 30, 0, 1),
        system: SystemInfo::detect(),
    };
    registration::register(&nodes, &id, &Readiness::not_ready("starting"))
        .await
        .expect("register");
    let files = NodeFiles {
        subnet_file: dir.path().join("run/flannel/subnet.env"),
        cni_conf_dir: dir.path().join("etc/cni/net.d"),
        state_dir: dir.path().join("state"),
    };
    let start = || {
        let (ready_tx, ready_rx) = watch::channel(Readiness::not_ready("starting"));
        let (health, _health_rx) = Health::channel(NetworkHealth::new(false));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(network::run(
            client.clone(),
            self_network(&id, &files, &t),
            ready_tx,
            health,
            stop_rx,
        ));
        (task, ready_rx, stop_tx, _health_rx)
    };
    let published = |nodes: Api<Node>| async move {
        let n = nodes.get("self").await.map_err(|e| e.to_string())?;
        let a = n.metadata.annotations.unwrap_or_default();
        match (
            a.get("podnet.io/backend-type").map(String::as_str),
            a.get("podnet.io/public-ip").map(String::as_str),
        ) {
            (Some("host-gw"), Some("172.30.0.1")) => Ok(()),
            _ => Err(format!("{a:?}")),
        }
    };

    for round in ["start", "restart with unchanged values"] {
        let before = node_patches(&client).await;
        let (churn_stop, churn_rx) = watch::channel(false);
        let churn = status_churn(nodes.clone(), churn_rx);
        let (task, mut ready_rx, stop_tx, _health) = start();
        tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| r.ready))
            .await
            .expect("the node network becomes ready")
            .unwrap();
        eventually(
            "the annotations are published",
            Duration::from_secs(5),
            || published(nodes.clone()),
        )
        .await;
        // Passes keep coming: the status churn's events and two resyncs.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        churn_stop.send(true).unwrap();
        churn.await.unwrap();
        let writes = node_patches(&client).await - before;
        let expected = if round == "start" { 1 } else { 0 };
        assert_eq!(writes, expected, "Node annotation writes at {round}");

        if round == "restart with unchanged values" {
            // Still level-triggered: an annotation removed by hand is put back, once.
            nodes
                .patch(
                    "self",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"podnet.io/backend-type": null}}}),
                    ),
                )
                .await
                .unwrap();
            eventually("the annotation is restored", Duration::from_secs(5), || {
                published(nodes.clone())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(
                node_patches(&client).await - before,
                2,
                "the removal and one repair"
            );
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the node network stops")
            .unwrap()
            .expect("without error");
    }
    server.stop().await;
}

/// The whole agent (`agent::run`), with its apiserver, on a runtime whose threads live in a
/// test namespace: node IP detection, registration, Ready once the network is set up, the
/// Lease, and a clean stop.
#[test]
fn agent_runs_and_stops_inside_a_namespace() {
    let t = with_underlay("agent");
    let dir = tempfile::tempdir().unwrap();
    let ns = t.try_clone().unwrap();
    let root = dir.path().to_path_buf();
    std::thread::spawn(move || {
        ns.enter().expect("enter the test namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = ApiServer::start(apiserver_config(&root.join("api")))
                .await
                .expect("apiserver starts");
            let config = AgentConfig {
                node_name: "agent-node".into(),
                kubeconfig: server.kubeconfig_path().to_path_buf(),
                node_ip: None,
                cluster_cidr: "10.244.0.0/16".parse().unwrap(),
                // The pod runtime checks that its binaries exist; no pod runs here.
                podnet_bin: std::env::current_exe().unwrap(),
                cni_bin_dir: root.clone(),
                cni_conf_dir: root.join("net.d"),
                state_dir: root.join("state"),
                log_dir: root.join("logs"),
                pod_dns: Default::default(),
                subnet_file: root.join("subnet.env"),
                timings: fast_timings(),
                overlay: host_gw(),
                proxy: None,
                policy: None,
                metrics_bind: None,
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let agent = tokio::spawn(agent::run(config, stop_rx));
            let client = agent::client_from_kubeconfig(server.kubeconfig_path())
                .await
                .unwrap();
            let nodes: Api<Node> = Api::all(client.clone());
            let node = eventually("the Node is Ready", Duration::from_secs(15), || async {
                let n = nodes
                    .get_opt("agent-node")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no Node yet")?;
                (ready_status(&n) == "True")
                    .then_some(n.clone())
                    .ok_or_else(|| format!("{:?}", n.status))
            })
            .await;
            let internal = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .map(|a| a.address.clone());
            assert_eq!(internal.as_deref(), Some("172.30.0.1"), "node IP detected");
            let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
            eventually("the Lease exists", Duration::from_secs(5), || async {
                leases
                    .get_opt("agent-node")
                    .await
                    .map_err(|e| e.to_string())?
                    .map(|_| ())
                    .ok_or_else(|| "no Lease".to_string())
            })
            .await;
            let env = std::fs::read_to_string(root.join("subnet.env")).unwrap();
            assert!(env.contains("FLANNEL_MTU=1400"), "{env}");
            assert!(root.join("net.d/10-podnet.conflist").exists());

            assert!(
                !agent.is_finished(),
                "the agent ended by itself: {:?}",
                agent.await
            );
            stop_tx.send(true).unwrap();
            let result = tokio::time::timeout(Duration::from_secs(15), agent)
                .await
                .expect("the agent stops on shutdown")
                .unwrap();
            assert!(result.is_ok(), "{result:?}");
            server.stop().await;
        });
    })
    .join()
    .expect("the agent test thread");
}

#[tokio::test]
async fn agent_reports_a_bad_kubeconfig_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        node_name: "n1".into(),
        kubeconfig: dir.path().join("missing-kubeconfig"),
        node_ip: Some(Ipv4Addr::new(172, 30, 0, 1)),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        podnet_bin: dir.path().join("podnet"),
        cni_bin_dir: dir.path().to_path_buf(),
        cni_conf_dir: dir.path().join("net.d"),
        state_dir: dir.path().join("state"),
        log_dir: dir.path().join("logs"),
        pod_dns: Default::default(),
        subnet_file: dir.path().join("subnet.env"),
        timings: NodeTimings::default(),
        overlay: host_gw(),
        proxy: None,
        policy: None,
        metrics_bind: None,
    };
    let (_stop_tx, stop_rx) = watch::channel(false);
    let err = agent::run(config.clone(), stop_rx.clone())
        .await
        .expect_err("no kubeconfig");
    let text = err.to_string();
    assert!(
        text.contains("missing-kubeconfig") && text.contains("--kubeconfig"),
        "{text}"
    );

    let err = agent::run(
        AgentConfig {
            node_name: "Bad_Name".into(),
            ..config
        },
        stop_rx,
    )
    .await
    .expect_err("bad name");
    assert!(err.to_string().contains("--node-name"), "{err}");
}
