//! The kernel state a trace reads, taken once per namespace over netlink: links, addresses,
//! the main route table, the overlay device's neighbours and FDB, and the nftables tables
//! podnet owns (as [`podnet_kernel::ruleset`] data, which the tracer walks). The tables are
//! read when first asked for: a ruleset costs one dump per set (two per Service), and a trace
//! walks the rules of the nodes it crosses only, not of every node of the cluster.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use ipnet::{IpNet, Ipv4Net};
use podnet_kernel::neigh::Neighbour;
use podnet_kernel::ruleset::{self, Table};
use podnet_kernel::vxlan::VxlanSettings;
use podnet_kernel::{Link, NetNs, Netlink, Route, route};

/// One network namespace's state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    /// (link index, address/prefix).
    pub addresses: Vec<(u32, Ipv4Net)>,
    pub routes: Vec<Route>,
    /// Per VXLAN device: its settings, neighbours and FDB entries.
    pub vxlan: Vec<VxlanState>,
    tables: Tables,
}

/// The nftables tables whose names start with `podnet`, read once, on first use.
#[derive(Debug, Clone, Default)]
struct Tables {
    ns: Option<Arc<NetNs>>,
    what: String,
    read: Arc<OnceLock<Result<Vec<Table>, String>>>,
}

#[derive(Debug, Clone)]
pub struct VxlanState {
    pub link: Link,
    pub settings: VxlanSettings,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<Neighbour>,
}

/// Errors reading a namespace, with which one.
#[derive(Debug, thiserror::Error)]
#[error("reading the network state of {what}: {source}")]
pub struct SnapshotError {
    pub what: String,
    #[source]
    pub source: podnet_kernel::KernelError,
}

impl Snapshot {
    /// Reads `ns` (named `what` in errors).
    pub fn read(ns: &NetNs, what: &str) -> Result<Snapshot, SnapshotError> {
        let err = |source| SnapshotError {
            what: what.to_string(),
            source,
        };
        let mut nl = Netlink::open_in(ns).map_err(err)?;
        let links = nl.links().map_err(err)?;
        let addresses = nl
            .addresses(None)
            .map_err(err)?
            .into_iter()
            .filter_map(|(i, a)| match a {
                IpNet::V4(v4) => Some((i, v4)),
                IpNet::V6(_) => None,
            })
            .collect();
        let routes = nl.routes(route::MAIN_TABLE).map_err(err)?;
        let mut vxlan = Vec::new();
        for link in links.iter().filter(|l| l.kind.as_deref() == Some("vxlan")) {
            let Some(found) = nl.vxlan_by_name(&link.name).map_err(err)? else {
                continue;
            };
            let Some(settings) = found.settings else {
                continue;
            };
            vxlan.push(VxlanState {
                link: link.clone(),
                settings,
                neighbours: nl.neighbours(link.index).map_err(err)?,
                fdb: nl.fdb_entries(link.index).map_err(err)?,
            });
        }
        let tables = Tables {
            ns: Some(Arc::new(ns.try_clone().map_err(err)?)),
            what: what.to_string(),
            read: Arc::default(),
        };
        Ok(Snapshot {
            links,
            addresses,
            routes,
            vxlan,
            tables,
        })
    }

    /// The nftables tables whose names start with `podnet` (read now, the first time).
    pub fn tables(&self) -> Result<&[Table], String> {
        let t = &self.tables;
        let read = t.read.get_or_init(|| {
            let Some(ns) = &t.ns else {
                return Ok(Vec::new());
            };
            ruleset::list(Some(ns), None, |n| n.starts_with("podnet"))
                .map_err(|e| format!("reading the nftables rules of {}: {e}", t.what))
        });
        read.as_deref().map_err(Clone::clone)
    }

    /// Reads the namespace mounted at `path`.
    pub fn read_path(path: &Path, what: &str) -> Result<Snapshot, SnapshotError> {
        let ns = NetNs::open_path(path).map_err(|source| SnapshotError {
            what: what.to_string(),
            source,
        })?;
        Snapshot::read(&ns, what)
    }

    pub fn link(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_named(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Whether `ip` is one of this namespace's own addresses.
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip.is_loopback() || self.addresses.iter().any(|(_, a)| a.addr() == ip)
    }

    /// The route the kernel would take to `dst`: the longest matching prefix (then the
    /// lowest metric).
    pub fn route_to(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.dst.contains(&dst))
            .max_by_key(|r| (r.dst.prefix_len(), std::cmp::Reverse(r.metric.unwrap_or(0))))
    }

    /// The source address a packet routed by `r` leaves with.
    pub fn source_for(&self, r: &Route) -> Option<Ipv4Addr> {
        r.prefsrc.or_else(|| {
            let oif = r.oif?;
            self.addresses
                .iter()
                .find(|(i, _)| *i == oif)
                .map(|(_, a)| a.addr())
        })
    }
}
