//! ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`): the admin tiers around
//! NetworkPolicy. For each direction the hook chain takes three stages in turn:
//!
//! 1. **Admin**: the Admin-tier policies selecting the pod, lowest priority first (then by
//!    name), their rules in order, inlined into one chain per set of such policies
//!    (`admin-ingress-<hash>`, reached by `jump` from the map `admin-ingress-pods`). The first
//!    rule that matches decides: `Accept` accepts (NetworkPolicy is not consulted), `Deny`
//!    drops (counted, logged), `Pass` returns, which skips the remaining Admin rules.
//! 2. **NetworkPolicy**, as [`super`] compiles it: a pod it isolates is decided there.
//! 3. **Baseline**: for a pod no NetworkPolicy isolates, the Baseline-tier policies the same
//!    way (`baseline-ingress-<hash>`); no match: allowed.
//!
//! A stage chain is jumped to, so when nothing in it decided (or a `Pass` returned) the hook
//! chain goes on with its next rule: the next stage. (NetworkPolicy's chains are reached by
//! `goto`: they always decide, ending in a drop.)

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use podnet_api::k8s::policy_api::{
    ClusterNetworkPolicy, ClusterNetworkPolicyProtocol, NamespacedPod, TIER_ADMIN, TIER_BASELINE,
};
use podnet_kernel::ruleset::{DataType, Set, SetElement, ip_interval, ip_ranges};

use super::{Compiler, Direction, comment, hash};
use crate::selector;

/// The two tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Admin,
    Baseline,
}

impl Tier {
    fn word(self) -> &'static str {
        match self {
            Tier::Admin => "admin",
            Tier::Baseline => "baseline",
        }
    }

    fn api(self) -> &'static str {
        match self {
            Tier::Admin => TIER_ADMIN,
            Tier::Baseline => TIER_BASELINE,
        }
    }

    /// The map of a tier's stage for `dir`.
    pub fn map(self, dir: Direction) -> String {
        format!("{}-{}-pods", self.word(), dir.word())
    }
}

/// A rule's peer: the pods of some namespaces, or address ranges.
enum TierPeer {
    Pods(String, Vec<usize>),
    Networks(String),
}

/// A protocol match of a rule.
enum TierPort {
    Any,
    Range { proto: u8, first: u16, last: u16 },
    Proto(u8),
    Named(String),
}

fn cnp_name(p: &ClusterNetworkPolicy) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

impl Compiler<'_> {
    /// The pods a subject or peer `pods` / `namespaces` selects, and a key naming them.
    fn tier_pods(
        &self,
        namespaces: Option<&LabelSelector>,
        pods: Option<&NamespacedPod>,
    ) -> (String, Vec<usize>) {
        let all = LabelSelector::default();
        let (ns_sel, pod_sel) = match (namespaces, pods) {
            (Some(ns), _) => (ns, &all),
            (None, Some(p)) => (
                p.namespace_selector.as_ref().unwrap_or(&all),
                p.pod_selector.as_ref().unwrap_or(&all),
            ),
            (None, None) => return (String::new(), Vec::new()),
        };
        let key = format!(
            "pods {} in namespaces {}",
            selector::canonical(pod_sel),
            selector::canonical(ns_sel)
        );
        let found = self
            .cluster
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                self.cluster
                    .namespaces
                    .get(&p.namespace)
                    .is_some_and(|l| selector::matches(ns_sel, l))
                    && selector::matches(pod_sel, &p.labels)
            })
            .map(|(i, _)| i)
            .collect();
        (key, found)
    }

    fn subject_pods(&self, p: &ClusterNetworkPolicy) -> Vec<usize> {
        let Some(subject) = p.spec.as_ref().and_then(|s| s.subject.as_ref()) else {
            return Vec::new();
        };
        self.tier_pods(subject.namespaces.as_ref(), subject.pods.as_ref())
            .1
    }

    fn networks_set(&mut self, cidrs: &[String]) -> Option<String> {
        let nets: Vec<Ipv4Net> = cidrs.iter().filter_map(|c| c.parse().ok()).collect();
        for other in cidrs.iter().filter(|c| c.parse::<Ipv4Net>().is_err()) {
            self.note(format!(
                "network {other} is not IPv4: podnet enforces IPv4 only, so it matches nothing"
            ));
        }
        if nets.is_empty() {
            return None;
        }
        let key = format!("networks {nets:?}");
        let name = format!("block-{}", hash(&key));
        if !self.sets.contains_key(&name) {
            let mut set =
                Set::new(name.clone(), vec![DataType::Ipv4Addr]).with_comment(comment(&key));
            set.interval = true;
            set.elements = ip_ranges(&nets, &[])
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
}

fn tier_ports(protocols: Option<&Vec<ClusterNetworkPolicyProtocol>>) -> Vec<TierPort> {
    let Some(list) = protocols.filter(|l| !l.is_empty()) else {
        return vec![TierPort::Any];
    };
    list.iter()
        .filter_map(|p| {
            if let Some(name) = &p.destination_named_port {
                return Some(TierPort::Named(name.clone()));
            }
            let (proto, port) = [(6u8, &p.tcp), (17, &p.udp), (132, &p.sctp)]
                .into_iter()
                .find_map(|(n, x)| x.as_ref().map(|x| (n, x)))?;
            let Some(dest) = &port.destination_port else {
                return Some(TierPort::Proto(proto));
            };
            let (first, last) = match (&dest.number, &dest.range) {
                (Some(n), _) => (*n, *n),
                (None, Some(r)) => (r.start?, r.end?),
                (None, None) => return Some(TierPort::Proto(proto)),
            };
            Some(TierPort::Range {
                proto,
                first: u16::try_from(first).ok()?,
                last: u16::try_from(last).ok()?,
            })
        })
        .collect()
}

mod stage;
pub use stage::tier_stage;
