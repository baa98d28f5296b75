//! The explain mode: a packet's path worked out from the state of the namespaces it crosses,
//! hop by hop, as the kernel would take it. From a pod: its route, its veth to the node's
//! bridge; on each node: the nftables hooks (prerouting with the service DNAT, forward with
//! the policy verdicts, postrouting with the masquerade), the route, and out by the bridge
//! (to a pod of this node), the overlay (vxlan with its neighbour and FDB entry, host-gw's
//! next hop, the udp tunnel's peer) or the underlay; at the end, whether anything listens.
//! Where the path breaks (no route, a rule that drops, a missing neighbour), the trace says so
//! at that hop.

use std::net::Ipv4Addr;

use podnet_kernel::nftnl::Hook;
use podnet_kernel::ruleset::trace::{Outcome, Packet, trace};
use podnet_kernel::{Link, Route};
use serde::Serialize;

use crate::world::{Destination, NodeView, PodView, Source, World};

/// One hop: where it is, what happens there, and the rule that decided it (nft syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The node (or pod, or `outside`) the hop is in.
    pub at: String,
    pub what: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

/// How the walk ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Delivered to a socket listening there.
    Delivered,
    /// Delivered to where nothing listens (a TCP client gets a reset).
    NotListening,
    /// Left the cluster.
    Left,
    /// Refused or lost at the last hop, which says why.
    Broken,
}

/// The whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub hops: Vec<Hop>,
    pub verdict: Verdict,
}

/// What is explained went wrong before a packet could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("no pod {0} in the cluster (or not on a node of this lab)")]
    NoPod(String),
    #[error(
        "no node has the address {0}: an outside client's packet needs a node address as its destination"
    )]
    NoNodeFor(Ipv4Addr),
}

/// The packet as it goes (addresses change with DNAT and masquerade).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    proto: u8,
    dport: u16,
}

/// Where the walk is.
enum At<'a> {
    LeavingPod(&'a PodView),
    EnteringNode(&'a NodeView, String),
    EnteringPod(&'a PodView),
}

/// How many places a walk may cross (a loop between nodes ends it).
const MAX_PLACES: usize = 12;

/// Explains the path of a new connection from `src` to `dst`.
pub fn explain(world: &World, src: &Source, dst: Destination) -> Result<Explanation, ExplainError> {
    let (start, saddr) = match src {
        Source::Pod { namespace, name } => {
            let pod = world
                .pods
                .iter()
                .find(|p| &p.namespace == namespace && &p.name == name)
                .ok_or_else(|| ExplainError::NoPod(format!("{namespace}/{name}")))?;
            (At::LeavingPod(pod), pod.ip)
        }
        Source::Outside(ip) => {
            let node = world
                .node_with_ip(dst.ip)
                .ok_or(ExplainError::NoNodeFor(dst.ip))?;
            let dev = underlay_dev(node);
            (At::EnteringNode(node, dev), *ip)
        }
    };
    let mut walk = Walk {
        world,
        hops: Vec::new(),
        packet: InFlight {
            saddr,
            daddr: dst.ip,
            proto: dst.proto,
            dport: dst.port,
        },
    };
    let mut at = start;
    for _ in 0..MAX_PLACES {
        match walk.step(at) {
            Next::At(next) => at = next,
            Next::End(verdict) => {
                return Ok(Explanation {
                    hops: walk.hops,
                    verdict,
                });
            }
        }
    }
    walk.hop(
        "?",
        "the path loops: stopped after 12 places".into(),
        vec![],
    );
    Ok(Explanation {
        hops: walk.hops,
        verdict: Verdict::Broken,
    })
}

fn underlay_dev(node: &NodeView) -> String {
    node.state
        .addresses
        .iter()
        .find(|(_, a)| a.addr() == node.ip)
        .and_then(|(i, _)| node.state.link(*i))
        .map(|l| l.name.clone())
        .unwrap_or_else(|| "eth0".into())
}

enum Next<'a> {
    At(At<'a>),
    End(Verdict),
}

struct Walk<'a> {
    world: &'a World,
    hops: Vec<Hop>,
    packet: InFlight,
}

/// A route as `ip route` prints it, with its device's name.
fn route_text(r: &Route, links: &[Link]) -> String {
    let mut t = if r.dst.prefix_len() == 0 {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if let Some(gw) = r.gateway {
        t.push_str(&format!(" via {gw}"));
    }
    if let Some(dev) = r.oif.and_then(|i| links.iter().find(|l| l.index == i)) {
        t.push_str(&format!(" dev {}", dev.name));
    }
    if r.onlink {
        t.push_str(" onlink");
    }
    t
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        1 => "icmp",
        _ => "ip",
    }
}

impl<'a> Walk<'a> {
    fn hop(&mut self, at: &str, what: String, rules: Vec<String>) {
        self.hops.push(Hop {
            at: at.to_string(),
            what,
            rules,
        });
    }

    fn broken(&mut self, at: &str, what: String, rules: Vec<String>) -> Next<'a> {
        self.hop(at, what, rules);
        Next::End(Verdict::Broken)
    }

    fn step(&mut self, at: At<'a>) -> Next<'a> {
        match at {
            At::LeavingPod(pod) => self.leave_pod(pod),
            At::EnteringNode(node, dev) => self.through_node(node, &dev),
            At::EnteringPod(pod) => self.enter_pod(pod),
        }
    }

    /// The pod's route, and its veth into the node's bridge.
    fn leave_pod(&mut self, pod: &'a PodView) -> Next<'a> {
        let at = format!("pod {}/{}", pod.namespace, pod.name);
        let p = self.packet;
        if p.daddr == pod.ip {
            return self.enter_pod(pod);
        }
        let Some(r) = pod.state.route_to(p.daddr) else {
            return self.broken(&at, format!("no route to {} in the pod", p.daddr), vec![]);
        };
        let dev = r.oif.and_then(|i| pod.state.link(i));
        self.hop(
            &at,
            format!(
                "{} {} → {} port {}: route {}",
                proto_name(p.proto),
                p.saddr,
                self.world.name_of(p.daddr),
                p.dport,
                route_text(r, &pod.state.links)
            ),
            vec![],
        );
        let Some(node) = self.world.node(&pod.node) else {
            return self.broken(&at, format!("its node {} is not known", pod.node), vec![]);
        };
        let host = dev
            .and_then(|d| d.peer_index)
            .and_then(|i| node.state.link(i));
        let Some(host) = host else {
            return self.broken(
                &at,
                format!(
                    "no veth peer of {} on node {}",
                    dev.map(|d| d.name.as_str()).unwrap_or("?"),
                    node.name
                ),
                vec![],
            );
        };
        let bridge = host.master.and_then(|m| node.state.link(m));
        let what = match bridge {
            Some(b) => format!(
                "veth {} → {} (a port of bridge {})",
                dev.map(|d| d.name.as_str()).unwrap_or("eth0"),
                host.name,
                b.name
            ),
            None => format!(
                "veth {} → {}",
                dev.map(|d| d.name.as_str()).unwrap_or("eth0"),
                host.name
            ),
        };
        self.hop(&node.name, what, vec![]);
        let in_dev = bridge
            .map(|b| b.name.clone())
            .unwrap_or_else(|| host.name.clone());
        Next::At(At::EnteringNode(node, in_dev))
    }

    fn packet(&self, node: &NodeView) -> Packet {
        let p = self.packet;
        let mut packet = Packet::new(p.saddr, p.daddr, p.proto, p.dport);
        packet.saddr_local = node.state.is_local(p.saddr);
        packet.daddr_local = node.state.is_local(p.daddr);
        packet
    }

    /// Runs a hook; `Err` with the hop already written when the packet dies there.
    fn hook(
        &mut self,
        node: &NodeView,
        hook: Hook,
        name: &str,
    ) -> Result<podnet_kernel::ruleset::trace::Trace, ()> {
        let tables = match node.state.tables() {
            Ok(t) => t,
            Err(e) => {
                self.hop(&node.name, format!("{name}: unknown, {e}"), Vec::new());
                return Err(());
            }
        };
        let t = trace(tables, hook, &self.packet(node));
        // The rules that decided: what the packet's fate or addresses came from.
        let rules: Vec<String> = t
            .steps
            .iter()
            .filter(|s| s.decided)
            .map(|s| format!("{} {}: {}", s.table, s.chain, s.rule))
            .collect();
        match t.outcome {
            Outcome::Accepted => {
                if !rules.is_empty() {
                    self.hop(&node.name, format!("{name}: accepted"), rules);
                }
                Ok(t)
            }
            Outcome::Dropped => {
                self.hop(&node.name, format!("{name}: dropped"), rules);
                Err(())
            }
            Outcome::Rejected => {
                self.hop(
                    &node.name,
                    format!(
                        "{name}: rejected (ICMP port unreachable, a TCP client sees a refusal)"
                    ),
                    rules,
                );
                Err(())
            }
        }
    }

    /// Prerouting (DNAT), the route, forward, postrouting (masquerade), and out.
    fn through_node(&mut self, node: &'a NodeView, in_dev: &str) -> Next<'a> {
        self.hop(
            &node.name,
            format!("enters node {} by {in_dev}", node.name),
            vec![],
        );
        let Ok(pre) = self.hook(node, Hook::Prerouting, "prerouting") else {
            return Next::End(Verdict::Broken);
        };
        if let Some(port) = pre.redirect {
            self.hop(&node.name, format!("redirected to the userspace service proxy on the node's port {port}, which opens its own connection to an endpoint"), vec![]);
            return Next::End(Verdict::Delivered);
        }
        if let Some(&(ip, port)) = pre.dnat.first() {
            let others = pre.dnat.len() - 1;
            let choice = if others > 0 {
                format!(
                    " (one of {} endpoints, picked at random per connection; the first is followed)",
                    pre.dnat.len()
                )
            } else {
                String::new()
            };
            self.hop(
                &node.name,
                format!(
                    "DNAT {}:{} → {}:{port}{choice}",
                    self.packet.daddr,
                    self.packet.dport,
                    self.world.name_of(ip)
                ),
                vec![],
            );
            self.packet.daddr = ip;
            self.packet.dport = port;
        }
        if node.state.is_local(self.packet.daddr) {
            let Ok(_) = self.hook(node, Hook::Input, "input") else {
                return Next::End(Verdict::Broken);
            };
            self.hop(
                &node.name,
                format!("delivered to node {} itself", node.name),
                vec![],
            );
            return Next::End(Verdict::Delivered);
        }
        let Some(route) = node.state.route_to(self.packet.daddr).cloned() else {
            return self.broken(
                &node.name,
                format!("no route to {} on node {}", self.packet.daddr, node.name),
                vec![],
            );
        };
        self.hop(
            &node.name,
            format!("route {}", route_text(&route, &node.state.links)),
            vec![],
        );
        let Ok(_) = self.hook(node, Hook::Forward, "forward") else {
            return Next::End(Verdict::Broken);
        };
        let Ok(post) = self.hook(node, Hook::Postrouting, "postrouting") else {
            return Next::End(Verdict::Broken);
        };
        if post.masquerade
            && let Some(src) = node.state.source_for(&route)
        {
            self.hop(
                &node.name,
                format!("masquerade: source {} → {src}", self.packet.saddr),
                vec![],
            );
            self.packet.saddr = src;
        }
        self.out(node, &route)
    }

    /// Out of the node by the route's device.
    fn out(&mut self, node: &'a NodeView, route: &Route) -> Next<'a> {
        let dev = route.oif.and_then(|i| node.state.link(i));
        let Some(dev) = dev else {
            return self.broken(&node.name, "the route has no device".into(), vec![]);
        };
        match dev.kind.as_deref() {
            Some("bridge") => self.bridge_to_pod(node, dev),
            Some("vxlan") => self.over_vxlan(node, dev, route),
            Some("tun") => self.over_tunnel(node, dev),
            _ => self.over_underlay(node, dev, route),
        }
    }

    fn bridge_to_pod(&mut self, node: &'a NodeView, bridge: &Link) -> Next<'a> {
        let daddr = self.packet.daddr;
        let Some(pod) = self
            .world
            .pod_with_ip(daddr)
            .filter(|p| p.node == node.name)
        else {
            return self.broken(
                &node.name,
                format!("bridge {}: no pod of this node has {daddr}", bridge.name),
                vec![],
            );
        };
        let port = pod
            .state
            .links
            .iter()
            .find(|l| l.peer_index.is_some() && l.name != "lo")
            .and_then(|l| l.peer_index)
            .and_then(|i| node.state.link(i));
        let port = port.map(|l| l.name.clone()).unwrap_or_else(|| "?".into());
        self.hop(
            &node.name,
            format!(
                "bridge {} → port {port} → pod {}/{} eth0",
                bridge.name, pod.namespace, pod.name
            ),
            vec![],
        );
        Next::At(At::EnteringPod(pod))
    }

    fn over_vxlan(&mut self, node: &'a NodeView, dev: &Link, route: &Route) -> Next<'a> {
        let Some(vx) = node.state.vxlan.iter().find(|v| v.link.index == dev.index) else {
            return self.broken(
                &node.name,
                format!("{} is not a VXLAN device podnet knows", dev.name),
                vec![],
            );
        };
        let next_hop = route.gateway.unwrap_or(self.packet.daddr);
        let Some(neigh) = vx.neighbours.iter().find(|n| n.ip == Some(next_hop)) else {
            return self.broken(
                &node.name,
                format!(
                    "{}: no neighbour entry for {next_hop} (the peer's VTEP MAC is not known)",
                    dev.name
                ),
                vec![],
            );
        };
        let mac = podnet_kernel::link::format_mac(&neigh.mac);
        let Some(remote) = vx
            .fdb
            .iter()
            .find(|f| f.mac == neigh.mac)
            .and_then(|f| f.ip)
        else {
            return self.broken(
                &node.name,
                format!(
                    "{}: no FDB entry for {mac} (the peer's VTEP address is not known)",
                    dev.name
                ),
                vec![],
            );
        };
        let local = vx
            .settings
            .local
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into());
        self.hop(
            &node.name,
            format!(
                "vxlan {}: VNI {}, neighbour {next_hop} → {mac}, FDB {mac} → {remote}; outer UDP {local} → {remote}:{}; MTU {} (50 bytes of encapsulation on top)",
                dev.name, vx.settings.vni, vx.settings.port, dev.mtu
            ),
            vec![],
        );
        self.onto_node(node, remote)
    }

    fn over_tunnel(&mut self, node: &'a NodeView, dev: &Link) -> Next<'a> {
        let daddr = self.packet.daddr;
        let Some(peer) = self.world.node_of_subnet(daddr) else {
            return self.broken(
                &node.name,
                format!(
                    "{}: no node owns {daddr} (the udp tunnel answers ICMP net unreachable)",
                    dev.name
                ),
                vec![],
            );
        };
        self.hop(
            &node.name,
            format!(
                "udp tunnel {}: wrapped in UDP {} → {}:8285 by the agent's forwarder, MTU {}",
                dev.name, node.ip, peer.ip, dev.mtu
            ),
            vec![],
        );
        let peer_ip = peer.ip;
        self.onto_node(node, peer_ip)
    }

    fn over_underlay(&mut self, node: &'a NodeView, dev: &Link, route: &Route) -> Next<'a> {
        let next = route.gateway.unwrap_or(self.packet.daddr);
        match self.world.node_with_ip(next) {
            Some(peer) if peer.name != node.name => {
                self.hop(
                    &node.name,
                    format!(
                        "out by {} to next hop {next} (node {}: host-gw)",
                        dev.name, peer.name
                    ),
                    vec![],
                );
                self.onto_node(node, next)
            }
            _ => {
                let daddr = self.packet.daddr;
                if let Some(owner) = self.world.node_of_subnet(daddr) {
                    return self.broken(&node.name, format!("{daddr} is a pod address of node {}, but the route sends it out of the cluster by {} via {next}: the route to that node's subnet is missing", owner.name, dev.name), vec![]);
                }
                self.hop(
                    &node.name,
                    format!("leaves the cluster by {} via {next}", dev.name),
                    vec![],
                );
                Next::End(Verdict::Left)
            }
        }
    }

    fn onto_node(&mut self, from: &NodeView, ip: Ipv4Addr) -> Next<'a> {
        match self.world.node_with_ip(ip) {
            Some(peer) => {
                let dev = underlay_dev(peer);
                Next::At(At::EnteringNode(peer, dev))
            }
            None => self.broken(
                &from.name,
                format!("no node of the cluster has {ip}"),
                vec![],
            ),
        }
    }

    fn enter_pod(&mut self, pod: &PodView) -> Next<'a> {
        let at = format!("pod {}/{}", pod.namespace, pod.name);
        let p = self.packet;
        let found = pod.listening.iter().find(|l| {
            l.proto == p.proto
                && l.port == p.dport
                && (l.addr.is_unspecified() || l.addr == p.daddr)
        });
        match found {
            Some(l) => {
                self.hop(
                    &at,
                    format!(
                        "delivered: {} {}:{} listens (source {})",
                        proto_name(p.proto),
                        l.addr,
                        l.port,
                        p.saddr
                    ),
                    vec![],
                );
                Next::End(Verdict::Delivered)
            }
            None => {
                self.hop(
                    &at,
                    format!(
                        "arrives, but nothing listens on {} port {} (a TCP client gets a reset)",
                        proto_name(p.proto),
                        p.dport
                    ),
                    vec![],
                );
                Next::End(Verdict::NotListening)
            }
        }
    }
}
