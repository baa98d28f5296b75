//! Fixtures for the pod runtime's tests: a node network namespace (the test
//! thread and its runtime live in it, like an agent in a lab node), an
//! apiserver in-process on the node's loopback, a Node object, the real
//! `podnet` and `podnet-cni` binaries, a conflist and `subnet.env`, and the
//! pod runtime (`pods::run`) started, stopped or "crashed" at will.
//! Everything — pods' processes, namespaces, files — is removed on drop,
//! also when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use podnet_agent::pods::{self, PodRuntimeConfig, PodState};
use podnet_apiserver::alloc::AllocatorConfig;
use podnet_apiserver::controllers::ControllerConfig;
use podnet_apiserver::server::{ApiServer, Config, StoreConfig};
use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::{NetNs, Netlink};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The restart back-off's base in tests (kubelet: 10 s).
pub const BACKOFF_BASE_MS: &str = "300";
pub const NODE_IP: &str = "192.0.2.10";

/// `podnet` and the directory holding `podnet-cni`, built once per process
/// (or taken from `PODNET_TEST_BIN_DIR` when a runner built them already).
pub fn binaries() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PODNET_TEST_BIN_DIR") {
            let dir = PathBuf::from(dir)
                .canonicalize()
                .expect("PODNET_TEST_BIN_DIR");
            return (dir.join("podnet"), dir);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "podnet", "-p", "podnet-cni"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p podnet -p podnet-cni failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug");
        let podnet = target.join("podnet").canonicalize().expect("podnet built");
        assert!(target.join("podnet-cni").is_file(), "podnet-cni built");
        (podnet, target.canonicalize().unwrap())
    })
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `test` in a fresh lab node; skipped (with a note) when not root.
pub fn run<F, Fut>(tag: &str, test: F)
where
    F: FnOnce(Lab) -> Fut,
    Fut: Future<Output = ()>,
{
    if !is_root() {
        eprintln!("skipped: the pod runtime tests need root (namespaces, mounts)");
        return;
    }
    // SAFETY: no other thread of this test reads the environment yet.
    unsafe { std::env::set_var("PODNET_AGENT_BACKOFF_BASE_MS", BACKOFF_BASE_MS) };
    let (podnet, cni_dir) = binaries().clone();
    let id = format!("{tag}-{}", std::process::id());
    let node_ns_name = format!("pnt-{id}");
    let node_ns = node_namespace(&node_ns_name);
    // This thread, and every thread the runtime starts from it, lives in
    // the node: the apiserver on its loopback, the agent, the CNI plugin.
    node_ns.enter().expect("enter the node namespace");
    let mut nl = Netlink::current().expect("netlink in the node");
    let lo = nl.require_link("lo").expect("lo");
    nl.set_up(lo.index).expect("lo up");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let lab = Lab::start(&id, podnet, cni_dir, node_ns).await;
        test(lab).await;
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// The node's namespace, deleted when the guard drops. The name has no counter, so one
/// left by a killed run of the same test is removed first.
fn node_namespace(name: &str) -> OwnedNetNs {
    let _ = NetNs::delete(name);
    OwnedNetNs::create(name).expect("create the node namespace")
}

type Agent = (
    watch::Sender<bool>,
    JoinHandle<Result<(), pods::PodRuntimeError>>,
);

pub struct Lab {
    pub node: String,
    pub dir: tempfile::TempDir,
    pub config: PodRuntimeConfig,
    pub client: kube::Client,
    pub podnet: PathBuf,
    server: Option<ApiServer>,
    agent: Option<Agent>,
    // Last: the namespace goes after the pods in it.
    pub node_ns: OwnedNetNs,
}

impl Lab {
    async fn start(id: &str, podnet: PathBuf, cni_dir: PathBuf, node_ns: OwnedNetNs) -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for sub in ["state", "logs", "net.d", "ipam", "api"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("subnet.env"),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let conflist = json!({
            "cniVersion": "1.1.0",
            "name": "podnet",
            "plugins": [{
                "type": "podnet-cni",
                "bridge": "cni0",
                "isGateway": true,
                "isDefaultGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "podnet-cni",
                    "subnetFile": root.join("subnet.env"),
                    "dataDir": root.join("ipam"),
                },
            }],
        });
        std::fs::write(
            root.join("net.d/10-podnet.conflist"),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .unwrap();
        let server = ApiServer::start(Config {
            bind: "127.0.0.1:0".parse().unwrap(),
            data_dir: root.join("api"),
            store: StoreConfig::Embedded,
            allocators: AllocatorConfig {
                service_cidr: "10.96.0.0/12".parse().unwrap(),
                nodeport_range: 30000..=32767,
                cluster_cidr: "10.244.0.0/16".parse().unwrap(),
                node_cidr_size: 24,
                lb_pool: None,
            },
            controllers: ControllerConfig {
                node_monitor_grace: Duration::from_secs(600),
                ..ControllerConfig::default()
            },
            bookmark_interval: Duration::from_secs(1),
            tls: Default::default(),
            extra_listeners: Vec::new(),
            versions: Default::default(),
        })
        .await
        .expect("apiserver starts");
        let url = format!("http://{}", server.local_addr());
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let node = format!("pnt-{id}");
        let nodes: Api<Node> = Api::all(client.clone());
        let node_obj: Node = serde_json::from_value(json!({
            "metadata": {"name": node},
            "spec": {"podCIDR": "10.244.7.0/24"},
        }))
        .unwrap();
        nodes
            .create(&PostParams::default(), &node_obj)
            .await
            .expect("create the node");
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": node}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }});
        nodes
            .patch_status(&node, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("node status");
        let config = PodRuntimeConfig {
            node_name: node.clone(),
            podnet_bin: podnet.clone(),
            cni_bin_dir: cni_dir,
            cni_conf_dir: root.join("net.d"),
            state_dir: root.join("state"),
            log_dir: root.join("logs"),
            dns: Default::default(),
        };
        Lab {
            node,
            dir,
            config,
            client,
            podnet,
            server: Some(server),
            agent: None,
            node_ns,
        }
    }

    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent runs already");
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(pods::run(self.config.clone(), self.client.clone(), rx));
        self.agent = Some((tx, task));
    }

    /// Stops the agent as a service manager would (pods keep running).
    pub async fn stop_agent(&mut self) {
        let (tx, task) = self.agent.take().expect("the agent runs");
        let _ = tx.send(true);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the agent stops")
            .expect("agent task")
            .expect("agent result");
    }

    /// Drops the agent mid-flight, as SIGKILL would: nothing of it runs
    /// any more, nothing was cleaned up.
    pub async fn crash_agent(&mut self) {
        let (_tx, task) = self.agent.take().expect("the agent runs");
        task.abort();
        let _ = task.await;
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to this node.
    pub async fn create_pod(&self, mut pod: Value) -> Pod {
        pod["spec"]["nodeName"] = json!(self.node);
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        let pod: Pod = serde_json::from_value(pod).expect("pod manifest");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    pub async fn delete_pod(&self, name: &str, grace: Option<u32>) {
        let params = DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        self.pods().delete(name, &params).await.expect("delete pod");
    }

    /// Waits until `check` accepts the pod; panics with the last reason and
    /// the pod's status after `secs`.
    pub async fn wait_pod<F>(&self, name: &str, secs: u64, mut check: F) -> Pod
    where
        F: FnMut(&Pod) -> Result<(), String>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (why, status) = match self.pods().get_opt(name).await {
                Ok(Some(pod)) => match check(&pod) {
                    Ok(()) => return pod,
                    Err(why) => (why, serde_json::to_string_pretty(&pod.status).unwrap()),
                },
                Ok(None) => ("pod does not exist".to_string(), String::new()),
                Err(e) => (e.to_string(), String::new()),
            };
            if tokio::time::Instant::now() >= deadline {
                panic!("pod {name}: not as expected within {secs}s: {why}\nstatus: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.pods().get_opt(name).await.expect("get pod").is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pod {name} still exists after {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn record(&self, uid: &str) -> Option<PodState> {
        pods::state::read(&self.config.state_dir, uid).expect("read the record")
    }

    /// Addresses allocated by the CNI plugin's IPAM.
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.dir.path().join("ipam/podnet");
        let mut ips: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }

    /// Host-side veths on the node's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let mut nl = Netlink::open_in(&self.node_ns).expect("netlink");
        let links = nl.links().expect("links");
        let Some(bridge) = links.iter().find(|l| l.name == "cni0") else {
            return Vec::new();
        };
        links
            .iter()
            .filter(|l| l.master == Some(bridge.index))
            .map(|l| l.name.clone())
            .collect()
    }

    /// This node's sandboxes (named network namespaces).
    pub fn sandboxes(&self) -> Vec<String> {
        let prefix = format!("{}-pod-", self.node);
        NetNs::list_named()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Runs a command inside a pod, as `podnet exec` does.
    pub fn exec(&self, uid: &str, args: &[&str]) -> std::process::Output {
        let record = self.record(uid).expect("the pod has a record");
        Command::new(&self.podnet)
            .args([
                "sandbox",
                "exec",
                "--pid",
                &record.sandbox_pid.to_string(),
                "--",
            ])
            .args(args)
            .output()
            .expect("podnet sandbox exec")
    }

    pub fn log(&self, pod: &Pod, container: &str, attempt: u32) -> String {
        let path = self.log_path(pod, container, attempt);
        std::fs::read_to_string(&path).unwrap_or_default()
    }

    pub fn log_path(&self, pod: &Pod, container: &str, attempt: u32) -> PathBuf {
        self.config
            .log_dir
            .join(format!(
                "default_{}_{}",
                pod.metadata.name.as_deref().unwrap(),
                pod.metadata.uid.as_deref().unwrap()
            ))
            .join(container)
            .join(format!("{attempt}.log"))
    }

    /// Kills what the pods of this test left: every process of ours inside
    /// this node's sandboxes (their pause processes and container
    /// supervisors, by pid), and the sandboxes' names.
    fn cleanup(&mut self) {
        for name in self.sandboxes() {
            let Ok(id) = NetNs::open(&name).and_then(|ns| ns.id()) else {
                let _ = NetNs::delete(&name);
                continue;
            };
            for pid in pids_in_netns(id) {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if exe == self.podnet {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = NetNs::delete(&name);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some((_, task)) = self.agent.take() {
            task.abort();
        }
        self.cleanup();
        drop(self.server.take());
    }
}

/// Processes whose network namespace is `id`.
pub fn pids_in_netns(id: (u64, u64)) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    NetNs::open_pid(*pid)
                        .and_then(|ns| ns.id())
                        .is_ok_and(|x| x == id)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace()
                .next()
                .map(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// The children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap()
}

pub fn status(pod: &Pod) -> Value {
    serde_json::to_value(&pod.status).unwrap()
}

pub fn phase(pod: &Pod) -> String {
    status(pod)["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn condition(pod: &Pod, kind: &str) -> Option<String> {
    status(pod)["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

pub fn container(pod: &Pod, name: &str) -> Value {
    status(pod)["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Running and Ready, with an address.
pub fn running_and_ready(pod: &Pod) -> Result<(), String> {
    if phase(pod) != "Running" {
        return Err(format!("phase {}", phase(pod)));
    }
    if condition(pod, "Ready").as_deref() != Some("True") {
        return Err("not Ready".into());
    }
    if status(pod)["podIP"].as_str().is_none() {
        return Err("no podIP".into());
    }
    Ok(())
}
