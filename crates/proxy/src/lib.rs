//! The service proxy that runs on every node (kube-proxy's job).
//!
//! nftables mode (the default): Services and EndpointSlices are watched ([`runner`]),
//! folded per service port by a change tracker ([`tracker`]), turned into the desired
//! rules ([`model`], pure) and synced into the tables `ip podnet-proxy` (filter hooks, shared maps)
//! and `ip podnet-proxy-0` … `-31` (service chains, sharded by name) as one atomic
//! transaction per sync ([`nftables`]): a full rebuild at start, after a failure and every
//! `sync_period`, otherwise only the chains, sets and map elements of what changed. Stale
//! UDP conntrack entries are cleared through ctnetlink, and `healthCheckNodePort`s are
//! served ([`healthcheck`]).
//!
//! The entry point is [`run`]; [`cleanup`] removes everything the nftables mode installed.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apis;
pub mod fastpath;
pub mod fullsync;
pub mod healthcheck;
pub mod model;
pub mod nftables;
pub mod rule;
pub mod runner;
pub mod skeleton;
pub mod tracker;
pub mod userspace;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv4Net;
use podnet_kernel::NetNs;
pub use runner::SyncReport;

/// How services are implemented on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// In the kernel, with nftables (today's kube-proxy).
    #[default]
    Nftables,
    /// The article's original mode: a local port per service and NAT chains to it.
    Userspace,
}

/// Everything the proxy needs to know about its node.
#[derive(Debug)]
pub struct ProxyConfig {
    pub node_name: String,
    /// The addresses NodePorts answer on (empty: every local address).
    pub node_ips: Vec<Ipv4Addr>,
    /// The pod range: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Ipv4Net,
    /// Traffic to an unallocated address in it is rejected.
    pub service_cidr: Option<Ipv4Net>,
    pub mode: ProxyMode,
    /// The node's namespace; `None`: the calling process's.
    pub netns: Option<NetNs>,
    /// How often everything is rewritten even when nothing changed.
    pub sync_period: Duration,
    /// The least time between two syncs (changes in between are folded into one).
    pub min_sync_interval: Duration,
    /// Where healthCheckNodePorts are served (the port is the service's; only the address
    /// is used). `None`: on every node IP.
    pub healthz_bind: Option<SocketAddr>,
    /// Where the userspace mode keeps its state (its listening ports, re-bound after a
    /// restart); not used by the nftables mode, whose state is the kernel's table.
    pub state_dir: Option<std::path::PathBuf>,
    /// Told the outcome of every sync (the proxy retries a refused sync by itself, so its
    /// result alone never shows a proxy whose every sync fails) and the changes between.
    pub on_sync: Option<SyncObserver>,
}

/// What a [`SyncObserver`] is told: each sync's outcome, and the changes waiting for the
/// next one (for health and metrics, without reading logs).
#[derive(Debug)]
pub enum ProxyEvent<'a> {
    /// A sync worked. It took every change pending before it.
    Synced(&'a runner::SyncReport),
    /// A sync failed (the next one is full). It took every change pending before it too.
    Failed {
        /// Whether it was a full sync.
        full: bool,
        elapsed: Duration,
        error: &'a str,
    },
    /// Service or EndpointSlice events arrived.
    Changes(Changes),
}

/// Watch events that arrived, and what now waits for a sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Service events (added, changed, deleted; each listed one on a watch's (re)start).
    pub service_events: usize,
    /// EndpointSlice events, counted as for Services.
    pub endpoint_events: usize,
    /// Services whose own spec changed since the last sync.
    pub services_pending: usize,
    /// Services whose EndpointSlices changed since the last sync.
    pub endpoints_pending: usize,
}

/// What is told the outcome of each sync and the changes between syncs.
#[derive(Clone)]
pub struct SyncObserver(pub std::sync::Arc<SyncFn>);

/// The function a [`SyncObserver`] calls.
pub type SyncFn = dyn Fn(&ProxyEvent<'_>) + Send + Sync;

impl SyncObserver {
    pub fn new(f: impl Fn(&ProxyEvent<'_>) + Send + Sync + 'static) -> SyncObserver {
        SyncObserver(std::sync::Arc::new(f))
    }

    pub(crate) fn tell(&self, event: &ProxyEvent<'_>) {
        (self.0)(event)
    }
}

impl std::fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncObserver")
    }
}

impl ProxyConfig {
    /// A configuration with podnet's defaults (cluster CIDR 10.244.0.0/16, service CIDR
    /// 10.96.0.0/12, nftables, full resync every 15 minutes, 20 ms debounce).
    pub fn new(node_name: impl Into<String>, node_ips: Vec<Ipv4Addr>) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.into(),
            node_ips,
            cluster_cidr: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).ok(),
            mode: ProxyMode::Nftables,
            netns: None,
            sync_period: DEFAULT_SYNC_PERIOD,
            min_sync_interval: DEFAULT_MIN_SYNC_INTERVAL,
            healthz_bind: None,
            state_dir: None,
            on_sync: None,
        }
    }
}

pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(900);
pub const DEFAULT_MIN_SYNC_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kernel(#[from] podnet_kernel::KernelError),
    #[error("{0}; the proxy stops so that its supervisor restarts it")]
    Watch(String),
    #[error("internal error: {0}")]
    Task(String),
    #[error("the userspace proxy: {0}")]
    Userspace(String),
}

/// Runs the proxy until `shutdown` turns `true` (or its sender goes). The rules stay in
/// place when it returns, so a restart drops no connection; [`cleanup`] removes them.
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProxyError> {
    validate(&config)?;
    match config.mode {
        ProxyMode::Nftables => runner::run(client, config, shutdown).await,
        ProxyMode::Userspace => runner::run(client, config, shutdown).await,
    }
}

fn validate(config: &ProxyConfig) -> Result<(), ProxyError> {
    if config.node_name.is_empty() {
        return Err(ProxyError::Config(
            "node_name is empty: give the name of this node's Node object".into(),
        ));
    }
    if config.mode == ProxyMode::Userspace && config.node_ips.is_empty() {
        return Err(ProxyError::Config(
            "the userspace mode needs the node's IP (KUBE-PORTALS-HOST sends the node's own traffic to it): give node_ips".into(),
        ));
    }
    if config.min_sync_interval > config.sync_period {
        return Err(ProxyError::Config(format!(
            "min_sync_interval ({:?}) is longer than sync_period ({:?})",
            config.min_sync_interval, config.sync_period
        )));
    }
    if let Some(svc) = config.service_cidr
        && (svc.contains(&config.cluster_cidr) || config.cluster_cidr.contains(&svc))
    {
        return Err(ProxyError::Config(format!(
            "the service CIDR {svc} overlaps the cluster CIDR {}: choose disjoint ranges",
            config.cluster_cidr
        )));
    }
    Ok(())
}

/// Removes everything the nftables mode installed in `netns` (or here): its table. Other
/// tables are not touched. Succeeds when there is nothing to remove.
pub fn cleanup(netns: Option<&NetNs>) -> Result<(), ProxyError> {
    nftables::cleanup(netns).map_err(ProxyError::from)
}
