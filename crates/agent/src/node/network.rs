//! The node's network set-up, level-triggered: from a watch of all Nodes (kube-rs reflector)
//! and a periodic resync, each pass
//!
//! 1. enables IPv4 forwarding in the node's namespace;
//! 2. once the Node has its `spec.podCIDR`, writes `subnet.env` and the CNI conflist
//!    ([`files`](super::files)) when they differ from what they should be;
//! 3. makes the routes to the other nodes' pod subnets match the Nodes
//!    ([`routes::sync_peer_routes`]).
//!
//! Readiness (files written, forwarding on) is published on a watch channel: the node's
//! `Ready` condition and the start of the pod runtime follow it.

use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use podnet_kernel::{NetNs, Netlink, sysctl};
use tokio::sync::watch;

use super::files::{self, NodeFiles};
use super::registration::Readiness;
use super::routes::{self, RouteSync};
use super::sysinfo::mtu_of_address;
use super::{NodeError, stopped};

/// The MTU written when the node IP's interface cannot be found.
pub const FALLBACK_MTU: u32 = 1500;

/// What the node network needs to know.
#[derive(Debug)]
pub struct NetworkConfig {
    pub node_name: String,
    /// The node's InternalIP; the MTU of its interface goes into `subnet.env`.
    pub node_ip: Ipv4Addr,
    /// The range node pod subnets come from (`FLANNEL_NETWORK`).
    pub cluster_cidr: Ipv4Net,
    pub files: NodeFiles,
    /// Full pass at least this often, even with no change.
    pub resync: Duration,
    /// The namespace to configure: `None` for the agent's own (the calling thread's), or
    /// another one (tests).
    pub netns: Option<NetNs>,
}

/// The kernel side: a netlink socket in the node's namespace, and that namespace for
/// sysctls.
struct Kernel {
    netlink: Netlink,
    netns: Option<NetNs>,
}

impl Kernel {
    fn open(netns: Option<NetNs>) -> Result<Kernel, NodeError> {
        let netlink = match &netns {
            Some(ns) => Netlink::open_in(ns)?,
            None => Netlink::current()?,
        };
        Ok(Kernel { netlink, netns })
    }

    fn enable_forwarding(&self) -> Result<(), NodeError> {
        const KEY: &str = "net.ipv4.ip_forward";
        match &self.netns {
            Some(ns) => sysctl::write(ns, KEY, "1")?,
            None => sysctl::write_here(KEY, "1")?,
        }
        Ok(())
    }
}

/// The result of one pass.
struct Pass {
    readiness: Readiness,
    routes: Result<RouteSync, NodeError>,
    skipped: Vec<String>,
}

struct PassInput {
    node_name: String,
    node_ip: Ipv4Addr,
    cluster_cidr: Ipv4Net,
    files: NodeFiles,
    nodes: Vec<Arc<Node>>,
}

fn pass(kernel: &mut Kernel, input: &PassInput) -> Pass {
    let readiness = node_files(kernel, input);
    let (desired, skipped) = routes::desired_peer_routes(
        &input.node_name,
        input.cluster_cidr,
        input.nodes.iter().map(|n| n.as_ref()),
    );
    let routes = routes::sync_peer_routes(&mut kernel.netlink, input.cluster_cidr, &desired)
        .map_err(NodeError::from);
    Pass {
        readiness,
        routes,
        skipped,
    }
}

/// Forwarding and the files; the readiness that results.
fn node_files(kernel: &mut Kernel, input: &PassInput) -> Readiness {
    let name = input.node_name.as_str();
    if let Err(e) = kernel.enable_forwarding() {
        return Readiness::not_ready(format!(
            "container runtime network not ready: cannot enable IPv4 forwarding: {e}"
        ));
    }
    let Some(own) = input
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
    else {
        return Readiness::not_ready(format!(
            "container runtime network not ready: Node {name} is not in the watch yet"
        ));
    };
    let Some(pod_cidr) = routes::pod_cidr(own) else {
        return Readiness::not_ready(format!(
            "container runtime network not ready: waiting for spec.podCIDR of Node {name} (podnet's apiserver allocates it; another API server needs node CIDR allocation enabled)"
        ));
    };
    let mtu = match mtu_of_address(&mut kernel.netlink, input.node_ip) {
        Ok(Some(mtu)) => mtu,
        Ok(None) => {
            tracing::warn!(node_ip = %input.node_ip, mtu = FALLBACK_MTU, "no interface in the node's namespace has the node IP; using the fallback MTU for pods");
            FALLBACK_MTU
        }
        Err(e) => {
            return Readiness::not_ready(format!(
                "container runtime network not ready: reading the MTU of the node IP's interface: {e}"
            ));
        }
    };
    let written = files::subnet_env(input.cluster_cidr, pod_cidr, mtu)
        .and_then(|env| input.files.ensure(&env).map(|w| (env, w)));
    match written {
        Ok((env, w)) => {
            if w.subnet_env {
                tracing::info!(path = %input.files.subnet_file.display(), subnet = ?env.subnet, mtu, "wrote subnet.env");
            }
            if w.conflist {
                tracing::info!(path = %input.files.conflist_path().display(), "wrote the CNI conflist");
            }
            Readiness::ready()
        }
        Err(e) => Readiness::not_ready(format!("container runtime network not ready: {e}")),
    }
}

/// Runs the node network until shutdown. Fails only when the node's namespace cannot be
/// opened; everything else is retried at the next pass (and shows in `readiness`).
pub async fn run(
    client: kube::Client,
    config: NetworkConfig,
    readiness: watch::Sender<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let NetworkConfig {
        node_name,
        node_ip,
        cluster_cidr,
        files,
        resync,
        netns,
    } = config;
    let mut kernel = Some(
        tokio::task::spawn_blocking(move || Kernel::open(netns))
            .await
            .map_err(|source| NodeError::Task {
                what: "opening netlink in the node's namespace",
                source,
            })??,
    );
    let (reader, writer) = reflector::store::<Node>();
    let api: Api<Node> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut stream = pin!(stream);
    let mut resync_timer = tokio::time::interval(resync.max(Duration::from_millis(100)));
    resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced = false;
    let mut dirty = true;
    let mut last_skipped: Vec<String> = Vec::new();
    let mut last_failed: Vec<String> = Vec::new();

    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return Ok(()),
            item = stream.next() => {
                if !handle(item, &mut synced, &mut dirty) {
                    return Err(NodeError::Invalid("the watch of Nodes ended unexpectedly".into()));
                }
            }
            _ = resync_timer.tick() => dirty = true,
        }
        if !(synced && dirty) {
            continue;
        }
        // Coalesce a burst of events into one pass.
        while let Some(item) = stream.next().now_or_never() {
            if !handle(item, &mut synced, &mut dirty) {
                return Err(NodeError::Invalid(
                    "the watch of Nodes ended unexpectedly".into(),
                ));
            }
        }
        dirty = false;
        let input = PassInput {
            node_name: node_name.clone(),
            node_ip,
            cluster_cidr,
            files: files.clone(),
            nodes: snapshot(&reader),
        };
        let Some(mut k) = kernel.take() else {
            return Err(NodeError::Invalid(
                "the node network's netlink socket was lost".into(),
            ));
        };
        let (k, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = pass(&mut k, &input);
            (k, outcome)
        })
        .await
        .map_err(|source| NodeError::Task {
            what: "configuring the node network",
            source,
        })?;
        kernel = Some(k);
        report(
            &node_name,
            outcome,
            &readiness,
            &mut last_skipped,
            &mut last_failed,
        );
    }
}

fn snapshot(reader: &Store<Node>) -> Vec<Arc<Node>> {
    reader.state()
}

/// Notes a watch event; `false` when the stream ended.
fn handle(
    item: Option<Result<Event<Node>, watcher::Error>>,
    synced: &mut bool,
    dirty: &mut bool,
) -> bool {
    match item {
        None => return false,
        Some(Ok(Event::InitDone)) => {
            *synced = true;
            *dirty = true;
        }
        Some(Ok(Event::Apply(_) | Event::Delete(_))) => *dirty = true,
        Some(Ok(Event::Init | Event::InitApply(_))) => {}
        Some(Err(e)) => {
            tracing::warn!(error = %e, "watching Nodes failed; retrying with back-off");
        }
    }
    true
}

fn report(
    node: &str,
    pass: Pass,
    readiness: &watch::Sender<Readiness>,
    last_skipped: &mut Vec<String>,
    last_failed: &mut Vec<String>,
) {
    let new = pass.readiness;
    readiness.send_if_modified(|current| {
        if *current == new {
            return false;
        }
        if new.ready {
            tracing::info!(node, "node network ready");
        } else {
            tracing::warn!(node, reason = %new.message, "node network not ready");
        }
        *current = new;
        true
    });
    if pass.skipped != *last_skipped {
        for why in &pass.skipped {
            tracing::warn!(node, "not routing a peer: {why}");
        }
        *last_skipped = pass.skipped;
    }
    match pass.routes {
        Ok(sync) => {
            for r in &sync.installed {
                tracing::info!(peer = %r.node, dst = %r.dst, via = %r.via, "installed peer route");
            }
            for r in &sync.removed {
                tracing::info!(dst = %r.dst, via = ?r.gateway, "removed stale peer route");
            }
            let failed: Vec<String> = sync
                .failed
                .iter()
                .map(|(r, why)| format!("route {} via {} for Node {}: {why}", r.dst, r.via, r.node))
                .collect();
            if failed != *last_failed {
                for f in &failed {
                    tracing::warn!(
                        node,
                        "peer route not installed (retrying at each resync): {f}"
                    );
                }
                *last_failed = failed;
            }
        }
        Err(e) => {
            tracing::warn!(node, error = %e, "syncing peer routes failed; retrying at the next resync")
        }
    }
}
