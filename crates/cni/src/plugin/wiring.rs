//! The kernel side of an attachment: the bridge on the node, the veth pair,
//! and the pod end's address and routes.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use podnet_api::cni::CniError;
use podnet_api::cni::result::{Interface, Route as ResultRoute};
use podnet_kernel::link::VethPair;
use podnet_kernel::netlink::Batch;
use podnet_kernel::preflight::{self, Feature};
use podnet_kernel::{Link, NetNs, Netlink, Route, sysctl};

use super::naming::tombstone_name;

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
    /// The pod interface's MAC (CNI_ARGS `MAC=`, the `mac` capability); `None`: random.
    pub mac: Option<[u8; 6]>,
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

/// A failure of an operation that needs `feature`: said as that feature missing (as
/// `podnet lab up` and `podnet agent` say it) when the kernel's answer means so.
pub fn kernel_using(action: &str, feature: Feature, e: podnet_kernel::KernelError) -> CniError {
    let io = e.errno().map(std::io::Error::from_raw_os_error);
    match io.and_then(|io| preflight::explain(feature, &io, "the CNI plugin")) {
        Some(missing) => CniError::kernel(format!("{action}: {missing}")),
        None => kernel(action, e),
    }
}

/// The node's bridge as it is now, made when missing. One look-up when it
/// exists (every ADD but the first).
///
/// A bridge is made with a MAC address of its own, as the reference bridge plugin fixes
/// its bridge's: without one the kernel lets the bridge take the lowest MAC of its ports
/// (`addr_assign_type` 1), so it changes when that pod leaves, and the other pods' ARP
/// entries for the gateway point nowhere until they expire (tens of seconds of lost
/// traffic). The address is random and locally administered, so it is no port's.
fn bridge(host: &mut Netlink, a: &Attachment) -> Result<Link, CniError> {
    let found = host
        .link_by_name(a.bridge)
        .map_err(|e| kernel(&format!("look up bridge {}", a.bridge), e))?;
    match found {
        Some(link) if link.kind.as_deref() == Some("bridge") => Ok(link),
        // Missing, or in the way: ensure_bridge makes it or says what is wrong.
        _ => host
            .ensure_bridge_with_mac(a.bridge, a.mtu, Some(random_mac()?))
            .map_err(|e| kernel_using(&format!("bridge {}", a.bridge), Feature::Bridge, e)),
    }
}

/// A bridge made before podnet-cni fixed its MAC (or by someone else) still takes its
/// lowest port's. When it has just taken the new port's, that shows (an extra round trip
/// only then): its address is set to the one it has, as the reference bridge plugin does,
/// which fixes it without changing it. Bridges of ours are never in this case.
fn fix_taken_mac(
    host: &mut Netlink,
    bridge: Option<Link>,
    port: &Link,
) -> Result<Option<Link>, CniError> {
    let Some(bridge) = bridge else {
        return Ok(None);
    };
    if let (Some(mac), Some(port_mac)) = (bridge.mac, port.mac)
        && mac == port_mac
    {
        host.set_mac(bridge.index, mac)
            .map_err(|e| kernel(&format!("fix the MAC address of bridge {}", bridge.name), e))?;
    }
    Ok(Some(bridge))
}

/// A random unicast, locally administered MAC address.
pub fn random_mac() -> Result<[u8; 6], CniError> {
    let mut mac = [0u8; 6];
    // SAFETY: the buffer is valid for writes of its length.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if usize::try_from(n).ok() != Some(mac.len()) {
        return Err(CniError::kernel(format!(
            "getrandom for the bridge's MAC address: {}",
            std::io::Error::last_os_error()
        )));
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

/// Wires the pod: the bridge (made on first use, holding the gateway
/// address when it is the gateway, up), the veth pair with its host end on
/// the bridge, and the pod end's address and routes. A leftover pair from an
/// interrupted earlier ADD of the same attachment is replaced.
///
/// Three round trips on the usual path: the bridge look-up, one batch that
/// creates the whole pair, one batch that configures the pod end.
pub fn attach(host: &mut Netlink, pod_ns: &NetNs, a: &Attachment) -> Result<Wired, CniError> {
    let bridge = bridge(host, a)?;
    let mut pod =
        Netlink::open_in(pod_ns).map_err(|e| kernel("open the pod's network namespace", e))?;
    let (host_end, bridge_now) = match create_pair(host, &bridge, pod_ns, a) {
        // Names taken: by what an interrupted ADD left, or by a stranger
        // (remove_leftovers refuses to touch that).
        Err(e) if e.is_exists() => {
            remove_leftovers(host, &mut pod, a)?;
            create_pair(host, &bridge, pod_ns, a)
        }
        other => other,
    }
    .map_err(|e| kernel_using("wire the pod to the bridge", Feature::Veth, e))?;
    // Pods on the bridge are routed through the node; without forwarding
    // nothing leaves the node.
    sysctl::write_here("net.ipv4.ip_forward", "1")
        .map_err(|e| kernel("enable IPv4 forwarding", e))?;
    let bridge_now = fix_taken_mac(host, bridge_now, &host_end)?;
    let pod_end = configure_pod(&mut pod, a, host_end.peer_index)?;
    Ok(Wired {
        bridge: bridge_now.unwrap_or(bridge),
        host: host_end,
        pod: pod_end,
    })
}

/// One batch: the gateway address and the bridge up (when needed), then the
/// pair created complete (names, MTU, host end on the bridge and up, pod end
/// in the pod, with its MAC when one is asked for), then hairpin, then a read
/// of the bridge. Returns the host end as the kernel echoed it, and the bridge
/// as it is with the new port (its MAC as the result reports it).
fn create_pair(
    host: &mut Netlink,
    bridge: &Link,
    pod_ns: &NetNs,
    a: &Attachment,
) -> podnet_kernel::Result<(Link, Option<Link>)> {
    let mut batch = Batch::new();
    // The prefix comes from a valid network, so the gateway's always builds.
    if a.is_gateway
        && let Ok(gw) = Ipv4Net::new(a.gateway, a.address.prefix_len())
    {
        batch.ensure_address(bridge.index, IpNet::V4(gw));
    }
    if !bridge.up {
        batch.set_up(bridge.index);
    }
    let veth = batch.create_veth(&VethPair {
        name: a.host_veth,
        peer_name: a.ifname,
        peer_ns: Some(pod_ns),
        mtu: a.mtu,
        master: Some(bridge.index),
        up: true,
        queues: Some(1),
        peer_mac: a.mac,
    });
    if a.hairpin {
        batch.set_hairpin_by_name(a.host_veth, true);
    }
    let read_bridge = batch.get_link_by_name(a.bridge);
    let replies = host.run_batch(batch)?;
    let bridge_now = replies.link(read_bridge);
    match replies.link(veth) {
        Some(link) => Ok((link, bridge_now)),
        // A kernel that does not echo creations (before 6.3): ask.
        None => host.require_link(a.host_veth).map(|l| (l, bridge_now)),
    }
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
        match pod.delete_link(link.index) {
            Err(e) if !e.is_not_found() => {
                return Err(kernel(
                    &format!("remove leftover {} in the pod", a.ifname),
                    e,
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One batch in the pod: `lo` up, the address, the interface up, the routes, and a read of the
/// interface for the result. `index` is the pod end's index when the host
/// end's echo gave it (it does, unless both ends have the same index).
fn configure_pod(pod: &mut Netlink, a: &Attachment, index: Option<u32>) -> Result<Link, CniError> {
    let index = match index {
        Some(index) => index,
        None => {
            pod.require_link(a.ifname)
                .map_err(|e| kernel(&format!("find {} in the pod", a.ifname), e))?
                .index
        }
    };
    let mut batch = Batch::new();
    batch.set_state_by_name("lo", true);
    batch.ensure_address(index, IpNet::V4(a.address));
    batch.set_up(index);
    for r in a.routes {
        let gw = r.gw.unwrap_or(a.gateway);
        batch.replace_route(&Route::via(r.dst, gw).with_oif(index));
    }
    let read = batch.get_link_by_name(a.ifname);
    let replies = pod
        .run_batch(batch)
        .map_err(|e| kernel(&format!("configure {} in the pod", a.ifname), e))?;
    let link = replies.link(read).ok_or_else(|| {
        CniError::kernel(format!(
            "{} vanished from the pod while it was configured",
            a.ifname
        ))
    })?;
    if link.index != index {
        return Err(CniError::kernel(format!(
            "the pod's {} is link #{}, but its veth peer is #{index}: another process is changing the pod's interfaces",
            a.ifname, link.index
        )));
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

/// The links a DEL took out of service, by their tombstone names, still to
/// be deleted ([`super::deferred`]).
#[derive(Debug, Default)]
pub struct Tombstones {
    /// In the node's namespace: the host end.
    pub host: Option<String>,
    /// In the pod's namespace: the pod end.
    pub pod: Option<String>,
}

impl Tombstones {
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.pod.is_none()
    }
}

/// Takes the attachment out of service without waiting for the kernel to
/// delete anything. When it returns:
/// - the pod end is down and renamed to a tombstone name (the pod has no
///   `ifname` any more, its routes through it are gone, it sends nothing);
/// - the host end is down, off the bridge, and renamed to a tombstone name
///   (nothing reaches the bridge from it or the bridge through it);
/// - both names are free, so an ADD of the same attachment can run at once.
///
/// A pod interface of another kind than veth (not ours) is deleted right
/// away, as DEL always did. Both ends missing is fine (DEL is idempotent).
pub fn detach(
    host: &mut Netlink,
    pod_ns: Option<&NetNs>,
    host_veth: &str,
    ifname: &str,
) -> Result<Tombstones, CniError> {
    let mut tombstones = Tombstones::default();
    if let Some(ns) = pod_ns {
        let mut pod =
            Netlink::open_in(ns).map_err(|e| kernel("open the pod's network namespace", e))?;
        tombstones.pod = retire_pod_end(&mut pod, ifname)?;
    }
    let found = host
        .link_by_name(host_veth)
        .map_err(|e| kernel(&format!("look up {host_veth}"), e))?;
    if let Some(link) = found {
        tombstones.host = retire(host, &link)?;
    }
    Ok(tombstones)
}

fn retire_pod_end(pod: &mut Netlink, ifname: &str) -> Result<Option<String>, CniError> {
    let found = pod
        .link_by_name(ifname)
        .map_err(|e| kernel(&format!("look up {ifname} in the pod"), e))?;
    let Some(link) = found else {
        return Ok(None);
    };
    if link.kind.as_deref() == Some("veth") {
        return retire(pod, &link);
    }
    match pod.delete_link(link.index) {
        Err(e) if !e.is_not_found() => Err(kernel(&format!("delete {ifname} in the pod"), e)),
        _ => Ok(None),
    }
}

/// Down and off its bridge, then renamed (the kernel renames only a link
/// that is down): one round trip. `None` when the link vanished meanwhile.
fn retire(nl: &mut Netlink, link: &Link) -> Result<Option<String>, CniError> {
    let tombstone = tombstone_name(link.index);
    let mut batch = Batch::new();
    batch.set_down_and_detach(link.index);
    batch.rename(link.index, &tombstone);
    match nl.run_batch(batch) {
        Ok(_) => Ok(Some(tombstone)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(kernel(&format!("take {} out of service", link.name), e)),
    }
}

/// Deletes tombstones now (idempotent: one already gone is fine). Deleting
/// the host end deletes its pod end with it.
pub fn delete_tombstones(
    host: &mut Netlink,
    pod_ns: Option<&NetNs>,
    tombstones: &Tombstones,
) -> Result<(), CniError> {
    if let Some(name) = &tombstones.host {
        host.delete_link_by_name(name)
            .map_err(|e| kernel(&format!("delete {name}"), e))?;
    }
    if let (Some(name), Some(ns)) = (&tombstones.pod, pod_ns) {
        let mut pod =
            Netlink::open_in(ns).map_err(|e| kernel("open the pod's network namespace", e))?;
        pod.delete_link_by_name(name)
            .map_err(|e| kernel(&format!("delete {name} in the pod"), e))?;
    }
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
