//! The node agent: registers its Node, renews its Lease, keeps the node network set up and
//! runs the pod runtime, all until shutdown. Pods keep running when the agent stops; the pod
//! runtime adopts them when it starts again.
//!
//! Its metrics (`/metrics` at `--metrics-bind`) are counted by the tasks as they run and
//! read from the kernel at each scrape ([`crate::metrics`]).
//!
//! The tasks share two states: the node's readiness (the network task writes it; the status
//! loop posts it as `Ready`, the pod runtime waits for it) and the network's health (the
//! network and proxy tasks report to it; the status loop posts it as `NetworkUnavailable`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use podnet_kernel::Netlink;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::policy::PolicyMetrics;
use crate::metrics::proxy::ProxyMetrics;
use crate::metrics::{self, AgentMetrics, MetricsError};
use crate::node::files::{self as node_files, NodeFiles};
use crate::node::health::{Health, NetworkHealth};
use crate::node::lease::{self, NODE_LEASE_NAMESPACE, NodeLease};
use crate::node::network::{self, NetworkConfig, OverlaySettings};
use crate::node::registration::{self, NodeIdentity, Readiness};
use crate::node::sysinfo::{self, SystemInfo};
use crate::node::{NodeError, NodeTimings, stopped};
use crate::pods::{self, PodRuntimeConfig};
use crate::policy::{self, PolicySettings};
use crate::proxy::{self, ProxyNode, ProxySettings};

/// Default `--cluster-cidr`: the range the apiserver allocates node subnets from.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Default `--cni-conf-dir`.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default `--subnet-file` (flannel's path).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// How long the agent waits for its tasks to stop before abandoning them.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default `--state-dir` of node `node`: `/run/podnet/agent/<node>`.
pub fn default_state_dir(node: &str) -> PathBuf {
    Path::new("/run/podnet/agent").join(node)
}

/// Default `--log-dir` of node `node`: `/var/lib/podnet/agent/<node>/logs`.
pub fn default_log_dir(node: &str) -> PathBuf {
    Path::new("/var/lib/podnet/agent").join(node).join("logs")
}

/// Everything the agent is started with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub kubeconfig: PathBuf,
    /// The node's InternalIP; `None`: the first global IPv4 address of the namespace.
    pub node_ip: Option<Ipv4Addr>,
    pub cluster_cidr: Ipv4Net,
    /// The `podnet` binary (pause, sandbox exec).
    pub podnet_bin: PathBuf,
    /// Where `podnet-cni` is.
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Pods' name resolution: kubelet's --cluster-dns, --cluster-domain, --resolv-conf.
    pub pod_dns: crate::pods::dns::PodDns,
    pub subnet_file: PathBuf,
    pub timings: NodeTimings,
    /// The cross-node backend and its settings, masquerade.
    pub overlay: OverlaySettings,
    /// The service proxy; `None`: services are left to another proxy.
    pub proxy: Option<ProxySettings>,
    /// The NetworkPolicy engine; `None`: policies are left to another engine.
    pub policy: Option<PolicySettings>,
    /// Where `/metrics` is served (`--metrics-bind`); `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid --node-name {name:?}: {why} (a Node name is a DNS subdomain, e.g. node1)")]
    NodeName { name: String, why: String },
    #[error(
        "reading the kubeconfig {}: {source} (pass --kubeconfig with the file the apiserver wrote, e.g. <apiserver data dir>/kubeconfig)",
        path.display()
    )]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("creating the Kubernetes client from {}: {source}", path.display())]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no --node-ip given and this network namespace has no global IPv4 address outside the cluster CIDR {cluster_cidr}: give the node an address or pass --node-ip"
    )]
    NoNodeIp { cluster_cidr: Ipv4Net },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("the pod runtime failed: {0}")]
    Pods(String),
    #[error("the service proxy cannot run: {0}")]
    Proxy(String),
    #[error(transparent)]
    Policy(#[from] podnet_policy::PolicyError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("the agent's {task} task ended unexpectedly")]
    TaskEnded { task: &'static str },
    #[error("the agent's {task} task panicked or was cancelled: {source}")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Builds a client from a kubeconfig file (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, AgentError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| AgentError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| AgentError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| AgentError::Client {
        path: path.to_path_buf(),
        source,
    })
}

/// The node IP: the configured one, or the first global IPv4 address of this namespace.
async fn resolve_node_ip(config: &AgentConfig) -> Result<Ipv4Addr, AgentError> {
    if let Some(ip) = config.node_ip {
        return Ok(ip);
    }
    let cluster_cidr = config.cluster_cidr;
    let found = tokio::task::spawn_blocking(move || {
        let mut netlink = Netlink::current().map_err(NodeError::from)?;
        sysinfo::first_global_ipv4(&mut netlink, &cluster_cidr)
    })
    .await
    .map_err(|source| AgentError::Task {
        task: "node IP detection",
        source,
    })??;
    found.ok_or(AgentError::NoNodeIp { cluster_cidr })
}

type TaskResult = (&'static str, Result<(), AgentError>);

/// Runs the agent until `shutdown` turns `true` (or its sender is dropped), then stops every
/// task and returns. A task that fails for good (the node namespace cannot be opened, the
/// pod runtime gives up) stops the others and is returned as the error.
pub async fn run(
    config: AgentConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    podnet_api::k8s::validation::is_dns1123_subdomain(&config.node_name).map_err(|why| {
        AgentError::NodeName {
            name: config.node_name.clone(),
            why,
        }
    })?;
    let client = client_from_kubeconfig(&config.kubeconfig).await?;
    let node_ip = resolve_node_ip(&config).await?;
    let cluster_cidr = config.cluster_cidr;
    tokio::task::spawn_blocking(move || network::check_underlay(None, node_ip, cluster_cidr))
        .await
        .map_err(|source| AgentError::Task {
            task: "underlay check",
            source,
        })??;
    let metrics_listener = match config.metrics_bind {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let files = NodeFiles {
        subnet_file: config.subnet_file.clone(),
        cni_conf_dir: config.cni_conf_dir.clone(),
        state_dir: config.state_dir.clone(),
    };
    let metrics = AgentMetrics::new(
        &config.node_name,
        files.ipam_data_dir().join(node_files::NETWORK_NAME),
    );
    let identity = NodeIdentity {
        name: config.node_name.clone(),
        internal_ip: node_ip,
        system: SystemInfo::detect(),
    };
    tracing::info!(
        node = %identity.name,
        node_ip = %node_ip,
        kubeconfig = %config.kubeconfig.display(),
        backend = %config.overlay.backend,
        ip_masq = config.overlay.ip_masq,
        "podnet agent starting"
    );

    let initial = Readiness::not_ready(
        "container runtime network not ready: the node network is not configured yet",
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let Some(node) = registration::register_until_done(
        &nodes,
        &identity,
        &initial,
        &config.timings,
        &mut shutdown,
    )
    .await
    else {
        tracing::info!("stopped before the Node was registered");
        return Ok(());
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let (readiness_tx, readiness_rx) = watch::channel(initial);
    let (health, health_rx) = Health::channel(
        NetworkHealth::new(config.proxy.is_some()).with_policy(config.policy.is_some()),
    );
    let mut tasks: JoinSet<TaskResult> = JoinSet::new();
    if let Some(listener) = metrics_listener {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving /metrics");
        // Not one of the tasks: a failing listener is logged, and the node goes on.
        tokio::spawn(metrics::serve(listener, metrics.clone(), stop_rx.clone()));
    }

    let lease_api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let node_lease = NodeLease {
        node_name: config.node_name.clone(),
        duration_seconds: config.timings.lease_duration_seconds,
        owner: lease::owner_reference(&node),
    };
    tasks.spawn(lease_task(
        lease_api,
        node_lease,
        config.timings,
        stop_rx.clone(),
    ));

    tasks.spawn(status_task(
        nodes.clone(),
        identity.clone(),
        readiness_rx.clone(),
        health_rx,
        config.timings,
        stop_rx.clone(),
    ));

    let network_config = NetworkConfig {
        node_name: config.node_name.clone(),
        node_ip,
        cluster_cidr: config.cluster_cidr,
        files,
        resync: config.timings.network_resync,
        netns: None,
        overlay: config.overlay,
        metrics: Some(metrics.network.clone()),
    };
    tasks.spawn(network_task(
        client.clone(),
        network_config,
        readiness_tx,
        health.clone(),
        stop_rx.clone(),
    ));

    if let Some(settings) = config.proxy.clone() {
        let node = ProxyNode {
            name: config.node_name.clone(),
            ip: node_ip,
            cluster_cidr: config.cluster_cidr,
            state_dir: config.state_dir.clone(),
        };
        tasks.spawn(proxy_task(
            client.clone(),
            settings,
            node,
            (health.clone(), metrics.proxy.clone()),
            stop_rx.clone(),
        ));
    }

    if let Some(settings) = config.policy.clone() {
        tasks.spawn(policy_task(
            client.clone(),
            settings,
            config.node_name.clone(),
            (health.clone(), metrics.policy.clone()),
            stop_rx.clone(),
        ));
    }

    let pods_config = PodRuntimeConfig {
        node_name: config.node_name.clone(),
        podnet_bin: config.podnet_bin.clone(),
        cni_bin_dir: config.cni_bin_dir.clone(),
        cni_conf_dir: config.cni_conf_dir.clone(),
        state_dir: config.state_dir.clone(),
        log_dir: config.log_dir.clone(),
        dns: config.pod_dns.clone(),
    };
    tasks.spawn(pods_task(pods_config, client, readiness_rx, stop_rx));

    // Until shutdown, or until a task ends on its own (which none should).
    let mut failure: Option<AgentError> = None;
    tokio::select! {
        _ = stopped(&mut shutdown) => tracing::info!("podnet agent stopping"),
        ended = tasks.join_next() => {
            failure = Some(match ended {
                Some(Ok((_, Err(e)))) => e,
                Some(Ok((task, Ok(())))) => AgentError::TaskEnded { task },
                Some(Err(source)) => AgentError::Task { task: "agent", source },
                None => AgentError::TaskEnded { task: "agent" },
            });
            if let Some(e) = &failure {
                tracing::error!(error = %e, "podnet agent stopping after a failure");
            }
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok((_, Ok(()))) => {}
                Ok((task, Err(e))) => {
                    tracing::warn!(task, error = %e, "task failed while stopping");
                    failure.get_or_insert(e);
                }
                Err(source) => {
                    tracing::warn!(error = %source, "task panicked while stopping");
                    failure.get_or_insert(AgentError::Task {
                        task: "agent",
                        source,
                    });
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?STOP_TIMEOUT, "tasks did not stop in time; abandoning them");
        tasks.abort_all();
    }
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("podnet agent stopped");
            Ok(())
        }
    }
}

async fn lease_task(
    api: Api<Lease>,
    lease: NodeLease,
    timings: NodeTimings,
    stop: watch::Receiver<bool>,
) -> TaskResult {
    lease::run_lease_loop(api, lease, timings, stop).await;
    ("lease", Ok(()))
}

async fn status_task(
    api: Api<Node>,
    identity: NodeIdentity,
    readiness: watch::Receiver<Readiness>,
    health: watch::Receiver<NetworkHealth>,
    timings: NodeTimings,
    stop: watch::Receiver<bool>,
) -> TaskResult {
    registration::run_status_loop(api, identity, readiness, health, timings, stop).await;
    ("node status", Ok(()))
}

async fn proxy_task(
    client: kube::Client,
    settings: ProxySettings,
    node: ProxyNode,
    (health, metrics): (Health, ProxyMetrics),
    stop: watch::Receiver<bool>,
) -> TaskResult {
    let result = proxy::run(client, settings, node, health, metrics, stop).await;
    (
        "service proxy",
        result.map_err(|e| AgentError::Proxy(e.to_string())),
    )
}

async fn policy_task(
    client: kube::Client,
    settings: PolicySettings,
    node: String,
    (health, metrics): (Health, PolicyMetrics),
    stop: watch::Receiver<bool>,
) -> TaskResult {
    let result = policy::run(client, settings, node, health, metrics, stop).await;
    ("NetworkPolicy engine", result.map_err(AgentError::from))
}

async fn network_task(
    client: kube::Client,
    config: NetworkConfig,
    readiness: watch::Sender<Readiness>,
    health: Health,
    stop: watch::Receiver<bool>,
) -> TaskResult {
    let result = network::run(client, config, readiness, health, stop).await;
    ("node network", result.map_err(AgentError::from))
}

/// Starts the pod runtime once the node network is ready (the CNI plugin needs `subnet.env`
/// and the conflist), as kubelet waits for the network plugin.
async fn pods_task(
    config: PodRuntimeConfig,
    client: kube::Client,
    mut readiness: watch::Receiver<Readiness>,
    mut stop: watch::Receiver<bool>,
) -> TaskResult {
    let ready = tokio::select! {
        ready = readiness.wait_for(|r| r.ready) => ready.is_ok(),
        _ = stopped(&mut stop) => return ("pod runtime", Ok(())),
    };
    if !ready {
        // The network task ended; its own result says why.
        stopped(&mut stop).await;
        return ("pod runtime", Ok(()));
    }
    tracing::info!(node = %config.node_name, "node network ready; starting the pod runtime");
    let result = pods::run(config, client, stop).await;
    (
        "pod runtime",
        result.map_err(|e| AgentError::Pods(e.to_string())),
    )
}
