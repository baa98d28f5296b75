//! Routes to the other nodes' pod subnets over the shared underlay (`podCIDR via InternalIP`,
//! like flannel's host-gw backend), until the overlay backends replace it.
//!
//! The seam is [`sync_peer_routes`]: given the Nodes, make the kernel's routes match. Routes
//! podnet installs carry the route protocol [`PROTO_PODNET`], so a resync can find them
//! (after a restart too) and never touches anyone else's routes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use podnet_kernel::route::{MAIN_TABLE, PROTO_PODNET};
use podnet_kernel::{KernelError, Netlink, Route};

/// One peer node's pod subnet and where to send it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    /// The Node it is for (for logs).
    pub node: String,
}

/// A Node's `spec.podCIDR` as an IPv4 network, host bits cleared.
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let text = node.spec.as_ref()?.pod_cidr.as_deref()?;
    text.parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

/// A Node's first IPv4 `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The routes this node should have: one per other Node with an IPv4 podCIDR inside the
/// cluster CIDR and an IPv4 InternalIP. Skipped (and said why, in the second list): the node
/// itself, subnets outside the cluster CIDR or overlapping this node's own, and a second
/// Node claiming a subnet already routed (the first by name wins).
pub fn desired_peer_routes<'a>(
    own_name: &str,
    cluster_cidr: Ipv4Net,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> (Vec<PeerRoute>, Vec<String>) {
    let mut nodes: Vec<&Node> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let own_cidr = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(own_name))
        .and_then(|n| pod_cidr(n));
    let mut routes: Vec<PeerRoute> = Vec::new();
    let mut skipped = Vec::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if name == own_name || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(dst), Some(via)) = (pod_cidr(node), internal_ip(node)) else {
            continue;
        };
        if !cluster_cidr.contains(&dst) {
            skipped.push(format!(
                "Node {name}: podCIDR {dst} is outside the cluster CIDR {cluster_cidr}"
            ));
        } else if own_cidr.is_some_and(|own| podnet_api::net::overlaps(&own, &dst)) {
            skipped.push(format!(
                "Node {name}: podCIDR {dst} overlaps this node's own pod subnet"
            ));
        } else if let Some(other) = routes
            .iter()
            .find(|r| podnet_api::net::overlaps(&r.dst, &dst))
        {
            skipped.push(format!(
                "Node {name}: podCIDR {dst} overlaps {} of Node {}",
                other.dst, other.node
            ));
        } else {
            routes.push(PeerRoute {
                dst,
                via,
                node: name.to_string(),
            });
        }
    }
    routes.sort();
    (routes, skipped)
}

/// What a [`sync_peer_routes`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteSync {
    /// Routes added or corrected.
    pub installed: Vec<PeerRoute>,
    /// podnet routes removed (departed nodes, stale gateways).
    pub removed: Vec<Route>,
    /// Routes that could not be installed, with the reason; retried at the next sync.
    pub failed: Vec<(PeerRoute, String)>,
}

impl RouteSync {
    pub fn changed(&self) -> bool {
        !self.installed.is_empty() || !self.removed.is_empty()
    }
}

fn podnet_route(route: &PeerRoute) -> Route {
    Route::via(route.dst, route.via).with_protocol(PROTO_PODNET)
}

/// Makes the main table's routes to peer pod subnets be exactly `desired`: missing or wrong
/// ones are (re)installed, podnet's routes inside the cluster CIDR that are not wanted are
/// removed. Routes of other protocols are never changed; one that holds a wanted subnet is
/// reported as a failure instead of being replaced. A route that fails does not stop the
/// others.
///
/// This is the function the overlay backends replace.
pub fn sync_peer_routes(
    netlink: &mut Netlink,
    cluster_cidr: Ipv4Net,
    desired: &[PeerRoute],
) -> Result<RouteSync, KernelError> {
    let actual = netlink.routes(MAIN_TABLE)?;
    let wanted: BTreeMap<Ipv4Net, &PeerRoute> = desired.iter().map(|r| (r.dst, r)).collect();
    let mut sync = RouteSync::default();
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
        let right = wanted.get(&route.dst).is_some_and(|w| {
            route.gateway == Some(w.via) && route.metric.unwrap_or(0) == 0 && !route.onlink
        });
        if right && !correct.contains(&route.dst) {
            correct.insert(route.dst);
            continue;
        }
        if wanted.contains_key(&route.dst) && route.metric.unwrap_or(0) == 0 {
            // Same key as the wanted route: the replace below corrects it in place.
            continue;
        }
        match netlink.delete_route(route) {
            Ok(()) => sync.removed.push(route.clone()),
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
                route.clone(),
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
        match netlink.replace_route(&podnet_route(route)) {
            Ok(()) => sync.installed.push(route.clone()),
            Err(e) => sync.failed.push((route.clone(), e.to_string())),
        }
    }
    Ok(sync)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn desired_skips_self_incomplete_and_conflicting_nodes() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), Some("172.30.0.1")),
            node("b", Some("10.244.1.0/24"), Some("172.30.0.2")),
            node("c", Some("10.244.2.0/24"), None),
            node("d", None, Some("172.30.0.4")),
            node("e", Some("10.99.0.0/24"), Some("172.30.0.5")),
            node("f", Some("10.244.0.0/25"), Some("172.30.0.6")),
            node("g", Some("10.244.1.0/24"), Some("172.30.0.7")),
            node("h", Some("10.244.3.7/24"), Some("fd00::1")),
            node("i", Some("10.244.4.0/24"), Some("172.30.0.9")),
        ];
        let (routes, skipped) = desired_peer_routes("a", "10.244.0.0/16".parse().unwrap(), &nodes);
        let got: Vec<(String, String)> = routes
            .iter()
            .map(|r| (r.dst.to_string(), r.via.to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.1.0/24".to_string(), "172.30.0.2".to_string()),
                ("10.244.4.0/24".to_string(), "172.30.0.9".to_string()),
            ]
        );
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("Node e"));
        assert!(skipped[1].contains("Node f"));
        assert!(skipped[2].contains("Node g") && skipped[2].contains("Node b"));
    }
}
