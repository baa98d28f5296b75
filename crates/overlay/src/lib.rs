#![cfg_attr(test, allow(clippy::unwrap_used))]

//! Cross-node pod networking, flannel's model: every node owns one subnet of the cluster
//! range, and a backend makes the other nodes' subnets reachable.
//!
//! The agent reads the peers from the Node objects ([`Peer`]), hands the backend the
//! complete set at every pass ([`Backend::sync_peers`], level-triggered against the kernel)
//! and publishes what peers need from this node ([`Backend::ensure_device`]'s
//! [`BackendData`]) as Node annotations ([`annotations`]).
//!
//! Backends: `vxlan` (kernel encapsulation), `host-gw` (plain routes via the peer's IP on a
//! shared L2 segment) and `udp` (a TUN device and a user-space forwarder, the article's
//! flannel0).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use podnet_kernel::{KernelError, NetNs};

pub mod hostgw;
pub mod masq;
pub mod udp;
pub mod vxlan;

/// Node annotation keys, flannel's set under podnet's prefix.
pub mod annotations {
    /// The node's underlay address peers send to.
    pub const PUBLIC_IP: &str = "podnet.io/public-ip";
    /// The backend the node runs (`vxlan`, `host-gw`, `udp`).
    pub const BACKEND_TYPE: &str = "podnet.io/backend-type";
    /// The backend's JSON data (for vxlan: `{"VNI":1,"VtepMAC":"…"}`).
    pub const BACKEND_DATA: &str = "podnet.io/backend-data";
}

/// Which backend carries cross-node pod traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Vxlan,
    HostGw,
    Udp,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Vxlan, BackendKind::HostGw, BackendKind::Udp];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::Udp => "udp",
        }
    }

    /// Bytes of encapsulation each packet carries on the underlay: the pod MTU is the
    /// underlay MTU minus this (vxlan: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14;
    /// udp: outer IPv4 20 + UDP 8).
    pub fn overhead(self) -> u32 {
        match self {
            BackendKind::Vxlan => 50,
            BackendKind::HostGw => 0,
            BackendKind::Udp => 28,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = OverlayError;

    fn from_str(s: &str) -> Result<Self, OverlayError> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                OverlayError::Config(format!(
                    "unknown backend {s:?}: choose one of vxlan, host-gw, udp"
                ))
            })
    }
}

/// This node, as its backend needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// The node's underlay address (its InternalIP): encapsulated traffic leaves from it.
    pub public_ip: Ipv4Addr,
    /// This node's pod subnet (`Node.spec.podCIDR`).
    pub subnet: Ipv4Net,
    /// The whole pod range (`FLANNEL_NETWORK`).
    pub cluster_cidr: Ipv4Net,
}

/// Another node, as read from its Node object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// The peer's underlay address (its public-ip annotation, else its InternalIP).
    pub public_ip: Ipv4Addr,
    /// The peer's backend-type annotation, if it has published one.
    pub backend_type: Option<String>,
    /// The peer's backend-data annotation (raw JSON), if any.
    pub backend_data: Option<String>,
}

/// What a backend publishes for its peers (the backend-data annotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendData(pub Option<String>);

/// What one [`Backend::sync_peers`] changed and could not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSync {
    /// One line per kernel object added or corrected, e.g. `route 10.244.1.0/24 via …`.
    pub installed: Vec<String>,
    /// One line per stale object removed.
    pub removed: Vec<String>,
    /// Peers that could not be set up, with the reason; retried at the next sync.
    pub failed: Vec<(String, String)>,
}

impl PeerSync {
    pub fn changed(&self) -> bool {
        !self.installed.is_empty() || !self.removed.is_empty()
    }
}

/// A cross-node backend. The agent calls it from blocking tasks, one call at a time.
pub trait Backend: Send {
    fn kind(&self) -> BackendKind;

    /// The MTU pods get (`FLANNEL_MTU`): the underlay MTU minus the encapsulation, or the
    /// configured override.
    fn pod_mtu(&self) -> u32;

    /// Creates the backend's device (or repairs it when it was changed or deleted by hand)
    /// and returns the data peers need from this node. Idempotent.
    fn ensure_device(&mut self) -> Result<BackendData, OverlayError>;

    /// Makes the kernel (and, for udp, the forwarder's table) match exactly `peers`:
    /// missing or wrong entries are (re)installed, entries of departed peers removed.
    /// Level-triggered: it reads what is there, so a call after a restart or a hand edit
    /// repairs. A peer that fails does not stop the others.
    fn sync_peers(&mut self, peers: &[Peer]) -> Result<PeerSync, OverlayError>;

    /// Removes everything the backend created (device, routes, forwarder).
    fn teardown(&mut self) -> Result<(), OverlayError>;

    /// The user-space tunnel's traffic and drop counters (the udp backend's forwarder);
    /// `None` for backends whose packets the kernel carries.
    fn tunnel_counters(&self) -> Option<udp::TunnelCounters> {
        None
    }
}

/// vxlan's settings (flannel's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanOptions {
    /// VXLAN network identifier; the device is `podnet.<vni>`.
    pub vni: u32,
    /// UDP destination port (flannel's 8472, the Linux default).
    pub port: u16,
    /// A plain route instead of encapsulation to peers on this node's L2 segment.
    pub direct_routing: bool,
}

impl Default for VxlanOptions {
    fn default() -> Self {
        VxlanOptions {
            vni: 1,
            port: 8472,
            direct_routing: false,
        }
    }
}

/// The udp backend's UDP port (flannel's 8285).
pub const DEFAULT_UDP_PORT: u16 = 8285;

/// Everything a backend is built from.
#[derive(Debug)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub local: LocalNode,
    /// MTU of the underlay interface (the one holding `local.public_ip`).
    pub underlay_mtu: u32,
    /// Pod MTU set by the operator instead of the computed one.
    pub mtu_override: Option<u32>,
    pub vxlan: VxlanOptions,
    pub udp_port: u16,
    /// The node's network namespace: `None` for the calling thread's (the agent's own).
    pub netns: Option<NetNs>,
}

impl BackendConfig {
    /// The pod MTU: the override, else the underlay MTU minus the encapsulation.
    pub fn pod_mtu(&self) -> u32 {
        self.mtu_override
            .unwrap_or_else(|| self.underlay_mtu.saturating_sub(self.kind.overhead()))
    }
}

/// Builds the backend `config.kind` names (it creates nothing yet: see
/// [`Backend::ensure_device`]).
pub fn new_backend(config: BackendConfig) -> Result<Box<dyn Backend>, OverlayError> {
    Ok(match config.kind {
        BackendKind::Vxlan => Box::new(vxlan::VxlanBackend::new(config)?),
        BackendKind::HostGw => Box::new(hostgw::HostGwBackend::new(config)?),
        BackendKind::Udp => Box::new(udp::UdpBackend::new(config)?),
    })
}

/// What went wrong in the overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Bad configuration: said at start, with what to change.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip_and_unknown_is_refused() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>().unwrap(), kind);
        }
        let err = "gre".parse::<BackendKind>().unwrap_err().to_string();
        assert!(
            err.contains("gre") && err.contains("vxlan, host-gw, udp"),
            "{err}"
        );
    }
}
