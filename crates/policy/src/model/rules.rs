//! The chains of the model: one per policy and direction (its allow rules), one per set of
//! policies isolating some pods (jumps, then the logged drop), and the isolation maps.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use podnet_kernel::nftnl::Verdict;
use podnet_kernel::ruleset::{
    Action, Chain, DataType, Datum, ElementValue, Key, Match, Rule, Set, SetData, SetElement,
};

use super::{Compiler, Direction, Peer, Port, comment, hash, isolates, policy_name, ports};

fn accept() -> Vec<Action> {
    vec![Action::Verdict(Verdict::Accept)]
}

/// The chain holding a policy's rules for `dir`.
pub(super) fn policy_chain_name(p: &NetworkPolicy, dir: Direction) -> String {
    format!("{}-{}", dir.chain_prefix(), policy_name(p))
}

impl Compiler<'_> {
    /// The policy's chain for `dir`: an accept per peer × port of each rule (none: the
    /// policy allows nothing that way).
    pub(super) fn policy_chain(&mut self, p: &NetworkPolicy, dir: Direction) {
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let none = NetworkPolicySpec::default();
        let spec = p.spec.as_ref().unwrap_or(&none);
        let all = LabelSelector::default();
        let targets = self.pods_in(ns, spec.pod_selector.as_ref().unwrap_or(&all));
        type Section<'s> = (
            Option<&'s Vec<NetworkPolicyPeer>>,
            Option<&'s Vec<NetworkPolicyPort>>,
        );
        let sections: Vec<Section<'_>> = match dir {
            Direction::Ingress => spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect(),
            Direction::Egress => spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect(),
        };
        let mut rules = Vec::new();
        for (i, (peers, port_list)) in sections.iter().enumerate() {
            let peers = self.peers(ns, *peers);
            for peer in &peers {
                for port in ports(*port_list) {
                    let tag = format!("{} {} rule {i}", policy_name(p), dir.word());
                    if let Some(rule) = self.allow(dir, peer, &port, &targets, &tag) {
                        rules.push(rule);
                    }
                }
            }
        }
        self.chains.push(Chain {
            name: policy_chain_name(p, dir),
            hook: None,
            rules,
        });
    }

    /// The accept rule of one peer and port; `None` when it can match nothing (a named
    /// port no pod has).
    fn allow(
        &mut self,
        dir: Direction,
        peer: &Peer,
        port: &Port,
        targets: &[usize],
        tag: &str,
    ) -> Option<Rule> {
        let (_, peer_addr) = dir.addrs();
        let mut matches = Vec::new();
        let peer_match = |set: &String| Match::IpInSet {
            addr: peer_addr,
            set: set.clone(),
            equal: true,
        };
        match (peer, port) {
            // Egress to a named port: resolved on the destination pods themselves.
            (Peer::Pods { pods, set }, Port::Named { proto, name }) if dir == Direction::Egress => {
                let set = self.named_port_set(pods, *proto, name, &format!("{tag} to {set}"))?;
                matches.push(named(set));
                return Some(Rule::new(matches, accept()));
            }
            (Peer::Any, Port::Named { proto, name }) if dir == Direction::Egress => {
                let all: Vec<usize> = (0..self.cluster.pods.len()).collect();
                let set = self.named_port_set(&all, *proto, name, tag)?;
                return Some(Rule::new(vec![named(set)], accept()));
            }
            // An address range has no named ports.
            (Peer::Block { .. }, Port::Named { .. }) if dir == Direction::Egress => return None,
            (Peer::Pods { set, .. } | Peer::Block { set }, _) => matches.push(peer_match(set)),
            (Peer::Any, _) => {}
        }
        match port {
            Port::Any => {}
            Port::Proto(p) => matches.push(Match::L4Proto(*p)),
            Port::Range { proto, first, last } => matches.push(Match::Port {
                proto: Some(*proto),
                dport: true,
                first: *first,
                last: *last,
            }),
            // Ingress to a named port: resolved on the selected (destination) pods.
            Port::Named { proto, name } => {
                let set = self.named_port_set(targets, *proto, name, tag)?;
                matches.push(named(set));
            }
        }
        Some(Rule::new(matches, accept()))
    }

    /// The set of `pod address . protocol . port` for the pods naming a port `name`.
    fn named_port_set(
        &mut self,
        pods: &[usize],
        proto: u8,
        name: &str,
        tag: &str,
    ) -> Option<String> {
        let mut elements: Vec<SetElement> = pods
            .iter()
            .filter_map(|i| {
                let pod = self.pod(*i);
                let port = pod.named_port(name, proto)?;
                Some(SetElement {
                    key: vec![Datum::Ip(pod.ip?), Datum::Proto(proto), Datum::Port(port)],
                    value: None,
                })
            })
            .collect();
        if elements.is_empty() {
            return None;
        }
        elements.sort_by(|a, b| a.key.cmp(&b.key));
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
        self.sets.insert(set_name.clone(), set);
        Some(set_name)
    }

    /// The isolation map of `dir` (this node's isolated pods → the chain of the policies
    /// selecting each), and those chains.
    pub(super) fn isolation(&mut self, policies: &[&NetworkPolicy], dir: Direction) -> Set {
        let mut by_pod: BTreeMap<std::net::Ipv4Addr, Vec<&NetworkPolicy>> = BTreeMap::new();
        for p in policies.iter().filter(|p| isolates(p, dir)) {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            let all = LabelSelector::default();
            let selector = p.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
            for i in self.pods_in(ns, selector.unwrap_or(&all)) {
                let pod = self.pod(i);
                if pod.node.as_deref() == Some(self.cfg.node.as_str())
                    && let Some(ip) = pod.ip
                {
                    by_pod.entry(ip).or_default().push(p);
                }
            }
        }
        let mut map = Set::new(format!("{}-pods", dir.word()), vec![DataType::Ipv4Addr])
            .with_comment(format!(
                "this node's pods isolated for {}: the chain of their policies",
                dir.word()
            ));
        map.value = SetData::Verdict;
        let mut made: BTreeMap<String, ()> = BTreeMap::new();
        for (ip, selecting) in by_pod {
            let names: Vec<String> = selecting.iter().map(|p| policy_name(p)).collect();
            let chain = format!("{}-{}", dir.word(), hash(&names.join(" ")));
            if made.insert(chain.clone(), ()).is_none() {
                self.chains
                    .push(self.isolation_chain(&chain, &selecting, dir));
            }
            map.elements.push(SetElement {
                key: vec![Datum::Ip(ip)],
                value: Some(ElementValue::Verdict(Verdict::Goto(chain))),
            });
        }
        map
    }

    /// Jumps to each policy's chain (an accept there lets the packet through); what none
    /// accepted is counted, logged with the first policy's name and dropped.
    fn isolation_chain(&self, name: &str, policies: &[&NetworkPolicy], dir: Direction) -> Chain {
        let mut rules: Vec<Rule> = policies
            .iter()
            .map(|p| {
                Rule::new(
                    vec![],
                    vec![Action::Verdict(Verdict::Jump(policy_chain_name(p, dir)))],
                )
            })
            .collect();
        let first = policies.first().map(|p| policy_name(p)).unwrap_or_default();
        let prefix: String = format!("podnet {} drop {first}", dir.word())
            .chars()
            .take(63)
            .collect();
        rules.push(
            Rule::new(
                vec![],
                vec![
                    Action::Counter {
                        packets: 0,
                        bytes: 0,
                    },
                    Action::Log {
                        group: self.cfg.log_group,
                        prefix: Some(prefix),
                    },
                    Action::Verdict(Verdict::Drop),
                ],
            )
            .with_comment(first),
        );
        Chain {
            name: name.to_string(),
            hook: None,
            rules,
        }
    }
}

fn named(set: String) -> Match {
    Match::InSet {
        keys: vec![Key::IpDaddr, Key::L4Proto, Key::ThDport],
        set,
        equal: true,
    }
}
