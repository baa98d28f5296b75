//! Partial syncs over netlink, without `nft` (which would first read every chain and set
//! of every table, ≈ 100 ms at 10,000 services). When every changed service port keeps
//! its chains, sets, maps and shared map elements and only its endpoints moved (an
//! endpoint added, removed, turned ready or not ready: the common change), the batch is
//! the smallest one: its endpoint maps refilled, its plain service chain rewritten and the
//! hairpin elements adjusted ([`partial_batch`]). Any other change is the partial sync's
//! steps ([`crate::nftables::plan_partial`]) as a batch ([`ops_batch`]), the same steps `nft -f`
//! would take from their text (the fallback when the kernel refuses the batch).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use podnet_kernel::nftnl::{Batch, Element, concat};

use crate::fullsync::{add_rules, affinity_spec, endpoint_map_spec};
use crate::model::{
    CLUSTER_IPS, ENDPOINT_HAIRPIN, PlainServiceChain, Rule, ServicePortName, ServiceRules,
    TargetMap,
};
use crate::nftables::{Installed, PartialOp, TABLE, element_table, shard_of, shard_table};

/// The batch for `changed`, or `None` when some change needs `nft` (a port added or
/// deleted, a chain, set or shared element that changes, a chain that is not plain).
pub fn partial_batch(
    installed: &Installed,
    changed: &BTreeMap<ServicePortName, Option<ServiceRules>>,
) -> Option<Batch> {
    let mut batch = Batch::new();
    for (name, new) in changed {
        let old = installed.services.get(name)?;
        let new = new.as_ref()?;
        endpoint_change(&mut batch, &shard_table(shard_of(name)), old, new)?;
    }
    hairpin_changes(&mut batch, installed, changed);
    Some(batch)
}

/// Adds to `batch` what takes `old` to `new` in `table`, if only endpoints changed.
fn endpoint_change(
    batch: &mut Batch,
    table: &str,
    old: &ServiceRules,
    new: &ServiceRules,
) -> Option<()> {
    let same_maps = old.maps.len() == new.maps.len()
        && old
            .maps
            .iter()
            .zip(&new.maps)
            .all(|(a, b)| a.name == b.name && a.protocol == b.protocol);
    if old.sets != new.sets
        || old.elements != new.elements
        || old.cluster_ips != new.cluster_ips
        || !same_maps
        || old.chains.len() != new.chains.len()
    {
        return None;
    }
    let plain = new.plain_chain.as_ref();
    let mut rewrite = None;
    for (a, b) in old.chains.iter().zip(&new.chains) {
        if a.name != b.name {
            return None;
        }
        if a.rules != b.rules {
            // Only the plain service chain may change.
            rewrite = Some(plain.filter(|p| p.name == b.name)?);
        }
    }
    for (a, b) in old.maps.iter().zip(&new.maps) {
        if a.targets != b.targets {
            batch.flush_set(table, &b.name);
            batch.add_elements(table, &b.name, &target_elements(b));
        }
    }
    if let Some(chain) = rewrite {
        rewrite_chain(batch, table, chain);
    }
    Some(())
}

pub(crate) fn target_elements(map: &TargetMap) -> Vec<Element> {
    map.targets
        .iter()
        .enumerate()
        .map(|(i, (ip, port))| {
            // The random number is in host byte order, as numgen writes it.
            Element::data(
                (i as u32).to_ne_bytes().to_vec(),
                concat(&[&ip.octets(), &port.to_be_bytes()]),
            )
        })
        .collect()
}

fn rewrite_chain(batch: &mut Batch, table: &str, chain: &PlainServiceChain) {
    batch.flush_chain(table, &chain.name);
    let masquerade = Rule::MasqueradeCheck(chain.masquerade.clone());
    batch.add_rule(table, &chain.name, &masquerade.exprs(None));
    batch.add_rule(
        table,
        &chain.name,
        &Rule::Pick(chain.pick.clone()).exprs(None),
    );
}

/// Hairpin elements are shared: one goes when its last user does, comes with its first.
fn hairpin_changes(
    batch: &mut Batch,
    installed: &Installed,
    changed: &BTreeMap<ServicePortName, Option<ServiceRules>>,
) {
    let mut counts: BTreeMap<Ipv4Addr, isize> = BTreeMap::new();
    let mut touched = BTreeSet::new();
    for (name, new) in changed {
        for ip in installed.services.get(name).iter().flat_map(|r| &r.hairpin) {
            *counts.entry(*ip).or_default() -= 1;
            touched.insert(*ip);
        }
        for ip in new.iter().flat_map(|r| &r.hairpin) {
            *counts.entry(*ip).or_default() += 1;
            touched.insert(*ip);
        }
    }
    let key = |ip: &Ipv4Addr| concat(&[&ip.octets(), &ip.octets()]);
    let mut gone = Vec::new();
    let mut come = Vec::new();
    for ip in touched {
        let before = installed.hairpin.get(&ip).copied().unwrap_or(0) as isize;
        let after = before + counts.get(&ip).copied().unwrap_or(0);
        if before > 0 && after == 0 {
            gone.push(key(&ip));
        } else if before == 0 && after > 0 {
            come.push(Element::key(key(&ip)));
        }
    }
    batch.delete_elements(TABLE, ENDPOINT_HAIRPIN, &gone);
    batch.add_elements(TABLE, ENDPOINT_HAIRPIN, &come);
}

/// The steps of a partial sync as one batch.
pub fn ops_batch(ops: &[PartialOp]) -> Batch {
    let mut batch = Batch::new();
    let pair = |ip: &Ipv4Addr| concat(&[&ip.octets(), &ip.octets()]);
    for op in ops {
        match op {
            PartialOp::DeleteDispatch { owner, map, key } => {
                batch.delete_elements(&element_table(map, owner), map, &[key.bytes()]);
            }
            PartialOp::AddDispatch { owner, element: e } => {
                let element = Element::verdict(e.key.bytes(), e.verdict.clone());
                batch.add_elements(&element_table(e.map, owner), e.map, &[element]);
            }
            PartialOp::DeleteClusterIp(ip) => {
                batch.delete_elements(TABLE, CLUSTER_IPS, &[ip.octets().to_vec()]);
            }
            PartialOp::AddClusterIp(ip) => {
                batch.add_elements(TABLE, CLUSTER_IPS, &[Element::key(ip.octets().to_vec())]);
            }
            PartialOp::DeleteHairpin(ip) => {
                batch.delete_elements(TABLE, ENDPOINT_HAIRPIN, &[pair(ip)]);
            }
            PartialOp::AddHairpin(ip) => {
                batch.add_elements(TABLE, ENDPOINT_HAIRPIN, &[Element::key(pair(ip))]);
            }
            PartialOp::Define { table, rules } => define(&mut batch, table, rules),
            PartialOp::FlushChain { table, chain } => batch.flush_chain(table, chain),
            PartialOp::DeleteChain { table, chain } => batch.delete_chain(table, chain),
            PartialOp::DeleteSet { table, set, .. } => batch.delete_set(table, set),
        }
    }
    batch
}

/// What `nftables::render_ops` writes for a defined port: its maps created or refilled,
/// its sets created (existing ones keep their clients), its chains created or emptied,
/// then their rules.
fn define(batch: &mut Batch, table: &str, rules: &ServiceRules) {
    for m in &rules.maps {
        batch.add_set(table, &endpoint_map_spec(m));
        batch.flush_set(table, &m.name);
        batch.add_elements(table, &m.name, &target_elements(m));
    }
    for s in &rules.sets {
        batch.add_set(table, &affinity_spec(s));
    }
    for c in &rules.chains {
        batch.add_chain(table, &c.name, None);
        batch.flush_chain(table, &c.name);
    }
    add_rules(batch, table, &rules.chains);
}
