//! The desired table of one node, computed from the cluster (pure: no kernel, no API).
//!
//! Layout of `inet podnet-policy`:
//! - base chains `egress-forward` (forward, priority filter - 1), `ingress-forward`
//!   (forward, priority filter) and `egress-input` (input): replies of allowed
//!   connections pass (`ct state established,related`), and a pod reaching itself through
//!   its Service (`loopback`); then the isolated pods' verdict map sends the packet to the
//!   chain of the policies that select that pod;
//! - maps `ingress-pods`, `egress-pods`: a local isolated pod's address → `goto` the
//!   chain of its set of policies (`ingress-<hash>`, `egress-<hash>`: pods selected by the
//!   same policies share it), which jumps to each policy's chain and, if none accepted,
//!   counts, logs (NFLOG) and drops;
//! - one chain per policy and direction (`in-<ns>/<name>`, `out-<ns>/<name>`): one
//!   `accept` rule per peer × port of each of its rules;
//! - sets shared by every policy that uses them: the pods a peer selects
//!   (`pods-<hash>`, Antrea's address groups), an ipBlock's ranges (`block-<hash>`),
//!   the pods and ports a named port resolves to (`ports-<hash>`). Rules do not grow with
//!   the pods a policy selects, only sets do.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_kernel::nftnl::{BaseChain, ChainKind, Family, Hook, Verdict};
use podnet_kernel::ruleset::{
    Action, Addr, Chain, DataType, Datum, Key, Match, Rule, Set, SetElement, Table, ct_state,
    ip_interval, ip_ranges,
};

use crate::cluster::{Cluster, PodInfo, protocol_number};
use crate::selector;

/// podnet's policy table (family inet, so IPv6 can follow in the same table).
pub const TABLE: &str = "podnet-policy";

/// What the model needs to know of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub node: String,
    /// The NFLOG group refused packets are logged to.
    pub log_group: u16,
}

/// Ingress (to the selected pods) or egress (from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    fn chain_prefix(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        }
    }

    /// The address of the local pod the direction is about, and of its peer.
    fn addrs(self) -> (Addr, Addr) {
        match self {
            Direction::Ingress => (Addr::Daddr, Addr::Saddr),
            Direction::Egress => (Addr::Saddr, Addr::Daddr),
        }
    }
}

/// `namespace/name` of a policy.
pub fn policy_name(p: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Whether a policy isolates its pods for `dir`: `policyTypes` when given, else ingress
/// always and egress when it has egress rules.
pub fn isolates(p: &NetworkPolicy, dir: Direction) -> bool {
    let Some(spec) = &p.spec else {
        return dir == Direction::Ingress;
    };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == word_title(dir)),
        None => match dir {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.is_some(),
        },
    }
}

fn word_title(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

/// Something of a policy the table cannot express: said on an Event of the policy, and
/// that part allows (or denies) nothing; the rest of it, and every other policy, holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    /// `NetworkPolicy` or `ClusterNetworkPolicy`.
    pub kind: &'static str,
    /// Empty for a cluster-scoped policy.
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// The desired table (`None` when there is no policy at all: podnet then keeps no table)
/// and what could not be expressed.
pub fn compile(cluster: &Cluster, cfg: &PolicyConfig) -> (Option<Table>, Vec<Note>) {
    let mut notes = Vec::new();
    let table = build(cluster, cfg, &mut notes);
    notes.sort();
    notes.dedup();
    (table, notes)
}

/// The desired table alone (see [`compile`]).
pub fn desired(cluster: &Cluster, cfg: &PolicyConfig) -> Option<Table> {
    compile(cluster, cfg).0
}

fn build(cluster: &Cluster, cfg: &PolicyConfig, notes: &mut Vec<Note>) -> Option<Table> {
    if cluster.policies.is_empty() && cluster.cluster_policies.is_empty() {
        return None;
    }
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in cluster.pods.iter().enumerate() {
        by_namespace
            .entry(p.namespace.as_str())
            .or_default()
            .push(i);
    }
    let mut c = Compiler {
        cluster,
        cfg,
        by_namespace,
        peers: BTreeMap::new(),
        sets: BTreeMap::new(),
        chains: Vec::new(),
        notes,
        current: None,
    };
    let mut policies: Vec<&NetworkPolicy> = cluster.policies.iter().collect();
    policies.sort_by_cached_key(|p| policy_name(p));
    for p in &policies {
        let (ns, name) = policy_name(p)
            .split_once('/')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap_or_default();
        c.current = Some(("NetworkPolicy", ns, name));
        for dir in [Direction::Ingress, Direction::Egress] {
            if isolates(p, dir) {
                c.policy_chain(p, dir);
            }
        }
    }
    let ingress = c.isolation(&policies, Direction::Ingress);
    let egress = c.isolation(&policies, Direction::Egress);
    c.current = None;
    let mut tier_maps = Vec::new();
    for tier in [Tier::Admin, Tier::Baseline] {
        for dir in [Direction::Ingress, Direction::Egress] {
            tier_maps.push(tiers::tier_stage(&mut c, tier, dir));
        }
    }
    let loopback = loopback_set(cluster, cfg);
    let mut table = Table::new(Family::Inet, TABLE);
    table.comment = Some("podnet NetworkPolicy; rewritten by podnet, do not edit".into());
    table.sets = vec![ingress, egress, loopback];
    table.sets.extend(tier_maps);
    table.sets.extend(c.sets.into_values());
    table.chains = base_chains();
    table.chains.extend(c.chains);
    Some(table.canonical())
}

/// `pod . itself` for this node's pods: a pod reaching itself (through its own Service,
/// hairpinned back by the bridge) is not policed, as its loopback traffic never is.
fn loopback_set(cluster: &Cluster, cfg: &PolicyConfig) -> Set {
    let mut set = Set::new(LOOPBACK, vec![DataType::Ipv4Addr, DataType::Ipv4Addr])
        .with_comment("this node's pods reaching themselves: not policed");
    let mut ips: Vec<Ipv4Addr> = cluster
        .pods
        .iter()
        .filter(|p| p.node.as_deref() == Some(cfg.node.as_str()))
        .filter_map(|p| p.ip)
        .collect();
    ips.sort();
    ips.dedup();
    set.elements = ips
        .into_iter()
        .map(|ip| SetElement {
            key: vec![Datum::Ip(ip), Datum::Ip(ip)],
            value: None,
        })
        .collect();
    set
}

const LOOPBACK: &str = "loopback";

fn itself() -> Rule {
    Rule::new(
        vec![Match::InSet {
            keys: vec![Key::IpSaddr, Key::IpDaddr],
            set: LOOPBACK.into(),
            equal: true,
        }],
        vec![Action::Verdict(Verdict::Accept)],
    )
}

fn base(hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind: ChainKind::Filter,
        hook,
        priority,
        accept: true,
    })
}

fn replies() -> Rule {
    Rule::new(
        vec![Match::CtState(ct_state::ESTABLISHED | ct_state::RELATED)],
        vec![Action::Verdict(Verdict::Accept)],
    )
}

/// The three stages of `dir`: Admin ClusterNetworkPolicies, NetworkPolicies, Baseline
/// ClusterNetworkPolicies (a tier's chain is jumped to, so what it leaves undecided goes on
/// to the next stage).
fn stages(dir: Direction) -> Vec<Rule> {
    let (local, _) = dir.addrs();
    let key = match local {
        Addr::Saddr => Key::IpSaddr,
        Addr::Daddr => Key::IpDaddr,
    };
    let vmap = |map: String| {
        Rule::new(
            vec![],
            vec![Action::Vmap {
                keys: vec![key],
                map,
            }],
        )
    };
    vec![
        vmap(Tier::Admin.map(dir)),
        vmap(format!("{}-pods", dir.word())),
        vmap(Tier::Baseline.map(dir)),
    ]
}

/// The hooks: egress before ingress in forward (both must accept), and egress to the node
/// itself in input. A connection the service proxy redirected to itself (the userspace
/// mode) is the proxy's, whose own connection to the pod is then what policies see.
fn base_chains() -> Vec<Chain> {
    let chain = |name: &str, hook, rules| Chain {
        name: name.to_string(),
        hook,
        rules,
    };
    let redirected = Rule::new(
        vec![Match::CtStatus(podnet_kernel::ruleset::CT_STATUS_DNAT)],
        vec![Action::Verdict(Verdict::Accept)],
    );
    vec![
        chain(
            "egress-forward",
            base(Hook::Forward, -1),
            [vec![replies(), itself()], stages(Direction::Egress)].concat(),
        ),
        chain(
            "ingress-forward",
            base(Hook::Forward, 0),
            [vec![replies(), itself()], stages(Direction::Ingress)].concat(),
        ),
        chain(
            "egress-input",
            base(Hook::Input, 0),
            [vec![replies(), redirected], stages(Direction::Egress)].concat(),
        ),
    ]
}

/// A peer of a rule, compiled.
enum Peer {
    Any,
    /// The pods it selects, in the named set.
    Pods {
        set: String,
        pods: Vec<usize>,
    },
    /// An ipBlock's ranges, in the named set.
    Block {
        set: String,
    },
}

/// A port entry of a rule.
enum Port {
    Any,
    Proto(u8),
    Range { proto: u8, first: u16, last: u16 },
    Named { proto: u8, name: String },
}

struct Compiler<'a> {
    cluster: &'a Cluster,
    cfg: &'a PolicyConfig,
    /// The cluster's pods by namespace (indices, in the cluster's order): a selector is
    /// tested only against the pods of the namespaces it is about.
    by_namespace: BTreeMap<&'a str, Vec<usize>>,
    /// The pods of each peer already resolved, by its key: a peer many policies share (a
    /// namespace selector) is resolved once.
    peers: BTreeMap<String, Vec<usize>>,
    sets: BTreeMap<String, Set>,
    chains: Vec<Chain>,
    notes: &'a mut Vec<Note>,
    /// The policy being compiled (kind, namespace, name), for notes.
    current: Option<(&'static str, String, String)>,
}

/// A short, stable name part for `key`.
fn hash(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// A comment nft can store (its user data holds at most 255 bytes).
fn comment(text: &str) -> String {
    let mut t: String = text.chars().take(120).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    t
}

fn ip_element(ip: Ipv4Addr) -> SetElement {
    SetElement {
        key: vec![Datum::Ip(ip)],
        value: None,
    }
}

impl Compiler<'_> {
    fn pods_in(&self, namespace: &str, selector: &LabelSelector) -> Vec<usize> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .copied()
            .filter(|i| selector::matches(selector, &self.cluster.pods[*i].labels))
            .collect()
    }

    fn pod(&self, i: usize) -> &PodInfo {
        &self.cluster.pods[i]
    }

    /// The pods a peer's selectors pick: `podSelector` alone in the policy's namespace,
    /// with `namespaceSelector` in the namespaces it picks.
    fn peer_pods(&self, ns: &str, peer: &NetworkPolicyPeer) -> Vec<usize> {
        let all = LabelSelector::default();
        let pods = peer.pod_selector.as_ref().unwrap_or(&all);
        let Some(ns_selector) = &peer.namespace_selector else {
            return self.pods_in(ns, pods);
        };
        self.cluster
            .namespaces
            .iter()
            .filter(|(_, labels)| selector::matches(ns_selector, labels))
            .flat_map(|(name, _)| self.pods_in(name, pods))
            .collect()
    }

    /// The set of the pods' addresses for `key`, made once and shared.
    fn address_set(&mut self, key: &str, pods: &[usize]) -> String {
        let name = format!("pods-{}", hash(key));
        if !self.sets.contains_key(&name) {
            let mut set =
                Set::new(name.clone(), vec![DataType::Ipv4Addr]).with_comment(comment(key));
            let mut ips: Vec<Ipv4Addr> = pods.iter().filter_map(|i| self.pod(*i).ip).collect();
            ips.sort();
            ips.dedup();
            set.elements = ips.into_iter().map(ip_element).collect();
            self.sets.insert(name.clone(), set);
        }
        name
    }

    /// Notes that the policy being compiled has a part the table cannot express.
    fn note(&mut self, message: String) {
        if let Some((kind, namespace, name)) = self.current.clone() {
            self.notes.push(Note {
                kind,
                namespace,
                name,
                message,
            });
        }
    }

    fn block_set(&mut self, block: &IPBlock) -> Option<String> {
        let Ok(cidr) = block.cidr.parse::<Ipv4Net>() else {
            self.note(format!(
                "ipBlock {} is not IPv4: podnet enforces IPv4 only, so this peer allows nothing",
                block.cidr
            ));
            return None;
        };
        let except: Vec<Ipv4Net> = block
            .except
            .iter()
            .flatten()
            .filter_map(|e| e.parse().ok())
            .collect();
        let key = format!("ipBlock {} except {except:?}", cidr.trunc());
        let name = format!("block-{}", hash(&key));
        if !self.sets.contains_key(&name) {
            let mut set =
                Set::new(name.clone(), vec![DataType::Ipv4Addr]).with_comment(comment(&key));
            set.interval = true;
            set.elements = ip_ranges(&[cidr.trunc()], &except)
                .into_iter()
                .map(|(a, b)| SetElement {
                    key: vec![ip_interval(a, b)],
                    value: None,
                })
                .collect();
            self.sets.insert(name.clone(), set);
        }
        Some(name)
    }

    fn peers(&mut self, ns: &str, peers: Option<&Vec<NetworkPolicyPeer>>) -> Vec<Peer> {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return vec![Peer::Any];
        };
        let mut out = Vec::new();
        for peer in peers {
            if let Some(block) = &peer.ip_block {
                // A CIDR the API refused cannot be here; one that is not IPv4 is skipped.
                if let Some(set) = self.block_set(block) {
                    out.push(Peer::Block { set });
                }
                continue;
            }
            let key = peer_key(ns, peer);
            let pods = match self.peers.get(&key) {
                Some(pods) => pods.clone(),
                None => {
                    let pods = self.peer_pods(ns, peer);
                    self.peers.insert(key.clone(), pods.clone());
                    pods
                }
            };
            let set = self.address_set(&key, &pods);
            out.push(Peer::Pods { set, pods });
        }
        out
    }
}

/// What a peer's pods are known by (its address set's name comes from it): the selectors,
/// and the policy's namespace when no namespace selector says where.
fn peer_key(ns: &str, peer: &NetworkPolicyPeer) -> String {
    let all = LabelSelector::default();
    let pods = peer.pod_selector.as_ref().unwrap_or(&all);
    match &peer.namespace_selector {
        None => format!("pods {} in namespace {ns}", selector::canonical(pods)),
        Some(ns_selector) => format!(
            "pods {} in namespaces {}",
            selector::canonical(pods),
            selector::canonical(ns_selector)
        ),
    }
}

fn ports(ports: Option<&Vec<NetworkPolicyPort>>) -> Vec<Port> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![Port::Any];
    };
    ports
        .iter()
        .filter_map(|p| {
            let proto = protocol_number(p.protocol.as_deref())?;
            Some(match &p.port {
                None => Port::Proto(proto),
                Some(IntOrString::Int(n)) => {
                    let first = u16::try_from(*n).ok()?;
                    let last = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .unwrap_or(first);
                    Port::Range { proto, first, last }
                }
                Some(IntOrString::String(name)) => Port::Named {
                    proto,
                    name: name.clone(),
                },
            })
        })
        .collect()
}

mod rules;
mod tiers;

use tiers::Tier;
