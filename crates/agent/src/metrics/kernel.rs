//! What the node's nftables tables hold, read over netlink at each scrape: the objects of
//! the service proxy's tables (`kubeproxy_sync_proxy_rules_nftables_objects`) and of the
//! NetworkPolicy table, and the packets and bytes each policy dropped.
//!
//! The policy table's drop rules carry a counter and say whose drop it is: a
//! NetworkPolicy's isolation rule logs `podnet <direction> drop <namespace>/<name>` and is
//! commented with the policy's name (the first, by namespace and name, of the policies that
//! isolate its pods), a ClusterNetworkPolicy's Deny rule logs `podnet <direction> deny
//! <tier>/<name>` and is commented `<name>: <rule>`. The kernel keeps the counters, so they
//! survive an agent restart that adopts the table, and nothing is counted in user space.

use std::collections::BTreeMap;

use podnet_kernel::ruleset::{self, Action, Rule, Table};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Whose drop a rule counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DropOwner {
    /// `NetworkPolicy` or `ClusterNetworkPolicy`.
    pub kind: &'static str,
    /// Empty for a ClusterNetworkPolicy.
    pub namespace: String,
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

fn is_proxy_table(name: &str) -> bool {
    name == podnet_proxy::nftables::TABLE
        || name.starts_with(&format!("{}-", podnet_proxy::nftables::TABLE))
        || name == podnet_proxy::userspace::rules::TABLE
}

/// The owner of a counted drop rule, from its log prefix and comment; `None` for any other
/// rule.
pub fn drop_owner(rule: &Rule) -> Option<(DropOwner, Counts)> {
    let mut counts = None;
    let mut prefix = None;
    for action in &rule.actions {
        match action {
            Action::Counter { packets, bytes } => {
                counts = Some(Counts {
                    packets: *packets,
                    bytes: *bytes,
                })
            }
            Action::Log {
                prefix: Some(p), ..
            } => prefix = Some(p.as_str()),
            _ => {}
        }
    }
    let (counts, prefix) = (counts?, prefix?);
    let mut words = prefix.strip_prefix("podnet ")?.splitn(3, ' ');
    let (direction, verb, named) = (words.next()?, words.next()?, words.next()?);
    if direction != "ingress" && direction != "egress" {
        return None;
    }
    let comment = rule.comment.as_deref().unwrap_or("");
    let owner = match verb {
        "drop" => {
            // The comment has the whole name; the prefix may be cut at 63 characters.
            let full = if comment.contains('/') {
                comment
            } else {
                named
            };
            let (namespace, policy) = full.split_once('/')?;
            DropOwner {
                kind: "NetworkPolicy",
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                direction: direction.to_string(),
            }
        }
        "deny" => {
            let from_prefix = named.split_once('/').map_or(named, |(_, n)| n);
            let policy = comment
                .split_once(": ")
                .map_or(from_prefix, |(name, _)| name);
            DropOwner {
                kind: "ClusterNetworkPolicy",
                namespace: String::new(),
                policy: policy.to_string(),
                direction: direction.to_string(),
            }
        }
        _ => return None,
    };
    Some((owner, counts))
}

/// The drops of every policy in `table`, summed per owner (a policy may own several
/// rules).
pub fn drops(table: &Table) -> BTreeMap<DropOwner, Counts> {
    let mut out: BTreeMap<DropOwner, Counts> = BTreeMap::new();
    for rule in table.chains.iter().flat_map(|c| &c.rules) {
        if let Some((owner, c)) = drop_owner(rule) {
            let e = out.entry(owner).or_default();
            e.packets += c.packets;
            e.bytes += c.bytes;
        }
    }
    out
}

/// A table's chains, rules, named sets and maps, and their elements.
pub fn objects(table: &Table) -> [(&'static str, u64); 4] {
    let rules: usize = table.chains.iter().map(|c| c.rules.len()).sum();
    let elements: usize = table.sets.iter().map(|s| s.elements.len()).sum();
    [
        ("chains", table.chains.len() as u64),
        ("rules", rules as u64),
        ("sets", table.sets.len() as u64),
        ("elements", elements as u64),
    ]
}

/// Reads the tables and encodes their series; whether they could be read.
pub fn encode(encoder: &mut DescriptorEncoder) -> Result<bool, std::fmt::Error> {
    let policy_table = podnet_policy::TABLE;
    let tables = match ruleset::list(None, None, |n| is_proxy_table(n) || n == policy_table) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "metrics: cannot list the nftables tables");
            return Ok(false);
        }
    };
    let (policy, proxy): (Vec<&Table>, Vec<&Table>) =
        tables.iter().partition(|t| t.name == policy_table);
    let gauge_type = ConstGauge::new(0i64).metric_type();
    let mut metric = encoder.encode_descriptor(
        "kubeproxy_sync_proxy_rules_nftables_objects",
        "Objects in the service proxy's nftables tables, by table and kind (chains, rules, sets and maps, their elements).",
        None,
        gauge_type,
    )?;
    for t in &proxy {
        for (kind, n) in objects(t) {
            let labels = [("table", t.name.as_str()), ("kind", kind)];
            ConstGauge::new(n as i64).encode(metric.encode_family(&labels)?)?;
        }
    }
    let mut metric = encoder.encode_descriptor(
        "podnet_policy_nftables_objects",
        "Objects in the NetworkPolicy table, by kind (chains, rules, sets and maps, their elements).",
        None,
        gauge_type,
    )?;
    for t in &policy {
        for (kind, n) in objects(t) {
            ConstGauge::new(n as i64).encode(metric.encode_family(&[("kind", kind)])?)?;
        }
    }
    let all: BTreeMap<DropOwner, Counts> = policy.iter().flat_map(|t| drops(t)).collect();
    encode_drops(encoder, &all)
}

fn encode_drops(
    encoder: &mut DescriptorEncoder,
    drops: &BTreeMap<DropOwner, Counts>,
) -> Result<bool, std::fmt::Error> {
    let counter_type = ConstCounter::new(0u64).metric_type();
    for (name, help, bytes) in [
        (
            "podnet_policy_drops",
            "Packets refused by each NetworkPolicy (its isolation) and ClusterNetworkPolicy (its Deny rules), by direction.",
            false,
        ),
        (
            "podnet_policy_drop_bytes",
            "Bytes of the packets counted by podnet_policy_drops.",
            true,
        ),
    ] {
        let mut metric = encoder.encode_descriptor(name, help, None, counter_type)?;
        for (o, c) in drops {
            let labels = [
                ("kind", o.kind),
                ("namespace", o.namespace.as_str()),
                ("policy", o.policy.as_str()),
                ("direction", o.direction.as_str()),
            ];
            let n = if bytes { c.bytes } else { c.packets };
            ConstCounter::new(n).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use podnet_kernel::nftnl::Verdict;

    use super::*;

    fn drop_rule(prefix: &str, comment: &str, packets: u64) -> Rule {
        Rule::new(
            vec![],
            vec![
                Action::Counter {
                    packets,
                    bytes: packets * 60,
                },
                Action::Log {
                    group: 100,
                    prefix: Some(prefix.into()),
                },
                Action::Verdict(Verdict::Drop),
            ],
        )
        .with_comment(comment)
    }

    #[test]
    fn drops_are_told_by_their_policy() {
        let np = drop_rule("podnet ingress drop x/deny-all", "x/deny-all", 3);
        let (owner, counts) = drop_owner(&np).unwrap();
        assert_eq!(
            owner,
            DropOwner {
                kind: "NetworkPolicy",
                namespace: "x".into(),
                policy: "deny-all".into(),
                direction: "ingress".into(),
            }
        );
        assert_eq!(counts.packets, 3);
        assert_eq!(counts.bytes, 180);
        // A long name is cut in the prefix; the comment has it whole.
        let long = "n".repeat(70);
        let cut: String = format!("podnet egress drop x/{long}")
            .chars()
            .take(63)
            .collect();
        let (owner, _) = drop_owner(&drop_rule(&cut, &format!("x/{long}"), 1)).unwrap();
        assert_eq!(owner.policy, long);
        let cnp = drop_rule("podnet egress deny admin/block-dns", "block-dns: no-dns", 2);
        let (owner, _) = drop_owner(&cnp).unwrap();
        assert_eq!(
            (owner.kind, owner.namespace.as_str(), owner.policy.as_str()),
            ("ClusterNetworkPolicy", "", "block-dns")
        );
        assert_eq!(owner.direction, "egress");
        // A counted rule that is no drop of a policy.
        let other = Rule::new(
            vec![],
            vec![Action::Counter {
                packets: 1,
                bytes: 1,
            }],
        );
        assert!(drop_owner(&other).is_none());
    }

    #[test]
    fn drops_of_one_policy_are_summed() {
        let mut table = Table::new(podnet_kernel::nftnl::Family::Inet, "podnet-policy");
        table.chains.push(ruleset::Chain {
            name: "a".into(),
            hook: None,
            rules: vec![
                drop_rule("podnet ingress drop x/p", "x/p", 2),
                drop_rule("podnet egress deny admin/c", "c: r1", 1),
            ],
        });
        table.chains.push(ruleset::Chain {
            name: "b".into(),
            hook: None,
            rules: vec![
                drop_rule("podnet ingress drop x/p", "x/p", 5),
                drop_rule("podnet egress deny admin/c", "c: r2", 4),
            ],
        });
        let d = drops(&table);
        assert_eq!(d.len(), 2);
        let counts: Vec<u64> = d.values().map(|c| c.packets).collect();
        assert_eq!(counts, vec![5, 7]);
        assert_eq!(objects(&table)[1], ("rules", 4));
    }
}
