//! The userspace mode's NAT rules, in the four chains the article names, in podnet's own
//! nftables table [`TABLE`]:
//!
//! - `KUBE-PORTALS-CONTAINER` (prerouting: traffic from pods and from outside) sends a
//!   service's ClusterIP:port (and its external and load-balancer IPs) to the local proxy
//!   port with `redirect`;
//! - `KUBE-PORTALS-HOST` (output: traffic from the node itself) sends it to
//!   node IP:proxy port with `dnat`, because `redirect` in output would go to loopback,
//!   where the reply could not be told from other loopback traffic;
//! - `KUBE-NODEPORT-CONTAINER` and `KUBE-NODEPORT-HOST`: the same for NodePorts on the
//!   node's own addresses.
//!
//! A service port without endpoints gets no portal: its addresses are in the
//! `no-endpoints` sets and are rejected at once (ICMP port unreachable, which a TCP client
//! sees as "connection refused") instead of being accepted and closed by the proxy.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::Protocol;

/// podnet's table for the userspace mode.
pub const TABLE: &str = "podnet-userspace";

/// The NAT chains the article names.
pub const CHAINS: [&str; 4] = [
    "KUBE-PORTALS-CONTAINER",
    "KUBE-PORTALS-HOST",
    "KUBE-NODEPORT-CONTAINER",
    "KUBE-NODEPORT-HOST",
];

/// One service port as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Portal {
    /// `namespace/name:port-name`, for the rule comments.
    pub name: String,
    pub protocol: Protocol,
    /// ClusterIP, externalIPs and load-balancer ingress IPs: every address the service
    /// port answers on.
    pub addresses: Vec<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// The local port the proxy listens on; `None` when the service port has no endpoints
    /// (it is rejected instead).
    pub proxy_port: Option<u16>,
}

/// The whole table for `portals`, as one transaction: the table and its base chains are
/// declared (a no-op when they exist), the four chains and the reject sets are flushed and
/// refilled, so the kernel holds exactly these rules when it commits.
pub fn render(node_ip: Ipv4Addr, portals: &[Portal]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table ip {TABLE} {{");
    out.push_str(BASE);
    for chain in CHAINS {
        let _ = writeln!(out, "  chain {chain} {{\n  }}");
    }
    out.push_str("}\n");
    for chain in BASE_CHAINS.iter().chain(&CHAINS) {
        let _ = writeln!(out, "flush chain ip {TABLE} {chain}");
    }
    let _ = writeln!(out, "flush set ip {TABLE} no-endpoints");
    let _ = writeln!(out, "flush set ip {TABLE} no-endpoint-nodeports");
    for (chain, rule) in BASE_RULES {
        let _ = writeln!(out, "add rule ip {TABLE} {chain} {rule}");
    }
    for portal in portals {
        render_portal(&mut out, node_ip, portal);
    }
    out
}

/// The sets and base chains, declared without rules (a declaration adds its rules again
/// each time it is applied, so the rules come after the flushes, in [`BASE_RULES`]). NAT in
/// prerouting and output jumps to the four chains; the filter chains reject service ports
/// without endpoints, before NAT. (Output priorities are numbers: nft 1.0.6 knows
/// `dstnat` only for prerouting; -100 is its value.)
const BASE: &str = r#"  set no-endpoints {
    type ipv4_addr . inet_proto . inet_service
    comment "service ports without endpoints: rejected"
  }
  set no-endpoint-nodeports {
    type inet_proto . inet_service
    comment "NodePorts without endpoints: rejected"
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
  }
  chain output {
    type nat hook output priority -100; policy accept;
  }
  chain reject-prerouting {
    type filter hook prerouting priority dstnat - 10; policy accept;
  }
  chain reject-output {
    type filter hook output priority -110; policy accept;
  }
"#;

/// The base chains, flushed and refilled with the rest.
const BASE_CHAINS: [&str; 4] = ["prerouting", "output", "reject-prerouting", "reject-output"];

/// The base chains' rules: (chain, rule).
const BASE_RULES: [(&str, &str); 8] = [
    ("prerouting", "jump KUBE-PORTALS-CONTAINER"),
    (
        "prerouting",
        "fib daddr type local jump KUBE-NODEPORT-CONTAINER",
    ),
    ("output", "jump KUBE-PORTALS-HOST"),
    ("output", "fib daddr type local jump KUBE-NODEPORT-HOST"),
    (
        "reject-prerouting",
        "ip daddr . meta l4proto . th dport @no-endpoints reject",
    ),
    (
        "reject-prerouting",
        "fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject",
    ),
    (
        "reject-output",
        "ip daddr . meta l4proto . th dport @no-endpoints reject",
    ),
    (
        "reject-output",
        "fib daddr type local meta l4proto . th dport @no-endpoint-nodeports reject",
    ),
];

fn render_portal(out: &mut String, node_ip: Ipv4Addr, portal: &Portal) {
    let proto = portal.protocol.nft();
    let Some(proxy_port) = portal.proxy_port else {
        for addr in &portal.addresses {
            let _ = writeln!(
                out,
                "add element ip {TABLE} no-endpoints {{ {addr} . {proto} . {} }}",
                portal.port
            );
        }
        if let Some(node_port) = portal.node_port {
            let _ = writeln!(
                out,
                "add element ip {TABLE} no-endpoint-nodeports {{ {proto} . {node_port} }}"
            );
        }
        return;
    };
    let comment = &portal.name;
    for addr in &portal.addresses {
        let matches = format!("ip daddr {addr} {proto} dport {}", portal.port);
        let _ = writeln!(
            out,
            "add rule ip {TABLE} KUBE-PORTALS-CONTAINER {matches} redirect to :{proxy_port} comment \"{comment}\""
        );
        let _ = writeln!(
            out,
            "add rule ip {TABLE} KUBE-PORTALS-HOST {matches} dnat to {node_ip}:{proxy_port} comment \"{comment}\""
        );
    }
    if let Some(node_port) = portal.node_port {
        let matches = format!("{proto} dport {node_port}");
        let _ = writeln!(
            out,
            "add rule ip {TABLE} KUBE-NODEPORT-CONTAINER {matches} redirect to :{proxy_port} comment \"{comment}\""
        );
        let _ = writeln!(
            out,
            "add rule ip {TABLE} KUBE-NODEPORT-HOST {matches} dnat to {node_ip}:{proxy_port} comment \"{comment}\""
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(proxy_port: Option<u16>) -> Portal {
        Portal {
            name: "default/web:http".into(),
            protocol: Protocol::Tcp,
            addresses: vec!["10.96.0.10".parse().unwrap(), "192.0.2.7".parse().unwrap()],
            port: 80,
            node_port: Some(30080),
            proxy_port,
        }
    }

    /// The service's own rules and elements (the base chains' rules left out).
    fn rules(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("add ") && l.contains("default/web") || l.contains("element"))
            .collect()
    }

    #[test]
    fn a_service_with_endpoints_gets_a_portal_in_each_of_the_four_chains() {
        let text = render("172.30.0.11".parse().unwrap(), &[web(Some(40123))]);
        assert_eq!(
            rules(&text),
            vec![
                "add rule ip podnet-userspace KUBE-PORTALS-CONTAINER ip daddr 10.96.0.10 tcp dport 80 redirect to :40123 comment \"default/web:http\"",
                "add rule ip podnet-userspace KUBE-PORTALS-HOST ip daddr 10.96.0.10 tcp dport 80 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
                "add rule ip podnet-userspace KUBE-PORTALS-CONTAINER ip daddr 192.0.2.7 tcp dport 80 redirect to :40123 comment \"default/web:http\"",
                "add rule ip podnet-userspace KUBE-PORTALS-HOST ip daddr 192.0.2.7 tcp dport 80 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
                "add rule ip podnet-userspace KUBE-NODEPORT-CONTAINER tcp dport 30080 redirect to :40123 comment \"default/web:http\"",
                "add rule ip podnet-userspace KUBE-NODEPORT-HOST tcp dport 30080 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
            ]
        );
        for chain in CHAINS {
            assert!(text.contains(&format!("flush chain ip podnet-userspace {chain}\n")));
        }
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_not_proxied() {
        let text = render("172.30.0.11".parse().unwrap(), &[web(None)]);
        assert_eq!(
            rules(&text),
            vec![
                "add element ip podnet-userspace no-endpoints { 10.96.0.10 . tcp . 80 }",
                "add element ip podnet-userspace no-endpoints { 192.0.2.7 . tcp . 80 }",
                "add element ip podnet-userspace no-endpoint-nodeports { tcp . 30080 }",
            ]
        );
    }
}
