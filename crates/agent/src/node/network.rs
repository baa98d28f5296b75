//! The node's network set-up, level-triggered: from a watch of all Nodes (kube-rs reflector)
//! and a periodic resync, each pass
//!
//! 1. enables IPv4 forwarding in the node's namespace;
//! 2. once the Node has its `spec.podCIDR`, builds the overlay backend (once; again only if
//!    the subnet changes) and lets it make or repair its device (`ensure_device`);
//! 3. writes `subnet.env` (with the backend's pod MTU) and the CNI conflist
//!    ([`files`](super::files)) when they differ from what they should be;
//! 4. hands the backend the complete set of peers read from the other Nodes
//!    ([`peers`](super::peers)), which makes the kernel match it;
//! 5. keeps (or removes, with `--ip-masq=false`) the masquerade table;
//! 6. says which annotations (public IP, backend type and data) the own Node should carry;
//!    the async loop patches them when they differ.
//!
//! Readiness (files written, forwarding on, the backend's device there) is published on a
//! watch channel: the node's `Ready` condition and the start of the pod runtime follow it.
//! Whether the overlay (device, peers) and the masquerade table could be programmed is
//! reported to the node's [`Health`] (the `NetworkUnavailable` condition); a pass that
//! failed is retried with back-off (from a second up to the resync period) rather than only
//! at the next resync, so a failure is confirmed, or mended, within seconds. Each pass is
//! also counted in the agent's metrics (peers, per-peer errors, the node's subnet and
//! backend, the udp tunnel's counters).
//! On shutdown the kernel state stays: pods keep talking while the agent restarts, and the
//! next agent adopts what is right without recreating it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use podnet_kernel::{NetNs, Netlink, sysctl};
use podnet_overlay::{
    Backend, BackendConfig, BackendKind, DEFAULT_UDP_PORT, LocalNode, Peer, PeerSync, VxlanOptions,
    annotations, hostgw, masq,
};
use tokio::sync::watch;

use super::backoff::Backoff;
use super::files::{self, NodeFiles};
use super::health::{Health, Part};
use super::peers::{self, PeerChanges};
use super::registration::Readiness;
use super::sysinfo::mtu_of_address;
use super::{NodeError, stopped};
use crate::metrics::network::{NetworkMetrics, PassFacts};

/// The MTU assumed when the node IP's interface cannot be found.
pub const FALLBACK_MTU: u32 = 1500;

/// How cross-node traffic is carried (the agent's `--backend` and related flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlaySettings {
    pub backend: BackendKind,
    pub vxlan: VxlanOptions,
    pub udp_port: u16,
    /// Pod MTU instead of the one computed from the underlay.
    pub mtu_override: Option<u32>,
    /// Masquerade pod traffic leaving the cluster CIDR.
    pub ip_masq: bool,
}

impl Default for OverlaySettings {
    fn default() -> Self {
        OverlaySettings {
            backend: BackendKind::Vxlan,
            vxlan: VxlanOptions::default(),
            udp_port: DEFAULT_UDP_PORT,
            mtu_override: None,
            ip_masq: true,
        }
    }
}

/// What the node network needs to know.
#[derive(Debug)]
pub struct NetworkConfig {
    pub node_name: String,
    /// The node's InternalIP: the backend's public IP; the MTU of its interface is the
    /// underlay MTU.
    pub node_ip: Ipv4Addr,
    /// The range node pod subnets come from (`FLANNEL_NETWORK`).
    pub cluster_cidr: Ipv4Net,
    pub files: NodeFiles,
    /// Full pass at least this often, even with no change (repairs hand-made damage).
    pub resync: Duration,
    /// The namespace to configure: `None` for the agent's own (the calling thread's), or
    /// another one (tests).
    pub netns: Option<NetNs>,
    pub overlay: OverlaySettings,
    /// Where each pass's peers and the node's subnet are counted, if anywhere.
    pub metrics: Option<NetworkMetrics>,
}

/// Refuses, at start, a cluster CIDR that overlaps the subnet of the node IP's interface:
/// pod routes would capture traffic between the nodes themselves.
pub fn check_underlay(
    netns: Option<&NetNs>,
    node_ip: Ipv4Addr,
    cluster_cidr: Ipv4Net,
) -> Result<(), NodeError> {
    let mut netlink = match netns {
        Some(ns) => Netlink::open_in(ns)?,
        None => Netlink::current()?,
    };
    let underlay = hostgw::subnet_of_address(&mut netlink, node_ip)?;
    if let Some(underlay) = underlay
        && podnet_api::net::overlaps(&underlay, &cluster_cidr)
    {
        return Err(NodeError::Invalid(format!(
            "the cluster CIDR {cluster_cidr} overlaps the underlay {underlay} of the node IP {node_ip}: routes to pods would capture traffic between nodes; choose a --cluster-cidr outside {underlay} (and start the apiserver with the same one)"
        )));
    }
    Ok(())
}

/// The kernel side: a netlink socket in the node's namespace, that namespace for sysctls and
/// nftables, and the backend once the node's subnet is known.
struct Kernel {
    netlink: Netlink,
    netns: Option<NetNs>,
    backend: Option<(Ipv4Net, Box<dyn Backend>)>,
}

impl Kernel {
    fn open(netns: Option<NetNs>) -> Result<Kernel, NodeError> {
        let netlink = match &netns {
            Some(ns) => Netlink::open_in(ns)?,
            None => Netlink::current()?,
        };
        Ok(Kernel {
            netlink,
            netns,
            backend: None,
        })
    }

    fn enable_forwarding(&self) -> Result<(), NodeError> {
        const KEY: &str = "net.ipv4.ip_forward";
        match &self.netns {
            Some(ns) => sysctl::write(ns, KEY, "1")?,
            None => sysctl::write_here(KEY, "1")?,
        }
        Ok(())
    }

    /// The backend for `subnet`, built on first use (or when the subnet changed).
    fn backend(
        &mut self,
        input: &PassInput,
        subnet: Ipv4Net,
    ) -> Result<&mut Box<dyn Backend>, String> {
        if self.backend.as_ref().is_none_or(|(s, _)| *s != subnet) {
            let underlay_mtu = match mtu_of_address(&mut self.netlink, input.node_ip) {
                Ok(Some(mtu)) => mtu,
                Ok(None) => {
                    tracing::warn!(node_ip = %input.node_ip, mtu = FALLBACK_MTU, "no interface in the node's namespace has the node IP; assuming this underlay MTU");
                    FALLBACK_MTU
                }
                Err(e) => return Err(format!("reading the MTU of the node IP's interface: {e}")),
            };
            let netns = match &self.netns {
                Some(ns) => Some(ns.try_clone().map_err(|e| e.to_string())?),
                None => None,
            };
            let settings = input.overlay;
            let config = BackendConfig {
                kind: settings.backend,
                local: LocalNode {
                    name: input.node_name.clone(),
                    public_ip: input.node_ip,
                    subnet,
                    cluster_cidr: input.cluster_cidr,
                },
                underlay_mtu,
                mtu_override: settings.mtu_override,
                vxlan: settings.vxlan,
                udp_port: settings.udp_port,
                netns,
            };
            let backend = podnet_overlay::new_backend(config)
                .map_err(|e| format!("the {} backend: {e}", settings.backend))?;
            tracing::info!(backend = %settings.backend, %subnet, underlay_mtu, pod_mtu = backend.pod_mtu(), "overlay backend ready");
            self.backend = Some((subnet, backend));
        }
        match &mut self.backend {
            Some((_, backend)) => Ok(backend),
            None => Err("the overlay backend was not built".into()),
        }
    }
}

/// The result of one pass.
struct Pass {
    readiness: Readiness,
    /// Why the pass could not get to the peers (forwarding, the backend, its device); `None`
    /// when it got there or is only waiting (for the Node, its podCIDR).
    overlay_error: Option<String>,
    /// The backend's peer sync, when the pass got that far.
    sync: Option<Result<PeerSync, String>>,
    peers: Vec<Peer>,
    skipped: Vec<String>,
    /// The own Node's overlay annotations, when they must change (`None` values: remove).
    annotations: Option<BTreeMap<String, Option<String>>>,
    /// The masquerade table written (`true`) or already right; `None`: not got to.
    masq: Option<Result<bool, String>>,
}

struct PassInput {
    node_name: String,
    node_ip: Ipv4Addr,
    cluster_cidr: Ipv4Net,
    files: NodeFiles,
    overlay: OverlaySettings,
    nodes: Vec<Arc<Node>>,
}

/// A pass that waits (for the Node, its podCIDR): not ready, nothing failed.
fn not_ready(message: impl std::fmt::Display) -> Pass {
    Pass {
        readiness: Readiness::not_ready(format!("container runtime network not ready: {message}")),
        overlay_error: None,
        sync: None,
        peers: Vec::new(),
        skipped: Vec::new(),
        annotations: None,
        masq: None,
    }
}

/// A pass that failed before the peers: not ready, and the overlay failing.
fn broken(message: impl std::fmt::Display) -> Pass {
    let message = message.to_string();
    Pass {
        overlay_error: Some(message.clone()),
        ..not_ready(message)
    }
}

impl Pass {
    /// How the overlay fared: `None` when the pass did not get to it. A peer that has not
    /// published its backend yet (its agent is starting) is waited for, not a failure of
    /// this node.
    fn overlay(&self) -> Option<Result<(), String>> {
        if let Some(e) = &self.overlay_error {
            return Some(Err(e.clone()));
        }
        match self.sync.as_ref()? {
            Err(e) => Some(Err(format!("syncing peers: {e}"))),
            Ok(sync) => {
                let failed = self.failed_peers(sync).next();
                Some(match failed {
                    Some((peer, why)) => Err(format!("peer {peer} not set up: {why}")),
                    None => Ok(()),
                })
            }
        }
    }

    /// The peers `sync` could not set up that have published their backend (one whose
    /// agent is still starting is waited for).
    fn failed_peers<'a>(
        &'a self,
        sync: &'a PeerSync,
    ) -> impl Iterator<Item = &'a (String, String)> + 'a {
        sync.failed.iter().filter(|(peer, _)| {
            self.peers
                .iter()
                .any(|p| p.node == *peer && p.backend_type.is_some())
        })
    }

    /// What the metrics count of this pass, with the backend `kernel` holds after it.
    fn facts(&self, kernel: &Kernel) -> PassFacts<'_> {
        let backend = kernel.backend.as_ref();
        PassFacts {
            backend: backend.map(|(subnet, b)| (*subnet, b.kind().to_string())),
            tunnel: backend.and_then(|(_, b)| b.tunnel_counters()),
            peers: self.peers.len(),
            failed: match &self.sync {
                Some(Ok(sync)) => self.failed_peers(sync).map(|(p, _)| p.as_str()).collect(),
                _ => Vec::new(),
            },
            overlay_ok: self.overlay().map(|o| o.is_ok()),
        }
    }

    /// Whether something failed that a retry may mend.
    fn failed(&self) -> bool {
        matches!(self.overlay(), Some(Err(_))) || matches!(self.masq, Some(Err(_)))
    }
}

fn pass(kernel: &mut Kernel, input: &PassInput) -> Pass {
    let name = input.node_name.as_str();
    if let Err(e) = kernel.enable_forwarding() {
        return broken(format_args!("cannot enable IPv4 forwarding: {e}"));
    }
    let Some(own) = input
        .nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
    else {
        return not_ready(format_args!("Node {name} is not in the watch yet"));
    };
    let Some(subnet) = peers::pod_cidr(own) else {
        return not_ready(format_args!(
            "waiting for spec.podCIDR of Node {name} (podnet's apiserver allocates it; another API server needs node CIDR allocation enabled)"
        ));
    };
    let backend = match kernel.backend(input, subnet) {
        Ok(b) => b,
        Err(e) => return broken(e),
    };
    let data = match backend.ensure_device() {
        Ok(data) => data,
        Err(e) => {
            return broken(format_args!("the {} backend's device: {e}", backend.kind()));
        }
    };
    let mtu = backend.pod_mtu();
    let readiness = write_files(input, subnet, mtu);
    let wanted = BTreeMap::from([
        (
            annotations::PUBLIC_IP.to_string(),
            Some(input.node_ip.to_string()),
        ),
        (
            annotations::BACKEND_TYPE.to_string(),
            Some(backend.kind().to_string()),
        ),
        (annotations::BACKEND_DATA.to_string(), data.0),
    ]);
    let (peer_set, skipped) = peers::desired_peers(
        name,
        input.cluster_cidr,
        input.nodes.iter().map(|n| n.as_ref()),
    );
    let sync = backend.sync_peers(&peer_set).map_err(|e| e.to_string());
    let masq = if input.overlay.ip_masq {
        masq::ensure(kernel.netns.as_ref(), input.cluster_cidr, subnet)
    } else {
        masq::remove(kernel.netns.as_ref()).map(|()| false)
    }
    .map_err(|e| e.to_string());
    Pass {
        readiness,
        overlay_error: None,
        sync: Some(sync),
        peers: peer_set,
        skipped,
        annotations: annotations_to_patch(own, wanted),
        masq: Some(masq),
    }
}

/// `wanted` when the Node's annotations differ from it, else `None`.
fn annotations_to_patch(
    node: &Node,
    wanted: BTreeMap<String, Option<String>>,
) -> Option<BTreeMap<String, Option<String>>> {
    let have = node.metadata.annotations.as_ref();
    let differs = wanted
        .iter()
        .any(|(k, v)| have.and_then(|h| h.get(k)) != v.as_ref());
    differs.then_some(wanted)
}

/// The files; the readiness that results.
fn write_files(input: &PassInput, pod_cidr: Ipv4Net, mtu: u32) -> Readiness {
    let written = files::subnet_env(input.cluster_cidr, pod_cidr, mtu, input.overlay.ip_masq)
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

/// What the loop remembers between passes, to log only changes.
#[derive(Default)]
struct Memory {
    peers: Vec<Peer>,
    skipped: Vec<String>,
    failed: Vec<(String, String)>,
    sync_error: Option<String>,
    masq_error: Option<String>,
}

/// Runs the node network until shutdown. Fails only when the node's namespace cannot be
/// opened; everything else is retried (and shows in `readiness` and `health`).
pub async fn run(
    client: kube::Client,
    config: NetworkConfig,
    readiness: watch::Sender<Readiness>,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    let NetworkConfig {
        node_name,
        node_ip,
        cluster_cidr,
        files,
        resync,
        netns,
        overlay,
        metrics,
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
    let stream =
        podnet_watch::backed_off(watcher::watcher(api.clone(), watcher::Config::default()))
            .reflect(writer);
    let mut stream = pin!(stream);
    let mut resync_timer = tokio::time::interval(resync.max(Duration::from_millis(100)));
    resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced = false;
    let mut dirty = true;
    let mut memory = Memory::default();
    let mut retry = Backoff::new(Duration::from_secs(1), resync);
    let mut retry_at: Option<tokio::time::Instant> = None;

    loop {
        let retry_sleep = tokio::time::sleep_until(retry_at.unwrap_or_else(far_future));
        tokio::select! {
            _ = stopped(&mut shutdown) => return Ok(()),
            item = stream.next() => {
                if !handle(item, &mut synced, &mut dirty) {
                    return Err(NodeError::Invalid("the watch of Nodes ended unexpectedly".into()));
                }
            }
            _ = resync_timer.tick() => dirty = true,
            _ = retry_sleep, if retry_at.is_some() => {
                retry_at = None;
                dirty = true;
            }
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
            overlay,
            nodes: snapshot(&reader),
        };
        let Some(mut k) = kernel.take() else {
            return Err(NodeError::Invalid(
                "the node network's netlink socket was lost".into(),
            ));
        };
        let (k, mut outcome) = tokio::task::spawn_blocking(move || {
            let outcome = pass(&mut k, &input);
            (k, outcome)
        })
        .await
        .map_err(|source| NodeError::Task {
            what: "configuring the node network",
            source,
        })?;
        if let Some(m) = &metrics {
            m.observe(outcome.facts(&k));
        }
        kernel = Some(k);
        if let Some(wanted) = outcome.annotations.take() {
            // A failure is logged and retried at the next pass (the Node still differs).
            publish_if_changed(&api, &node_name, wanted).await;
        }
        if outcome.failed() {
            retry_at = Some(tokio::time::Instant::now() + retry.next_delay());
        } else {
            retry.reset();
            retry_at = None;
        }
        report_health(&outcome, &health);
        report(&node_name, outcome, &readiness, &mut memory);
    }
}

/// An instant the retry timer never reaches (it is disabled while there is no retry).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// The pass's verdict on the overlay and the masquerade table, for the Node's
/// `NetworkUnavailable` condition. A part the pass did not get to is not reported.
fn report_health(pass: &Pass, health: &Health) {
    if let Some(outcome) = pass.overlay() {
        health.report(Part::Overlay, outcome);
    }
    if let Some(masq) = &pass.masq {
        health.report(
            Part::Masquerade,
            masq.as_ref().map(|_| ()).map_err(Clone::clone),
        );
    }
}

/// Merge-patches the own Node's overlay annotations (`null` removes one), unless the
/// server's latest copy of the Node already carries them. The pass compared them with the
/// watch's copy, which lags behind our own writes: right after a patch, every pass that
/// runs before the watch delivers it (the node's status reports and Lease renewals make
/// several at start) would send the same patch again. As flannel does, the write is made
/// only when the values differ from what the server has.
async fn publish_if_changed(api: &Api<Node>, node: &str, wanted: BTreeMap<String, Option<String>>) {
    match api.get(node).await {
        Ok(latest) => {
            if annotations_to_patch(&latest, wanted.clone()).is_none() {
                tracing::debug!(node, "the overlay annotations are already published");
                return;
            }
        }
        Err(e) => {
            tracing::warn!(node, error = %e, "reading the Node before publishing the overlay annotations failed; retrying at the next resync");
            return;
        }
    }
    publish(api, node, wanted).await;
}

/// Merge-patches the own Node's overlay annotations (`null` removes one).
async fn publish(api: &Api<Node>, node: &str, wanted: BTreeMap<String, Option<String>>) {
    let patch = serde_json::json!({ "metadata": { "annotations": wanted } });
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node, annotations = ?wanted, "published the overlay annotations");
        }
        Err(e) => {
            tracing::warn!(node, error = %e, "publishing the overlay annotations failed; retrying at the next resync");
        }
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

fn report(node: &str, pass: Pass, readiness: &watch::Sender<Readiness>, memory: &mut Memory) {
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
    if pass.skipped != memory.skipped {
        for why in &pass.skipped {
            tracing::warn!(node, "not a peer: {why}");
        }
        memory.skipped = pass.skipped;
    }
    let Some(sync) = pass.sync else {
        return;
    };
    let changes = PeerChanges::between(&memory.peers, &pass.peers);
    for p in &changes.added {
        tracing::info!(node, "peer added: {p}");
    }
    for p in &changes.changed {
        tracing::info!(node, "peer changed: {p}");
    }
    for p in &changes.removed {
        tracing::info!(node, "peer removed: {p}");
    }
    memory.peers = pass.peers;
    match sync {
        Ok(sync) => {
            memory.sync_error = None;
            for what in &sync.installed {
                tracing::info!(node, "installed {what}");
            }
            for what in &sync.removed {
                tracing::info!(node, "removed stale {what}");
            }
            if sync.failed != memory.failed {
                for (peer, why) in &sync.failed {
                    tracing::warn!(
                        node,
                        peer,
                        "peer not set up (retrying at each resync): {why}"
                    );
                }
                memory.failed = sync.failed;
            }
        }
        Err(e) => {
            if memory.sync_error.as_ref() != Some(&e) {
                tracing::warn!(node, error = %e, "syncing peers failed; retrying at the next resync");
            }
            memory.sync_error = Some(e);
        }
    }
    match pass.masq {
        Some(Ok(written)) => {
            if written {
                tracing::info!(node, table = masq::TABLE, "wrote the masquerade rules");
            }
            memory.masq_error = None;
        }
        None => {}
        Some(Err(e)) => {
            if memory.masq_error.as_ref() != Some(&e) {
                tracing::warn!(node, error = %e, "masquerade rules not set; retrying at the next resync");
            }
            memory.masq_error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, published: bool) -> Peer {
        Peer {
            node: node.into(),
            subnet: "10.244.1.0/24".parse().unwrap(),
            public_ip: Ipv4Addr::new(172, 30, 0, 12),
            backend_type: published.then(|| "vxlan".to_string()),
            backend_data: None,
        }
    }

    fn synced(peers: Vec<Peer>, failed: &[(&str, &str)]) -> Pass {
        Pass {
            readiness: Readiness::ready(),
            overlay_error: None,
            sync: Some(Ok(PeerSync {
                failed: failed
                    .iter()
                    .map(|(p, why)| (p.to_string(), why.to_string()))
                    .collect(),
                ..PeerSync::default()
            })),
            peers,
            skipped: Vec::new(),
            annotations: None,
            masq: Some(Ok(false)),
        }
    }

    #[test]
    fn the_overlay_fails_for_a_published_peer_not_for_one_still_starting() {
        let waiting = synced(
            vec![peer("n2", false)],
            &[("n2", "it has not published its backend type yet")],
        );
        assert_eq!(waiting.overlay(), Some(Ok(())));
        assert!(!waiting.failed());
        let failing = synced(
            vec![peer("n2", false), peer("n3", true)],
            &[
                ("n2", "starting"),
                ("n3", "a route of another owner is in the way"),
            ],
        );
        assert_eq!(
            failing.overlay(),
            Some(Err(
                "peer n3 not set up: a route of another owner is in the way".into()
            ))
        );
        assert!(failing.failed());
        // Waiting for the podCIDR: nothing to say about the overlay yet; a device that
        // cannot be made: failing.
        assert_eq!(not_ready("waiting for spec.podCIDR").overlay(), None);
        assert_eq!(
            broken("no vxlan module").overlay(),
            Some(Err("no vxlan module".into()))
        );
    }
}
