//! A full sync as one netlink batch: every table of the proxy deleted and rebuilt in one
//! transaction, as `nftables::render_full_keeping` writes it for `nft -f`, without `nft`.
//!
//! Why: at 10,000 services `nft` spends most of a full sync's time parsing the text and
//! building its own copy of the ruleset (perf: a third of the time in libnftables, a
//! sixth in malloc), before the kernel does its part. The batch is the same objects in
//! the same order; `tests/fullsync.rs` checks that `nft list ruleset` is identical
//! whichever way a full sync was written.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use podnet_kernel::nftnl::{Batch, Element, SetSpec, SetValue, Verdict, concat, tlv, types};

use crate::fastpath::target_elements;
use crate::model::{
    AffinitySet, CLUSTER_IPS, Chain, ENDPOINT_HAIRPIN, Protocol, Rule, ServicePortName,
    ServiceRules, TargetMap,
};
use crate::nftables::{Installed, KeptAffinity, TABLE, all_tables, shard_of, shard_table};
use crate::nftables::{TableConfig, element_table};
use crate::skeleton;

/// The batch of a full sync that puts `kept` affinity elements back into their sets, and
/// what it installs.
pub fn full_batch(
    cfg: &TableConfig,
    services: BTreeMap<ServicePortName, ServiceRules>,
    kept: &KeptAffinity,
) -> (Batch, Installed) {
    let mut batch = Batch::new();
    for t in all_tables() {
        // Added first, so the delete succeeds whether or not the table exists.
        batch.add_table(&t, None);
        batch.delete_table(&t);
    }
    skeleton::main_table(cfg).add_to(&mut batch);
    for k in 0..crate::nftables::SHARDS {
        skeleton::shard(cfg, k).add_to(&mut batch);
    }
    let mut installed = Installed::default();
    let mut by_map: BTreeMap<(String, &'static str), Vec<Element>> = BTreeMap::new();
    for (name, rules) in &services {
        add_service(&mut batch, &shard_table(shard_of(name)), rules, kept);
        for e in installed.claim(name, rules) {
            by_map
                .entry((element_table(e.map, name), e.map))
                .or_default()
                .push(Element::verdict(e.key.bytes(), e.verdict));
        }
    }
    for ((table, map), elements) in by_map {
        batch.add_elements(&table, map, &elements);
    }
    let hairpin: Vec<Element> = installed
        .hairpin
        .keys()
        .map(|ip| Element::key(concat(&[&ip.octets(), &ip.octets()])))
        .collect();
    batch.add_elements(TABLE, ENDPOINT_HAIRPIN, &hairpin);
    let cluster_ips: Vec<Element> = installed
        .cluster_ips
        .keys()
        .map(|ip| Element::key(ip.octets().to_vec()))
        .collect();
    batch.add_elements(TABLE, CLUSTER_IPS, &cluster_ips);
    installed.services = services;
    (batch, installed)
}

/// The port's sets (with their kept clients), maps (with their endpoints), chains, then
/// the chains' rules, in its shard `table`.
fn add_service(batch: &mut Batch, table: &str, rules: &ServiceRules, kept: &KeptAffinity) {
    for s in &rules.sets {
        batch.add_set(table, &affinity_spec(s));
        batch.add_elements(table, &s.name, &kept_clients(kept.get(&s.name), s));
    }
    for m in &rules.maps {
        let id = batch.add_set(table, &endpoint_map_spec(m));
        batch.add_elements_by_id(table, id, &target_elements(m));
    }
    for c in &rules.chains {
        batch.add_chain(table, &c.name, None);
    }
    add_rules(batch, table, &rules.chains);
}

/// The chains' rules, each `numgen … vmap` with its anonymous map created just before it.
pub(crate) fn add_rules(batch: &mut Batch, table: &str, chains: &[Chain]) {
    for c in chains {
        for r in &c.rules {
            let anonymous = match r {
                Rule::RandomVmap { chains } => {
                    let arms: Vec<Verdict> =
                        chains.iter().map(|c| Verdict::Goto(c.clone())).collect();
                    Some(batch.add_anonymous_vmap(table, &arms))
                }
                _ => None,
            };
            batch.add_rule_with_comment(table, &c.name, &r.exprs(anonymous), r.comment());
        }
    }
}

/// `set <name> { type ipv4_addr; flags dynamic,timeout; timeout <s>s; }`
pub(crate) fn affinity_spec(s: &AffinitySet) -> SetSpec {
    let mut userdata = Vec::new();
    // Key byte order: big endian.
    tlv(&mut userdata, 0, &2u32.to_ne_bytes());
    SetSpec {
        name: s.name.clone(),
        key_type: types::IPV4_ADDR,
        key_len: 4,
        value: SetValue::None,
        timeout_ms: Some(u64::from(s.timeout_seconds) * 1000),
        userdata,
        flags: 0,
    }
}

/// The clients an affinity set keeps across a full sync, none longer than its timeout.
fn kept_clients(
    kept: Option<&Vec<(Ipv4Addr, std::time::Duration)>>,
    set: &AffinitySet,
) -> Vec<Element> {
    let limit = (u64::from(set.timeout_seconds) * 1000).max(1);
    kept.into_iter()
        .flatten()
        .map(|(ip, left)| Element {
            expires_ms: Some((left.as_millis() as u64).clamp(1, limit)),
            ..Element::key(ip.octets().to_vec())
        })
        .collect()
}

/// `map <name> { typeof numgen random mod 1 : ip daddr . <proto> dport; }`, with the
/// `typeof` description nft writes into the set's user data (what `nft list` prints).
pub(crate) fn endpoint_map_spec(m: &TargetMap) -> SetSpec {
    use types::{INET_SERVICE, INTEGER, IPV4_ADDR};
    SetSpec {
        name: m.name.clone(),
        key_type: INTEGER,
        key_len: 4,
        value: SetValue::Data {
            kind: types::concat(&[IPV4_ADDR, INET_SERVICE]),
            len: 8,
        },
        timeout_ms: None,
        userdata: endpoint_map_udata(m.protocol),
        flags: 0,
    }
}

/// nft 1.0.6's user data for `typeof numgen random mod 1 : ip daddr . <proto> dport`:
/// byte orders, then each side's expressions by nft's expression and header-field ids
/// (numgen 0x17; a concatenation 13 of payloads 7: ip (12) daddr (12), and tcp (8), udp
/// (6) or sctp (10) dport (2)), then "not an interval".
fn endpoint_map_udata(protocol: Protocol) -> Vec<u8> {
    let n = |v: u32| v.to_ne_bytes();
    let tlvs = |fields: &[(u8, &[u8])]| {
        let mut out = Vec::new();
        for (k, v) in fields {
            tlv(&mut out, *k, v);
        }
        out
    };
    let payload = |header: u32, field: u32| {
        tlvs(&[(0, &n(7)), (1, &tlvs(&[(0, &n(header)), (1, &n(field))]))])
    };
    let transport = match protocol {
        Protocol::Tcp => 8,
        Protocol::Udp => 6,
        Protocol::Sctp => 10,
    };
    let numgen = tlvs(&[
        (0, &n(0x17)),
        (1, &tlvs(&[(0, &n(1)), (1, &n(1)), (2, &n(0))])),
    ]);
    let fields = tlvs(&[(0, &payload(12, 12)), (1, &payload(transport, 2))]);
    let data = tlvs(&[(0, &n(13)), (1, &fields)]);
    tlvs(&[(0, &n(1)), (1, &n(0)), (3, &numgen), (4, &data), (6, &n(0))])
}
