//! The desired state, pure: what one service port is (from its Service and EndpointSlices),
//! which endpoints serve which traffic (kube-proxy's endpoint categorisation), and the
//! nftables objects that implement it (chains with their rules, affinity sets, map
//! elements), named as kube-proxy's nftables proxier names them.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::nftnl::{Verdict, concat};

pub use crate::rule::{MappedPick, MasqueradeCheck, Rule};

/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's 0x4000).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Names of the shared maps and chains the per-service objects plug into.
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const ENDPOINT_HAIRPIN: &str = "endpoint-hairpin";

/// A transport protocol a Service port can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// From the Kubernetes spelling (`TCP`, `UDP`, `SCTP`; absent means TCP).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The nft spelling, also used in chain names as kube-proxy does.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number (for conntrack).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// kube-proxy's ServicePortName: which port of which Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port
        )
    }
}

/// What the Service says about one of its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: the affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` (only meaningful for externally reachable services).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// A ClusterIP-only port with kube-proxy's defaults: no NodePort, external addresses,
    /// affinity or Local policies.
    pub fn cluster_ip(name: ServicePortName, cluster_ip: Ipv4Addr, port: u16) -> ServicePort {
        ServicePort {
            name,
            cluster_ip,
            port,
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            health_check_node_port: None,
        }
    }
}

/// One endpoint of a service port, from an EndpointSlice (its port already resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    fn is_local(&self, node: &str) -> bool {
        self.node_name.as_deref() == Some(node)
    }
}

/// A service port with its endpoints: the unit the change tracker compares and syncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub port: ServicePort,
    pub endpoints: Vec<Endpoint>,
}

/// How a service chain reaches its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The service chain DNATs itself with one rule, `dnat to numgen random mod N map
    /// @endpoints-…`, through a named map of the service port (`0 : ip . port`, …), and
    /// hairpin traffic is masqueraded by one shared rule (`ip saddr . ip daddr
    /// @endpoint-hairpin`). No chain or set per endpoint and one rule per service, which
    /// keeps a sync of 10,000 services fast: the kernel's cost grows with the square of
    /// the number of chains (chain dumps, which every `nft` command does), of anonymous
    /// sets (their names are allocated by a scan) and of the rules bound to one map (each
    /// element is checked against every binding), and `nft` parses a rule far slower
    /// than a map element. Services with ClientIP affinity still use endpoint chains
    /// (they need a set per endpoint).
    #[default]
    Compact,
    /// kube-proxy's nftables layout: `numgen random mod N vmap { 0 : goto endpoint-… }`
    /// to a chain per endpoint, which marks hairpin traffic and DNATs.
    EndpointChains,
}

/// Node-wide settings the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    pub node_name: String,
    pub cluster_cidr: Ipv4Net,
    pub layout: Layout,
}

impl NodeContext {
    /// Whether this service port's endpoints get chains of their own.
    pub fn endpoint_chains(&self, sp: &ServicePort) -> bool {
        self.layout == Layout::EndpointChains || sp.affinity_timeout.is_some()
    }
}

/// The endpoints each kind of traffic may use (kube-proxy's `CategorizeEndpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Categorized {
    /// For traffic to the ClusterIP (all usable ones, or the local ones with
    /// `internalTrafficPolicy: Local`).
    pub cluster: Vec<Endpoint>,
    /// The node's own usable endpoints (for `externalTrafficPolicy: Local`).
    pub local: Vec<Endpoint>,
    /// Every usable endpoint, on any node (external traffic with policy Cluster).
    pub all: Vec<Endpoint>,
    /// Whether the service has any usable endpoint anywhere.
    pub any: bool,
}

/// Ready endpoints if there are any, else the serving-and-terminating ones (so a rolling
/// update that leaves only terminating pods still gets served, as kube-proxy does).
fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = eps.clone().filter(|e| e.ready).cloned().collect();
    if !ready.is_empty() {
        return ready;
    }
    eps.filter(|e| e.serving && e.terminating)
        .cloned()
        .collect()
}

pub fn categorize(state: &ServiceState, node: &str) -> Categorized {
    let all = usable(state.endpoints.iter());
    let local = usable(state.endpoints.iter().filter(|e| e.is_local(node)));
    let cluster = if state.port.internal_local {
        local.clone()
    } else {
        all.clone()
    };
    Categorized {
        cluster,
        local,
        any: !all.is_empty(),
        all,
    }
}

/// A chain of the service with its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A ClientIP affinity set (one per endpoint, timeouts on its elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinitySet {
    pub name: String,
    pub timeout_seconds: u32,
}

/// A service port's map from a random pick to an endpoint (`N : ip . port`): the cluster
/// pick's endpoints from 0, an external pick's after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetMap {
    pub name: String,
    pub protocol: Protocol,
    pub targets: Vec<(Ipv4Addr, u16)>,
}

/// A service chain of exactly two rules, the masquerade check and the pick: what an
/// endpoint change rewrites, small enough to send over netlink without `nft`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainServiceChain {
    pub name: String,
    pub masquerade: MasqueradeCheck,
    pub pick: MappedPick,
}

/// An element of one of the shared verdict maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    pub map: &'static str,
    pub key: DispatchKey,
    pub verdict: Verdict,
}

/// The key of a dispatch map element: what a packet is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DispatchKey {
    /// `ip . protocol . port` (a ClusterIP, external IP or load balancer IP).
    Address {
        ip: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    },
    /// `protocol . port` (a NodePort).
    NodePort { protocol: Protocol, port: u16 },
}

impl fmt::Display for DispatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DispatchKey::Address { ip, protocol, port } => {
                write!(f, "{ip} . {} . {port}", protocol.nft())
            }
            DispatchKey::NodePort { protocol, port } => write!(f, "{} . {port}", protocol.nft()),
        }
    }
}

impl DispatchKey {
    /// The key as the kernel stores it (each field padded to 32 bits).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            DispatchKey::Address { ip, protocol, port } => {
                concat(&[&ip.octets(), &[protocol.number()], &port.to_be_bytes()])
            }
            DispatchKey::NodePort { protocol, port } => {
                concat(&[&[protocol.number()], &port.to_be_bytes()])
            }
        }
    }
}

/// Everything one service port installs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRules {
    pub chains: Vec<Chain>,
    pub sets: Vec<AffinitySet>,
    /// The port's endpoint map, if it DNATs without endpoint chains.
    pub maps: Vec<TargetMap>,
    /// The service chain, when it is a plain one (its text is also in `chains`).
    pub plain_chain: Option<PlainServiceChain>,
    pub elements: Vec<Element>,
    /// ClusterIPs for the `cluster-ips` set (traffic to a known ClusterIP on a port it
    /// does not serve is rejected).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// Endpoints DNATed without a chain of their own: a connection from one of them to
    /// itself (hairpin) is masqueraded through the shared `endpoint-hairpin` set.
    pub hairpin: Vec<Ipv4Addr>,
}

/// A short stable hash of a name, base32 like kube-proxy's (so chain names stay unique and
/// readable even when two names share a long prefix).
pub fn hash_name(name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    // FNV-1a 64: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..8)
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

pub fn service_chain(name: &ServicePortName) -> String {
    let n = name.to_string();
    format!("service-{}-{n}", hash_name(&n))
}

pub fn external_chain(name: &ServicePortName) -> String {
    let n = name.to_string();
    format!("external-{}-{n}", hash_name(&n))
}

pub fn endpoint_chain(name: &ServicePortName, ep: &Endpoint) -> String {
    let n = format!("{name}__{}/{}", ep.ip, ep.port);
    format!("endpoint-{}-{n}", hash_name(&n))
}

pub fn target_map(name: &ServicePortName) -> String {
    let n = name.to_string();
    format!("endpoints-{}-{n}", hash_name(&n))
}

pub fn affinity_set(name: &ServicePortName, ep: &Endpoint) -> String {
    let n = format!("{name}__{}/{}", ep.ip, ep.port);
    format!("affinity-{}-{n}", hash_name(&n))
}

/// True when a name only holds characters that nft accepts unquoted in an identifier
/// (Kubernetes names and port names are DNS labels, so this only refuses bad input).
pub fn is_safe_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The rules of one service port on this node.
pub fn service_rules(state: &ServiceState, ctx: &NodeContext) -> ServiceRules {
    let sp = &state.port;
    let cat = categorize(state, &ctx.node_name);
    let svc_chain = service_chain(&sp.name);
    let ext_chain = external_chain(&sp.name);
    let mut rules = ServiceRules {
        cluster_ips: vec![sp.cluster_ip],
        ..ServiceRules::default()
    };
    let mut targets = TargetMap {
        name: target_map(&sp.name),
        protocol: sp.name.protocol,
        targets: Vec::new(),
    };

    // Endpoint chains for every endpoint either path may use.
    let has_external =
        sp.node_port.is_some() || !sp.external_ips.is_empty() || !sp.load_balancer_ips.is_empty();
    // External traffic uses the local endpoints (policy Local) or all of them (Cluster),
    // whatever the internal policy says.
    let external_eps: &[Endpoint] = if sp.external_local {
        &cat.local
    } else {
        &cat.all
    };
    let mut used: Vec<Endpoint> = cat.cluster.clone();
    if has_external {
        used.extend(external_eps.iter().cloned());
    }
    used.sort();
    used.dedup();
    let chains = ctx.endpoint_chains(sp);
    if !chains {
        // Only a pod of this node (or the node itself) can be the client that lands on
        // itself, so only this node's endpoints (and those of unknown node) need the
        // hairpin element: a node's own pods, not the whole cluster's.
        rules.hairpin = used
            .iter()
            .filter(|e| e.node_name.is_none() || e.is_local(&ctx.node_name))
            .map(|e| e.ip)
            .collect();
        rules.hairpin.dedup();
        used.clear();
    }
    for ep in &used {
        rules.chains.push(endpoint_rules(sp, ep));
        if let Some(timeout) = sp.affinity_timeout {
            rules.sets.push(AffinitySet {
                name: affinity_set(&sp.name, ep),
                timeout_seconds: timeout,
            });
        }
    }

    // The ClusterIP.
    let address_key = |ip: Ipv4Addr| DispatchKey::Address {
        ip,
        protocol: sp.name.protocol,
        port: sp.port,
    };
    let cluster_key = address_key(sp.cluster_ip);
    if !cat.cluster.is_empty() {
        let masquerade = MasqueradeCheck {
            cluster_ip: sp.cluster_ip,
            protocol: sp.name.protocol,
            port: sp.port,
            cluster_cidr: ctx.cluster_cidr,
        };
        let mut r = vec![Rule::MasqueradeCheck(masquerade.clone())];
        if chains {
            r.extend(pick_endpoint(sp, &cat.cluster, chains, &mut targets));
        } else {
            let pick = pick_mapped(sp, &cat.cluster, &mut targets);
            r.push(Rule::Pick(pick.clone()));
            rules.plain_chain = Some(PlainServiceChain {
                name: svc_chain.clone(),
                masquerade,
                pick,
            });
        }
        rules.chains.push(Chain {
            name: svc_chain.clone(),
            rules: r,
        });
        rules.elements.push(Element {
            map: SERVICE_IPS,
            key: cluster_key,
            verdict: Verdict::Goto(svc_chain.clone()),
        });
    } else {
        // No endpoint at all: refuse at once. Endpoints, but none for internal traffic
        // (internalTrafficPolicy Local, none here): dropped, as kube-proxy does.
        rules.elements.push(Element {
            map: NO_ENDPOINT_SERVICES,
            key: cluster_key,
            verdict: no_endpoint_verdict(cat.any),
        });
    }

    if !has_external {
        rules
            .maps
            .extend(Some(targets).filter(|t| !t.targets.is_empty()));
        return rules;
    }
    // External destinations (NodePort, externalIPs, LoadBalancer IPs) go through the
    // external chain, which masquerades unless the policy is Local.
    let external_usable = !external_eps.is_empty();
    let ext_rules = if sp.external_local {
        let mut r = vec![
            // Pods and the node itself get the cluster-wide behaviour (kube-proxy's
            // short-circuit), so they can reach the service even with no local endpoint.
            Rule::FromNet {
                net: ctx.cluster_cidr,
                verdict: Verdict::Goto(svc_chain.clone()),
            },
            Rule::FromLocal(mark_for_masquerade()),
            Rule::FromLocal(Verdict::Goto(svc_chain.clone())),
        ];
        if cat.cluster.is_empty() {
            // Without a service chain the short-circuits above would jump nowhere.
            r = Vec::new();
        }
        if cat.local.is_empty() {
            r.push(Rule::Always(Verdict::Drop));
        } else {
            r.extend(pick_endpoint(sp, &cat.local, chains, &mut targets));
        }
        r
    } else {
        let mut r = vec![Rule::Always(mark_for_masquerade())];
        if cat.cluster == cat.all {
            r.push(Rule::Always(Verdict::Goto(svc_chain.clone())));
        } else {
            // internalTrafficPolicy Local: the service chain only has this node's.
            r.extend(pick_endpoint(sp, &cat.all, chains, &mut targets));
        }
        r
    };
    let ext_dsts: Vec<Ipv4Addr> = sp
        .external_ips
        .iter()
        .chain(sp.load_balancer_ips.iter())
        .copied()
        .collect();
    if external_usable || (sp.external_local && cat.any) {
        rules.chains.push(Chain {
            name: ext_chain.clone(),
            rules: ext_rules,
        });
        let verdict = Verdict::Goto(ext_chain.clone());
        for ip in &ext_dsts {
            rules.elements.push(Element {
                map: SERVICE_IPS,
                key: address_key(*ip),
                verdict: verdict.clone(),
            });
        }
        if let Some(np) = sp.node_port {
            rules.elements.push(Element {
                map: SERVICE_NODEPORTS,
                key: DispatchKey::NodePort {
                    protocol: sp.name.protocol,
                    port: np,
                },
                verdict,
            });
        }
    } else {
        let verdict = no_endpoint_verdict(false);
        for ip in &ext_dsts {
            rules.elements.push(Element {
                map: NO_ENDPOINT_SERVICES,
                key: address_key(*ip),
                verdict: verdict.clone(),
            });
        }
        if let Some(np) = sp.node_port {
            rules.elements.push(Element {
                map: NO_ENDPOINT_NODEPORTS,
                key: DispatchKey::NodePort {
                    protocol: sp.name.protocol,
                    port: np,
                },
                verdict,
            });
        }
    }
    rules
        .maps
        .extend(Some(targets).filter(|t| !t.targets.is_empty()));
    rules
}

fn no_endpoint_verdict(has_other_endpoints: bool) -> Verdict {
    if has_other_endpoints {
        Verdict::Drop
    } else {
        Verdict::Goto(REJECT_CHAIN.to_string())
    }
}

fn mark_for_masquerade() -> Verdict {
    Verdict::Jump(MARK_FOR_MASQUERADE.to_string())
}

/// The rules that choose an endpoint: the affinity checks first (a client seen recently
/// goes back to its endpoint), then a random pick.
fn pick_endpoint(
    sp: &ServicePort,
    eps: &[Endpoint],
    chains: bool,
    targets: &mut TargetMap,
) -> Vec<Rule> {
    if !chains {
        return vec![Rule::Pick(pick_mapped(sp, eps, targets))];
    }
    let mut r = Vec::new();
    if sp.affinity_timeout.is_some() {
        for ep in eps {
            r.push(Rule::AffinityHit {
                set: affinity_set(&sp.name, ep),
                chain: endpoint_chain(&sp.name, ep),
            });
        }
    }
    r.push(Rule::RandomVmap {
        chains: eps.iter().map(|ep| endpoint_chain(&sp.name, ep)).collect(),
    });
    r
}

/// The compact pick of `eps`, added to the port's endpoint map after what it holds.
fn pick_mapped(sp: &ServicePort, eps: &[Endpoint], targets: &mut TargetMap) -> MappedPick {
    let offset = targets.targets.len();
    targets
        .targets
        .extend(eps.iter().map(|ep| (ep.ip, ep.port)));
    MappedPick {
        protocol: sp.name.protocol,
        count: eps.len(),
        offset,
        map: targets.name.clone(),
    }
}

fn endpoint_rules(sp: &ServicePort, ep: &Endpoint) -> Chain {
    let mut r = vec![Rule::FromNet {
        net: Ipv4Net::from(ep.ip),
        verdict: mark_for_masquerade(),
    }];
    if let Some(timeout) = sp.affinity_timeout {
        r.push(Rule::AffinityUpdate {
            set: affinity_set(&sp.name, ep),
            timeout_seconds: timeout,
        });
    }
    r.push(Rule::Dnat {
        protocol: sp.name.protocol,
        ip: ep.ip,
        port: ep.port,
    });
    Chain {
        name: endpoint_chain(&sp.name, ep),
        rules: r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(rules: &[Rule]) -> Vec<String> {
        rules.iter().map(|r| r.to_string()).collect()
    }

    pub(crate) fn port(ns: &str, name: &str, port_name: &str, proto: Protocol) -> ServicePort {
        let name = ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: port_name.into(),
            protocol: proto,
        };
        ServicePort::cluster_ip(name, Ipv4Addr::new(10, 96, 0, 10), 80)
    }

    fn ep(last: u8, node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
            node_name: Some(node.into()),
            ready,
            serving,
            terminating,
        }
    }

    fn ctx() -> NodeContext {
        NodeContext {
            node_name: "n1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            layout: Layout::EndpointChains,
        }
    }

    #[test]
    fn compact_layout_exact_text() {
        let s = ServiceState {
            port: port("default", "web", "http", Protocol::Tcp),
            endpoints: vec![
                ep(2, "n1", true, true, false),
                ep(3, "n2", true, true, false),
                ep(4, "n2", true, true, false),
            ],
        };
        let r = service_rules(
            &s,
            &NodeContext {
                layout: Layout::Compact,
                ..ctx()
            },
        );
        assert_eq!(r.chains.len(), 1, "no endpoint chains");
        assert_eq!(
            texts(&r.chains[0].rules),
            vec![
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
                "meta l4proto tcp dnat to numgen random mod 3 map @endpoints-UARQTUAX-default/web/tcp/http",
            ]
        );
        assert_eq!(
            r.maps,
            vec![TargetMap {
                name: "endpoints-UARQTUAX-default/web/tcp/http".into(),
                protocol: Protocol::Tcp,
                targets: (2..=4)
                    .map(|i| (Ipv4Addr::new(10, 244, 1, i), 8080))
                    .collect(),
            }]
        );
        // Only the endpoint on this node (n1) can be its own client.
        assert_eq!(r.hairpin, vec![Ipv4Addr::new(10, 244, 1, 2)]);
        // Affinity keeps the endpoint chains even in the compact layout.
        let mut s = s;
        s.port.affinity_timeout = Some(30);
        let r = service_rules(
            &s,
            &NodeContext {
                layout: Layout::Compact,
                ..ctx()
            },
        );
        assert_eq!(r.chains.len(), 4);
        assert!(r.hairpin.is_empty() && r.maps.is_empty());
    }

    #[test]
    fn compact_external_local_pick_follows_the_cluster_pick_in_the_map() {
        let mut s = ServiceState {
            port: port("default", "web", "http", Protocol::Udp),
            endpoints: vec![
                ep(2, "n1", true, true, false),
                ep(3, "n2", true, true, false),
            ],
        };
        s.port.node_port = Some(30080);
        s.port.external_local = true;
        let ctx = NodeContext {
            layout: Layout::Compact,
            ..ctx()
        };
        let r = service_rules(&s, &ctx);
        let map = target_map(&s.port.name);
        let ext = r
            .chains
            .iter()
            .find(|c| c.name == external_chain(&s.port.name))
            .unwrap();
        assert_eq!(
            ext.rules.last().unwrap().to_string(),
            format!("meta l4proto udp dnat to numgen random mod 1 offset 2 map @{map}")
        );
        assert_eq!(
            r.maps[0].targets,
            vec![
                (Ipv4Addr::new(10, 244, 1, 2), 8080),
                (Ipv4Addr::new(10, 244, 1, 3), 8080),
                (Ipv4Addr::new(10, 244, 1, 2), 8080),
            ]
        );
    }

    #[test]
    fn hash_is_stable_and_base32() {
        let h = hash_name("default/web/tcp/http");
        assert_eq!(h.len(), 8);
        assert_eq!(h, hash_name("default/web/tcp/http"));
        assert_ne!(h, hash_name("default/web/tcp/https"));
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
    }

    #[test]
    fn categorize_prefers_ready_then_serving_terminating() {
        let mut s = ServiceState {
            port: port("default", "web", "http", Protocol::Tcp),
            endpoints: vec![
                ep(2, "n1", true, true, false),
                ep(3, "n2", false, true, true),
            ],
        };
        let c = categorize(&s, "n1");
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 244, 1, 2));
        // Only terminating-but-serving ones left: they are used.
        s.endpoints[0].ready = false;
        s.endpoints[0].serving = false;
        let c = categorize(&s, "n1");
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip, Ipv4Addr::new(10, 244, 1, 3));
        assert!(c.local.is_empty());
        assert!(c.any);
        // Not serving at all: nothing usable.
        s.endpoints[1].serving = false;
        let c = categorize(&s, "n1");
        assert!(c.cluster.is_empty() && !c.any);
    }

    #[test]
    fn internal_local_uses_only_local_endpoints() {
        let mut p = port("default", "web", "http", Protocol::Tcp);
        p.internal_local = true;
        let s = ServiceState {
            port: p,
            endpoints: vec![
                ep(2, "n1", true, true, false),
                ep(3, "n2", true, true, false),
            ],
        };
        let c = categorize(&s, "n1");
        assert_eq!(c.cluster, vec![ep(2, "n1", true, true, false)]);
        let c = categorize(&s, "n3");
        assert!(c.cluster.is_empty() && c.any);
        let r = service_rules(
            &s,
            &NodeContext {
                node_name: "n3".into(),
                ..ctx()
            },
        );
        assert_eq!(r.elements[0].map, NO_ENDPOINT_SERVICES);
        assert_eq!(r.elements[0].verdict, Verdict::Drop);
    }

    #[test]
    fn cluster_ip_rules_exact_text() {
        let s = ServiceState {
            port: port("default", "web", "http", Protocol::Tcp),
            endpoints: vec![
                ep(2, "n1", true, true, false),
                ep(3, "n2", true, true, false),
            ],
        };
        let r = service_rules(&s, &ctx());
        let svc = service_chain(&s.port.name);
        let e2 = endpoint_chain(&s.port.name, &s.endpoints[0]);
        let e3 = endpoint_chain(&s.port.name, &s.endpoints[1]);
        assert!(svc.starts_with("service-") && svc.ends_with("-default/web/tcp/http"));
        assert!(e2.ends_with("-default/web/tcp/http__10.244.1.2/8080"));
        assert_eq!(r.chains.len(), 3);
        assert_eq!(r.chains[0].name, e2);
        assert_eq!(
            texts(&r.chains[0].rules),
            vec![
                "ip saddr 10.244.1.2 jump mark-for-masquerade".to_string(),
                "meta l4proto tcp dnat to 10.244.1.2:8080".to_string(),
            ]
        );
        assert_eq!(r.chains[2].name, svc);
        assert_eq!(
            texts(&r.chains[2].rules),
            vec![
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
                    .to_string(),
                format!("numgen random mod 2 vmap {{ 0 : goto {e2}, 1 : goto {e3} }}"),
            ]
        );
        assert_eq!(
            r.elements,
            vec![Element {
                map: SERVICE_IPS,
                key: DispatchKey::Address {
                    ip: Ipv4Addr::new(10, 96, 0, 10),
                    protocol: Protocol::Tcp,
                    port: 80
                },
                verdict: Verdict::Goto(svc),
            }]
        );
    }

    #[test]
    fn no_endpoints_rejects_every_destination() {
        let mut p = port("default", "web", "", Protocol::Udp);
        p.node_port = Some(30053);
        p.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
        let s = ServiceState {
            port: p,
            endpoints: vec![ep(2, "n1", false, false, false)],
        };
        let r = service_rules(&s, &ctx());
        assert!(r.chains.is_empty());
        let got: Vec<(&str, String, String)> = r
            .elements
            .iter()
            .map(|e| (e.map, e.key.to_string(), e.verdict.to_string()))
            .collect();
        let got: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|(m, k, v)| (*m, k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    NO_ENDPOINT_SERVICES,
                    "10.96.0.10 . udp . 80",
                    "goto reject-chain"
                ),
                (
                    NO_ENDPOINT_SERVICES,
                    "192.0.2.7 . udp . 80",
                    "goto reject-chain"
                ),
                (NO_ENDPOINT_NODEPORTS, "udp . 30053", "goto reject-chain"),
            ]
        );
    }

    #[test]
    fn nodeport_and_affinity() {
        let mut p = port("default", "web", "http", Protocol::Tcp);
        p.node_port = Some(30080);
        p.affinity_timeout = Some(60);
        let s = ServiceState {
            port: p,
            endpoints: vec![ep(2, "n1", true, true, false)],
        };
        let r = service_rules(&s, &ctx());
        let aff = affinity_set(&s.port.name, &s.endpoints[0]);
        let e2 = endpoint_chain(&s.port.name, &s.endpoints[0]);
        let svc = service_chain(&s.port.name);
        let ext = external_chain(&s.port.name);
        assert_eq!(
            r.sets,
            vec![AffinitySet {
                name: aff.clone(),
                timeout_seconds: 60
            }]
        );
        assert_eq!(
            r.chains[0].rules[1].to_string(),
            format!("update @{aff} {{ ip saddr timeout 60s }}")
        );
        assert_eq!(
            r.chains[1].rules[1].to_string(),
            format!("ip saddr @{aff} goto {e2}")
        );
        assert_eq!(r.chains[2].name, ext);
        assert_eq!(
            texts(&r.chains[2].rules),
            vec![
                "jump mark-for-masquerade".to_string(),
                format!("goto {svc}")
            ]
        );
        assert_eq!(r.elements[1].key.to_string(), "tcp . 30080");
        assert_eq!(r.elements[1].verdict, Verdict::Goto(ext));
    }

    #[test]
    fn external_local_without_local_endpoints_drops_external_only() {
        let mut p = port("default", "web", "http", Protocol::Tcp);
        p.node_port = Some(30080);
        p.external_local = true;
        let s = ServiceState {
            port: p,
            endpoints: vec![ep(3, "n2", true, true, false)],
        };
        let r = service_rules(&s, &ctx());
        let ext = r.chains.last().unwrap();
        assert_eq!(ext.name, external_chain(&s.port.name));
        assert_eq!(ext.rules.last().unwrap(), &Rule::Always(Verdict::Drop));
        assert!(
            ext.rules[0]
                .to_string()
                .starts_with("ip saddr 10.244.0.0/16 goto service-")
        );
    }

    #[test]
    fn safe_names() {
        assert!(is_safe_name("my-svc.v1"));
        assert!(!is_safe_name("bad name"));
        assert!(!is_safe_name("x;flush ruleset"));
    }
}
