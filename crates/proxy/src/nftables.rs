//! nftables text for the table `ip podnet-proxy`: the static skeleton (base chains, shared
//! maps), a full sync (the table replaced in one transaction) and a partial sync (only the
//! chains, sets and map elements of changed service ports). Pure, apart from [`apply`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::NetNs;

use crate::model::{
    CLUSTER_IPS, ENDPOINT_HAIRPIN, Element, MARK_FOR_MASQUERADE, MASQUERADE_MARK,
    NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES, REJECT_CHAIN, SERVICE_IPS, SERVICE_NODEPORTS,
    ServicePortName, ServiceRules,
};

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "podnet-proxy";

/// Table-wide settings of the skeleton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The addresses NodePorts answer on; empty: every local address (`fib daddr type local`).
    pub node_ips: Vec<Ipv4Addr>,
    /// Traffic to an unallocated address in it is rejected.
    pub service_cidr: Option<Ipv4Net>,
}

fn nodeport_match(cfg: &TableConfig) -> &'static str {
    if cfg.node_ips.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8"
    } else {
        "ip daddr @nodeport-ips"
    }
}

/// The table's fixed part: base chains hooked into netfilter, the dispatch chains and the
/// shared maps, as kube-proxy's nftables proxier lays them out.
fn skeleton(cfg: &TableConfig, out: &mut String) {
    let np = nodeport_match(cfg);
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{");
    out.push_str("\tcomment \"podnet service proxy (kube-proxy nftables mode); rewritten by podnet, do not edit\"\n");
    let _ = writeln!(
        out,
        "\tset {CLUSTER_IPS} {{ type ipv4_addr; comment \"ClusterIPs in use\"; }}"
    );
    let _ = writeln!(
        out,
        "\tset {ENDPOINT_HAIRPIN} {{ type ipv4_addr . ipv4_addr; comment \"endpoint . itself: a pod reaching itself through a service\"; }}"
    );
    out.push_str(
        "\tset nodeport-ips { type ipv4_addr; comment \"addresses NodePorts answer on\"; ",
    );
    if !cfg.node_ips.is_empty() {
        let ips: Vec<String> = cfg.node_ips.iter().map(|i| i.to_string()).collect();
        let _ = write!(out, "elements = {{ {} }}; ", ips.join(", "));
    }
    out.push_str("}\n");
    for (name, key) in [
        (SERVICE_IPS, "ipv4_addr . inet_proto . inet_service"),
        (SERVICE_NODEPORTS, "inet_proto . inet_service"),
        (
            NO_ENDPOINT_SERVICES,
            "ipv4_addr . inet_proto . inet_service",
        ),
        (NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service"),
    ] {
        let _ = writeln!(out, "\tmap {name} {{ type {key} : verdict; }}");
    }
    let base = [
        (
            "filter-input",
            "type filter hook input priority -110; policy accept;",
            vec![
                "ct state new jump nodeport-endpoints-check".to_string(),
                "ct state new jump service-endpoints-check".to_string(),
            ],
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110; policy accept;",
            vec![
                "ct state new jump service-endpoints-check".to_string(),
                "ct state new jump cluster-ips-check".to_string(),
            ],
        ),
        (
            "filter-output",
            "type filter hook output priority -110; policy accept;",
            vec!["ct state new jump service-endpoints-check".to_string()],
        ),
        (
            // After DNAT, so a ClusterIP:port that is served has become an endpoint.
            "filter-output-post-dnat",
            "type filter hook output priority -90; policy accept;",
            vec!["ct state new jump cluster-ips-check".to_string()],
        ),
        (
            "nat-prerouting",
            "type nat hook prerouting priority -100; policy accept;",
            vec!["jump services".to_string()],
        ),
        (
            "nat-output",
            "type nat hook output priority -100; policy accept;",
            vec!["jump services".to_string()],
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority 100; policy accept;",
            vec![
                "jump masquerading".to_string(),
                format!(
                    "ct status dnat ip saddr . ip daddr @{ENDPOINT_HAIRPIN} masquerade fully-random"
                ),
            ],
        ),
    ];
    for (name, hook, rules) in base {
        let _ = writeln!(out, "\tchain {name} {{\n\t\t{hook}");
        for r in rules {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    let mut cluster_check = vec![format!(
        "ip daddr @{CLUSTER_IPS} reject comment \"ClusterIP on a port the service does not serve\""
    )];
    if let Some(cidr) = cfg.service_cidr {
        cluster_check.push(format!(
            "ip daddr {cidr} reject comment \"unallocated ClusterIP\""
        ));
    }
    let regular: Vec<(&str, Vec<String>)> = vec![
        (
            "services",
            vec![
                format!("ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
                format!("{np} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
            ],
        ),
        (
            "service-endpoints-check",
            vec![format!(
                "ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"
            )],
        ),
        (
            "nodeport-endpoints-check",
            vec![format!(
                "{np} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            )],
        ),
        ("cluster-ips-check", cluster_check),
        (
            MARK_FOR_MASQUERADE,
            vec![format!("meta mark set meta mark or {MASQUERADE_MARK:#x}")],
        ),
        (
            "masquerading",
            vec![
                format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
                format!("meta mark set meta mark xor {MASQUERADE_MARK:#x}"),
                "masquerade fully-random".to_string(),
            ],
        ),
        (
            REJECT_CHAIN,
            vec![
                "meta l4proto tcp reject with tcp reset comment \"service has no endpoints\""
                    .to_string(),
                "reject comment \"service has no endpoints\"".to_string(),
            ],
        ),
    ];
    for (name, rules) in regular {
        let _ = writeln!(out, "\tchain {name} {{");
        for r in rules {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
}

/// The elements that are installed, keyed by (map, key), with their owner: a key claimed
/// by two services (say the same externalIP:port) goes to the first, and the second is
/// logged, so one bad Service cannot make the transaction fail for everyone.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    pub services: BTreeMap<ServicePortName, ServiceRules>,
    pub elements: BTreeMap<(&'static str, String), (String, ServicePortName)>,
    pub cluster_ips: BTreeMap<Ipv4Addr, BTreeSet<ServicePortName>>,
    /// How many service ports DNAT to each endpoint without an endpoint chain (one
    /// `endpoint-hairpin` element each, while any uses it).
    pub hairpin: BTreeMap<Ipv4Addr, usize>,
}

fn add_element_line(out: &mut String, e: &Element) {
    let _ = writeln!(
        out,
        "add element {FAMILY} {TABLE} {} {{ {} : {} }}",
        e.map, e.key, e.verdict
    );
}

fn delete_element_line(out: &mut String, map: &str, key: &str) {
    let _ = writeln!(out, "delete element {FAMILY} {TABLE} {map} {{ {key} }}");
}

fn define_service(out: &mut String, rules: &ServiceRules) {
    for s in &rules.sets {
        let _ = writeln!(
            out,
            "add set {FAMILY} {TABLE} {} {{ type ipv4_addr; flags dynamic,timeout; timeout {}s; }}",
            s.name, s.timeout_seconds
        );
    }
    for c in &rules.chains {
        let _ = writeln!(out, "add chain {FAMILY} {TABLE} {}", c.name);
        let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {}", c.name);
    }
    for c in &rules.chains {
        for r in &c.rules {
            let _ = writeln!(out, "add rule {FAMILY} {TABLE} {} {r}", c.name);
        }
    }
}

impl Installed {
    /// Claims the service's elements that nobody else holds; returns those to add.
    fn claim(&mut self, name: &ServicePortName, rules: &ServiceRules) -> Vec<Element> {
        let mut added = Vec::new();
        for e in &rules.elements {
            let key = (e.map, e.key.clone());
            match self.elements.get(&key) {
                Some((_, owner)) if owner != name => {
                    tracing::warn!(
                        service = %name, owner = %owner, map = e.map, key = %e.key,
                        "another service already uses this address, protocol and port; skipping it for this service"
                    );
                }
                Some(_) => {}
                None => {
                    self.elements.insert(key, (e.verdict.clone(), name.clone()));
                    added.push(e.clone());
                }
            }
        }
        for ip in &rules.cluster_ips {
            self.cluster_ips
                .entry(*ip)
                .or_default()
                .insert(name.clone());
        }
        for ip in &rules.hairpin {
            *self.hairpin.entry(*ip).or_default() += 1;
        }
        added
    }

    /// Releases the service's elements; returns the (map, key) pairs it held.
    fn release(&mut self, name: &ServicePortName) -> Vec<(&'static str, String)> {
        let Some(old) = self.services.get(name) else {
            return Vec::new();
        };
        let mut freed = Vec::new();
        for e in &old.elements {
            let key = (e.map, e.key.clone());
            if self.elements.get(&key).is_some_and(|(_, o)| o == name) {
                self.elements.remove(&key);
                freed.push(key);
            }
        }
        for ip in &old.cluster_ips {
            if let Some(owners) = self.cluster_ips.get_mut(ip) {
                owners.remove(name);
                if owners.is_empty() {
                    self.cluster_ips.remove(ip);
                }
            }
        }
        for ip in &old.hairpin {
            if let Some(n) = self.hairpin.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.hairpin.remove(ip);
                }
            }
        }
        freed
    }
}

/// A full sync: the table deleted and rebuilt in one transaction (declaring it first so
/// the delete succeeds on a node that has none). Returns the text and what it installs.
pub fn render_full(
    cfg: &TableConfig,
    services: BTreeMap<ServicePortName, ServiceRules>,
) -> (String, Installed) {
    let mut out = String::with_capacity(256 + services.len() * 1024);
    let _ = writeln!(out, "table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}");
    skeleton(cfg, &mut out);
    let mut installed = Installed::default();
    // The services' sets and chains in one table block (sets before the chains that use
    // them, endpoint chains before the chains that jump to them), then one element
    // statement per map: far less text for nft to parse than a command per object.
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{");
    let mut by_map: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (name, rules) in &services {
        for s in &rules.sets {
            let _ = writeln!(
                out,
                "\tset {} {{ type ipv4_addr; flags dynamic,timeout; timeout {}s; }}",
                s.name, s.timeout_seconds
            );
        }
        for c in &rules.chains {
            let _ = writeln!(out, "\tchain {} {{", c.name);
            for r in &c.rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        for e in installed.claim(name, rules) {
            by_map
                .entry(e.map)
                .or_default()
                .push(format!("{} : {}", e.key, e.verdict));
        }
    }
    out.push_str("}\n");
    for (map, elems) in by_map {
        let _ = writeln!(
            out,
            "add element {FAMILY} {TABLE} {map} {{ {} }}",
            elems.join(", ")
        );
    }
    if !installed.hairpin.is_empty() {
        let pairs: Vec<String> = installed
            .hairpin
            .keys()
            .map(|i| format!("{i} . {i}"))
            .collect();
        let _ = writeln!(
            out,
            "add element {FAMILY} {TABLE} {ENDPOINT_HAIRPIN} {{ {} }}",
            pairs.join(", ")
        );
    }
    if !installed.cluster_ips.is_empty() {
        let ips: Vec<String> = installed
            .cluster_ips
            .keys()
            .map(|i| i.to_string())
            .collect();
        let _ = writeln!(
            out,
            "add element {FAMILY} {TABLE} {CLUSTER_IPS} {{ {} }}",
            ips.join(", ")
        );
    }
    installed.services = services;
    (out, installed)
}

/// A partial sync of the `changed` service ports (`None`: the port is gone). Updates
/// `installed` to what the transaction installs; the caller keeps the old copy until the
/// transaction succeeded.
pub fn render_partial(
    installed: &mut Installed,
    changed: BTreeMap<ServicePortName, Option<ServiceRules>>,
) -> String {
    let mut deletes = String::new();
    let mut defines = String::new();
    let mut adds = String::new();
    let mut removals = String::new();
    for (name, new) in changed {
        let old_cluster_ips: Vec<Ipv4Addr> = installed
            .services
            .get(&name)
            .map(|r| r.cluster_ips.clone())
            .unwrap_or_default();
        let old_hairpin: Vec<Ipv4Addr> = installed
            .services
            .get(&name)
            .map(|r| r.hairpin.clone())
            .unwrap_or_default();
        let freed = installed.release(&name);
        let old = installed.services.remove(&name);
        let mut added = Vec::new();
        if let Some(rules) = &new {
            define_service(&mut defines, rules);
            added = installed.claim(&name, rules);
        }
        // An element that stays as it was is left alone: most changes only touch the
        // service's chains, and every element command makes nft read the map.
        let old_verdicts: BTreeMap<(&str, &str), &str> = old
            .iter()
            .flat_map(|r| r.elements.iter())
            .map(|e| ((e.map, e.key.as_str()), e.verdict.as_str()))
            .collect();
        let readded: BTreeSet<(&str, &str)> = added
            .iter()
            .filter(|e| old_verdicts.get(&(e.map, e.key.as_str())) == Some(&e.verdict.as_str()))
            .map(|e| (e.map, e.key.as_str()))
            .collect();
        for (map, key) in &freed {
            if !readded.contains(&(*map, key.as_str())) {
                delete_element_line(&mut deletes, map, key);
            }
        }
        for e in &added {
            if !readded.contains(&(e.map, e.key.as_str())) {
                add_element_line(&mut adds, e);
            }
        }
        // ClusterIPs no longer used by anyone leave the set; new ones join it.
        for ip in &old_cluster_ips {
            if !installed.cluster_ips.contains_key(ip) {
                let _ = writeln!(
                    deletes,
                    "delete element {FAMILY} {TABLE} {CLUSTER_IPS} {{ {ip} }}"
                );
            }
        }
        // Hairpin elements are shared: added when the first user comes, deleted when the
        // last one goes.
        for ip in &old_hairpin {
            if !installed.hairpin.contains_key(ip) {
                let _ = writeln!(
                    deletes,
                    "delete element {FAMILY} {TABLE} {ENDPOINT_HAIRPIN} {{ {ip} . {ip} }}"
                );
            }
        }
        if let Some(rules) = &new {
            for ip in &rules.hairpin {
                if !old_hairpin.contains(ip) && installed.hairpin.get(ip) == Some(&1) {
                    let _ = writeln!(
                        adds,
                        "add element {FAMILY} {TABLE} {ENDPOINT_HAIRPIN} {{ {ip} . {ip} }}"
                    );
                }
            }
        }
        if let Some(rules) = &new {
            for ip in &rules.cluster_ips {
                if !old_cluster_ips.contains(ip) {
                    let _ = writeln!(
                        adds,
                        "add element {FAMILY} {TABLE} {CLUSTER_IPS} {{ {ip} }}"
                    );
                }
            }
        }
        // Chains and sets the new rules no longer have go last, once nothing refers to them.
        if let Some(old) = old {
            let keep_chains: BTreeSet<&str> = new
                .iter()
                .flat_map(|r| r.chains.iter().map(|c| c.name.as_str()))
                .collect();
            let keep_sets: BTreeSet<&str> = new
                .iter()
                .flat_map(|r| r.sets.iter().map(|s| s.name.as_str()))
                .collect();
            for c in &old.chains {
                if !keep_chains.contains(c.name.as_str()) {
                    // Flushed first: a stale chain may jump to another stale chain.
                    let _ = writeln!(defines, "flush chain {FAMILY} {TABLE} {}", c.name);
                    let _ = writeln!(removals, "delete chain {FAMILY} {TABLE} {}", c.name);
                }
            }
            for s in &old.sets {
                if !keep_sets.contains(s.name.as_str()) {
                    let _ = writeln!(removals, "delete set {FAMILY} {TABLE} {}", s.name);
                }
            }
        }
        if let Some(rules) = new {
            installed.services.insert(name, rules);
        }
    }
    deletes + &defines + &adds + &removals
}

/// Applies one transaction in `ns` (or here).
pub fn apply(ns: Option<&NetNs>, text: &str) -> Result<(), podnet_kernel::KernelError> {
    podnet_kernel::nft::apply(ns, text)
}

/// Removes the proxy's table (everything it installed); nothing else is touched.
pub fn cleanup(ns: Option<&NetNs>) -> Result<(), podnet_kernel::KernelError> {
    podnet_kernel::nft::delete_table(ns, FAMILY, TABLE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Chain, Protocol};

    fn name(n: &str) -> ServicePortName {
        ServicePortName {
            namespace: "default".into(),
            name: n.into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        }
    }

    fn rules(n: &str, ip: &str, chain_suffix: &str) -> ServiceRules {
        ServiceRules {
            chains: vec![Chain {
                name: format!("service-X-{n}{chain_suffix}"),
                rules: vec!["drop".into()],
            }],
            sets: vec![],
            elements: vec![Element {
                map: SERVICE_IPS,
                key: format!("{ip} . tcp . 80"),
                verdict: format!("goto service-X-{n}{chain_suffix}"),
            }],
            cluster_ips: vec![ip.parse().unwrap()],
            hairpin: vec![],
        }
    }

    fn cfg() -> TableConfig {
        TableConfig {
            node_ips: vec![Ipv4Addr::new(172, 31, 70, 1)],
            service_cidr: Some("10.96.0.0/12".parse().unwrap()),
        }
    }

    #[test]
    fn full_sync_replaces_table_and_adds_elements() {
        let mut svcs = BTreeMap::new();
        svcs.insert(name("a"), rules("a", "10.96.0.1", ""));
        let (text, installed) = render_full(&cfg(), svcs);
        assert!(text.starts_with(
            "table ip podnet-proxy\ndelete table ip podnet-proxy\ntable ip podnet-proxy {\n"
        ));
        assert!(text.contains("\tset nodeport-ips { type ipv4_addr; comment \"addresses NodePorts answer on\"; elements = { 172.31.70.1 }; }\n"));
        assert!(text.contains(
            "\tmap service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n"
        ));
        assert!(text.contains(
            "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n"
        ));
        assert!(
            text.contains("\t\tip daddr 10.96.0.0/12 reject comment \"unallocated ClusterIP\"\n")
        );
        assert!(text.ends_with(
            "table ip podnet-proxy {\n\
             \tchain service-X-a {\n\
             \t\tdrop\n\
             \t}\n\
             }\n\
             add element ip podnet-proxy service-ips { 10.96.0.1 . tcp . 80 : goto service-X-a }\n\
             add element ip podnet-proxy cluster-ips { 10.96.0.1 }\n"
        ));
        assert_eq!(installed.elements.len(), 1);
    }

    #[test]
    fn conflicting_key_goes_to_first_service_only() {
        let mut svcs = BTreeMap::new();
        svcs.insert(name("a"), rules("a", "10.96.0.1", ""));
        svcs.insert(name("b"), rules("b", "10.96.0.1", ""));
        let (text, installed) = render_full(&cfg(), svcs);
        assert_eq!(
            text.matches("add element ip podnet-proxy service-ips")
                .count(),
            1
        );
        assert_eq!(installed.elements.len(), 1);
        assert_eq!(text.matches("cluster-ips { 10.96.0.1 }").count(), 1);
    }

    #[test]
    fn partial_sync_touches_only_the_changed_service() {
        let mut svcs = BTreeMap::new();
        svcs.insert(name("a"), rules("a", "10.96.0.1", ""));
        svcs.insert(name("b"), rules("b", "10.96.0.2", ""));
        let (_, mut installed) = render_full(&cfg(), svcs);
        let mut changed = BTreeMap::new();
        changed.insert(name("a"), Some(rules("a", "10.96.0.1", "-v2")));
        let text = render_partial(&mut installed, changed);
        assert_eq!(
            text,
            "delete element ip podnet-proxy service-ips { 10.96.0.1 . tcp . 80 }\n\
             add chain ip podnet-proxy service-X-a-v2\n\
             flush chain ip podnet-proxy service-X-a-v2\n\
             add rule ip podnet-proxy service-X-a-v2 drop\n\
             flush chain ip podnet-proxy service-X-a\n\
             add element ip podnet-proxy service-ips { 10.96.0.1 . tcp . 80 : goto service-X-a-v2 }\n\
             delete chain ip podnet-proxy service-X-a\n"
        );
        // Deleting b removes its element, ClusterIP and chain.
        let mut changed = BTreeMap::new();
        changed.insert(name("b"), None);
        let text = render_partial(&mut installed, changed);
        assert_eq!(
            text,
            "delete element ip podnet-proxy service-ips { 10.96.0.2 . tcp . 80 }\n\
             delete element ip podnet-proxy cluster-ips { 10.96.0.2 }\n\
             flush chain ip podnet-proxy service-X-b\n\
             delete chain ip podnet-proxy service-X-b\n"
        );
        assert_eq!(installed.services.len(), 1);
        assert_eq!(installed.elements.len(), 1);
    }
}

#[cfg(test)]
mod hairpin_tests {
    use super::*;
    use crate::model::{
        Endpoint, Layout, NodeContext, Protocol, ServicePort, ServiceState, service_rules,
    };

    fn state(ep_last: u8) -> ServiceState {
        ServiceState {
            port: ServicePort {
                name: ServicePortName {
                    namespace: "default".into(),
                    name: "dns".into(),
                    port: "dns".into(),
                    protocol: Protocol::Udp,
                },
                cluster_ip: "10.96.0.53".parse().unwrap(),
                port: 53,
                node_port: None,
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_timeout: None,
                external_local: false,
                internal_local: false,
                health_check_node_port: None,
            },
            endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(10, 244, 1, ep_last),
                port: 5353,
                node_name: Some("n1".into()),
                ready: true,
                serving: true,
                terminating: false,
            }],
        }
    }

    #[test]
    fn hairpin_elements_follow_their_last_user() {
        let ctx = NodeContext {
            node_name: "n1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            layout: Layout::Compact,
        };
        let cfg = TableConfig {
            node_ips: vec![],
            service_cidr: None,
        };
        let (_, mut installed) = render_full(&cfg, BTreeMap::new());
        let s = state(2);
        let mut changed = BTreeMap::new();
        changed.insert(s.port.name.clone(), Some(service_rules(&s, &ctx)));
        let text = render_partial(&mut installed, changed);
        assert!(
            text.contains(
                "add element ip podnet-proxy endpoint-hairpin { 10.244.1.2 . 10.244.1.2 }"
            ),
            "{text}"
        );
        let s = state(3);
        let mut changed = BTreeMap::new();
        changed.insert(s.port.name.clone(), Some(service_rules(&s, &ctx)));
        let text = render_partial(&mut installed, changed);
        assert!(
            text.contains(
                "delete element ip podnet-proxy endpoint-hairpin { 10.244.1.2 . 10.244.1.2 }"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "add element ip podnet-proxy endpoint-hairpin { 10.244.1.3 . 10.244.1.3 }"
            ),
            "{text}"
        );
    }
}
