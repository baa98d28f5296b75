//! ADD, DEL, CHECK, GC and STATUS.

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use podnet_api::cni::{CniEnv, CniError, CniResult, IpConfig, NetConf, Resolved};
use podnet_api::subnet_env::SubnetEnv;
use podnet_kernel::{NetNs, Netlink};

use super::naming::{host_veth_name, is_host_veth_name, is_tombstone_name};
use super::wiring::{self, Attachment, kernel};
use super::{deferred, masq, request};
use crate::ipam::Ipam;

/// Crash testing: with `PODNET_CNI_FAULT=<point>` the plugin stops dead at
/// that point (as if killed there) so tests can check that a re-ADD or GC
/// leaves nothing behind. Unset in normal operation.
fn fault_point(point: &str) {
    if std::env::var("PODNET_CNI_FAULT").is_ok_and(|p| p == point) {
        println!("fault point {point} reached");
        loop {
            std::thread::park();
        }
    }
}

/// Reads the node's `subnet.env` when the config gives no subnet.
fn subnet_env(conf: &NetConf) -> Result<Option<SubnetEnv>, CniError> {
    if !conf.ipam.needs_subnet_env() {
        return Ok(None);
    }
    let path = conf.ipam.subnet_file();
    let text = fs::read_to_string(&path).map_err(|e| {
        CniError::try_again_later(format!(
            "the config gives no subnet and {} cannot be read ({e}): start the node agent, which writes it, \
             or give ipam.subnet",
            path.display()
        ))
    })?;
    SubnetEnv::parse(&text)
        .map(Some)
        .map_err(|e| CniError::invalid_config(format!("{}: {e}", path.display())))
}

fn resolve(conf: &NetConf) -> Result<Resolved, CniError> {
    let env = subnet_env(conf)?;
    conf.resolve(env.as_ref())
}

/// Whether ADD installs masquerading for this network, so DEL and GC know
/// whether there is anything to remove without running nft.
fn masq_enabled(conf: &NetConf) -> bool {
    match conf.ip_masq {
        Some(on) => on,
        None => resolve(conf).map(|r| r.ip_masq).unwrap_or(false),
    }
}

fn open_netns(env: &CniEnv) -> Result<NetNs, CniError> {
    let path = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for this command"))?;
    NetNs::open_path(path).map_err(|e| {
        CniError::unknown_container(format!(
            "{e}: CNI_NETNS must name the container's network namespace"
        ))
    })
}

fn host_netlink() -> Result<Netlink, CniError> {
    Netlink::current().map_err(|e| kernel("open netlink on the node", e))
}

pub fn add(env: &CniEnv, conf: &NetConf) -> Result<String, CniError> {
    let pod_ns = open_netns(env)?;
    let resolved = resolve(conf)?;
    let requested = request::requested(env, conf)?;
    let ipam = Ipam::open(&conf.ipam.data_dir(), &conf.name)?;
    // Durable when it returns, so a reported address always is.
    let allocation =
        ipam.allocate_ip(&resolved.pool, &env.container_id, &env.ifname, requested.ip)?;
    fault_point("after-alloc");
    let host_veth = host_veth_name(&env.container_id, &env.ifname);
    let address = resolved.pool.address(allocation.ip);
    let attachment = Attachment {
        bridge: &conf.bridge,
        host_veth: &host_veth,
        ifname: &env.ifname,
        mtu: resolved.mtu,
        address,
        gateway: resolved.pool.gateway,
        is_gateway: conf.is_gateway,
        hairpin: conf.hairpin_mode,
        routes: &resolved.routes,
        mac: requested.mac,
    };
    let mut host = host_netlink()?;
    let built = build(
        &mut host,
        &pod_ns,
        &attachment,
        conf,
        &resolved,
        allocation.ip,
    );
    let wired = match built {
        Ok(wired) => wired,
        Err(e) => {
            // Roll back so a failed ADD leaves neither an address nor links.
            let _ = wiring::unwire(&mut host, Some(&pod_ns), &host_veth, &env.ifname);
            let _ = ipam.release(&env.container_id, &env.ifname);
            if resolved.ip_masq {
                let _ = masq::remove(&conf.name, allocation.ip);
            }
            return Err(e);
        }
    };
    let sandbox = env.netns.as_ref().map(|p| p.display().to_string());
    let mut result = CniResult::new(conf.cni_version.clone());
    result.interfaces = vec![
        wiring::interface(&wired.bridge, None),
        wiring::interface(&wired.host, None),
        wiring::interface(&wired.pod, sandbox),
    ];
    result.ips = vec![IpConfig {
        address,
        gateway: Some(resolved.pool.gateway),
        interface: Some(2),
    }];
    result.routes = resolved.routes.clone();
    result.dns = conf.dns.clone();
    Ok(result.to_json())
}

fn build(
    host: &mut Netlink,
    pod_ns: &NetNs,
    a: &Attachment,
    conf: &NetConf,
    resolved: &Resolved,
    ip: Ipv4Addr,
) -> Result<wiring::Wired, CniError> {
    let wired = wiring::attach(host, pod_ns, a)?;
    fault_point("after-wire");
    if resolved.ip_masq {
        masq::add(&conf.name, resolved.pool.subnet, ip)?;
    }
    Ok(wired)
}

/// DEL. When it returns, the attachment is gone as far as the runtime and
/// the network can tell: the pod's interface is down and no longer called
/// `CNI_IFNAME`, the host end is down and off the bridge (no traffic either
/// way), the address is released, masquerading for it removed. The two link
/// objects, renamed to tombstones, are deleted by a detached process a few
/// milliseconds later ([`deferred`]); GC deletes any it left.
pub fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let ipam = Ipam::open(&conf.ipam.data_dir(), &conf.name)?;
    // The namespace may already be gone: then so is the pod's interface.
    let pod_ns = env.netns.as_ref().and_then(|p| NetNs::open_path(p).ok());
    let mut host = host_netlink()?;
    let host_veth = host_veth_name(&env.container_id, &env.ifname);
    // Out of service before the address is released, so the address is never
    // live on two attachments at once.
    let tombstones = wiring::detach(&mut host, pod_ns.as_ref(), &host_veth, &env.ifname)?;
    // Started now, so the kernel's deletion overlaps the rest of DEL.
    deferred::delete_detached(&tombstones, pod_ns.as_ref());
    let released = ipam.release(&env.container_id, &env.ifname)?;
    if masq_enabled(conf) {
        for ip in released {
            masq::remove(&conf.name, ip)?;
        }
    }
    Ok(())
}

pub fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf.prev_result()?.ok_or_else(|| {
        CniError::invalid_config(
            "CHECK needs prevResult: pass the result of the ADD for this attachment",
        )
    })?;
    let pod_ns = open_netns(env)?;
    let ipam = Ipam::open(&conf.ipam.data_dir(), &conf.name)?;
    let recorded = ipam.find(&env.container_id, &env.ifname)?.ok_or_else(|| {
        CniError::unknown_container(format!(
            "no address is allocated to container {} interface {} in network {}",
            env.container_id, env.ifname, conf.name
        ))
    })?;
    let expected: Vec<Ipv4Net> = prev.ips.iter().map(|ip| ip.address).collect();
    if !expected.iter().any(|net| net.addr() == recorded) {
        return Err(CniError::kernel(format!(
            "prevResult lists {expected:?} but the allocation for this attachment is {recorded}"
        )));
    }
    let mut pod =
        Netlink::open_in(&pod_ns).map_err(|e| kernel("open the pod's network namespace", e))?;
    let link = pod
        .link_by_name(&env.ifname)
        .map_err(|e| kernel("look up the pod interface", e))?
        .ok_or_else(|| {
            CniError::kernel(format!(
                "interface {} is missing from the pod's network namespace {}: delete and re-add the attachment",
                env.ifname,
                pod_ns.label()
            ))
        })?;
    if !link.up {
        return Err(CniError::kernel(format!(
            "interface {} in the pod is down",
            env.ifname
        )));
    }
    let present: HashSet<IpNet> = pod
        .addresses(Some(link.index))
        .map_err(|e| kernel("list the pod's addresses", e))?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    for net in &expected {
        if !present.contains(&IpNet::V4(*net)) {
            return Err(CniError::kernel(format!(
                "address {net} is missing from {} in the pod",
                env.ifname
            )));
        }
    }
    check_routes(&mut pod, &prev, &env.ifname)?;
    check_host_end(env, conf)
}

fn check_routes(pod: &mut Netlink, prev: &CniResult, ifname: &str) -> Result<(), CniError> {
    let routes = pod
        .routes(podnet_kernel::route::MAIN_TABLE)
        .map_err(|e| kernel("list the pod's routes", e))?;
    for want in &prev.routes {
        if !routes
            .iter()
            .any(|r| r.dst == want.dst && (want.gw.is_none() || r.gateway == want.gw))
        {
            return Err(CniError::kernel(format!(
                "route to {} is missing in the pod (interface {ifname})",
                want.dst
            )));
        }
    }
    Ok(())
}

fn check_host_end(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let mut host = host_netlink()?;
    let name = host_veth_name(&env.container_id, &env.ifname);
    let veth = host
        .link_by_name(&name)
        .map_err(|e| kernel("look up the host end of the veth", e))?
        .ok_or_else(|| {
            CniError::kernel(format!(
                "host veth {name} is missing: delete and re-add the attachment"
            ))
        })?;
    let bridge = host
        .link_by_name(&conf.bridge)
        .map_err(|e| kernel("look up the bridge", e))?
        .ok_or_else(|| {
            CniError::kernel(format!("bridge {} is missing on the node", conf.bridge))
        })?;
    if veth.master != Some(bridge.index) {
        return Err(CniError::kernel(format!(
            "host veth {name} is not attached to bridge {}",
            conf.bridge
        )));
    }
    Ok(())
}

pub fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachment_pairs().ok_or_else(|| {
        CniError::invalid_config(
            "GC needs cni.dev/valid-attachments (an empty list releases everything)",
        )
    })?;
    let ipam = Ipam::open(&conf.ipam.data_dir(), &conf.name)?;
    let released = ipam.gc(&valid)?;
    if masq_enabled(conf) {
        for record in &released {
            masq::remove(&conf.name, record.ip)?;
        }
    }
    let keep: HashSet<String> = valid.iter().map(|(c, i)| host_veth_name(c, i)).collect();
    remove_stale_veths(conf, &keep)
}

/// Deletes host veths of ours on this network's bridge that belong to no
/// valid attachment (an ADD interrupted after creating the pair), and every
/// tombstone in the node's namespace (a DEL whose deleting process died).
fn remove_stale_veths(conf: &NetConf, keep: &HashSet<String>) -> Result<(), CniError> {
    let mut host = host_netlink()?;
    let bridge = host
        .link_by_name(&conf.bridge)
        .map_err(|e| kernel("look up the bridge", e))?
        .map(|b| b.index);
    let links = host.links().map_err(|e| kernel("list links", e))?;
    for link in links {
        let stale_veth = bridge.is_some()
            && link.master == bridge
            && is_host_veth_name(&link.name)
            && !keep.contains(&link.name);
        if !stale_veth && !is_tombstone_name(&link.name) {
            continue;
        }
        match host.delete_link(link.index) {
            Ok(()) => {}
            // A DEL's own deleting process got there first.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(kernel(&format!("delete stale veth {}", link.name), e)),
        }
    }
    Ok(())
}

pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let resolved = resolve(conf).map_err(|e| CniError::plugin_not_available(e.msg))?;
    let ipam = Ipam::open(&conf.ipam.data_dir(), &conf.name)
        .map_err(|e| CniError::plugin_not_available(format!("IPAM store: {}", e.msg)))?;
    let used = ipam
        .list()
        .map_err(|e| CniError::plugin_not_available(e.msg))?
        .len() as u64;
    let capacity = u64::from(resolved.pool.capacity());
    if used >= capacity {
        return Err(CniError::plugin_not_available(format!(
            "all {capacity} addresses of {} are in use: delete pods or give the network a larger subnet",
            resolved.pool.subnet
        )));
    }
    Ok(())
}
