//! `ipMasq`: pod traffic leaving the pod subnet is masqueraded. One nftables
//! table of podnet's; per network a set of masqueraded pod addresses and a
//! postrouting chain with one rule. ADD re-declares the chain's rule (flush +
//! add) and adds its element in one transaction, so concurrent ADDs converge
//! on exactly one rule; DEL removes the element.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::nft;

use podnet_api::cni::CniError;

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

fn declarations(network: &str, subnet: Ipv4Net) -> String {
    let set = set_name(network);
    let chain = chain_name(network);
    format!(
        "table ip {TABLE} {{\n\
         \x20 set {set} {{ type ipv4_addr; comment \"pods of CNI network {network}, masqueraded outside {subnet}\"; }}\n\
         \x20 chain {chain} {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         }}\n\
         flush chain ip {TABLE} {chain}\n"
    )
}

fn rule(network: &str, subnet: Ipv4Net) -> String {
    format!(
        "ip saddr @{} ip daddr != {subnet} ip daddr != 224.0.0.0/4 masquerade comment \"{network}\"",
        set_name(network)
    )
}

/// Adds `ip` to the masqueraded set of `network`, creating the table, set and
/// rule the first time.
pub fn add(network: &str, subnet: Ipv4Net, ip: Ipv4Addr) -> Result<(), CniError> {
    let mut batch = declarations(network, subnet);
    batch.push_str(&format!(
        "add rule ip {TABLE} {} {}\n",
        chain_name(network),
        rule(network, subnet)
    ));
    batch.push_str(&format!(
        "add element ip {TABLE} {} {{ {ip} }}\n",
        set_name(network)
    ));
    nft::apply(None, &batch).map_err(kernel)
}

/// Removes `ip` from the masqueraded set; succeeds when it (or the set) is
/// not there. One nft run.
pub fn remove(network: &str, ip: Ipv4Addr) -> Result<(), CniError> {
    let batch = format!(
        "delete element ip {TABLE} {} {{ {ip} }}\n",
        set_name(network)
    );
    match nft::apply(None, &batch) {
        Err(podnet_kernel::KernelError::Nftables { message })
            if message.contains("No such file or directory") =>
        {
            Ok(())
        }
        other => other.map_err(kernel),
    }
}

fn kernel(e: podnet_kernel::KernelError) -> CniError {
    CniError::kernel(format!("ipMasq: {e}"))
}
