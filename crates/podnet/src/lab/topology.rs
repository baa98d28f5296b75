//! The lab's network: the underlay switch namespace with its bridge, and the
//! node namespaces, each linked to the switch by a veth pair. Everything is
//! made inside namespaces the lab creates; the root namespace is untouched.

use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result, bail};
use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::route::Route;
use podnet_kernel::{NetNs, Netlink, sysctl};

use super::{AGENT_API_PORT, LabPaths, MAX_NODES, NODE_IFACE, UNDERLAY_BRIDGE};

/// Addresses on the underlay.
#[derive(Debug, Clone, Copy)]
pub struct Underlay {
    pub cidr: Ipv4Net,
}

/// Node i sits at the network address + NODE_OFFSET + i.
const NODE_OFFSET: u32 = 10;

impl Underlay {
    /// Checks that `cidr` has room for the bridge and `nodes` nodes.
    pub fn new(cidr: Ipv4Net, nodes: u32) -> Result<Underlay> {
        let cidr = cidr.trunc();
        let hosts = cidr.hosts().count() as u64;
        let needed = u64::from(NODE_OFFSET + nodes);
        if hosts < needed {
            bail!(
                "--underlay-cidr {cidr} has {hosts} addresses for hosts; {nodes} nodes need {needed} (the bridge, 9 spare, then one per node): use a larger subnet such as 172.30.0.0/24"
            );
        }
        Ok(Underlay { cidr })
    }

    /// The bridge's address (the first host address).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }

    pub fn node_ip(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + NODE_OFFSET + i)
    }

    fn with_prefix(&self, ip: Ipv4Addr) -> Result<IpNet> {
        Ok(IpNet::V4(
            Ipv4Net::new(ip, self.cidr.prefix_len()).context("underlay prefix")?,
        ))
    }
}

/// Creates `<lab>-underlay` with bridge `underlay0` (up, with the bridge
/// address) and returns a handle on it. Fails if the namespace exists.
pub fn create_underlay(paths: &LabPaths, underlay: &Underlay) -> Result<NetNs> {
    let name = paths.underlay_ns();
    let ns = NetNs::create(&name)?;
    let mut nl = Netlink::open_in(&ns)?;
    let lo = nl.require_link("lo")?;
    nl.set_up(lo.index)?;
    let bridge = nl.ensure_bridge(UNDERLAY_BRIDGE, None)?;
    nl.ensure_address(bridge.index, underlay.with_prefix(underlay.bridge_ip())?)?;
    nl.set_up(bridge.index)?;
    Ok(ns)
}

/// Creates node `i`'s namespace `<lab>-node<i>`: a veth pair (`<lab>n<i>` on
/// the underlay bridge, `eth0` in the node) with the node's address, lo up,
/// IPv4 forwarding on, and a default route via the bridge address as a real
/// node has: a node's own connection to a ClusterIP (or any address off the
/// underlay) needs a route before the nat output hook rewrites it, or the
/// kernel fails it with "network unreachable".
pub fn create_node(
    paths: &LabPaths,
    underlay_ns: &NetNs,
    underlay: &Underlay,
    i: u32,
) -> Result<NetNs> {
    if i == 0 || i > MAX_NODES {
        bail!("node index {i} is outside 1..={MAX_NODES}");
    }
    let name = paths.node_name(i);
    let node = NetNs::create(&name)?;
    let port = paths.switch_port(i);
    let mut switch = Netlink::open_in(underlay_ns)?;
    let bridge = switch.require_link(UNDERLAY_BRIDGE)?;
    switch.create_veth(&port, NODE_IFACE, Some(&node), None)?;
    let port_link = switch.require_link(&port)?;
    switch.set_master(port_link.index, bridge.index)?;
    switch.set_up(port_link.index)?;

    let mut nl = Netlink::open_in(&node)?;
    let lo = nl.require_link("lo")?;
    nl.set_up(lo.index)?;
    let eth = nl.require_link(NODE_IFACE)?;
    nl.ensure_address(eth.index, underlay.with_prefix(underlay.node_ip(i))?)?;
    nl.set_up(eth.index)?;
    let default = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).context("default route")?;
    nl.ensure_route(&Route::via(default, underlay.bridge_ip()))?;
    sysctl::write(&node, "net.ipv4.ip_forward", "1")?;
    Ok(node)
}

/// A listening TCP socket on the bridge address, port 6443, made by a thread
/// inside the underlay namespace: it stays in that namespace, so the
/// apiserver (in the root namespace) that inherits it serves the underlay
/// without the root namespace getting any address or route.
pub fn agent_listener(underlay_ns: &NetNs, underlay: &Underlay) -> Result<OwnedFd> {
    let addr = (underlay.bridge_ip(), AGENT_API_PORT);
    let listener = underlay_ns
        .run(|| TcpListener::bind(addr))?
        .with_context(|| {
            format!(
                "listen on {}:{} in namespace {}",
                addr.0,
                addr.1,
                underlay_ns.label()
            )
        })?;
    Ok(OwnedFd::from(listener))
}

/// The named namespaces that belong to the lab: its underlay, its nodes and
/// its pods (`<lab>-node<i>-…`), sorted.
pub fn lab_namespaces(paths: &LabPaths) -> Result<Vec<String>> {
    let underlay = paths.underlay_ns();
    Ok(NetNs::list_named()?
        .into_iter()
        .filter(|n| *n == underlay || paths.node_index(n).is_some() || paths.is_pod_ns(n))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let u = Underlay::new("172.30.0.0/24".parse().unwrap(), 64).unwrap();
        assert_eq!(u.bridge_ip(), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(u.node_ip(1), Ipv4Addr::new(172, 30, 0, 11));
        assert_eq!(u.node_ip(64), Ipv4Addr::new(172, 30, 0, 74));
        assert!(Underlay::new("172.30.0.0/28".parse().unwrap(), 5).is_err());
        assert!(Underlay::new("172.30.0.0/28".parse().unwrap(), 4).is_ok());
    }
}
