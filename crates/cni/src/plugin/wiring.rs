//! The kernel side of an attachment: the bridge on the node, the veth pair,
//! and the pod end's address and routes.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use podnet_api::cni::CniError;
use podnet_api::cni::result::{Interface, Route as ResultRoute};
use podnet_kernel::{Link, NetNs, Netlink, Route, sysctl};

/// What to build for one attachment.
pub struct Attachment<'a> {
    pub bridge: &'a str,
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub mtu: Option<u32>,
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub is_gateway: bool,
    pub hairpin: bool,
    pub routes: &'a [ResultRoute],
}

/// The interfaces as the result reports them.
pub struct Wired {
    pub bridge: Link,
    pub host: Link,
    pub pod: Link,
}

pub fn kernel(action: &str, e: podnet_kernel::KernelError) -> CniError {
    CniError::kernel(format!("{action}: {e}"))
}

/// Makes sure the node's bridge exists, is up and, when it is the gateway,
/// holds the gateway address.
pub fn ensure_bridge(host: &mut Netlink, a: &Attachment) -> Result<Link, CniError> {
    let bridge = host
        .ensure_bridge(a.bridge, a.mtu)
        .map_err(|e| kernel(&format!("bridge {}", a.bridge), e))?;
    if a.is_gateway {
        let gw = Ipv4Net::new(a.gateway, a.address.prefix_len())
            .map_err(|e| CniError::invalid_config(format!("gateway {}: {e}", a.gateway)))?;
        host.ensure_address(bridge.index, IpNet::V4(gw))
            .map_err(|e| kernel(&format!("gateway address on bridge {}", a.bridge), e))?;
    }
    host.set_up(bridge.index)
        .map_err(|e| kernel(&format!("bridge {} up", a.bridge), e))?;
    // Pods on the bridge are routed through the node; without forwarding
    // nothing leaves the node.
    sysctl::write_here("net.ipv4.ip_forward", "1")
        .map_err(|e| kernel("enable IPv4 forwarding", e))?;
    Ok(bridge)
}

/// Creates the veth pair and configures both ends. A leftover pair from an
/// interrupted earlier ADD of the same attachment is replaced.
pub fn wire(
    host: &mut Netlink,
    pod_ns: &NetNs,
    bridge: &Link,
    a: &Attachment,
) -> Result<Wired, CniError> {
    let mut pod =
        Netlink::open_in(pod_ns).map_err(|e| kernel("open the pod's network namespace", e))?;
    remove_leftovers(host, &mut pod, a)?;
    host.create_veth(a.host_veth, a.ifname, Some(pod_ns), a.mtu)
        .map_err(|e| kernel(&format!("veth {} <-> {}", a.host_veth, a.ifname), e))?;
    let host_end = host
        .require_link(a.host_veth)
        .map_err(|e| kernel("find the host end of the veth", e))?;
    host.set_master(host_end.index, bridge.index)
        .map_err(|e| kernel(&format!("attach {} to {}", a.host_veth, a.bridge), e))?;
    if a.hairpin {
        host.set_hairpin(host_end.index, true)
            .map_err(|e| kernel(&format!("hairpin on {}", a.host_veth), e))?;
    }
    host.set_up(host_end.index)
        .map_err(|e| kernel(&format!("{} up", a.host_veth), e))?;
    let pod_end = configure_pod(&mut pod, a)?;
    Ok(Wired {
        bridge: bridge.clone(),
        host: host_end,
        pod: pod_end,
    })
}

fn remove_leftovers(host: &mut Netlink, pod: &mut Netlink, a: &Attachment) -> Result<(), CniError> {
    host.delete_link_by_name(a.host_veth)
        .map_err(|e| kernel(&format!("remove leftover {}", a.host_veth), e))?;
    if let Some(link) = pod
        .link_by_name(a.ifname)
        .map_err(|e| kernel("look up the pod interface", e))?
    {
        if link.kind.as_deref() != Some("veth") {
            return Err(CniError::kernel(format!(
                "the pod already has an interface {} of kind {}; choose another CNI_IFNAME",
                a.ifname,
                link.kind.as_deref().unwrap_or("physical")
            )));
        }
        pod.delete_link(link.index)
            .map_err(|e| kernel(&format!("remove leftover {} in the pod", a.ifname), e))?;
    }
    Ok(())
}

fn configure_pod(pod: &mut Netlink, a: &Attachment) -> Result<Link, CniError> {
    let lo = pod
        .require_link("lo")
        .map_err(|e| kernel("find lo in the pod", e))?;
    pod.set_up(lo.index)
        .map_err(|e| kernel("bring lo up in the pod", e))?;
    let link = pod
        .require_link(a.ifname)
        .map_err(|e| kernel(&format!("find {} in the pod", a.ifname), e))?;
    pod.ensure_address(link.index, IpNet::V4(a.address))
        .map_err(|e| kernel(&format!("address {} on {}", a.address, a.ifname), e))?;
    pod.set_up(link.index)
        .map_err(|e| kernel(&format!("bring {} up", a.ifname), e))?;
    for r in a.routes {
        let gw = r.gw.unwrap_or(a.gateway);
        let route = Route::via(r.dst, gw).with_oif(link.index);
        pod.replace_route(&route)
            .map_err(|e| kernel(&format!("route {} via {gw} in the pod", r.dst), e))?;
    }
    Ok(link)
}

/// Removes the pod's interface (if the namespace is still there) and the host
/// end (if it is still there). Both are idempotent.
pub fn unwire(
    host: &mut Netlink,
    pod_ns: Option<&NetNs>,
    host_veth: &str,
    ifname: &str,
) -> Result<(), CniError> {
    if let Some(ns) = pod_ns {
        let mut pod =
            Netlink::open_in(ns).map_err(|e| kernel("open the pod's network namespace", e))?;
        pod.delete_link_by_name(ifname)
            .map_err(|e| kernel(&format!("delete {ifname} in the pod"), e))?;
    }
    host.delete_link_by_name(host_veth)
        .map_err(|e| kernel(&format!("delete {host_veth}"), e))?;
    Ok(())
}

pub fn interface(link: &Link, sandbox: Option<String>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac_string(),
        mtu: Some(link.mtu),
        sandbox,
    }
}
