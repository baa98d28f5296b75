//! `ipMasq`: pod traffic leaving the pod subnet is masqueraded. One nftables table of
//! podnet's; per network a set of masqueraded pod addresses and a postrouting chain with
//! one rule. ADD declares the table, set and chain (kept when they exist), rewrites the
//! chain's rule (flush + add) and adds its element in one netlink transaction, so
//! concurrent ADDs converge on exactly one rule; DEL removes the element. No `nft`
//! program is run: a runtime may call the plugin with no `PATH` at all.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_api::cni::CniError;
use podnet_kernel::KernelError;
use podnet_kernel::nftnl::{self, BaseChain, Batch, ChainKind, Element, Family, Hook};
use podnet_kernel::preflight::Feature;
use podnet_kernel::ruleset::{Action, Addr, Chain, DataType, Match, Rule, Set, Table};

pub const TABLE: &str = "podnet-cni";

fn set_name(network: &str) -> String {
    let safe: String = network
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    format!("masq_{safe}")
}

fn chain_name(network: &str) -> String {
    format!("post_{}", set_name(network))
}

/// `ip saddr @masq_<net> ip daddr != <subnet> ip daddr != 224.0.0.0/4 masquerade`.
fn rule(network: &str, subnet: Ipv4Net) -> Rule {
    let multicast = Ipv4Net::new([224, 0, 0, 0].into(), 4).unwrap_or_default();
    let daddr_not = |net| Match::Ip {
        addr: Addr::Daddr,
        net,
        equal: false,
    };
    Rule::new(
        vec![
            Match::IpInSet {
                addr: Addr::Saddr,
                set: set_name(network),
                equal: true,
            },
            daddr_not(subnet.trunc()),
            daddr_not(multicast),
        ],
        vec![Action::Masquerade {
            fully_random: false,
        }],
    )
    .with_comment(network)
}

/// The table's part for `network`: its set and chain, with the chain's rule.
pub fn table(network: &str, subnet: Ipv4Net) -> Table {
    let mut t = Table::new(Family::Ip, TABLE);
    t.sets = vec![
        Set::new(set_name(network), vec![DataType::Ipv4Addr]).with_comment(format!(
            "pods of CNI network {network}, masqueraded outside {subnet}"
        )),
    ];
    t.chains = vec![Chain {
        name: chain_name(network),
        hook: Some(BaseChain {
            kind: ChainKind::Nat,
            hook: Hook::Postrouting,
            priority: 100,
            accept: true,
        }),
        rules: vec![rule(network, subnet)],
    }];
    t
}

/// The ADD transaction: table, set and chain declared, the chain's rules replaced, the
/// address added.
fn add_batch(network: &str, subnet: Ipv4Net, ip: Ipv4Addr) -> Batch {
    let t = table(network, subnet);
    let mut batch = Batch::for_family(Family::Ip);
    batch.add_table(TABLE, None);
    for s in &t.sets {
        batch.add_set(TABLE, &s.spec());
    }
    for c in &t.chains {
        batch.add_chain(TABLE, &c.name, c.hook);
        batch.flush_chain(TABLE, &c.name);
        for r in &c.rules {
            batch.add_rule_with_comment(
                TABLE,
                &c.name,
                &r.exprs(Family::Ip, None),
                r.comment.as_deref(),
            );
        }
    }
    batch.add_elements(
        TABLE,
        &set_name(network),
        &[Element::key(ip.octets().to_vec())],
    );
    batch
}

/// Adds `ip` to the masqueraded set of `network`, creating the table, set and rule the
/// first time.
pub fn add(network: &str, subnet: Ipv4Net, ip: Ipv4Addr) -> Result<(), CniError> {
    nftnl::apply(None, &add_batch(network, subnet, ip)).map_err(kernel)
}

/// Removes `ip` from the masqueraded set; succeeds when it (or the set) is not there.
pub fn remove(network: &str, ip: Ipv4Addr) -> Result<(), CniError> {
    let mut batch = Batch::for_family(Family::Ip);
    batch.delete_elements(TABLE, &set_name(network), &[ip.octets().to_vec()]);
    match nftnl::apply(None, &batch) {
        Err(KernelError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other.map_err(kernel),
    }
}

fn kernel(e: KernelError) -> CniError {
    super::wiring::kernel_using("ipMasq", Feature::Nftables, e)
}
