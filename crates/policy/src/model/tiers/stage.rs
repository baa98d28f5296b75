//! One tier's stage for one direction: the map of this node's pods the tier's policies
//! select, and the chains of their rules.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use podnet_api::k8s::policy_api::{ACTION_ACCEPT, ACTION_DENY, ClusterNetworkPolicy};
use podnet_kernel::nftnl::Verdict;
use podnet_kernel::ruleset::{
    Action, Chain, DataType, Datum, ElementValue, Key, Match, Rule, Set, SetData, SetElement,
};

use super::{Tier, TierPeer, TierPort, cnp_name, tier_ports};
use crate::model::{Compiler, Direction, comment, hash};

/// The map and chains of `tier` for `dir`; the map is empty when no policy of the tier
/// selects a pod of this node.
pub fn tier_stage(c: &mut Compiler<'_>, tier: Tier, dir: Direction) -> Set {
    let mut policies: Vec<&ClusterNetworkPolicy> = c
        .cluster
        .cluster_policies
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.tier.as_deref()) == Some(tier.api()))
        .filter(|p| has_rules(p, dir))
        .collect();
    policies.sort_by_key(|p| {
        let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        (priority, cnp_name(p))
    });
    let mut by_pod: BTreeMap<Ipv4Addr, Vec<&ClusterNetworkPolicy>> = BTreeMap::new();
    for p in &policies {
        for i in c.subject_pods(p) {
            let pod = c.pod(i);
            if pod.node.as_deref() == Some(c.cfg.node.as_str())
                && let Some(ip) = pod.ip
            {
                by_pod.entry(ip).or_default().push(p);
            }
        }
    }
    let mut map = Set::new(tier.map(dir), vec![DataType::Ipv4Addr]).with_comment(format!(
        "this node's pods under {} ClusterNetworkPolicies for {}",
        tier.api(),
        dir.word()
    ));
    map.value = SetData::Verdict;
    let mut made = BTreeMap::new();
    for (ip, selecting) in by_pod {
        let names: Vec<String> = selecting.iter().map(|p| cnp_name(p)).collect();
        let chain = format!("{}-{}-{}", tier.word(), dir.word(), hash(&names.join(" ")));
        if made.insert(chain.clone(), ()).is_none() {
            let rules = selecting
                .iter()
                .flat_map(|p| policy_rules(c, p, tier, dir))
                .collect();
            c.chains.push(Chain {
                name: chain.clone(),
                hook: None,
                rules,
            });
        }
        map.elements.push(SetElement {
            key: vec![Datum::Ip(ip)],
            // A jump: what the stage leaves undecided comes back to the next stage.
            value: Some(ElementValue::Verdict(Verdict::Jump(chain))),
        });
    }
    map
}

fn has_rules(p: &ClusterNetworkPolicy, dir: Direction) -> bool {
    let Some(spec) = &p.spec else { return false };
    match dir {
        Direction::Ingress => spec.ingress.as_ref().is_some_and(|r| !r.is_empty()),
        Direction::Egress => spec.egress.as_ref().is_some_and(|r| !r.is_empty()),
    }
}

/// A rule's parts, whichever direction: name, action, peers, protocols.
struct TierRule {
    name: String,
    action: String,
    peers: Vec<TierPeer>,
    ports: Vec<TierPort>,
}

fn rules_of(c: &mut Compiler<'_>, p: &ClusterNetworkPolicy, dir: Direction) -> Vec<TierRule> {
    let Some(spec) = p.spec.clone() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match dir {
        Direction::Ingress => {
            for (i, r) in spec.ingress.unwrap_or_default().into_iter().enumerate() {
                let peers = r
                    .from
                    .iter()
                    .flatten()
                    .filter_map(|f| pods_peer(c, f.namespaces.as_ref(), f.pods.as_ref()))
                    .collect();
                out.push(tier_rule(r.name, i, r.action, peers, &r.protocols));
            }
        }
        Direction::Egress => {
            for (i, r) in spec.egress.unwrap_or_default().into_iter().enumerate() {
                let mut peers = Vec::new();
                for t in r.to.iter().flatten() {
                    if let Some(nets) = &t.networks {
                        peers.extend(c.networks_set(nets).map(TierPeer::Networks));
                    } else if t.nodes.is_some() || t.domain_names.is_some() {
                        let what = if t.nodes.is_some() {
                            "nodes"
                        } else {
                            "domainNames"
                        };
                        c.note(format!(
                            "egress rule {i}: {what} peers (experimental upstream) are not enforced by podnet: this peer selects nothing"
                        ));
                    } else {
                        peers.extend(pods_peer(c, t.namespaces.as_ref(), t.pods.as_ref()));
                    }
                }
                out.push(tier_rule(r.name, i, r.action, peers, &r.protocols));
            }
        }
    }
    out
}

fn tier_rule(
    name: Option<String>,
    index: usize,
    action: Option<String>,
    peers: Vec<TierPeer>,
    protocols: &Option<Vec<podnet_api::k8s::policy_api::ClusterNetworkPolicyProtocol>>,
) -> TierRule {
    TierRule {
        name: name.unwrap_or_else(|| format!("rule {index}")),
        action: action.unwrap_or_default(),
        peers,
        ports: tier_ports(protocols.as_ref()),
    }
}

fn pods_peer(
    c: &mut Compiler<'_>,
    namespaces: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    pods: Option<&podnet_api::k8s::policy_api::NamespacedPod>,
) -> Option<TierPeer> {
    let (key, found) = c.tier_pods(namespaces, pods);
    if key.is_empty() {
        return None;
    }
    let set = c.address_set(&key, &found);
    Some(TierPeer::Pods(set, found))
}

/// The nft rules of one policy, in its rules' order: each peer × protocol with the rule's
/// verdict.
fn policy_rules(
    c: &mut Compiler<'_>,
    p: &ClusterNetworkPolicy,
    tier: Tier,
    dir: Direction,
) -> Vec<Rule> {
    let name = cnp_name(p);
    c.current = Some(("ClusterNetworkPolicy", String::new(), name.clone()));
    let subject = c.subject_pods(p);
    let mut out = Vec::new();
    for rule in rules_of(c, p, dir) {
        let verdict = verdict_of(c, &rule, &name, tier, dir);
        for peer in &rule.peers {
            for port in &rule.ports {
                let tag = format!("{name} {} {}", dir.word(), rule.name);
                if let Some(matches) = matches_of(c, dir, peer, port, &subject, &tag) {
                    out.push(
                        Rule::new(matches, verdict.clone())
                            .with_comment(comment(&format!("{name}: {}", rule.name))),
                    );
                }
            }
        }
    }
    out
}

fn verdict_of(
    c: &Compiler<'_>,
    rule: &TierRule,
    name: &str,
    tier: Tier,
    dir: Direction,
) -> Vec<Action> {
    match rule.action.as_str() {
        ACTION_ACCEPT => vec![Action::Verdict(Verdict::Accept)],
        ACTION_DENY => {
            let prefix: String = format!("podnet {} deny {}/{name}", dir.word(), tier.word())
                .chars()
                .take(63)
                .collect();
            vec![
                Action::Counter {
                    packets: 0,
                    bytes: 0,
                },
                Action::Log {
                    group: c.cfg.log_group,
                    prefix: Some(prefix),
                },
                Action::Verdict(Verdict::Drop),
            ]
        }
        // Pass: the rest of this tier is skipped; the next stage decides.
        _ => vec![Action::Verdict(Verdict::Return)],
    }
}

fn matches_of(
    c: &mut Compiler<'_>,
    dir: Direction,
    peer: &TierPeer,
    port: &TierPort,
    subject: &[usize],
    tag: &str,
) -> Option<Vec<Match>> {
    let (_, peer_addr) = dir_addrs(dir);
    let mut matches = Vec::new();
    match (peer, port) {
        (TierPeer::Pods(_, pods), TierPort::Named(name)) if dir == Direction::Egress => {
            let set = named_set(c, pods, name, tag)?;
            return Some(vec![named(set)]);
        }
        (TierPeer::Networks(_), TierPort::Named(_)) => return None,
        (TierPeer::Pods(set, _) | TierPeer::Networks(set), _) => matches.push(Match::IpInSet {
            addr: peer_addr,
            set: set.clone(),
            equal: true,
        }),
    }
    match port {
        TierPort::Any => {}
        TierPort::Proto(p) => matches.push(Match::L4Proto(*p)),
        TierPort::Range { proto, first, last } => matches.push(Match::Port {
            proto: Some(*proto),
            dport: true,
            first: *first,
            last: *last,
        }),
        TierPort::Named(name) => {
            let set = named_set(c, subject, name, tag)?;
            matches.push(named(set));
        }
    }
    Some(matches)
}

fn dir_addrs(dir: Direction) -> (podnet_kernel::ruleset::Addr, podnet_kernel::ruleset::Addr) {
    use podnet_kernel::ruleset::Addr;
    match dir {
        Direction::Ingress => (Addr::Daddr, Addr::Saddr),
        Direction::Egress => (Addr::Saddr, Addr::Daddr),
    }
}

fn named(set: String) -> Match {
    Match::InSet {
        keys: vec![Key::IpDaddr, Key::L4Proto, Key::ThDport],
        set,
        equal: true,
    }
}

/// `pod . protocol . port` of every container port called `name` of `pods` (whatever its
/// protocol: a named port carries its own).
fn named_set(c: &mut Compiler<'_>, pods: &[usize], name: &str, tag: &str) -> Option<String> {
    let mut elements: Vec<SetElement> = pods
        .iter()
        .flat_map(|i| {
            let pod = c.pod(*i);
            pod.ports
                .iter()
                .filter(|p| p.name == name)
                .filter_map(|p| {
                    Some(SetElement {
                        key: vec![
                            Datum::Ip(pod.ip?),
                            Datum::Proto(p.protocol),
                            Datum::Port(p.port),
                        ],
                        value: None,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if elements.is_empty() {
        return None;
    }
    elements.sort();
    elements.dedup();
    let key = format!("named port {name} of {tag}");
    let set_name = format!("ports-{}", hash(&key));
    let mut set = Set::new(
        set_name.clone(),
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    )
    .with_comment(comment(&key));
    set.elements = elements;
    c.sets.insert(set_name.clone(), set);
    Some(set_name)
}
