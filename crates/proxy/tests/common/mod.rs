//! A one-node cluster for the proxy's tests: an in-process apiserver (memory store), a
//! "node" namespace with the bridge `cni0` (10.244.1.1/24) and three "pod" namespaces on
//! it (10.244.1.2-4) running small TCP/UDP servers that answer with their own name and the
//! client address they saw, and a "client" namespace outside the cluster (172.31.70.2,
//! the node is 172.31.70.1) that routes 192.0.2.0/24 (externalIPs, LB pool) to the node.
//! `podnet_proxy::run` runs with `netns: Some(node)`. Everything is removed on drop, even
//! when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
use podnet_apiserver::versions::ServedVersions;
use podnet_kernel::{NetNs, OwnedNetNs};
use podnet_proxy::{ProxyConfig, ProxyMode};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle as TaskHandle;

pub const NODE: &str = "node-1";
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 70, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 70, 2);
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const POD_PORT: u16 = 8080;
pub const POD_UDP_PORT: u16 = 5353;
pub const PODS: [(&str, Ipv4Addr); 3] = [
    ("pod-a", Ipv4Addr::new(10, 244, 1, 2)),
    ("pod-b", Ipv4Addr::new(10, 244, 1, 3)),
    ("pod-c", Ipv4Addr::new(10, 244, 1, 4)),
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Small servers in one pod: TCP answers a request line with "<name> <client ip>\n" and
/// closes, UDP answers
/// each datagram with "<name> <client ip>". Stopped and joined on drop.
pub struct PodServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PodServer {
    fn start(ns: &NetNs, name: &'static str) -> PodServer {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.try_clone().unwrap();
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            ns.enter().unwrap();
            let tcp = TcpListener::bind(("0.0.0.0", POD_PORT)).unwrap();
            tcp.set_nonblocking(true).unwrap();
            let udp = UdpSocket::bind(("0.0.0.0", POD_UDP_PORT)).unwrap();
            udp.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            // Bounded by the stop flag (set on drop) and a 10-minute ceiling.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut idle = true;
                if let Ok((mut c, peer)) = tcp.accept() {
                    idle = false;
                    // The answer waits for the client's request line, so a connection
                    // held open proves something when it is finally used.
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut req = [0u8; 64];
                    if matches!(c.read(&mut req), Ok(n) if n > 0) {
                        let _ = writeln!(c, "{name} {}", peer.ip());
                    }
                }
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    idle = false;
                    let _ = udp.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("pod server listening");
        PodServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The namespaces of one test (deleted on drop).
/// The node, the client on its underlay and the pods, each deleted when dropped.
pub struct Namespaces {
    pub prefix: String,
    pub node: OwnedNetNs,
    pub client: OwnedNetNs,
    pub pods: Vec<OwnedNetNs>,
}

impl Namespaces {
    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn create() -> Namespaces {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("pn-px-{}-{n}", std::process::id());
        let mut names = vec!["node".to_string(), "client".to_string()];
        names.extend(PODS.iter().map(|(p, _)| p.to_string()));
        for role in &names {
            let _ = NetNs::delete(&format!("{prefix}-{role}"));
        }
        let create = |role: &str| OwnedNetNs::create(&format!("{prefix}-{role}")).unwrap();
        let mut me = Namespaces {
            prefix: prefix.clone(),
            node: create("node"),
            client: create("client"),
            pods: Vec::new(),
        };
        for (p, _) in PODS {
            me.pods.push(create(p));
        }
        me.wire();
        me
    }

    fn wire(&self) {
        let node = self.name("node");
        let client = self.name("client");
        ip(&["-n", &node, "link", "set", "lo", "up"]);
        ip(&["-n", &client, "link", "set", "lo", "up"]);
        ip(&["-n", &node, "link", "add", "cni0", "type", "bridge"]);
        ip(&["-n", &node, "addr", "add", "10.244.1.1/24", "dev", "cni0"]);
        ip(&["-n", &node, "link", "set", "cni0", "up"]);
        // The node's uplink to the outside client.
        ip(&[
            "-n", &node, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns",
            &client,
        ]);
        ip(&["-n", &node, "addr", "add", "172.31.70.1/24", "dev", "up0"]);
        ip(&["-n", &node, "link", "set", "up0", "up"]);
        ip(&["-n", &client, "addr", "add", "172.31.70.2/24", "dev", "up1"]);
        ip(&["-n", &client, "link", "set", "up1", "up"]);
        // The node's default route points outside (as a real node's does), so traffic to
        // a ClusterIP without rules is forwarded, where the proxy's filter sees it.
        ip(&["-n", &node, "route", "add", "default", "via", "172.31.70.2"]);
        // The outside network routes the external and LB addresses to the node.
        ip(&[
            "-n",
            &client,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "172.31.70.1",
        ]);
        podnet_kernel::sysctl::write(&self.node, "net.ipv4.ip_forward", "1").unwrap();
        for (i, (p, addr)) in PODS.iter().enumerate() {
            let pod = self.name(p);
            let host = format!("veth{i}");
            ip(&["-n", &pod, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ]);
            ip(&["-n", &node, "link", "set", &host, "master", "cni0"]);
            ip(&[
                "-n",
                &node,
                "link",
                "set",
                &host,
                "type",
                "bridge_slave",
                "hairpin",
                "on",
            ]);
            ip(&["-n", &node, "link", "set", &host, "up"]);
            ip(&[
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &pod, "link", "set", "eth0", "up"]);
            ip(&["-n", &pod, "route", "add", "default", "via", "10.244.1.1"]);
        }
    }
}

type RunningProxy = (
    watch::Sender<bool>,
    TaskHandle<Result<(), podnet_proxy::ProxyError>>,
);

/// The whole fixture. Field order is drop order: the proxy stops first, then the servers,
/// the apiserver, and the namespaces last.
pub struct Cluster {
    /// The mode [`Cluster::start_proxy`] runs.
    pub mode: ProxyMode,
    proxy: Option<RunningProxy>,
    servers: Vec<PodServer>,
    apiserver: Option<ApiServer>,
    pub client: kube::Client,
    _dir: tempfile::TempDir,
    pub ns: Namespaces,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.proxy.take() {
            let _ = tx.send(true);
            task.abort();
        }
        self.servers.clear();
        // The node namespace goes with its table; removing it explicitly too keeps a
        // leftover out of sight even if a process still holds the namespace.
        let _ = podnet_proxy::cleanup(Some(&self.ns.node));
        let _ = podnet_proxy::userspace::cleanup(Some(&self.ns.node));
    }
}

/// How the fixture's apiserver runs.
#[derive(Clone, Default)]
pub struct ApiSettings {
    /// Kept in the fixture's directory (embedded), so a restarted apiserver has it; in
    /// memory otherwise.
    pub persistent: bool,
    /// The API versions served (`--runtime-config`).
    pub versions: ServedVersions,
}

fn apiserver_config(dir: &std::path::Path, bind: SocketAddr, api: &ApiSettings) -> Config {
    Config {
        bind,
        data_dir: dir.to_path_buf(),
        store: if api.persistent {
            StoreConfig::Embedded
        } else {
            StoreConfig::Memory
        },
        allocators: AllocatorConfig {
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            nodeport_range: 30000..=32767,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            node_cidr_size: 24,
            lb_pool: Some("192.0.2.0/28".parse().unwrap()),
        },
        controllers: ControllerConfig::default(),
        bookmark_interval: Duration::from_secs(1),
        tls: Default::default(),
        extra_listeners: Vec::new(),
        versions: api.versions.clone(),
    }
}

impl Cluster {
    pub async fn start() -> Cluster {
        Cluster::start_in(ProxyMode::Nftables).await
    }

    /// A cluster whose proxy runs in `mode`.
    pub async fn start_in(mode: ProxyMode) -> Cluster {
        Cluster::start_with(mode, ApiSettings::default()).await
    }

    /// A cluster whose apiserver runs with `api`.
    pub async fn start_with(mode: ProxyMode, api: ApiSettings) -> Cluster {
        // The proxy's warnings and errors show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "podnet_proxy=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let ns = Namespaces::create();
        let dir = tempfile::tempdir().unwrap();
        let any_port = "127.0.0.1:0".parse().unwrap();
        let apiserver = ApiServer::start(apiserver_config(dir.path(), any_port, &api))
            .await
            .expect("apiserver starts");
        let url = format!("http://{}", apiserver.local_addr());
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let servers = PODS
            .iter()
            .zip(&ns.pods)
            .map(|((name, _), pod)| PodServer::start(pod, name))
            .collect();
        let mut cluster = Cluster {
            mode,
            proxy: None,
            servers,
            apiserver: Some(apiserver),
            client,
            _dir: dir,
            ns,
        };
        cluster.start_proxy();
        cluster
    }

    pub fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig {
            node_name: NODE.into(),
            node_ips: vec![NODE_IP],
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: Some("10.96.0.0/12".parse().unwrap()),
            mode: self.mode,
            netns: Some(self.ns.node.try_clone().unwrap()),
            sync_period: Duration::from_secs(600),
            min_sync_interval: Duration::from_millis(10),
            healthz_bind: None,
            state_dir: Some(self._dir.path().to_path_buf()),
            on_sync: None,
        }
    }

    pub fn start_proxy(&mut self) {
        let (tx, rx) = watch::channel(false);
        let config = self.proxy_config();
        let client = self.client.clone();
        let task = tokio::spawn(podnet_proxy::run(client, config, rx));
        self.proxy = Some((tx, task));
    }

    /// Stops the proxy and waits for it (its rules stay).
    pub async fn stop_proxy(&mut self) {
        if let Some((tx, task)) = self.proxy.take() {
            let _ = tx.send(true);
            let r = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("proxy stops within 10 s")
                .expect("proxy task");
            r.expect("proxy ran without error");
        }
    }

    pub async fn stop_apiserver(&mut self) {
        if let Some(s) = self.apiserver.take() {
            s.stop().await;
        }
    }

    /// Stops the apiserver and starts another on the same address and store, with `api`.
    pub async fn restart_apiserver(&mut self, api: ApiSettings) {
        let old = self.apiserver.take().expect("an apiserver runs");
        let addr = old.local_addr();
        old.stop().await;
        let config = apiserver_config(self._dir.path(), addr, &api);
        self.apiserver = Some(ApiServer::start(config).await.expect("apiserver restarts"));
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a Service (without selector: the test writes its EndpointSlice) and returns
    /// it as allocated.
    pub async fn create_service(&self, spec: Value) -> Service {
        let name = spec["metadata"]["name"].clone();
        let svc: Service = serde_json::from_value(spec).unwrap();
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .unwrap_or_else(|e| panic!("create service {name}: {e}"))
    }

    /// Writes (creates or replaces) the EndpointSlice `<svc>-slice` with `endpoints`:
    /// (pod index, node name, ready, serving, terminating) and the given ports.
    pub async fn set_endpoints(
        &self,
        svc: &str,
        ports: Value,
        endpoints: &[(usize, &str, bool, bool, bool)],
    ) {
        let eps: Vec<Value> = endpoints
            .iter()
            .map(|(i, node, ready, serving, terminating)| {
                json!({
                    "addresses": [PODS[*i].1.to_string()],
                    "nodeName": node,
                    "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": PODS[*i].0},
                })
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-slice"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": ports,
            "endpoints": eps,
        });
        let mut slice: EndpointSlice = serde_json::from_value(slice).unwrap();
        let name = format!("{svc}-slice");
        let api = self.slices();
        let result = match api.get_opt(&name).await.unwrap() {
            Some(old) => {
                slice.metadata.resource_version = old.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &slice).await
            }
            None => api.create(&PostParams::default(), &slice).await,
        };
        result.unwrap_or_else(|e| panic!("write endpointslice of {svc}: {e}"));
    }

    pub async fn delete_service(&self, name: &str) {
        self.services()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        let _ = self
            .slices()
            .delete(&format!("{name}-slice"), &DeleteParams::default())
            .await;
    }
}

pub fn tcp_ports() -> Value {
    json!([{"name": "http", "port": POD_PORT, "protocol": "TCP"}])
}

pub fn cluster_ip(svc: &Service) -> Ipv4Addr {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_ref())
        .unwrap()
        .parse()
        .unwrap()
}

pub fn node_port(svc: &Service) -> u16 {
    svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap() as u16
}

/// One TCP connect from `ns` to `addr`: the answer line, or the error.
pub fn connect_in(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<String> {
    ns.run(|| connect_here(addr)).unwrap()
}

fn connect_here(addr: SocketAddrV4) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"hello\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_string())
}

/// `n` TCP connects from `ns` (one thread in the namespace): the answers.
pub fn connect_many(ns: &NetNs, addr: SocketAddrV4, n: usize) -> Vec<std::io::Result<String>> {
    ns.run(|| (0..n).map(|_| connect_here(addr)).collect())
        .unwrap()
}

/// Polls (bounded) until `f` returns `Some`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The proxy's tables (`ip podnet-proxy` and its shards `ip podnet-proxy-<k>`) in the
/// node as `nft -j list ruleset` shows them, merged into one document; `None` when there
/// is none of them.
pub fn table_json(ns: &Namespaces) -> Option<Value> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name("node"),
            "nft",
            "-j",
            "list",
            "ruleset",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft -j list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = podnet_proxy::nftables::all_tables();
    let ours = |item: &Value| {
        item.as_object()
            .and_then(|o| o.iter().next())
            .is_some_and(|(kind, o)| {
                let table = if kind == "table" {
                    &o["name"]
                } else {
                    &o["table"]
                };
                o["family"] == "ip" && tables.iter().any(|t| table == t)
            })
    };
    let items: Vec<Value> = all["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| ours(i))
        .cloned()
        .collect();
    if items.is_empty() {
        return None;
    }
    Some(serde_json::json!({ "nftables": items }))
}

/// The proxy's tables (`ip podnet-proxy` and its shards) from one `nft list ruleset` in
/// the node (one snapshot, so a table being deleted meanwhile is all there or all gone),
/// concatenated; `None` when there is none.
pub fn table_text(ns: &Namespaces) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name("node"), "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: Vec<String> = podnet_proxy::nftables::all_tables()
        .iter()
        .map(|t| format!("table ip {t} {{"))
        .collect();
    let mut text = String::new();
    let mut ours = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("table ") {
            ours = headers.iter().any(|h| h == line);
        }
        if ours {
            text.push_str(line);
            text.push('\n');
        }
    }
    (!text.is_empty()).then_some(text)
}

/// Every chain, set and map name and every map element key in the table, as text.
pub fn table_names(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for kind in ["chain", "set", "map"] {
            if let Some(o) = item.get(kind) {
                out.push(format!("{kind} {}", o["name"].as_str().unwrap_or("")));
                for e in o["elem"].as_array().into_iter().flatten() {
                    out.push(format!("{kind}-element {}", e));
                }
            }
        }
    }
    out
}

/// The backend names in connection answers (`<pod> <client address>`).
pub fn names(answers: &[std::io::Result<String>]) -> BTreeSet<String> {
    answers
        .iter()
        .map(|a| {
            let line = a.as_ref().expect("connection answered");
            line.split_whitespace().next().unwrap().to_string()
        })
        .collect()
}

/// The names of all backend pods.
pub fn all_pods() -> BTreeSet<String> {
    PODS.iter().map(|(n, _)| n.to_string()).collect()
}
