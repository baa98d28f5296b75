//! Masquerade for pod traffic leaving the cluster range, flannel's rules in podnet's own
//! nftables table `ip podnet-masq`:
//!
//! - pod to pod (source and destination in the cluster CIDR) keeps its addresses;
//! - pod to anywhere else but multicast is masqueraded to the node's address
//!   (`fully-random`, so that many pods' flows do not collide on source ports);
//! - anything from outside the cluster CIDR to this node's own pod subnet is left alone;
//! - anything else from outside the cluster CIDR to a pod elsewhere is masqueraded, so the
//!   answer comes back through this node (flannel's fourth rule).
//!
//! Written over netlink (no `nft` program): the table is read back first, and only when it
//! differs from what it should be is it replaced whole in one transaction, so a hand edit
//! is repaired and a pass never leaves half a ruleset.

use ipnet::Ipv4Net;
use podnet_kernel::NetNs;
use podnet_kernel::nftnl::{self, BaseChain, ChainKind, Family, Hook, Verdict};
use podnet_kernel::ruleset::{self, Action, Addr, Chain, Match, Rule, Table};

use crate::OverlayError;

/// nftables family of podnet's masquerade table.
pub const FAMILY: Family = Family::Ip;
/// podnet's masquerade table.
pub const TABLE: &str = "podnet-masq";

/// The table's comment: whose it is.
const COMMENT: &str =
    "podnet: masquerade of pod traffic leaving the cluster; rewritten by podnet, do not edit";

fn ip(addr: Addr, net: Ipv4Net, equal: bool) -> Match {
    Match::Ip { addr, net, equal }
}

/// The rules of the table's postrouting chain.
pub fn rules(cluster_cidr: Ipv4Net, node_subnet: Ipv4Net) -> Vec<Rule> {
    let net = cluster_cidr.trunc();
    let own = node_subnet.trunc();
    let multicast: Ipv4Net = Ipv4Net::new([224, 0, 0, 0].into(), 4).unwrap_or_default();
    let masquerade = || vec![Action::Masquerade { fully_random: true }];
    let ret = || vec![Action::Verdict(Verdict::Return)];
    vec![
        Rule::new(
            vec![ip(Addr::Saddr, net, true), ip(Addr::Daddr, net, true)],
            ret(),
        ),
        Rule::new(
            vec![
                ip(Addr::Saddr, net, true),
                ip(Addr::Daddr, multicast, false),
            ],
            masquerade(),
        ),
        Rule::new(
            vec![ip(Addr::Saddr, net, false), ip(Addr::Daddr, own, true)],
            ret(),
        ),
        Rule::new(
            vec![ip(Addr::Saddr, net, false), ip(Addr::Daddr, net, true)],
            masquerade(),
        ),
    ]
}

/// The whole table.
pub fn table(cluster_cidr: Ipv4Net, node_subnet: Ipv4Net) -> Table {
    let mut t = Table::new(FAMILY, TABLE);
    t.comment = Some(COMMENT.to_string());
    t.chains = vec![Chain {
        name: "postrouting".into(),
        hook: Some(BaseChain {
            kind: ChainKind::Nat,
            hook: Hook::Postrouting,
            priority: 100,
            accept: true,
        }),
        rules: rules(cluster_cidr, node_subnet),
    }];
    t
}

/// Makes the table be what it should; `true` when it had to be (re)written. Reads first, so
/// the usual pass is one netlink dump and changes nothing.
pub fn ensure(
    netns: Option<&NetNs>,
    cluster_cidr: Ipv4Net,
    node_subnet: Ipv4Net,
) -> Result<bool, OverlayError> {
    let wanted = table(cluster_cidr, node_subnet);
    if ruleset::get(netns, FAMILY, TABLE)?.as_ref() == Some(&wanted) {
        return Ok(false);
    }
    nftnl::apply(netns, &wanted.replacing_batch())?;
    Ok(true)
}

/// Removes the table (nothing if it is not there).
pub fn remove(netns: Option<&NetNs>) -> Result<(), OverlayError> {
    ruleset::delete_table(netns, FAMILY, TABLE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_keeps_pod_to_pod_and_masquerades_the_rest() {
        let t = table(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        assert_eq!(
            t.to_string(),
            format!(
                "table ip podnet-masq {{\n\tcomment \"{COMMENT}\"\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return\n\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random\n\t}}\n}}\n"
            )
        );
    }
}
