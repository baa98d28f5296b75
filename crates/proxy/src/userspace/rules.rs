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

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::nftnl::{BaseChain, ChainKind, Family, Hook, Verdict};
use podnet_kernel::ruleset::{
    Action, Addr, Chain, DataType, Datum, Key, Match, Rule, Set, SetElement, Table,
};

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

const NO_ENDPOINTS: &str = "no-endpoints";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";

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

/// The whole table for `portals`, written as one transaction that replaces it, so the
/// kernel holds exactly these rules when it commits. NAT in prerouting and output jumps to
/// the four chains; the filter chains reject service ports without endpoints, before NAT.
pub fn table(node_ip: Ipv4Addr, portals: &[Portal]) -> Table {
    let mut sets = vec![
        Set::new(
            NO_ENDPOINTS,
            vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
        )
        .with_comment("service ports without endpoints: rejected"),
        Set::new(
            NO_ENDPOINT_NODEPORTS,
            vec![DataType::InetProto, DataType::InetService],
        )
        .with_comment("NodePorts without endpoints: rejected"),
    ];
    let mut chains = base_chains();
    chains.extend(CHAINS.iter().map(|name| Chain {
        name: name.to_string(),
        hook: None,
        rules: Vec::new(),
    }));
    for portal in portals {
        add_portal(&mut sets, &mut chains, node_ip, portal);
    }
    let mut t = Table::new(Family::Ip, TABLE);
    t.sets = sets;
    t.chains = chains;
    t
}

fn base(kind: ChainKind, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        accept: true,
    })
}

fn jump(chain: &str) -> Action {
    Action::Verdict(Verdict::Jump(chain.to_string()))
}

/// The rejects of service ports without endpoints, and the jumps to the four chains for
/// traffic to this node's own addresses (NodePorts) and everything else.
fn base_chains() -> Vec<Chain> {
    use ChainKind::{Filter, Nat};
    let local = || Match::FibLocal { daddr: true };
    let reject = || {
        vec![
            Rule::new(
                vec![Match::InSet {
                    keys: vec![Key::IpDaddr, Key::L4Proto, Key::ThDport],
                    set: NO_ENDPOINTS.into(),
                    equal: true,
                }],
                vec![Action::Reject { tcp_reset: false }],
            ),
            Rule::new(
                vec![
                    local(),
                    Match::InSet {
                        keys: vec![Key::L4Proto, Key::ThDport],
                        set: NO_ENDPOINT_NODEPORTS.into(),
                        equal: true,
                    },
                ],
                vec![Action::Reject { tcp_reset: false }],
            ),
        ]
    };
    let chain = |name: &str, hook, rules| Chain {
        name: name.to_string(),
        hook,
        rules,
    };
    vec![
        chain(
            "prerouting",
            base(Nat, Hook::Prerouting, -100),
            vec![
                Rule::new(vec![], vec![jump("KUBE-PORTALS-CONTAINER")]),
                Rule::new(vec![local()], vec![jump("KUBE-NODEPORT-CONTAINER")]),
            ],
        ),
        chain(
            "output",
            base(Nat, Hook::Output, -100),
            vec![
                Rule::new(vec![], vec![jump("KUBE-PORTALS-HOST")]),
                Rule::new(vec![local()], vec![jump("KUBE-NODEPORT-HOST")]),
            ],
        ),
        chain(
            "reject-prerouting",
            base(Filter, Hook::Prerouting, -110),
            reject(),
        ),
        chain("reject-output", base(Filter, Hook::Output, -110), reject()),
    ]
}

fn push(chains: &mut [Chain], name: &str, rule: Rule) {
    if let Some(c) = chains.iter_mut().find(|c| c.name == name) {
        c.rules.push(rule);
    }
}

fn add_portal(sets: &mut [Set], chains: &mut [Chain], node_ip: Ipv4Addr, portal: &Portal) {
    let proto = portal.protocol.number();
    let Some(proxy_port) = portal.proxy_port else {
        for addr in &portal.addresses {
            sets[0].elements.push(SetElement {
                key: vec![
                    Datum::Ip(*addr),
                    Datum::Proto(proto),
                    Datum::Port(portal.port),
                ],
                value: None,
            });
        }
        if let Some(node_port) = portal.node_port {
            sets[1].elements.push(SetElement {
                key: vec![Datum::Proto(proto), Datum::Port(node_port)],
                value: None,
            });
        }
        return;
    };
    let port = |p: u16| Match::Port {
        proto: Some(proto),
        dport: true,
        first: p,
        last: p,
    };
    let to_proxy = |matches: Vec<Match>, host: bool| {
        let action = if host {
            Action::Dnat {
                ip: node_ip,
                port: proxy_port,
            }
        } else {
            Action::Redirect { port: proxy_port }
        };
        Rule::new(matches, vec![action]).with_comment(portal.name.clone())
    };
    for addr in &portal.addresses {
        let matches = vec![
            Match::Ip {
                addr: Addr::Daddr,
                net: Ipv4Net::from(*addr),
                equal: true,
            },
            port(portal.port),
        ];
        push(
            chains,
            "KUBE-PORTALS-CONTAINER",
            to_proxy(matches.clone(), false),
        );
        push(chains, "KUBE-PORTALS-HOST", to_proxy(matches, true));
    }
    if let Some(node_port) = portal.node_port {
        push(
            chains,
            "KUBE-NODEPORT-CONTAINER",
            to_proxy(vec![port(node_port)], false),
        );
        push(
            chains,
            "KUBE-NODEPORT-HOST",
            to_proxy(vec![port(node_port)], true),
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

    /// The rules of the four chains, `chain: rule`.
    fn portal_rules(t: &Table) -> Vec<String> {
        CHAINS
            .iter()
            .flat_map(|name| {
                t.chain(name)
                    .into_iter()
                    .flat_map(move |c| c.rules.iter().map(move |r| format!("{name}: {r}")))
            })
            .collect()
    }

    #[test]
    fn a_service_with_endpoints_gets_a_portal_in_each_of_the_four_chains() {
        let t = table("172.30.0.11".parse().unwrap(), &[web(Some(40123))]);
        assert_eq!(
            portal_rules(&t),
            vec![
                "KUBE-PORTALS-CONTAINER: ip daddr 10.96.0.10 tcp dport 80 redirect to :40123 comment \"default/web:http\"",
                "KUBE-PORTALS-CONTAINER: ip daddr 192.0.2.7 tcp dport 80 redirect to :40123 comment \"default/web:http\"",
                "KUBE-PORTALS-HOST: ip daddr 10.96.0.10 tcp dport 80 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
                "KUBE-PORTALS-HOST: ip daddr 192.0.2.7 tcp dport 80 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
                "KUBE-NODEPORT-CONTAINER: tcp dport 30080 redirect to :40123 comment \"default/web:http\"",
                "KUBE-NODEPORT-HOST: tcp dport 30080 dnat to 172.30.0.11:40123 comment \"default/web:http\"",
            ]
        );
        assert!(t.sets.iter().all(|s| s.elements.is_empty()));
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_not_proxied() {
        let t = table("172.30.0.11".parse().unwrap(), &[web(None)]);
        assert!(portal_rules(&t).is_empty());
        let elements: Vec<String> = t
            .sets
            .iter()
            .flat_map(|s| s.elements.iter().map(move |e| format!("{}: {e}", s.name)))
            .collect();
        assert_eq!(
            elements,
            vec![
                "no-endpoints: 10.96.0.10 . tcp . 80",
                "no-endpoints: 192.0.2.7 . tcp . 80",
                "no-endpoint-nodeports: tcp . 30080",
            ]
        );
    }
}
