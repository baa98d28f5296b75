//! The vxlan backend, flannel's: one kernel VXLAN device `podnet.<VNI>` per node, and for
//! every peer a permanent neighbour (peer subnet's `.0` -> peer VTEP MAC), an FDB entry
//! (peer VTEP MAC -> peer public IP) and an on-link route (peer subnet via its `.0`). The
//! kernel does the encapsulation; nothing is learned from the wire (learning off), so the
//! three entries are the whole truth and a sync can compare them with what it wants.
//!
//! With `directRouting`, a peer on this node's L2 segment gets a plain route via its
//! public IP instead (no encapsulation, host-gw's path).
//!
//! Routes carry [`podnet_kernel::route::PROTO_PODNET`]; a sync owns podnet's routes inside
//! the cluster range (but not the node's own subnet) and the neighbours and FDB entries of
//! its own device, and touches nothing else.

mod data;
mod plan;

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::route::MAIN_TABLE;
use podnet_kernel::vxlan::{VxlanSettings, VxlanSpec};
use podnet_kernel::{KernelError, Link, Netlink};

pub use data::{PeerVtep, decode as decode_backend_data, encode as encode_backend_data, vtep_mac};
use plan::{Actual, Context, Fdb, Install, Neigh};

use crate::{Backend, BackendConfig, BackendData, BackendKind, OverlayError, Peer, PeerSync};

/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The device name for `vni`: `podnet.1` (at most 15 characters for any valid VNI).
pub fn device_name(vni: u32) -> String {
    format!("podnet.{vni}")
}

/// The vxlan backend of one node.
pub struct VxlanBackend {
    config: BackendConfig,
    netlink: Netlink,
    device: String,
    mac: [u8; 6],
}

/// The underlay link: the one holding the node's public IP, with its IPv4 subnets.
struct Underlay {
    index: u32,
    nets: Vec<Ipv4Net>,
}

impl VxlanBackend {
    /// Checks the configuration and opens netlink in the node's namespace; creates nothing
    /// (see [`Backend::ensure_device`]).
    pub fn new(config: BackendConfig) -> Result<VxlanBackend, OverlayError> {
        validate(&config)?;
        let netlink = match &config.netns {
            Some(ns) => Netlink::open_in(ns)?,
            None => Netlink::current()?,
        };
        let vni = config.vxlan.vni;
        Ok(VxlanBackend {
            device: device_name(vni),
            mac: vtep_mac(&config.local.name, vni),
            config,
            netlink,
        })
    }

    /// The device's name (`podnet.<VNI>`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The VTEP MAC this node publishes.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn underlay(&mut self) -> Result<Underlay, OverlayError> {
        let public_ip = self.config.local.public_ip;
        let addrs = self.netlink.addresses(None)?;
        let index = addrs
            .iter()
            .find(|(_, net)| net.addr() == public_ip)
            .map(|(index, _)| *index)
            .ok_or_else(|| {
                OverlayError::Config(format!(
                    "no interface in network namespace {} holds the node's public IP \
                     {public_ip}: set the public IP to one of the node's own addresses",
                    self.netlink.netns()
                ))
            })?;
        let nets = addrs
            .iter()
            .filter(|(i, _)| *i == index)
            .filter_map(|(_, net)| match net {
                IpNet::V4(v4) => Some(v4.trunc()),
                IpNet::V6(_) => None,
            })
            .collect();
        Ok(Underlay { index, nets })
    }

    fn spec(&self, underlay: u32) -> VxlanSpec {
        VxlanSpec {
            name: self.device.clone(),
            settings: VxlanSettings {
                vni: self.config.vxlan.vni,
                port: self.config.vxlan.port,
                local: Some(self.config.local.public_ip),
                underlay: Some(underlay),
                learning: false,
            },
            mac: Some(self.mac),
            mtu: Some(self.config.pod_mtu()),
        }
    }

    /// Creates the device, or recreates it when a setting the kernel cannot change live
    /// (VNI, port, local, underlay, learning) or its MAC is wrong.
    fn ensure_link(&mut self, spec: &VxlanSpec) -> Result<Link, OverlayError> {
        if let Some(found) = self.netlink.vxlan_by_name(&spec.name)? {
            let Some(settings) = &found.settings else {
                return Err(KernelError::Conflict {
                    what: format!("link {}", spec.name),
                    netns: self.netlink.netns().to_string(),
                    why: format!(
                        "it is a {} device, not vxlan; remove or rename it so podnet can \
                         create its vxlan device",
                        found.link.kind.as_deref().unwrap_or("physical")
                    ),
                }
                .into());
            };
            if *settings == spec.settings && found.link.mac == spec.mac {
                return Ok(found.link);
            }
            tracing::warn!(device = %spec.name, found = ?settings, wanted = ?spec.settings,
                "vxlan device has wrong settings; recreating it");
            self.netlink.delete_link(found.link.index)?;
        }
        match self.netlink.create_vxlan(spec) {
            Ok(()) => {}
            // Another pass created it between the look-up and the create.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.netlink.require_link(&spec.name)?)
    }

    /// MTU, the `/32` of the local subnet's network address (and no other IPv4 address),
    /// and up: what can be corrected on a live device.
    fn correct_in_place(&mut self, link: &Link) -> Result<(), OverlayError> {
        let mtu = self.config.pod_mtu();
        if link.mtu != mtu {
            self.netlink.set_mtu(link.index, mtu)?;
        }
        let wanted = IpNet::V4(Ipv4Net::from(self.config.local.subnet.network()));
        let addrs = self.netlink.addresses(Some(link.index))?;
        for (_, addr) in &addrs {
            if matches!(addr, IpNet::V4(_)) && *addr != wanted {
                self.netlink.delete_address(link.index, *addr)?;
            }
        }
        if !addrs.iter().any(|(_, addr)| *addr == wanted) {
            self.netlink.ensure_address(link.index, wanted)?;
        }
        if !link.up {
            self.netlink.set_up(link.index)?;
        }
        Ok(())
    }

    fn read_actual(&mut self, device: u32) -> Result<Actual, OverlayError> {
        let neighs = self
            .netlink
            .neighbours(device)?
            .into_iter()
            // Kernel-made (non-permanent) entries are not ours; a wanted IP that only has one
            // is treated as missing, and the permanent entry replaces it.
            .filter(|n| n.permanent)
            .filter_map(|n| n.ip.map(|ip| Neigh { ip, mac: n.mac }))
            .collect();
        let fdb = self
            .netlink
            .fdb_entries(device)?
            .into_iter()
            .filter_map(|f| f.ip.map(|dst| Fdb { mac: f.mac, dst }))
            .collect();
        let local = &self.config.local;
        let routes = self
            .netlink
            .routes(MAIN_TABLE)?
            .into_iter()
            .filter(|r| plan::is_ours(r, local))
            .collect();
        Ok(Actual {
            neighs,
            fdb,
            routes,
        })
    }

    fn remove_stale(
        &mut self,
        device: u32,
        diff: &plan::Diff,
        sync: &mut PeerSync,
    ) -> Result<(), OverlayError> {
        let dev = self.device.clone();
        // Routes first, so no route points at a neighbour that is already gone.
        for route in &diff.remove_routes {
            ignore_gone(self.netlink.delete_route(route))?;
            sync.removed.push(plan::describe_route(route, &dev));
        }
        for fdb in &diff.remove_fdb {
            ignore_gone(self.netlink.delete_fdb(device, fdb.mac, Some(fdb.dst)))?;
            sync.removed.push(plan::describe_fdb(fdb, &dev));
        }
        for neigh in &diff.remove_neighs {
            ignore_gone(self.netlink.delete_neighbour(device, neigh.ip))?;
            sync.removed.push(plan::describe_neigh(neigh, &dev));
        }
        Ok(())
    }

    /// Installs one peer's missing entries in order (neighbour, FDB, route). On failure the
    /// peer's entries are removed again, so it is never half set up, and the error returned.
    fn install_peer(&mut self, device: u32, install: &Install) -> Result<Vec<String>, String> {
        let dev = self.device.clone();
        let mut done = Vec::new();
        let result = (|| -> Result<(), KernelError> {
            if let Some(n) = &install.neigh {
                self.netlink.replace_neighbour(device, n.ip, n.mac)?;
                done.push(plan::describe_neigh(n, &dev));
            }
            if let Some(f) = &install.fdb {
                self.netlink.replace_fdb(device, f.mac, Some(f.dst))?;
                done.push(plan::describe_fdb(f, &dev));
            }
            if let Some(r) = &install.route {
                self.netlink.replace_route(r)?;
                done.push(plan::describe_route(r, &dev));
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(done),
            Err(e) => {
                self.roll_back(device, &install.entries);
                Err(format!(
                    "{e}; its entries were rolled back and are retried at the next sync"
                ))
            }
        }
    }

    /// Best effort: the failure being reported matters more than one of these.
    fn roll_back(&mut self, device: u32, entries: &plan::PeerEntries) {
        let _ = self.netlink.delete_route(&entries.route);
        if let Some(f) = &entries.fdb {
            let _ = self.netlink.delete_fdb(device, f.mac, Some(f.dst));
        }
        if let Some(n) = &entries.neigh {
            let _ = self.netlink.delete_neighbour(device, n.ip);
        }
    }
}

fn validate(config: &BackendConfig) -> Result<(), OverlayError> {
    let bad = |text: String| Err(OverlayError::Config(text));
    if config.kind != BackendKind::Vxlan {
        return bad(format!(
            "the vxlan backend was given a {} configuration",
            config.kind
        ));
    }
    let vni = config.vxlan.vni;
    if !(1..=MAX_VNI).contains(&vni) {
        return bad(format!(
            "vxlan VNI {vni} is out of range: choose one in 1..={MAX_VNI} (flannel's default is 1)"
        ));
    }
    if config.vxlan.port == 0 {
        return bad(
            "vxlan UDP port 0 is not a port: choose one (flannel's default is 8472)".into(),
        );
    }
    let local = &config.local;
    if !local.cluster_cidr.contains(&local.subnet) {
        return bad(format!(
            "the node's subnet {} is outside the cluster range {}: give the node a subnet of it",
            local.subnet, local.cluster_cidr
        ));
    }
    let mtu = config.pod_mtu();
    if mtu < 576 {
        return bad(format!(
            "pod MTU {mtu} is too small (IPv4 needs 576): the underlay MTU {} leaves too \
             little after vxlan's 50 bytes; raise it or set the MTU override",
            config.underlay_mtu
        ));
    }
    Ok(())
}

/// A delete that finds nothing to delete has done its job.
fn ignore_gone(result: Result<(), KernelError>) -> Result<(), KernelError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

impl Backend for VxlanBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vxlan
    }

    fn pod_mtu(&self) -> u32 {
        self.config.pod_mtu()
    }

    fn ensure_device(&mut self) -> Result<BackendData, OverlayError> {
        let underlay = self.underlay()?;
        let spec = self.spec(underlay.index);
        let link = self.ensure_link(&spec)?;
        self.correct_in_place(&link)?;
        Ok(BackendData(Some(data::encode(
            self.config.vxlan.vni,
            &self.mac,
        ))))
    }

    fn sync_peers(&mut self, peers: &[Peer]) -> Result<PeerSync, OverlayError> {
        let device = self.netlink.link_by_name(&self.device)?.ok_or_else(|| {
            OverlayError::Config(format!(
                "vxlan device {} is missing in network namespace {}: ensure_device must \
                 create it before peers are synced",
                self.device,
                self.netlink.netns()
            ))
        })?;
        let direct = if self.config.vxlan.direct_routing {
            let underlay = self.underlay()?;
            Some((underlay.index, underlay.nets))
        } else {
            None
        };
        let ctx = Context {
            local: &self.config.local,
            vni: self.config.vxlan.vni,
            device: device.index,
            direct,
        };
        let desired = plan::desired(&ctx, peers);
        let actual = self.read_actual(device.index)?;
        let diff = plan::diff(&desired, &actual);
        if !diff.is_empty() {
            tracing::debug!(device = %self.device, ?diff, "vxlan sync: kernel differs from peers");
        }
        let mut sync = PeerSync {
            failed: desired.failed,
            ..PeerSync::default()
        };
        self.remove_stale(device.index, &diff, &mut sync)?;
        for install in &diff.install {
            match self.install_peer(device.index, install) {
                Ok(lines) => sync.installed.extend(lines),
                Err(why) => sync.failed.push((install.node.clone(), why)),
            }
        }
        Ok(sync)
    }

    fn teardown(&mut self) -> Result<(), OverlayError> {
        let local = self.config.local.clone();
        // Direct routes are not on the device and would outlive it.
        for route in self.netlink.routes(MAIN_TABLE)? {
            if plan::is_ours(&route, &local) {
                ignore_gone(self.netlink.delete_route(&route))?;
            }
        }
        self.netlink.delete_link_by_name(&self.device)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{LocalNode, VxlanOptions};

    fn config(vni: u32, port: u16, underlay_mtu: u32) -> BackendConfig {
        BackendConfig {
            kind: BackendKind::Vxlan,
            local: LocalNode {
                name: "node-1".into(),
                public_ip: Ipv4Addr::new(172, 31, 1, 11),
                subnet: "10.244.1.0/24".parse().unwrap(),
                cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            },
            underlay_mtu,
            mtu_override: None,
            vxlan: VxlanOptions {
                vni,
                port,
                direct_routing: false,
            },
            udp_port: crate::DEFAULT_UDP_PORT,
            netns: None,
        }
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_change() {
        for (cfg, says) in [
            (config(0, 8472, 1500), "VNI 0 is out of range"),
            (config(MAX_VNI + 1, 8472, 1500), "1..=16777215"),
            (config(1, 0, 1500), "port 0"),
            (config(1, 8472, 600), "raise it or set the MTU override"),
        ] {
            let err = validate(&cfg).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        validate(&config(MAX_VNI, 4789, 1500)).unwrap();
        assert_eq!(device_name(MAX_VNI).len(), 15, "fits IFNAMSIZ");
    }
}
