//! The fixed part of the proxy's tables, described once and written either as nft text or
//! into a netlink batch: the main table `ip podnet-proxy` (filter hooks rejecting services
//! without endpoints and unserved ClusterIP ports, the masquerading of marked and hairpin
//! traffic) and each shard's nat hooks with its dispatch maps, as kube-proxy's nftables
//! proxier lays them out.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use podnet_kernel::nftnl::{
    BaseChain, Batch, ChainKind, Element, Hook, SetSpec, SetValue, Verdict, tlv, types,
};

use crate::model::{
    CLUSTER_IPS, ENDPOINT_HAIRPIN, MARK_FOR_MASQUERADE, NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES, REJECT_CHAIN, SERVICE_IPS, SERVICE_NODEPORTS,
};
use crate::nftables::{FAMILY, SHARDS, TABLE, TableConfig, shard_table};
use crate::rule::{NodePortAddresses, Rule};

/// A table's fixed sets and chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub comment: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A fixed set or verdict map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: &'static str,
    pub kind: SetKind,
    pub comment: Option<&'static str>,
    pub elements: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `type ipv4_addr`
    Addresses,
    /// `type ipv4_addr . ipv4_addr`
    AddressPairs,
    /// `type ipv4_addr . inet_proto . inet_service : verdict`
    AddressVerdicts,
    /// `type inet_proto . inet_service : verdict`
    PortVerdicts,
}

/// A fixed chain, with its hook when it is a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

fn hook(kind: ChainKind, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        accept: true,
    })
}

fn chain(name: &'static str, hook: Option<BaseChain>, rules: Vec<Rule>) -> Chain {
    Chain { name, hook, rules }
}

fn jump(chain: &str) -> Verdict {
    Verdict::Jump(chain.to_string())
}

fn node_port_addresses(cfg: &TableConfig) -> NodePortAddresses {
    if cfg.node_ips.is_empty() {
        NodePortAddresses::AllLocal
    } else {
        NodePortAddresses::Listed
    }
}

fn nodeport_ips(cfg: &TableConfig) -> Set {
    Set {
        name: "nodeport-ips",
        kind: SetKind::Addresses,
        comment: Some("addresses NodePorts answer on"),
        elements: cfg.node_ips.clone(),
    }
}

fn verdict_map(name: &'static str, kind: SetKind) -> Set {
    Set {
        name,
        kind,
        comment: None,
        elements: vec![],
    }
}

/// The main table.
pub fn main_table(cfg: &TableConfig) -> Table {
    use ChainKind::{Filter, Nat};
    let sets = vec![
        Set {
            name: CLUSTER_IPS,
            kind: SetKind::Addresses,
            comment: Some("ClusterIPs in use"),
            elements: vec![],
        },
        Set {
            name: ENDPOINT_HAIRPIN,
            kind: SetKind::AddressPairs,
            comment: Some("endpoint . itself: a pod reaching itself through a service"),
            elements: vec![],
        },
        nodeport_ips(cfg),
        verdict_map(NO_ENDPOINT_SERVICES, SetKind::AddressVerdicts),
        verdict_map(NO_ENDPOINT_NODEPORTS, SetKind::PortVerdicts),
    ];
    let new_jump = |c: &str| Rule::NewConnection(jump(c));
    let mut cluster_check = vec![Rule::RejectToSet {
        set: CLUSTER_IPS,
        comment: "ClusterIP on a port the service does not serve",
    }];
    if let Some(net) = cfg.service_cidr {
        cluster_check.push(Rule::RejectToNet {
            net,
            comment: "unallocated ClusterIP",
        });
    }
    let no_endpoints = "service has no endpoints";
    let chains = vec![
        chain(
            "filter-input",
            hook(Filter, Hook::Input, -110),
            vec![
                new_jump("nodeport-endpoints-check"),
                new_jump("service-endpoints-check"),
            ],
        ),
        chain(
            "filter-forward",
            hook(Filter, Hook::Forward, -110),
            vec![
                new_jump("service-endpoints-check"),
                new_jump("cluster-ips-check"),
            ],
        ),
        chain(
            "filter-output",
            hook(Filter, Hook::Output, -110),
            vec![new_jump("service-endpoints-check")],
        ),
        // After DNAT (the shards' nat hooks, priority -100), so a ClusterIP:port that is
        // served has become an endpoint.
        chain(
            "filter-output-post-dnat",
            hook(Filter, Hook::Output, -90),
            vec![new_jump("cluster-ips-check")],
        ),
        chain(
            "nat-postrouting",
            hook(Nat, Hook::Postrouting, 100),
            vec![Rule::Always(jump("masquerading")), Rule::HairpinMasquerade],
        ),
        chain(
            "service-endpoints-check",
            None,
            vec![Rule::DispatchServices {
                map: NO_ENDPOINT_SERVICES,
            }],
        ),
        chain(
            "nodeport-endpoints-check",
            None,
            vec![Rule::DispatchNodePorts {
                map: NO_ENDPOINT_NODEPORTS,
                addresses: node_port_addresses(cfg),
            }],
        ),
        chain("cluster-ips-check", None, cluster_check),
        chain(
            "masquerading",
            None,
            vec![Rule::ReturnUnlessMarked, Rule::ClearMark, Rule::Masquerade],
        ),
        chain(
            REJECT_CHAIN,
            None,
            vec![
                Rule::RejectTcpWithReset {
                    comment: no_endpoints,
                },
                Rule::Reject {
                    comment: no_endpoints,
                },
            ],
        ),
    ];
    Table {
        name: TABLE.to_string(),
        comment:
            "podnet service proxy (kube-proxy nftables mode); rewritten by podnet, do not edit"
                .to_string(),
        sets,
        chains,
    }
}

/// Shard `k`'s table: nat hooks dispatching through the shard's own maps (a chain can only
/// jump within its table), and the masquerade mark its service chains set.
pub fn shard(cfg: &TableConfig, k: usize) -> Table {
    let mut sets = Vec::new();
    if !cfg.node_ips.is_empty() {
        sets.push(nodeport_ips(cfg));
    }
    sets.push(verdict_map(SERVICE_IPS, SetKind::AddressVerdicts));
    sets.push(verdict_map(SERVICE_NODEPORTS, SetKind::PortVerdicts));
    let to_services = || vec![Rule::Always(jump("services"))];
    let chains = vec![
        chain(
            "nat-prerouting",
            hook(ChainKind::Nat, Hook::Prerouting, -100),
            to_services(),
        ),
        chain(
            "nat-output",
            hook(ChainKind::Nat, Hook::Output, -100),
            to_services(),
        ),
        chain(
            "services",
            None,
            vec![
                Rule::DispatchServices { map: SERVICE_IPS },
                Rule::DispatchNodePorts {
                    map: SERVICE_NODEPORTS,
                    addresses: node_port_addresses(cfg),
                },
            ],
        ),
        chain(MARK_FOR_MASQUERADE, None, vec![Rule::SetMark]),
    ];
    Table {
        name: shard_table(k),
        comment: format!(
            "podnet service proxy, shard {k} of {SHARDS}; rewritten by podnet, do not edit"
        ),
        sets,
        chains,
    }
}

impl SetKind {
    fn nft_type(self) -> &'static str {
        match self {
            SetKind::Addresses => "ipv4_addr",
            SetKind::AddressPairs => "ipv4_addr . ipv4_addr",
            SetKind::AddressVerdicts => "ipv4_addr . inet_proto . inet_service : verdict",
            SetKind::PortVerdicts => "inet_proto . inet_service : verdict",
        }
    }

    fn is_map(self) -> bool {
        matches!(self, SetKind::AddressVerdicts | SetKind::PortVerdicts)
    }

    /// The set as the kernel sees it, with the user data nft 1.0.6 writes for it.
    fn spec(self, name: &str, comment: Option<&str>) -> SetSpec {
        use types::{INET_PROTO, INET_SERVICE, IPV4_ADDR, concat};
        let (key_type, key_len) = match self {
            SetKind::Addresses => (IPV4_ADDR, 4),
            SetKind::AddressPairs => (concat(&[IPV4_ADDR, IPV4_ADDR]), 8),
            SetKind::AddressVerdicts => (concat(&[IPV4_ADDR, INET_PROTO, INET_SERVICE]), 12),
            SetKind::PortVerdicts => (concat(&[INET_PROTO, INET_SERVICE]), 8),
        };
        let mut userdata = Vec::new();
        match self {
            // Key byte order: big endian.
            SetKind::Addresses => tlv(&mut userdata, 0, &2u32.to_ne_bytes()),
            _ => {
                // A concatenation: byte order left open, described as a `type`
                // concatenation (nft's typeof record with no expressions).
                tlv(&mut userdata, 0, &0u32.to_ne_bytes());
                if self.is_map() {
                    tlv(&mut userdata, 1, &0u32.to_ne_bytes());
                }
                let mut concat_desc = Vec::new();
                tlv(&mut concat_desc, 0, &13u32.to_ne_bytes());
                tlv(&mut concat_desc, 1, &[]);
                tlv(&mut userdata, 3, &concat_desc);
                if self.is_map() {
                    tlv(&mut userdata, 6, &0u32.to_ne_bytes());
                }
            }
        }
        if let Some(c) = comment {
            tlv(&mut userdata, 7, &[c.as_bytes(), &[0]].concat());
        }
        SetSpec {
            name: name.to_string(),
            key_type,
            key_len,
            value: if self.is_map() {
                SetValue::Verdict
            } else {
                SetValue::None
            },
            timeout_ms: None,
            userdata,
            flags: 0,
        }
    }
}

fn hook_text(b: &BaseChain) -> String {
    let kind = match b.kind {
        ChainKind::Filter => "filter",
        ChainKind::Nat => "nat",
    };
    let hook = match b.hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    };
    let policy = if b.accept { "accept" } else { "drop" };
    format!(
        "type {kind} hook {hook} priority {}; policy {policy};",
        b.priority
    )
}

/// One chain of a table block: its name, the hook line of a base chain, its rules.
pub fn write_chain<R: std::fmt::Display>(
    out: &mut String,
    name: &str,
    hook: Option<&str>,
    rules: &[R],
) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(hook) = hook {
        let _ = writeln!(out, "\t\t{hook}");
    }
    for r in rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    out.push_str("\t}\n");
}

impl Table {
    /// The table as an nft block (`table ip … { … }`).
    pub fn write_text(&self, out: &mut String) {
        let _ = writeln!(out, "table {FAMILY} {} {{", self.name);
        let _ = writeln!(out, "\tcomment \"{}\"", self.comment);
        for s in &self.sets {
            let word = if s.kind.is_map() { "map" } else { "set" };
            let _ = write!(out, "\t{word} {} {{ type {}; ", s.name, s.kind.nft_type());
            if let Some(c) = s.comment {
                let _ = write!(out, "comment \"{c}\"; ");
            }
            if !s.elements.is_empty() {
                let ips: Vec<String> = s.elements.iter().map(|i| i.to_string()).collect();
                let _ = write!(out, "elements = {{ {} }}; ", ips.join(", "));
            }
            out.push_str("}\n");
        }
        for c in &self.chains {
            let hook = c.hook.as_ref().map(hook_text);
            write_chain(out, c.name, hook.as_deref(), &c.rules);
        }
        out.push_str("}\n");
    }

    /// The table added to `batch`: itself, its sets with their elements, its chains, then
    /// their rules (a rule may jump to any chain of the table).
    pub fn add_to(&self, batch: &mut Batch) {
        batch.add_table(&self.name, Some(&self.comment));
        for s in &self.sets {
            batch.add_set(&self.name, &s.kind.spec(s.name, s.comment));
            let elements: Vec<Element> = s
                .elements
                .iter()
                .map(|ip| Element::key(ip.octets().to_vec()))
                .collect();
            batch.add_elements(&self.name, s.name, &elements);
        }
        for c in &self.chains {
            batch.add_chain(&self.name, c.name, c.hook);
        }
        for c in &self.chains {
            for r in &c.rules {
                batch.add_rule_with_comment(&self.name, c.name, &r.exprs(None), r.comment());
            }
        }
    }
}
