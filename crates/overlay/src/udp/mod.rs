//! The udp backend: flannel's original design, made fast. A TUN device `podnet0` holds
//! the whole cluster range (its address is this node's subnet address with the cluster
//! prefix, e.g. `10.244.1.0/16`, so the kernel's connected route sends every other node's
//! pods into it while the bridge's more specific /24 keeps local pods local), and a
//! user-space forwarder wraps each packet in UDP to the node that owns its destination
//! (port 8285) and unwraps what peers send.
//!
//! Speed comes from the TUN offloads: the device is opened with a `virtio_net_hdr` and
//! TSO, so the forwarder handles 64 KB TCP super-packets, cuts them into MTU-sized
//! segments sent as one UDP GSO train, and on the far side merges the UDP GRO train back
//! into one super-packet (see [`gso`]). The per-packet work is one table look-up.

mod csum;
mod forwarder;
mod gso;
mod icmp;
mod send;
mod table;
mod tun;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::Netlink;

use crate::{Backend, BackendConfig, BackendData, BackendKind, OverlayError, Peer, PeerSync};
pub use forwarder::CounterSnapshot;
use forwarder::{Forwarder, Shared};
use table::Table;
use tun::Tun;

/// The TUN device's name (flannel's `flannel0`).
pub const DEVICE: &str = "podnet0";
/// How long teardown waits for each forwarder thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Smallest MTU an IPv4 link may have.
const MIN_MTU: u32 = 68;

/// The forwarder's counters, readable while the backend runs elsewhere (the agent's
/// metrics read them at each scrape).
#[derive(Debug, Clone)]
pub struct TunnelCounters(Arc<Shared>);

impl TunnelCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        self.0.counters.snapshot()
    }
}

pub struct UdpBackend {
    config: BackendConfig,
    shared: Arc<Shared>,
    socket: Option<Arc<OwnedFd>>,
    forwarder: Option<Forwarder>,
    /// The peers in the table, by subnet, to report what a sync changed.
    installed: BTreeMap<Ipv4Net, SocketAddrV4>,
}

impl UdpBackend {
    /// Checks the configuration; creates nothing (see [`Backend::ensure_device`]).
    pub fn new(config: BackendConfig) -> Result<UdpBackend, OverlayError> {
        validate(&config)?;
        let local = &config.local;
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(Table::new(local.cluster_cidr, local.subnet))),
            counters: Default::default(),
            router: u32::from(local.subnet.network()),
        });
        Ok(UdpBackend {
            config,
            shared,
            socket: None,
            forwarder: None,
            installed: BTreeMap::new(),
        })
    }

    /// The forwarder's traffic and drop counters since the backend was made.
    pub fn counters(&self) -> CounterSnapshot {
        self.shared.counters.snapshot()
    }

    /// A handle that reads the same counters from elsewhere (a metrics scrape), for as
    /// long as it is kept.
    pub fn counter_handle(&self) -> TunnelCounters {
        TunnelCounters(Arc::clone(&self.shared))
    }

    /// The TUN device's address: this node's subnet address with the cluster prefix.
    pub fn device_address(&self) -> Ipv4Net {
        let local = &self.config.local;
        Ipv4Net::new(local.subnet.network(), local.cluster_cidr.prefix_len())
            .unwrap_or(local.cluster_cidr)
    }

    /// Runs `f` in the node's namespace (the calling thread's when none is configured).
    fn in_netns<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, OverlayError> {
        match &self.config.netns {
            Some(ns) => Ok(ns.run(f)?),
            None => Ok(f()),
        }
    }

    fn netlink(&self) -> Result<Netlink, OverlayError> {
        Ok(match &self.config.netns {
            Some(ns) => Netlink::open_in(ns)?,
            None => Netlink::current()?,
        })
    }

    /// Opens the UDP socket once; it outlives TUN re-creations.
    fn ensure_socket(&mut self) -> Result<Arc<OwnedFd>, OverlayError> {
        if let Some(socket) = &self.socket {
            return Ok(Arc::clone(socket));
        }
        let addr = SocketAddrV4::new(self.config.local.public_ip, self.config.udp_port);
        let socket = self
            .in_netns(|| forwarder::open_socket(addr))?
            .map_err(|source| OverlayError::Io {
                action: format!("open the udp backend's socket on {addr}"),
                source,
            })?;
        let socket = Arc::new(socket);
        self.socket = Some(Arc::clone(&socket));
        Ok(socket)
    }

    /// (Re)starts the forwarder on a new TUN fd unless the running one is healthy.
    fn ensure_forwarder(&mut self) -> Result<(), OverlayError> {
        if self.forwarder.as_ref().is_some_and(Forwarder::healthy) {
            return Ok(());
        }
        if let Some(mut old) = self.forwarder.take() {
            tracing::info!(
                device = DEVICE,
                "restarting the udp forwarder on a new TUN device"
            );
            old.stop(STOP_TIMEOUT);
        }
        let socket = self.ensure_socket()?;
        let tun = self
            .in_netns(|| Tun::open(DEVICE))?
            .map_err(|source| OverlayError::Io {
                action: format!("open TUN device {DEVICE}"),
                source,
            })?;
        let forwarder =
            Forwarder::start(tun, socket, Arc::clone(&self.shared)).map_err(|source| {
                OverlayError::Io {
                    action: "start the udp forwarder threads".into(),
                    source,
                }
            })?;
        self.forwarder = Some(forwarder);
        Ok(())
    }

    /// Gives the device its MTU, exactly its one address, and brings it up.
    fn configure_device(&self) -> Result<(), OverlayError> {
        let mut nl = self.netlink()?;
        let link = nl.require_link(DEVICE)?;
        // The ICMP errors the forwarder writes into the device come from the device's own
        // address; the kernel drops packets with a local source unless told to accept them.
        let key = format!("net.ipv4.conf.{DEVICE}.accept_local");
        self.in_netns(|| podnet_kernel::sysctl::write_here(&key, "1"))??;
        // Set before the device goes up: the cluster range is IPv4, so no link-local
        // address, router solicitations or MLD reports for the forwarder to read and drop
        // (ignored where IPv6 is off).
        let key = format!("net.ipv6.conf.{DEVICE}.disable_ipv6");
        let _ = self.in_netns(|| podnet_kernel::sysctl::write_here(&key, "1"));
        let mtu = self.config.pod_mtu();
        if link.mtu != mtu {
            nl.set_mtu(link.index, mtu)?;
        }
        let want = IpNet::V4(self.device_address());
        let mut present = false;
        for (_, addr) in nl.addresses(Some(link.index))? {
            if addr == want {
                present = true;
            } else if addr.addr().is_ipv4() {
                nl.delete_address(link.index, addr)?;
            }
        }
        if !present {
            nl.ensure_address(link.index, want)?;
        }
        if !link.up {
            nl.set_up(link.index)?;
        }
        Ok(())
    }

    /// The table for `peers`, the failures, and the peers it holds.
    fn build_table(
        &self,
        peers: &[Peer],
    ) -> (
        Table,
        BTreeMap<Ipv4Net, SocketAddrV4>,
        Vec<(String, String)>,
    ) {
        let local = &self.config.local;
        let mut table = Table::new(local.cluster_cidr, local.subnet);
        let mut held = BTreeMap::new();
        let mut failed = Vec::new();
        for peer in peers {
            match self.check_peer(peer, &table, &held) {
                Ok(slot) => {
                    let addr = SocketAddrV4::new(peer.public_ip, self.config.udp_port);
                    table.insert(slot, addr);
                    held.insert(peer.subnet, addr);
                }
                Err(why) => failed.push((peer.node.clone(), why)),
            }
        }
        (table, held, failed)
    }

    /// The table slot of `peer`, or why it cannot have one.
    fn check_peer(
        &self,
        peer: &Peer,
        table: &Table,
        held: &BTreeMap<Ipv4Net, SocketAddrV4>,
    ) -> Result<usize, String> {
        let local = &self.config.local;
        if peer.backend_type.as_deref() != Some("udp") {
            return Err(format!(
                "node {} runs the {} backend, this node runs udp: every node of a cluster must run the same backend",
                peer.node,
                peer.backend_type.as_deref().unwrap_or("(unpublished)")
            ));
        }
        let slot = table.slot_of(peer.subnet).ok_or_else(|| {
            format!(
                "subnet {} of node {} is not a /{} of the cluster range {}",
                peer.subnet,
                peer.node,
                local.subnet.prefix_len(),
                local.cluster_cidr
            )
        })?;
        if table.is_local_slot(slot) {
            return Err(format!(
                "node {} claims subnet {}, which is this node's",
                peer.node, peer.subnet
            ));
        }
        if held.contains_key(&peer.subnet) {
            return Err(format!(
                "subnet {} is claimed by another node too; node {} is left out",
                peer.subnet, peer.node
            ));
        }
        if peer.public_ip == local.public_ip {
            return Err(format!(
                "node {} has this node's public IP {}",
                peer.node, peer.public_ip
            ));
        }
        Ok(slot)
    }

    fn stop_forwarder(&mut self) {
        if let Some(mut forwarder) = self.forwarder.take() {
            forwarder.stop(STOP_TIMEOUT);
        }
    }
}

fn validate(config: &BackendConfig) -> Result<(), OverlayError> {
    let local = &config.local;
    let bad = |msg: String| Err(OverlayError::Config(msg));
    if config.kind != BackendKind::Udp {
        return bad(format!(
            "the udp backend was given a {} configuration",
            config.kind
        ));
    }
    if !local.cluster_cidr.contains(&local.subnet)
        || local.subnet.prefix_len() <= local.cluster_cidr.prefix_len()
    {
        return bad(format!(
            "node subnet {} is not inside the cluster range {}: check the node's podCIDR and --cluster-cidr",
            local.subnet, local.cluster_cidr
        ));
    }
    if local.subnet.prefix_len() - local.cluster_cidr.prefix_len() > table::MAX_SLOT_BITS {
        return bad(format!(
            "the cluster range {} holds more than {} node subnets of size /{}: use larger node subnets",
            local.cluster_cidr,
            1u32 << table::MAX_SLOT_BITS,
            local.subnet.prefix_len()
        ));
    }
    if local.cluster_cidr.contains(&local.public_ip) {
        return bad(format!(
            "the node's public IP {} is inside the cluster range {}: choose a cluster range apart from the underlay",
            local.public_ip, local.cluster_cidr
        ));
    }
    if config.udp_port == 0 {
        return bad("the udp backend needs a UDP port (default 8285), not 0".into());
    }
    let mtu = config.pod_mtu();
    if !(MIN_MTU..=65535).contains(&mtu) {
        return bad(format!(
            "pod MTU {mtu} is out of range (underlay MTU {} − 28 for udp): it must be 68 to 65535",
            config.underlay_mtu
        ));
    }
    Ok(())
}

fn peer_line(subnet: &Ipv4Net, addr: &SocketAddrV4) -> String {
    format!("udp peer {subnet} via {addr}")
}

impl Backend for UdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Udp
    }

    fn tunnel_counters(&self) -> Option<TunnelCounters> {
        Some(self.counter_handle())
    }

    fn pod_mtu(&self) -> u32 {
        self.config.pod_mtu()
    }

    fn ensure_device(&mut self) -> Result<BackendData, OverlayError> {
        self.ensure_forwarder()?;
        self.configure_device()?;
        Ok(BackendData(None))
    }

    fn sync_peers(&mut self, peers: &[Peer]) -> Result<PeerSync, OverlayError> {
        let (table, held, failed) = self.build_table(peers);
        let mut sync = PeerSync {
            failed,
            ..PeerSync::default()
        };
        for (subnet, addr) in &held {
            if self.installed.get(subnet) != Some(addr) {
                sync.installed.push(peer_line(subnet, addr));
            }
        }
        for (subnet, addr) in &self.installed {
            if held.get(subnet) != Some(addr) {
                sync.removed.push(peer_line(subnet, addr));
            }
        }
        let table = Arc::new(table);
        match self.shared.table.write() {
            Ok(mut current) => *current = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
        self.installed = held;
        Ok(sync)
    }

    fn teardown(&mut self) -> Result<(), OverlayError> {
        self.stop_forwarder();
        self.socket = None;
        // The device is not persistent: it went with the last fd. One still there belongs
        // to someone else (or was made persistent by hand) and is left alone.
        Ok(())
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop_forwarder();
    }
}
