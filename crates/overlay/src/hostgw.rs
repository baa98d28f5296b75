//! The host-gw backend: no device and no encapsulation, one route per peer subnet via the
//! peer's underlay address (`10.244.1.0/24 via 172.30.0.12`), as flannel's host-gw and
//! calico's routed model. It only works when every node is on one L2 segment (the gateway
//! of a route must be directly reachable), so a peer elsewhere is refused, per peer, with
//! what to do instead.
//!
//! Routes carry the protocol [`PROTO_PODNET`]: a pass finds podnet's routes (after a
//! restart too), removes the ones no peer wants and never touches routes of other owners.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::route::{MAIN_TABLE, PROTO_PODNET};
use podnet_kernel::{KernelError, Netlink, Route};

use crate::{Backend, BackendConfig, BackendData, BackendKind, OverlayError, Peer, PeerSync};

pub struct HostGwBackend {
    config: BackendConfig,
    netlink: Netlink,
}

impl HostGwBackend {
    pub fn new(config: BackendConfig) -> Result<HostGwBackend, OverlayError> {
        if config.kind != BackendKind::HostGw {
            return Err(OverlayError::Config(format!(
                "the host-gw backend was given a {} configuration",
                config.kind
            )));
        }
        let netlink = open_netlink(&config)?;
        Ok(HostGwBackend { config, netlink })
    }
}

/// A netlink socket in the backend's namespace (the node's).
pub(crate) fn open_netlink(config: &BackendConfig) -> Result<Netlink, OverlayError> {
    Ok(match &config.netns {
        Some(ns) => Netlink::open_in(ns)?,
        None => Netlink::current()?,
    })
}

/// One wanted route to a peer's pod subnet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    /// The Node it is for (for messages).
    pub node: String,
}

impl PeerRoute {
    fn describe(&self) -> String {
        format!("route {} via {} (Node {})", self.dst, self.via, self.node)
    }
}

/// The IPv4 subnets this namespace is directly connected to (the prefixes of its interface
/// addresses, loopback and host addresses left out): the L2 segments a gateway can be on.
pub fn connected_subnets(netlink: &mut Netlink) -> Result<Vec<Ipv4Net>, KernelError> {
    let mut nets: Vec<Ipv4Net> = netlink
        .addresses(None)?
        .into_iter()
        .filter_map(|(_, net)| match net {
            IpNet::V4(v4) if !v4.addr().is_loopback() && v4.prefix_len() < 32 => Some(v4.trunc()),
            _ => None,
        })
        .collect();
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// The subnet of the interface address `ip` (this node's underlay segment), if any.
pub fn subnet_of_address(
    netlink: &mut Netlink,
    ip: Ipv4Addr,
) -> Result<Option<Ipv4Net>, KernelError> {
    Ok(netlink
        .addresses(None)?
        .into_iter()
        .find_map(|(_, net)| match net {
            IpNet::V4(v4) if IpAddr::V4(v4.addr()) == IpAddr::V4(ip) => Some(v4.trunc()),
            _ => None,
        }))
}

/// Splits `peers` into the routes host-gw can install and the peers it must refuse (not on
/// one of `segments`), with the refusal's message.
pub fn plan_routes(
    peers: &[Peer],
    segments: &[Ipv4Net],
    own_segment: Option<Ipv4Net>,
) -> (Vec<PeerRoute>, Vec<(String, String)>) {
    let mut routes = Vec::new();
    let mut refused = Vec::new();
    for peer in peers {
        if segments.iter().any(|s| s.contains(&peer.public_ip)) {
            routes.push(PeerRoute {
                dst: peer.subnet,
                via: peer.public_ip,
                node: peer.node.clone(),
            });
            continue;
        }
        let here = own_segment
            .map(|s| s.to_string())
            .unwrap_or_else(|| "segment (no interface holds the node IP)".to_string());
        refused.push((
            peer.node.clone(),
            format!(
                "host-gw needs every node on one L2 segment: Node {}'s {} is not on this node's {here}; use --backend vxlan",
                peer.node, peer.public_ip
            ),
        ));
    }
    routes.sort();
    (routes, refused)
}

/// Whether `route` is exactly the wanted plain route (gateway, no metric, not on-link).
fn is_wanted_form(route: &Route, wanted: &PeerRoute) -> bool {
    route.gateway == Some(wanted.via) && route.metric.unwrap_or(0) == 0 && !route.onlink
}

/// Makes the main table's podnet routes inside `cluster_cidr` be exactly `desired`: missing
/// or wrong ones are (re)installed, unwanted ones removed. Routes of other protocols are never
/// changed; one that holds a wanted subnet is reported in `failed` instead of being replaced.
/// A route that fails does not stop the others.
pub fn sync_routes(
    netlink: &mut Netlink,
    cluster_cidr: Ipv4Net,
    desired: &[PeerRoute],
) -> Result<PeerSync, KernelError> {
    let actual = netlink.routes(MAIN_TABLE)?;
    let wanted: BTreeMap<Ipv4Net, &PeerRoute> = desired.iter().map(|r| (r.dst, r)).collect();
    let mut sync = PeerSync::default();
    let mut correct: BTreeSet<Ipv4Net> = BTreeSet::new();
    let mut foreign: BTreeMap<Ipv4Net, &Route> = BTreeMap::new();

    for route in &actual {
        if route.protocol != PROTO_PODNET {
            if wanted.contains_key(&route.dst) {
                foreign.insert(route.dst, route);
            }
            continue;
        }
        if !cluster_cidr.contains(&route.dst) {
            continue;
        }
        let right = wanted
            .get(&route.dst)
            .is_some_and(|w| is_wanted_form(route, w));
        if right && !correct.contains(&route.dst) {
            correct.insert(route.dst);
            continue;
        }
        if wanted.contains_key(&route.dst) && route.metric.unwrap_or(0) == 0 {
            // Same key as the wanted route: the replace below corrects it in place.
            continue;
        }
        match netlink.delete_route(route) {
            Ok(()) => sync.removed.push(describe_actual(route)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }

    for route in desired {
        if correct.contains(&route.dst) {
            continue;
        }
        if let Some(other) = foreign.get(&route.dst) {
            sync.failed.push((
                route.node.clone(),
                format!(
                    "a route to {} of another owner (protocol {}{}) is in the way; remove it to let podnet route Node {}'s pods",
                    route.dst,
                    other.protocol,
                    other
                        .gateway
                        .map(|g| format!(", via {g}"))
                        .unwrap_or_default(),
                    route.node
                ),
            ));
            continue;
        }
        let kernel_route = Route::via(route.dst, route.via).with_protocol(PROTO_PODNET);
        match netlink.replace_route(&kernel_route) {
            Ok(()) => sync.installed.push(route.describe()),
            Err(e) => sync.failed.push((route.node.clone(), e.to_string())),
        }
    }
    Ok(sync)
}

fn describe_actual(route: &Route) -> String {
    let mut text = format!("route {}", route.dst);
    if let Some(gw) = route.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = route.oif {
        text.push_str(&format!(" dev #{oif}"));
    }
    text
}

impl Backend for HostGwBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::HostGw
    }

    /// Plain routing adds no header: pods get the underlay MTU (or the override).
    fn pod_mtu(&self) -> u32 {
        self.config.pod_mtu()
    }

    /// host-gw has no device and nothing to tell peers beyond the public IP.
    fn ensure_device(&mut self) -> Result<BackendData, OverlayError> {
        Ok(BackendData(None))
    }

    fn sync_peers(&mut self, peers: &[Peer]) -> Result<PeerSync, OverlayError> {
        let segments = connected_subnets(&mut self.netlink)?;
        let own = subnet_of_address(&mut self.netlink, self.config.local.public_ip)?;
        let (routes, refused) = plan_routes(peers, &segments, own);
        let mut sync = sync_routes(&mut self.netlink, self.config.local.cluster_cidr, &routes)?;
        sync.failed.extend(refused);
        Ok(sync)
    }

    /// Removes every podnet route inside the cluster CIDR.
    fn teardown(&mut self) -> Result<(), OverlayError> {
        sync_routes(&mut self.netlink, self.config.local.cluster_cidr, &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node: &str, subnet: &str, ip: &str) -> Peer {
        Peer {
            node: node.into(),
            subnet: subnet.parse().unwrap(),
            public_ip: ip.parse().unwrap(),
            backend_type: Some("host-gw".into()),
            backend_data: None,
        }
    }

    #[test]
    fn a_peer_off_the_segment_is_refused_with_what_to_do() {
        let segments: Vec<Ipv4Net> = vec!["172.30.0.0/24".parse().unwrap()];
        let peers = [
            peer("b", "10.244.2.0/24", "172.30.0.12"),
            peer("x", "10.244.9.0/24", "10.0.9.5"),
            peer("a", "10.244.1.0/24", "172.30.0.11"),
        ];
        let (routes, refused) = plan_routes(&peers, &segments, Some(segments[0]));
        let got: Vec<String> = routes
            .iter()
            .map(|r| format!("{} {}", r.dst, r.via))
            .collect();
        assert_eq!(
            got,
            vec!["10.244.1.0/24 172.30.0.11", "10.244.2.0/24 172.30.0.12"]
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "x");
        assert_eq!(
            refused[0].1,
            "host-gw needs every node on one L2 segment: Node x's 10.0.9.5 is not on this node's 172.30.0.0/24; use --backend vxlan"
        );
    }
}
