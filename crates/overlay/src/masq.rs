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
//! The table is replaced whole in one transaction (`table; delete table; table {…}`), so a
//! hand edit is repaired and a pass never leaves half a ruleset.

use ipnet::Ipv4Net;
use podnet_kernel::{NetNs, nft};

use crate::OverlayError;

/// nftables family of podnet's masquerade table.
pub const FAMILY: &str = "ip";
/// podnet's masquerade table.
pub const TABLE: &str = "podnet-masq";

/// The rules of the table's postrouting chain, one per line, as `nft list` prints them.
pub fn rules(cluster_cidr: Ipv4Net, node_subnet: Ipv4Net) -> Vec<String> {
    let net = cluster_cidr.trunc();
    let own = node_subnet.trunc();
    vec![
        format!("ip saddr {net} ip daddr {net} return"),
        format!("ip saddr {net} ip daddr != 224.0.0.0/4 masquerade fully-random"),
        format!("ip saddr != {net} ip daddr {own} return"),
        format!("ip saddr != {net} ip daddr {net} masquerade fully-random"),
    ]
}

/// The whole transaction that (re)creates the table.
pub fn ruleset(cluster_cidr: Ipv4Net, node_subnet: Ipv4Net) -> String {
    let mut text = format!(
        "table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for rule in rules(cluster_cidr, node_subnet) {
        text.push_str("\t\t");
        text.push_str(&rule);
        text.push('\n');
    }
    text.push_str("\t}\n}\n");
    text
}

/// Whether the listed table has exactly the wanted rules (in order), nothing more.
fn matches(listing: &str, wanted: &[String]) -> bool {
    let found: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip saddr"))
        .collect();
    found.len() == wanted.len() && found.iter().zip(wanted).all(|(a, b)| *a == b)
}

/// Makes the table be what it should; `true` when it had to be (re)written. Reads first, so
/// the usual pass runs one `nft list` and changes nothing.
pub fn ensure(
    netns: Option<&NetNs>,
    cluster_cidr: Ipv4Net,
    node_subnet: Ipv4Net,
) -> Result<bool, OverlayError> {
    let wanted = rules(cluster_cidr, node_subnet);
    if let Some(listing) = nft::list_table(netns, FAMILY, TABLE)?
        && matches(&listing, &wanted)
        && listing.contains("hook postrouting")
    {
        return Ok(false);
    }
    nft::apply(netns, &ruleset(cluster_cidr, node_subnet))?;
    Ok(true)
}

/// Removes the table (nothing if it is not there).
pub fn remove(netns: Option<&NetNs>) -> Result<(), OverlayError> {
    nft::delete_table(netns, FAMILY, TABLE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_keeps_pod_to_pod_and_masquerades_the_rest() {
        let text = ruleset(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        assert!(text.starts_with("table ip podnet-masq\ndelete table ip podnet-masq\n"));
        assert!(text.contains("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return"));
        assert!(
            text.contains("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random")
        );
        let listing = "table ip podnet-masq {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return\n\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random\n\t}\n}\n";
        let wanted = rules(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        assert!(matches(listing, &wanted));
        assert!(!matches(&listing.replace("fully-random", ""), &wanted));
    }
}
