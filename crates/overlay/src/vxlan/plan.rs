//! The pure part of a vxlan sync: what the kernel should hold for a set of peers, and the
//! difference between that and what it holds.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::Route;
use podnet_kernel::link::format_mac;
use podnet_kernel::route::{MAIN_TABLE, PROTO_PODNET};

use super::data;
use crate::{LocalNode, Peer};

/// What a plan needs to know about this node's kernel.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub local: &'a LocalNode,
    pub vni: u32,
    /// Index of the `podnet.<VNI>` device.
    pub device: u32,
    /// Index of the underlay link and its connected IPv4 subnets, for direct routing;
    /// `None` when direct routing is off.
    pub direct: Option<(u32, Vec<Ipv4Net>)>,
}

/// A permanent ARP entry: peer subnet's `.0` -> peer VTEP MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// An FDB entry: peer VTEP MAC -> peer public IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// Everything one peer needs. `neigh` and `fdb` are `None` for a direct route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntries {
    pub node: String,
    pub neigh: Option<Neigh>,
    pub fdb: Option<Fdb>,
    pub route: Route,
}

/// The wanted state, and the peers that cannot have one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub peers: Vec<PeerEntries>,
    pub failed: Vec<(String, String)>,
}

/// What the kernel holds that a vxlan sync owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub neighs: Vec<Neigh>,
    pub fdb: Vec<Fdb>,
    /// Only podnet's routes inside the cluster range (see [`is_ours`]).
    pub routes: Vec<Route>,
}

/// One peer's missing or wrong entries, installed in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub node: String,
    pub neigh: Option<Neigh>,
    pub fdb: Option<Fdb>,
    pub route: Option<Route>,
    /// All of the peer's entries, to roll back when a step fails.
    pub entries: PeerEntries,
}

/// The changes that turn [`Actual`] into [`Desired`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub remove_routes: Vec<Route>,
    pub remove_fdb: Vec<Fdb>,
    pub remove_neighs: Vec<Neigh>,
    pub install: Vec<Install>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.remove_routes.is_empty()
            && self.remove_fdb.is_empty()
            && self.remove_neighs.is_empty()
            && self.install.is_empty()
    }
}

/// Whether `route` is one a vxlan sync manages: podnet's protocol, main table, inside the
/// cluster range, and not the node's own subnet (the bridge's).
pub fn is_ours(route: &Route, local: &LocalNode) -> bool {
    route.protocol == PROTO_PODNET
        && route.table == MAIN_TABLE
        && local.cluster_cidr.contains(&route.dst)
        && route.dst != local.subnet
}

/// Two routes are the same when everything a sync sets is the same.
pub fn same_route(a: &Route, b: &Route) -> bool {
    a.dst == b.dst
        && a.gateway == b.gateway
        && a.oif == b.oif
        && a.onlink == b.onlink
        && a.protocol == b.protocol
        && a.table == b.table
}

/// The wanted entries for `peers`; a peer that cannot have any goes to `failed` with why.
pub fn desired(ctx: &Context<'_>, peers: &[Peer]) -> Desired {
    let mut out = Desired::default();
    let mut subnets = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for peer in peers {
        let entries = entries_for(ctx, peer).and_then(|entries| {
            if !subnets.insert(peer.subnet) {
                return Err(format!(
                    "another peer already has its subnet {}; fix the Nodes' podCIDRs",
                    peer.subnet
                ));
            }
            if let Some(fdb) = entries.fdb
                && !macs.insert(fdb.mac)
            {
                return Err(format!(
                    "another peer already has its VtepMAC {}; each node needs its own",
                    format_mac(&fdb.mac)
                ));
            }
            Ok(entries)
        });
        match entries {
            Ok(entries) => out.peers.push(entries),
            Err(why) => out.failed.push((peer.node.clone(), why)),
        }
    }
    out
}

fn entries_for(ctx: &Context<'_>, peer: &Peer) -> Result<PeerEntries, String> {
    let local = ctx.local;
    if peer.backend_type.as_deref() != Some("vxlan") {
        return Err(match &peer.backend_type {
            None => "it has not published its backend type yet".to_string(),
            Some(other) => format!(
                "it runs the {other} backend, this node runs vxlan; all nodes need the same backend"
            ),
        });
    }
    if !local.cluster_cidr.contains(&peer.subnet) {
        return Err(format!(
            "its subnet {} is outside the cluster range {}",
            peer.subnet, local.cluster_cidr
        ));
    }
    if peer.subnet == local.subnet || peer.node == local.name {
        return Err(format!(
            "it has this node's subnet {} or name; a node is not its own peer",
            local.subnet
        ));
    }
    let route = Route::via(peer.subnet, peer.subnet.network()).with_protocol(PROTO_PODNET);
    if let Some((underlay, nets)) = &ctx.direct
        && nets.iter().any(|net| net.contains(&peer.public_ip))
    {
        return Ok(PeerEntries {
            node: peer.node.clone(),
            neigh: None,
            fdb: None,
            route: Route {
                gateway: Some(peer.public_ip),
                ..route
            }
            .with_oif(*underlay),
        });
    }
    let vtep = data::decode(peer.backend_data.as_deref().unwrap_or("{}"))?;
    if let Some(vni) = vtep.vni
        && vni != ctx.vni
    {
        return Err(format!(
            "it uses VNI {vni}, this node VNI {}; all nodes need the same VNI",
            ctx.vni
        ));
    }
    Ok(PeerEntries {
        node: peer.node.clone(),
        neigh: Some(Neigh {
            ip: peer.subnet.network(),
            mac: vtep.mac,
        }),
        fdb: Some(Fdb {
            mac: vtep.mac,
            dst: peer.public_ip,
        }),
        route: route.with_oif(ctx.device).with_onlink(),
    })
}

/// The removals and installs that make `actual` match `desired`. Anything already right is
/// left alone, so a second sync with the same peers plans nothing.
pub fn diff(desired: &Desired, actual: &Actual) -> Diff {
    let wanted_neighs: BTreeSet<Neigh> = desired.peers.iter().filter_map(|p| p.neigh).collect();
    let wanted_fdb: BTreeSet<Fdb> = desired.peers.iter().filter_map(|p| p.fdb).collect();
    let mut out = Diff {
        // A wrong neighbour is replaced in place; only IPs nobody wants are removed.
        remove_neighs: actual
            .neighs
            .iter()
            .filter(|n| !wanted_neighs.iter().any(|w| w.ip == n.ip))
            .copied()
            .collect(),
        // An FDB MAC can hold several destinations: every one not wanted goes.
        remove_fdb: actual
            .fdb
            .iter()
            .filter(|f| !wanted_fdb.contains(f))
            .copied()
            .collect(),
        remove_routes: stale_routes(desired, actual),
        install: Vec::new(),
    };
    for entries in &desired.peers {
        let install = Install {
            node: entries.node.clone(),
            neigh: entries.neigh.filter(|n| !actual.neighs.contains(n)),
            // Removed above when wrong, so a wanted entry that is not exactly there is added.
            fdb: entries.fdb.filter(|f| !actual.fdb.contains(f)),
            route: Some(entries.route.clone())
                .filter(|r| !actual.routes.iter().any(|a| same_route(a, r))),
            entries: entries.clone(),
        };
        if install.neigh.is_some() || install.fdb.is_some() || install.route.is_some() {
            out.install.push(install);
        }
    }
    out
}

/// Routes to remove: those to a subnet nobody wants, and extra routes to a wanted subnet
/// beside the right one. A wrong route alone for its subnet is replaced, not removed, so the
/// subnet never goes without a route.
fn stale_routes(desired: &Desired, actual: &Actual) -> Vec<Route> {
    actual
        .routes
        .iter()
        .filter(
            |a| match desired.peers.iter().find(|p| p.route.dst == a.dst) {
                None => true,
                Some(p) => {
                    !same_route(a, &p.route)
                        && actual.routes.iter().any(|b| same_route(b, &p.route))
                }
            },
        )
        .cloned()
        .collect()
}

/// `neighbour 10.244.2.0 -> aa:… dev podnet.1`-style lines for [`crate::PeerSync`].
pub fn describe_neigh(n: &Neigh, dev: &str) -> String {
    format!("neighbour {} -> {} dev {dev}", n.ip, format_mac(&n.mac))
}

pub fn describe_fdb(f: &Fdb, dev: &str) -> String {
    format!("fdb {} -> {} dev {dev}", format_mac(&f.mac), f.dst)
}

pub fn describe_route(r: &Route, dev: &str) -> String {
    let mut text = format!("route {}", r.dst);
    if let Some(gw) = r.gateway {
        text.push_str(&format!(" via {gw}"));
    }
    if r.onlink {
        text.push_str(&format!(" dev {dev} onlink"));
    } else if let Some(oif) = r.oif {
        text.push_str(&format!(" dev #{oif}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn local() -> LocalNode {
        LocalNode {
            name: "node-1".into(),
            public_ip: Ipv4Addr::new(172, 31, 1, 11),
            subnet: net("10.244.1.0/24"),
            cluster_cidr: net("10.244.0.0/16"),
        }
    }

    const DEV: u32 = 7;
    const UNDERLAY: u32 = 2;

    fn peer(i: u8, mac_last: u8) -> Peer {
        Peer {
            node: format!("node-{i}"),
            subnet: net(&format!("10.244.{i}.0/24")),
            public_ip: Ipv4Addr::new(172, 31, i, 10 + i),
            backend_type: Some("vxlan".into()),
            backend_data: Some(data::encode(1, &[0x0a, 0, 0, 0, 0, mac_last])),
        }
    }

    fn ctx(local: &LocalNode, direct: Option<Vec<Ipv4Net>>) -> Context<'_> {
        Context {
            local,
            vni: 1,
            device: DEV,
            direct: direct.map(|nets| (UNDERLAY, nets)),
        }
    }

    /// The actual state a perfect sync of `desired` leaves.
    fn applied(desired: &Desired) -> Actual {
        Actual {
            neighs: desired.peers.iter().filter_map(|p| p.neigh).collect(),
            fdb: desired.peers.iter().filter_map(|p| p.fdb).collect(),
            routes: desired.peers.iter().map(|p| p.route.clone()).collect(),
        }
    }

    #[test]
    fn a_peer_gets_neighbour_fdb_and_onlink_route() {
        let l = local();
        let d = desired(&ctx(&l, None), &[peer(2, 2)]);
        assert!(d.failed.is_empty(), "{:?}", d.failed);
        let p = &d.peers[0];
        let mac = [0x0a, 0, 0, 0, 0, 2];
        assert_eq!(
            p.neigh,
            Some(Neigh {
                ip: Ipv4Addr::new(10, 244, 2, 0),
                mac
            })
        );
        assert_eq!(
            p.fdb,
            Some(Fdb {
                mac,
                dst: Ipv4Addr::new(172, 31, 2, 12)
            })
        );
        assert_eq!(
            describe_route(&p.route, "podnet.1"),
            "route 10.244.2.0/24 via 10.244.2.0 dev podnet.1 onlink"
        );
        assert_eq!((p.route.oif, p.route.protocol), (Some(DEV), PROTO_PODNET));
    }

    #[test]
    fn unusable_peers_fail_with_a_reason_and_others_go_on() {
        let l = local();
        let mut no_mac = peer(3, 3);
        no_mac.backend_data = None;
        let mut hostgw = peer(4, 4);
        hostgw.backend_type = Some("host-gw".into());
        let mut outside = peer(5, 5);
        outside.subnet = net("10.99.5.0/24");
        let mut other_vni = peer(6, 6);
        other_vni.backend_data = Some(data::encode(2, &[0x0a, 0, 0, 0, 0, 6]));
        let mut same_subnet = peer(7, 7);
        same_subnet.subnet = net("10.244.2.0/24");
        let same_mac = peer(8, 2);
        let peers = [
            peer(2, 2),
            no_mac,
            hostgw,
            outside,
            other_vni,
            same_subnet,
            same_mac,
        ];
        let d = desired(&ctx(&l, None), &peers);
        assert_eq!(d.peers.len(), 1);
        let reasons: Vec<(&str, &str)> = d
            .failed
            .iter()
            .map(|(n, r)| (n.as_str(), r.as_str()))
            .collect();
        let expect = [
            ("node-3", "no VtepMAC yet"),
            ("node-4", "host-gw backend"),
            ("node-5", "outside the cluster range"),
            ("node-6", "VNI 2"),
            ("node-7", "already has its subnet"),
            ("node-8", "already has its VtepMAC"),
        ];
        assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
        for ((node, reason), (want_node, says)) in reasons.iter().zip(expect) {
            assert_eq!(*node, want_node);
            assert!(reason.contains(says), "{node}: {reason}");
        }
    }

    #[test]
    fn direct_routing_uses_the_public_ip_on_the_same_segment_only() {
        let l = local();
        let mut far = peer(3, 3);
        far.public_ip = Ipv4Addr::new(192, 168, 9, 3);
        let d = desired(
            &ctx(&l, Some(vec![net("172.31.0.0/16")])),
            &[peer(2, 2), far],
        );
        let near = &d.peers[0];
        assert_eq!((near.neigh, near.fdb), (None, None));
        assert_eq!(near.route.gateway, Some(Ipv4Addr::new(172, 31, 2, 12)));
        assert_eq!((near.route.oif, near.route.onlink), (Some(UNDERLAY), false));
        let far = &d.peers[1];
        assert!(far.fdb.is_some() && far.route.onlink);
    }

    #[test]
    fn the_diff_of_an_applied_state_is_empty() {
        let l = local();
        let d = desired(&ctx(&l, None), &[peer(2, 2), peer(3, 3)]);
        assert!(diff(&d, &applied(&d)).is_empty());
    }

    #[test]
    fn from_nothing_everything_is_installed_in_peer_order() {
        let l = local();
        let d = desired(&ctx(&l, None), &[peer(2, 2), peer(3, 3)]);
        let plan = diff(&d, &Actual::default());
        assert_eq!(plan.install.len(), 2);
        assert!(
            plan.install
                .iter()
                .all(|i| i.neigh.is_some() && i.fdb.is_some() && i.route.is_some())
        );
        assert!(plan.remove_routes.is_empty() && plan.remove_fdb.is_empty());
    }

    #[test]
    fn only_what_is_missing_or_wrong_is_installed() {
        let l = local();
        let d = desired(&ctx(&l, None), &[peer(2, 2), peer(3, 3)]);
        let mut actual = applied(&d);
        actual
            .neighs
            .retain(|n| n.ip != Ipv4Addr::new(10, 244, 2, 0));
        actual.fdb[1].dst = Ipv4Addr::new(172, 31, 9, 9);
        let plan = diff(&d, &actual);
        assert_eq!(plan.install.len(), 2);
        let (p2, p3) = (&plan.install[0], &plan.install[1]);
        assert!(p2.neigh.is_some() && p2.fdb.is_none() && p2.route.is_none());
        assert!(p3.neigh.is_none() && p3.fdb.is_some() && p3.route.is_none());
        assert_eq!(
            plan.remove_fdb,
            vec![actual.fdb[1]],
            "the wrong destination goes"
        );
        assert!(plan.remove_neighs.is_empty() && plan.remove_routes.is_empty());
    }

    #[test]
    fn a_departed_peers_entries_are_removed_and_a_wrong_route_replaced() {
        let l = local();
        let both = desired(&ctx(&l, None), &[peer(2, 2), peer(3, 3)]);
        let mut actual = applied(&both);
        actual.routes[0].gateway = Some(Ipv4Addr::new(10, 244, 2, 1));
        let only_2 = desired(&ctx(&l, None), &[peer(2, 2)]);
        let plan = diff(&only_2, &actual);
        assert_eq!(plan.remove_routes, vec![both.peers[1].route.clone()]);
        assert_eq!(plan.remove_fdb, vec![both.peers[1].fdb.unwrap()]);
        assert_eq!(plan.remove_neighs, vec![both.peers[1].neigh.unwrap()]);
        assert_eq!(plan.install.len(), 1);
        assert_eq!(plan.install[0].route.as_ref(), Some(&only_2.peers[0].route));
    }

    #[test]
    fn only_podnets_routes_in_the_cluster_range_are_ours() {
        let l = local();
        let ours = Route::via(net("10.244.2.0/24"), Ipv4Addr::new(10, 244, 2, 0))
            .with_protocol(PROTO_PODNET);
        assert!(is_ours(&ours, &l));
        assert!(
            !is_ours(
                &Route {
                    protocol: 3,
                    ..ours.clone()
                },
                &l
            ),
            "someone's static route"
        );
        assert!(!is_ours(
            &Route {
                dst: net("10.99.0.0/24"),
                ..ours.clone()
            },
            &l
        ));
        assert!(
            !is_ours(
                &Route {
                    dst: l.subnet,
                    ..ours.clone()
                },
                &l
            ),
            "the bridge's subnet"
        );
        assert!(!is_ours(&Route { table: 100, ..ours }, &l));
    }
}
