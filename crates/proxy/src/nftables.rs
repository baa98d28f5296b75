//! nftables text for the proxy's tables: the main table `ip podnet-proxy` (filter hooks,
//! no-endpoint rejects, masquerading) and [`SHARDS`] shard tables `ip podnet-proxy-<k>`,
//! each with its own nat hook chains, dispatch maps and the chains of the service ports
//! hashed to it. A full sync replaces every table in one transaction; a partial sync
//! touches only the changed ports' chains, sets and map elements, in one transaction.
//! Pure, apart from [`apply`] and [`cleanup`].
//!
//! Why shards: any rule or map element with `dnat`, `jump` or `goto` makes the kernel
//! validate the whole table on commit (`nft_table_validate` walks every chain reachable
//! from every base chain, through every map element). At 10,000 services that walk was
//! most of a partial sync's 80 ms; with the service chains spread over 32 tables a commit
//! walks one thirty-second. And the kernel finds a set by name by walking the table's
//! sets (`nft_set_lookup`: a list, `strlen` and compare each), twice per service in a
//! full sync (the set's creation, the rule that uses it): 32 tables of ~300 maps instead
//! of 16 of ~600 took a 10,000-service full sync over netlink from 0.95 to 0.67 s of
//! kernel time (64: 0.6 s). The price is one extra map lookup per shard, in the nat hooks
//! only, i.e. on a connection's first packet (no difference seen in the connect latency
//! at 16, 32 or 64 shards, ≈ 12 µs either way).
//!
//! A full sync is written by [`crate::fullsync`] over netlink; the text here is what a
//! partial sync that the netlink fast path does not cover sends through `nft -f`, and the
//! fallback of a full sync the kernel refuses over netlink.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use podnet_kernel::NetNs;

use podnet_kernel::nftnl::Verdict;

use crate::model::{
    CLUSTER_IPS, DispatchKey, ENDPOINT_HAIRPIN, Element, SERVICE_IPS, SERVICE_NODEPORTS,
    ServicePortName, ServiceRules, TargetMap,
};
use crate::skeleton::{self, write_chain};

pub const FAMILY: &str = "ip";
/// The main table; the shards are named after it (`podnet-proxy-0` …).
pub const TABLE: &str = "podnet-proxy";
/// How many shard tables the service ports are spread over (see the module's header).
pub const SHARDS: usize = 32;

/// The name of shard `k`'s table.
pub fn shard_table(k: usize) -> String {
    format!("{TABLE}-{k}")
}

/// Every table the proxy owns: the main one, then the shards.
pub fn all_tables() -> Vec<String> {
    std::iter::once(TABLE.to_string())
        .chain((0..SHARDS).map(shard_table))
        .collect()
}

/// The shard of a service port: a stable hash of its name (FNV-1a, the same on every
/// node and build), so a port stays in its table across syncs and restarts.
pub fn shard_of(name: &ServicePortName) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// The table holding `map`'s elements for the port `owner`: the dispatch maps live in the
/// owner's shard, the no-endpoint maps and plain sets in the main table.
pub(crate) fn element_table(map: &str, owner: &ServicePortName) -> String {
    if map == SERVICE_IPS || map == SERVICE_NODEPORTS {
        shard_table(shard_of(owner))
    } else {
        TABLE.to_string()
    }
}

/// Table-wide settings of the skeleton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConfig {
    /// The addresses NodePorts answer on; empty: every local address (`fib daddr type local`).
    pub node_ips: Vec<Ipv4Addr>,
    /// Traffic to an unallocated address in it is rejected.
    pub service_cidr: Option<Ipv4Net>,
}

/// The elements that are installed, keyed by (map, key), with every service port that
/// claims the key: a key claimed by two (say the same externalIP:port) belongs to the
/// lowest ServicePortName, whatever order they came in, and the others are logged, so one
/// bad Service cannot make the transaction fail for everyone.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    pub services: BTreeMap<ServicePortName, ServiceRules>,
    /// Claimants of each (map, key), with the verdict each wants; the first one owns it.
    pub claims: BTreeMap<ElementKey, BTreeMap<ServicePortName, Verdict>>,
    pub cluster_ips: BTreeMap<Ipv4Addr, BTreeSet<ServicePortName>>,
    /// How many service ports DNAT to each endpoint without an endpoint chain (one
    /// `endpoint-hairpin` element each, while any uses it).
    pub hairpin: BTreeMap<Ipv4Addr, usize>,
}

/// A map element's identity: the map and the key.
pub type ElementKey = (&'static str, DispatchKey);

/// The type of a service port's endpoint map: a random number to an address and port.
/// The port is typed by the service's protocol: with `th dport` nft cannot add a rule
/// using a map it read back from the kernel ("conflicting protocols").
fn target_map_type(map: &TargetMap) -> String {
    format!(
        "typeof numgen random mod 1 : ip daddr . {} dport",
        map.protocol.nft()
    )
}

/// The elements of an endpoint map, as nft writes them (`0 : 10.244.1.2 . 8080, …`).
fn target_elements(map: &TargetMap) -> String {
    let mut out = String::with_capacity(map.targets.len() * 24);
    for (i, (ip, port)) in map.targets.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{i} : {ip} . {port}");
    }
    out
}

/// The port's sets, maps and chains (created, or emptied if they exist) in its shard
/// `table`.
fn define_service(out: &mut String, table: &str, rules: &ServiceRules) {
    for m in &rules.maps {
        let _ = writeln!(
            out,
            "add map {FAMILY} {table} {} {{ {}; }}",
            m.name,
            target_map_type(m)
        );
        let _ = writeln!(out, "flush map {FAMILY} {table} {}", m.name);
        let _ = writeln!(
            out,
            "add element {FAMILY} {table} {} {{ {} }}",
            m.name,
            target_elements(m)
        );
    }
    for s in &rules.sets {
        let _ = writeln!(
            out,
            "add set {FAMILY} {table} {} {{ type ipv4_addr; flags dynamic,timeout; timeout {}s; }}",
            s.name, s.timeout_seconds
        );
    }
    for c in &rules.chains {
        let _ = writeln!(out, "add chain {FAMILY} {table} {}", c.name);
        let _ = writeln!(out, "flush chain {FAMILY} {table} {}", c.name);
    }
    for c in &rules.chains {
        for r in &c.rules {
            let _ = writeln!(out, "add rule {FAMILY} {table} {} {r}", c.name);
        }
    }
}

impl Installed {
    /// The (owner, verdict) of an element key, if anyone claims it.
    fn owner(&self, key: &ElementKey) -> Option<(ServicePortName, Verdict)> {
        self.claims
            .get(key)
            .and_then(|c| c.first_key_value())
            .map(|(n, v)| (n.clone(), v.clone()))
    }

    /// Records the service's claims; returns the elements it owns now (those it wins).
    pub(crate) fn claim(&mut self, name: &ServicePortName, rules: &ServiceRules) -> Vec<Element> {
        let mut owned = Vec::new();
        for e in &rules.elements {
            let claimants = self.claims.entry((e.map, e.key.clone())).or_default();
            claimants.insert(name.clone(), e.verdict.clone());
            match claimants.first_key_value() {
                Some((owner, _)) if owner == name => owned.push(e.clone()),
                Some((owner, _)) => tracing::warn!(
                    service = %name, owner = %owner, map = e.map, key = %e.key,
                    "another service already uses this address, protocol and port; skipping it for this service"
                ),
                None => {}
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
        owned
    }

    /// Drops the installed service's claims.
    fn release(&mut self, name: &ServicePortName) {
        let Some(old) = self.services.get(name) else {
            return;
        };
        for e in &old.elements {
            let key = (e.map, e.key.clone());
            if let Some(claimants) = self.claims.get_mut(&key) {
                claimants.remove(name);
                if claimants.is_empty() {
                    self.claims.remove(&key);
                }
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
    }
}

/// ` elements = { 10.0.0.1 expires 1234ms, … };` for the kept clients (none: empty); no
/// client keeps more than the set's timeout.
fn kept_elements(
    kept: Option<&Vec<(Ipv4Addr, std::time::Duration)>>,
    timeout_seconds: u32,
) -> String {
    let Some(kept) = kept.filter(|k| !k.is_empty()) else {
        return String::new();
    };
    let limit = (u128::from(timeout_seconds) * 1000).max(1);
    let items: Vec<String> = kept
        .iter()
        .map(|(ip, left)| format!("{ip} expires {}ms", left.as_millis().clamp(1, limit)))
        .collect();
    format!(" elements = {{ {} }};", items.join(", "))
}

/// The text that deletes every table of the proxy, declaring each first so the delete
/// succeeds when it is absent.
fn delete_all_tables(out: &mut String) {
    for t in all_tables() {
        let _ = writeln!(out, "table {FAMILY} {t}\ndelete table {FAMILY} {t}");
    }
}

/// A full sync: every table deleted and rebuilt in one transaction. Returns the text and
/// what it installs.
pub fn render_full(
    cfg: &TableConfig,
    services: BTreeMap<ServicePortName, ServiceRules>,
) -> (String, Installed) {
    render_full_keeping(cfg, services, &BTreeMap::new())
}

/// Affinity elements a full sync carries over, by set name: each client and the time its
/// affinity has left (a full sync replaces the tables, and ClientIP affinity must not
/// end with it).
pub type KeptAffinity = BTreeMap<String, Vec<(Ipv4Addr, std::time::Duration)>>;

/// A full sync that puts `kept` affinity elements back into their sets.
pub fn render_full_keeping(
    cfg: &TableConfig,
    services: BTreeMap<ServicePortName, ServiceRules>,
    kept: &KeptAffinity,
) -> (String, Installed) {
    let mut out = String::with_capacity(4096 + services.len() * 1024);
    delete_all_tables(&mut out);
    skeleton::main_table(cfg).write_text(&mut out);
    let mut installed = Installed::default();
    // Each shard's services' sets and chains in one table block (sets before the chains
    // that use them, endpoint chains before the chains that jump to them), then one
    // element statement per map: far less text for nft to parse than a command per
    // object. One block per shard, not per service: reopening a table block costs nft a
    // lookup each time (measured: 16 blocks 7 s, a block per service 21 s at 10,000).
    let mut blocks = vec![String::new(); SHARDS];
    let mut by_map: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
    for (name, rules) in &services {
        let block = &mut blocks[shard_of(name)];
        for s in &rules.sets {
            let _ = writeln!(
                block,
                "\tset {} {{ type ipv4_addr; flags dynamic,timeout; timeout {}s;{} }}",
                s.name,
                s.timeout_seconds,
                kept_elements(kept.get(&s.name), s.timeout_seconds)
            );
        }
        for m in &rules.maps {
            let _ = writeln!(
                block,
                "\tmap {} {{ {}; elements = {{ {} }}; }}",
                m.name,
                target_map_type(m),
                target_elements(m)
            );
        }
        for c in &rules.chains {
            write_chain(block, &c.name, None, &c.rules);
        }
        for e in installed.claim(name, rules) {
            by_map
                .entry((element_table(e.map, name), e.map))
                .or_default()
                .push(format!("{} : {}", e.key, e.verdict));
        }
    }
    for (k, block) in blocks.iter().enumerate() {
        skeleton::shard(cfg, k).write_text(&mut out);
        if !block.is_empty() {
            let _ = writeln!(out, "table {FAMILY} {} {{", shard_table(k));
            out.push_str(block);
            out.push_str("}\n");
        }
    }
    for ((table, map), elems) in by_map {
        let _ = writeln!(
            out,
            "add element {FAMILY} {table} {map} {{ {} }}",
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

/// One step of a partial sync. The steps come in the order the transaction needs them:
/// shared elements deleted, the changed ports' objects defined, shared elements added,
/// then objects no longer used removed (once nothing refers to them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartialOp {
    /// A dispatch map element leaves `owner`'s table.
    DeleteDispatch {
        owner: ServicePortName,
        map: &'static str,
        key: DispatchKey,
    },
    AddDispatch {
        owner: ServicePortName,
        element: Element,
    },
    DeleteClusterIp(Ipv4Addr),
    AddClusterIp(Ipv4Addr),
    DeleteHairpin(Ipv4Addr),
    AddHairpin(Ipv4Addr),
    /// The port's sets, maps and chains created or emptied, maps refilled, rules added.
    Define {
        table: String,
        rules: ServiceRules,
    },
    FlushChain {
        table: String,
        chain: String,
    },
    DeleteChain {
        table: String,
        chain: String,
    },
    /// A set or map.
    DeleteSet {
        table: String,
        set: String,
        map: bool,
    },
}

/// A partial sync of the `changed` service ports (`None`: the port is gone) as nft text.
/// Updates `installed` to what the transaction installs; the caller keeps the old copy
/// until the transaction succeeded.
pub fn render_partial(
    installed: &mut Installed,
    changed: BTreeMap<ServicePortName, Option<ServiceRules>>,
) -> String {
    render_ops(&plan_partial(installed, changed))
}

/// The steps of a partial sync of the `changed` service ports (`None`: the port is gone).
/// Updates `installed` to what they install.
pub fn plan_partial(
    installed: &mut Installed,
    changed: BTreeMap<ServicePortName, Option<ServiceRules>>,
) -> Vec<PartialOp> {
    let owners_before = element_owners(installed, &changed);
    let mut deletes = Vec::new();
    let mut defines = Vec::new();
    let mut adds = Vec::new();
    let mut removals = Vec::new();
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
        let shard = shard_table(shard_of(&name));
        installed.release(&name);
        let old = installed.services.remove(&name);
        if let Some(rules) = &new {
            defines.push(PartialOp::Define {
                table: shard.clone(),
                rules: rules.clone(),
            });
            installed.claim(&name, rules);
        }
        // ClusterIPs no longer used by anyone leave the set; new ones join it.
        for ip in &old_cluster_ips {
            if !installed.cluster_ips.contains_key(ip) {
                deletes.push(PartialOp::DeleteClusterIp(*ip));
            }
        }
        // Hairpin elements are shared: added when the first user comes, deleted when the
        // last one goes.
        for ip in &old_hairpin {
            if !installed.hairpin.contains_key(ip) {
                deletes.push(PartialOp::DeleteHairpin(*ip));
            }
        }
        if let Some(rules) = &new {
            for ip in &rules.hairpin {
                if !old_hairpin.contains(ip) && installed.hairpin.get(ip) == Some(&1) {
                    adds.push(PartialOp::AddHairpin(*ip));
                }
            }
            for ip in &rules.cluster_ips {
                if !old_cluster_ips.contains(ip) {
                    adds.push(PartialOp::AddClusterIp(*ip));
                }
            }
        }
        if let Some(old) = old {
            remove_unused_objects(&old, new.as_ref(), &shard, &mut defines, &mut removals);
        }
        if let Some(rules) = new {
            installed.services.insert(name, rules);
        }
    }
    let (mut ops, element_adds) = element_changes(installed, owners_before);
    ops.extend(deletes);
    ops.extend(defines);
    ops.extend(element_adds);
    ops.extend(adds);
    ops.extend(removals);
    ops
}

/// The steps as nft text.
pub fn render_ops(ops: &[PartialOp]) -> String {
    let mut out = String::new();
    for op in ops {
        match op {
            PartialOp::DeleteDispatch { owner, map, key } => {
                let table = element_table(map, owner);
                let _ = writeln!(out, "delete element {FAMILY} {table} {map} {{ {key} }}");
            }
            PartialOp::AddDispatch { owner, element: e } => {
                let table = element_table(e.map, owner);
                let _ = writeln!(
                    out,
                    "add element {FAMILY} {table} {} {{ {} : {} }}",
                    e.map, e.key, e.verdict
                );
            }
            PartialOp::DeleteClusterIp(ip) => {
                let _ = writeln!(
                    out,
                    "delete element {FAMILY} {TABLE} {CLUSTER_IPS} {{ {ip} }}"
                );
            }
            PartialOp::AddClusterIp(ip) => {
                let _ = writeln!(out, "add element {FAMILY} {TABLE} {CLUSTER_IPS} {{ {ip} }}");
            }
            PartialOp::DeleteHairpin(ip) => {
                let _ = writeln!(
                    out,
                    "delete element {FAMILY} {TABLE} {ENDPOINT_HAIRPIN} {{ {ip} . {ip} }}"
                );
            }
            PartialOp::AddHairpin(ip) => {
                let _ = writeln!(
                    out,
                    "add element {FAMILY} {TABLE} {ENDPOINT_HAIRPIN} {{ {ip} . {ip} }}"
                );
            }
            PartialOp::Define { table, rules } => define_service(&mut out, table, rules),
            PartialOp::FlushChain { table, chain } => {
                let _ = writeln!(out, "flush chain {FAMILY} {table} {chain}");
            }
            PartialOp::DeleteChain { table, chain } => {
                let _ = writeln!(out, "delete chain {FAMILY} {table} {chain}");
            }
            PartialOp::DeleteSet { table, set, map } => {
                let word = if *map { "map" } else { "set" };
                let _ = writeln!(out, "delete {word} {FAMILY} {table} {set}");
            }
        }
    }
    out
}

/// Who owns each element key the changed ports had or want, before the change.
fn element_owners(
    installed: &Installed,
    changed: &BTreeMap<ServicePortName, Option<ServiceRules>>,
) -> BTreeMap<ElementKey, Option<(ServicePortName, Verdict)>> {
    let mut owners = BTreeMap::new();
    for (name, new) in changed {
        let old = installed.services.get(name);
        for e in old
            .into_iter()
            .chain(new.as_ref())
            .flat_map(|r| r.elements.iter())
        {
            let key = (e.map, e.key.clone());
            if let std::collections::btree_map::Entry::Vacant(v) = owners.entry(key) {
                let owner = installed.owner(v.key());
                v.insert(owner);
            }
        }
    }
    owners
}

/// The element deletes and adds that take each key from its owner before to its owner
/// now. A key whose owner and verdict stay is left alone: most changes only touch the
/// service's chains. A key handed to another claimant (its owner went, or a lower name
/// came) is deleted from the old owner's table and added to the new one's.
fn element_changes(
    installed: &Installed,
    owners_before: BTreeMap<ElementKey, Option<(ServicePortName, Verdict)>>,
) -> (Vec<PartialOp>, Vec<PartialOp>) {
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for (key, before) in owners_before {
        let after = installed.owner(&key);
        if before == after {
            continue;
        }
        let (map, k) = key;
        if let Some((owner, _)) = before {
            deletes.push(PartialOp::DeleteDispatch {
                owner,
                map,
                key: k.clone(),
            });
        }
        if let Some((owner, verdict)) = after {
            adds.push(PartialOp::AddDispatch {
                owner,
                element: Element {
                    map,
                    key: k,
                    verdict,
                },
            });
        }
    }
    (deletes, adds)
}

/// Chains and sets the new rules no longer have go last, once nothing refers to them.
fn remove_unused_objects(
    old: &ServiceRules,
    new: Option<&ServiceRules>,
    shard: &str,
    defines: &mut Vec<PartialOp>,
    removals: &mut Vec<PartialOp>,
) {
    let keep_chains: BTreeSet<&str> = new
        .iter()
        .flat_map(|r| r.chains.iter().map(|c| c.name.as_str()))
        .collect();
    let keep_sets: BTreeSet<&str> = new
        .iter()
        .flat_map(|r| r.sets.iter().map(|s| s.name.as_str()))
        .collect();
    let keep_maps: BTreeSet<&str> = new
        .iter()
        .flat_map(|r| r.maps.iter().map(|m| m.name.as_str()))
        .collect();
    for c in old
        .chains
        .iter()
        .filter(|c| !keep_chains.contains(c.name.as_str()))
    {
        // Flushed first: a stale chain may jump to another stale chain.
        defines.push(PartialOp::FlushChain {
            table: shard.to_string(),
            chain: c.name.clone(),
        });
        removals.push(PartialOp::DeleteChain {
            table: shard.to_string(),
            chain: c.name.clone(),
        });
    }
    let stale_sets = old.sets.iter().map(|s| (&s.name, &keep_sets, false));
    let stale_maps = old.maps.iter().map(|m| (&m.name, &keep_maps, true));
    for (name, keep, map) in stale_sets.chain(stale_maps) {
        if !keep.contains(name.as_str()) {
            removals.push(PartialOp::DeleteSet {
                table: shard.to_string(),
                set: name.clone(),
                map,
            });
        }
    }
}

/// Applies one transaction in `ns` (or here) through the `nft` program.
pub fn apply(ns: Option<&NetNs>, text: &str) -> Result<(), podnet_kernel::KernelError> {
    podnet_kernel::nft::apply(ns, text)
}

/// Removes the proxy's tables, main and shards (everything it installed), in one
/// netlink transaction; nothing else is touched.
pub fn cleanup(ns: Option<&NetNs>) -> Result<(), podnet_kernel::KernelError> {
    let mut batch = podnet_kernel::nftnl::Batch::new();
    for t in all_tables() {
        batch.add_table(&t, None);
        batch.delete_table(&t);
    }
    podnet_kernel::nftnl::apply(ns, &batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Chain, Protocol, Rule};

    fn key(ip: &str) -> DispatchKey {
        DispatchKey::Address {
            ip: ip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        }
    }

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
                rules: vec![Rule::Always(Verdict::Drop)],
            }],
            sets: vec![],
            maps: vec![],
            plain_chain: None,
            elements: vec![Element {
                map: SERVICE_IPS,
                key: key(ip),
                verdict: Verdict::Goto(format!("service-X-{n}{chain_suffix}")),
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
            "table ip podnet-proxy\ndelete table ip podnet-proxy\n\
             table ip podnet-proxy-0\ndelete table ip podnet-proxy-0\n"
        ));
        assert!(text.contains(&format!(
            "table ip podnet-proxy-{SHARDS_LAST}\ndelete table ip podnet-proxy-{SHARDS_LAST}\ntable ip podnet-proxy {{\n",
            SHARDS_LAST = SHARDS - 1
        )));
        assert!(text.contains("\tset nodeport-ips { type ipv4_addr; comment \"addresses NodePorts answer on\"; elements = { 172.31.70.1 }; }\n"));
        // Every shard has its dispatch map and nat hooks.
        assert_eq!(
            text.matches(
                "\tmap service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }\n"
            )
            .count(),
            SHARDS
        );
        assert_eq!(
            text.matches("type nat hook prerouting priority -100;")
                .count(),
            SHARDS
        );
        assert!(text.contains(
            "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n"
        ));
        assert!(
            text.contains("\t\tip daddr 10.96.0.0/12 reject comment \"unallocated ClusterIP\"\n")
        );
        let shard = shard_table(shard_of(&name("a")));
        assert!(text.contains(&format!(
            "table ip {shard} {{\n\
             \tchain service-X-a {{\n\
             \t\tdrop\n\
             \t}}\n\
             }}\n"
        )));
        assert!(text.ends_with(&format!(
            "add element ip {shard} service-ips {{ 10.96.0.1 . tcp . 80 : goto service-X-a }}\n\
             add element ip podnet-proxy cluster-ips {{ 10.96.0.1 }}\n"
        )));
        assert_eq!(installed.claims.len(), 1);
    }

    #[test]
    fn conflicting_key_goes_to_one_service_only() {
        let mut svcs = BTreeMap::new();
        svcs.insert(name("a"), rules("a", "10.96.0.1", ""));
        svcs.insert(name("b"), rules("b", "10.96.0.1", ""));
        let (text, installed) = render_full(&cfg(), svcs);
        assert_eq!(text.matches(" service-ips { 10.96.0.1").count(), 1);
        assert_eq!(installed.claims.len(), 1);
        assert_eq!(text.matches("cluster-ips { 10.96.0.1 }").count(), 1);
    }

    #[test]
    fn a_clashing_key_goes_to_the_lowest_name_whatever_the_order() {
        let mut svcs = BTreeMap::new();
        svcs.insert(name("b"), rules("b", "10.96.0.1", ""));
        let (_, mut installed) = render_full(&cfg(), svcs);
        let (a, b) = (
            shard_table(shard_of(&name("a"))),
            shard_table(shard_of(&name("b"))),
        );
        // A lower name arrives: the key is handed over to it.
        let text = render_partial(
            &mut installed,
            BTreeMap::from([(name("a"), Some(rules("a", "10.96.0.1", "")))]),
        );
        assert!(text.starts_with(&format!(
            "delete element ip {b} service-ips {{ 10.96.0.1 . tcp . 80 }}\n"
        )));
        assert!(text.contains(&format!(
            "add element ip {a} service-ips {{ 10.96.0.1 . tcp . 80 : goto service-X-a }}\n"
        )));
        // The same state a full sync builds.
        let (_, full) = render_full(&cfg(), installed.services.clone());
        assert_eq!(
            installed.owner(&("service-ips", key("10.96.0.1"))),
            full.owner(&("service-ips", key("10.96.0.1")))
        );
        // A higher name changing touches no element it does not own.
        let text = render_partial(
            &mut installed,
            BTreeMap::from([(name("b"), Some(rules("b", "10.96.0.1", "-v2")))]),
        );
        assert!(!text.contains("element"), "{text}");
        // The owner goes: the key passes to the next claimant, with its verdict.
        let text = render_partial(&mut installed, BTreeMap::from([(name("a"), None)]));
        assert!(text.starts_with(&format!(
            "delete element ip {a} service-ips {{ 10.96.0.1 . tcp . 80 }}\n"
        )));
        assert!(text.contains(&format!(
            "add element ip {b} service-ips {{ 10.96.0.1 . tcp . 80 : goto service-X-b-v2 }}\n"
        )));
        // The last claimant goes: the key is deleted once and nobody gets it.
        let text = render_partial(&mut installed, BTreeMap::from([(name("b"), None)]));
        assert_eq!(text.matches("service-ips").count(), 1, "{text}");
        assert!(installed.claims.is_empty());
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
        let a = shard_table(shard_of(&name("a")));
        assert_eq!(
            text,
            format!(
                "delete element ip {a} service-ips {{ 10.96.0.1 . tcp . 80 }}\n\
                 add chain ip {a} service-X-a-v2\n\
                 flush chain ip {a} service-X-a-v2\n\
                 add rule ip {a} service-X-a-v2 drop\n\
                 flush chain ip {a} service-X-a\n\
                 add element ip {a} service-ips {{ 10.96.0.1 . tcp . 80 : goto service-X-a-v2 }}\n\
                 delete chain ip {a} service-X-a\n"
            )
        );
        // Deleting b removes its element, ClusterIP and chain.
        let mut changed = BTreeMap::new();
        changed.insert(name("b"), None);
        let text = render_partial(&mut installed, changed);
        let b = shard_table(shard_of(&name("b")));
        assert_eq!(
            text,
            format!(
                "delete element ip {b} service-ips {{ 10.96.0.2 . tcp . 80 }}\n\
                 delete element ip podnet-proxy cluster-ips {{ 10.96.0.2 }}\n\
                 flush chain ip {b} service-X-b\n\
                 delete chain ip {b} service-X-b\n"
            )
        );
        assert_eq!(installed.services.len(), 1);
        assert_eq!(installed.claims.len(), 1);
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of(&name("a")), shard_of(&name("a")));
        let used: BTreeSet<usize> = (0..200)
            .map(|i| shard_of(&name(&format!("s{i}"))))
            .collect();
        assert_eq!(used.len(), SHARDS, "200 names use every shard");
        assert_eq!(all_tables().len(), SHARDS + 1);
        assert!(all_tables().iter().all(|t| t.starts_with(TABLE)));
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
            port: ServicePort::cluster_ip(
                ServicePortName {
                    namespace: "default".into(),
                    name: "dns".into(),
                    port: "dns".into(),
                    protocol: Protocol::Udp,
                },
                "10.96.0.53".parse().unwrap(),
                53,
            ),
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
