//! The userspace mode for real: a node namespace with three pods on its bridge and a
//! client outside the cluster; the proxy runs in the node and users connect to the
//! ClusterIP from a pod and from the node, and to the NodePort from outside.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use podnet_kernel::NetNs;
use podnet_proxy::userspace::{Protocol, ServicePort, UserspaceConfig, UserspaceProxy, rules};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 80, 1);
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 80, 2);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const BACKEND_PORT: u16 = 8080;

fn ip(args: &str) {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one test; deleted on drop, even when the test fails.
struct Cluster {
    tag: String,
    servers: Vec<Server>,
}

struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.servers.clear();
        for ns in self.namespaces() {
            let _ = NetNs::delete(&ns);
        }
    }
}

impl Cluster {
    /// `tag` keeps the namespace names of parallel tests apart.
    fn new(tag: &str) -> Cluster {
        let mut cluster = Cluster {
            tag: tag.to_string(),
            servers: Vec::new(),
        };
        for ns in cluster.namespaces() {
            let _ = NetNs::delete(&ns);
            NetNs::create(&ns).unwrap();
        }
        let node = cluster.node();
        ip(&format!("-n {node} link set lo up"));
        ip(&format!("-n {node} link add cni0 type bridge"));
        ip(&format!("-n {node} addr add 10.244.1.1/24 dev cni0"));
        ip(&format!("-n {node} link set cni0 up"));
        for i in 1..=3 {
            let pod = cluster.pod(i);
            ip(&format!(
                "-n {node} link add veth{i} type veth peer name eth0 netns {pod}"
            ));
            ip(&format!("-n {node} link set veth{i} master cni0 up"));
            ip(&format!("-n {pod} addr add 10.244.1.{}/24 dev eth0", i + 1));
            ip(&format!("-n {pod} link set eth0 up"));
            ip(&format!("-n {pod} link set lo up"));
            ip(&format!("-n {pod} route add default via 10.244.1.1"));
        }
        let outside = cluster.outside();
        ip(&format!(
            "-n {node} link add eth0 type veth peer name eth0 netns {outside}"
        ));
        ip(&format!("-n {node} addr add {NODE_IP}/24 dev eth0"));
        ip(&format!("-n {node} link set eth0 up"));
        // The node's default route: locally generated traffic to a ClusterIP needs a
        // route before the output hook rewrites it, as on any real node.
        ip(&format!("-n {node} route add default via {OUTSIDE_IP}"));
        ip(&format!("-n {outside} addr add {OUTSIDE_IP}/24 dev eth0"));
        ip(&format!("-n {outside} link set eth0 up"));
        ip(&format!("-n {outside} link set lo up"));
        for i in 1..=3 {
            let server = serve(&cluster.pod(i), format!("pod{i}"));
            cluster.servers.push(server);
        }
        cluster
    }

    fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.node(), self.outside()];
        all.extend((1..=3).map(|i| self.pod(i)));
        all
    }

    fn node(&self) -> String {
        format!("pn-us{}-node", self.tag)
    }

    fn outside(&self) -> String {
        format!("pn-us{}-out", self.tag)
    }

    fn pod(&self, i: usize) -> String {
        format!("pn-us{}-pod{i}", self.tag)
    }

    fn proxy(&self) -> UserspaceProxy {
        UserspaceProxy::start(UserspaceConfig {
            netns: Some(NetNs::open(&self.node()).unwrap()),
            node_ip: NODE_IP,
            udp_idle_timeout: Duration::from_secs(2),
            state_file: None,
        })
        .unwrap()
    }
}

/// A TCP and a UDP server on port 8080 in `ns` that answer with `name`.
fn serve(ns: &str, name: String) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let netns = NetNs::open(ns).unwrap();
    let tcp = netns
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, BACKEND_PORT)))
        .unwrap()
        .unwrap();
    let udp = netns
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BACKEND_PORT)))
        .unwrap()
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (tcp_stop, udp_stop) = (stop.clone(), stop.clone());
    let tcp_name = name.clone();
    let tcp_thread = std::thread::spawn(move || {
        while !tcp_stop.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut s, _)) => {
                    use std::io::Write as _;
                    let _ = s.write_all(tcp_name.as_bytes());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
    });
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !udp_stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(name.as_bytes(), from);
            }
        }
    });
    Server {
        stop,
        threads: vec![tcp_thread, udp_thread],
    }
}

/// Connects from namespace `ns` and reads the answer: the backend's name, or the error.
fn tcp_ask(ns: &str, to: SocketAddrV4) -> Result<String, std::io::Error> {
    NetNs::open(ns)
        .unwrap()
        .run(|| {
            let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .unwrap()
}

fn udp_ask(ns: &str, to: SocketAddrV4) -> Result<String, std::io::Error> {
    NetNs::open(ns)
        .unwrap()
        .run(|| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send(b"who")?;
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap()
}

fn endpoints(pods: &[u8]) -> Vec<SocketAddrV4> {
    pods.iter()
        .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, i + 1), BACKEND_PORT))
        .collect()
}

fn web(protocol: Protocol, pods: &[u8], affinity: Option<Duration>) -> ServicePort {
    ServicePort {
        name: format!("default/web:{}", protocol.nft()),
        protocol,
        cluster_ip: Some(CLUSTER_IP),
        port: 80,
        external_ips: vec![],
        node_port: Some(if protocol == Protocol::Tcp {
            30080
        } else {
            30081
        }),
        affinity,
        endpoints: endpoints(pods),
    }
}

fn table(ns: &str) -> Option<String> {
    podnet_kernel::nft::list_table(Some(&NetNs::open(ns).unwrap()), "ip", rules::TABLE).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterip_and_nodeport_reach_every_backend_from_pods_node_and_outside() {
    let cluster = Cluster::new("a");
    let proxy = cluster.proxy();
    let report = proxy
        .sync(vec![
            web(Protocol::Tcp, &[1, 2, 3], None),
            web(Protocol::Udp, &[1, 2, 3], None),
        ])
        .await
        .unwrap();
    assert_eq!(report.ports.len(), 2, "{report:?}");
    let proxy_port = report.ports["default/web:tcp"];
    let cluster_ip = SocketAddrV4::new(CLUSTER_IP, 80);

    // From a pod: round-robin over all three backends.
    let (node, outside, pod1) = (cluster.node(), cluster.outside(), cluster.pod(1));
    let answers = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|_| tcp_ask(&pod1, cluster_ip).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let seen: BTreeSet<&str> = answers.iter().map(String::as_str).collect();
    assert_eq!(
        seen,
        BTreeSet::from(["pod1", "pod2", "pod3"]),
        "{answers:?}"
    );

    // From the node itself, and the NodePort from outside the cluster.
    let (n2, o2, pod2) = (node.clone(), outside.clone(), cluster.pod(2));
    let (from_node, from_outside, udp_from_pod) = tokio::task::spawn_blocking(move || {
        (
            tcp_ask(&n2, cluster_ip),
            tcp_ask(&o2, SocketAddrV4::new(NODE_IP, 30080)),
            udp_ask(&pod2, cluster_ip),
        )
    })
    .await
    .unwrap();
    assert!(from_node.unwrap().starts_with("pod"));
    assert!(from_outside.unwrap().starts_with("pod"));
    assert!(udp_from_pod.unwrap().starts_with("pod"));

    // The article's four chains hold the service.
    let text = table(&node).unwrap();
    for chain in rules::CHAINS {
        let block = text
            .split(&format!("chain {chain} {{"))
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        assert!(
            block.contains(&format!(":{proxy_port}")),
            "chain {chain} does not send to the proxy port {proxy_port}:\n{text}"
        );
    }

    proxy.stop(true).await.unwrap();
    assert_eq!(table(&node), None, "the table is left after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_no_endpoints_retry_and_removal() {
    let cluster = Cluster::new("b");
    let proxy = cluster.proxy();
    let cluster_ip = SocketAddrV4::new(CLUSTER_IP, 80);
    let pod1 = cluster.pod(1);

    // ClientIP affinity: one client stays on one backend.
    proxy
        .sync(vec![web(
            Protocol::Tcp,
            &[1, 2, 3],
            Some(Duration::from_secs(60)),
        )])
        .await
        .unwrap();
    let p = pod1.clone();
    let answers = tokio::task::spawn_blocking(move || {
        (0..6)
            .map(|_| tcp_ask(&p, cluster_ip).unwrap())
            .collect::<BTreeSet<_>>()
    })
    .await
    .unwrap();
    assert_eq!(answers.len(), 1, "affinity broken: {answers:?}");

    // An endpoint that refuses (nothing listens on 10.244.1.9) is skipped.
    let mut with_dead = web(Protocol::Tcp, &[1], None);
    with_dead
        .endpoints
        .insert(0, SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 9), 8080));
    with_dead
        .endpoints
        .push(SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 3), 9));
    proxy.sync(vec![with_dead]).await.unwrap();
    let p = pod1.clone();
    let answers = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|_| tcp_ask(&p, cluster_ip).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(answers.iter().all(|a| a == "pod1"), "{answers:?}");

    // No endpoints: refused at once, not accepted and closed.
    proxy
        .sync(vec![web(Protocol::Tcp, &[], None)])
        .await
        .unwrap();
    let p = pod1.clone();
    let (refused, took) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        (tcp_ask(&p, cluster_ip), start.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(
        refused.unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "a service without endpoints must refuse"
    );
    assert!(took < Duration::from_secs(1), "refusing took {took:?}");

    // The service removed: no rule, no element of it left.
    proxy.sync(vec![]).await.unwrap();
    let text = table(&cluster.node()).unwrap();
    assert!(
        !text.contains("default/web") && !text.contains("10.96.0.10"),
        "{text}"
    );
    proxy.stop(true).await.unwrap();
}

/// The four chains and the reject sets written over netlink are what `nft -f` makes of
/// the same table's text.
#[test]
fn the_userspace_table_over_netlink_lists_as_nft_makes_its_text() {
    use podnet_kernel::netns::OwnedNetNs;
    let portal = |name: &str, protocol, proxy_port| rules::Portal {
        name: name.into(),
        protocol,
        addresses: vec![CLUSTER_IP, Ipv4Addr::new(192, 0, 2, 7)],
        port: 80,
        node_port: Some(30080),
        proxy_port,
    };
    let table = rules::table(
        NODE_IP,
        &[
            portal("default/web:tcp", Protocol::Tcp, Some(40123)),
            portal("default/dns:udp", Protocol::Udp, None),
        ],
    );
    let id = std::process::id();
    let by_netlink = OwnedNetNs::create(&format!("pnu-nl-{id}")).unwrap();
    let by_nft = OwnedNetNs::create(&format!("pnu-nft-{id}")).unwrap();
    podnet_kernel::nftnl::apply(Some(&by_netlink), &table.replacing_batch()).unwrap();
    podnet_kernel::nft::apply(Some(&by_nft), &table.to_string()).unwrap();
    let listed = podnet_kernel::nft::list_table(Some(&by_netlink), "ip", rules::TABLE).unwrap();
    assert!(
        listed
            .as_ref()
            .is_some_and(|t| t.contains("redirect to :40123"))
    );
    let by_nft = podnet_kernel::nft::list_table(Some(&by_nft), "ip", rules::TABLE).unwrap();
    // (A hash set lists its elements in an order of its own.)
    let sorted = |t: Option<String>| t.map(|t| podnet_kernel::nft::sorted_elements(&t));
    assert_eq!(sorted(listed), sorted(by_nft));
    podnet_proxy::userspace::cleanup(Some(&by_netlink)).unwrap();
    assert_eq!(
        podnet_kernel::nft::list_table(Some(&by_netlink), "ip", rules::TABLE).unwrap(),
        None
    );
}
