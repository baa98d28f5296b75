//! The transaction that takes a table from what it is to what it should be: the whole
//! table replaced (a full sync: at start, after a failure, or when the table's shape
//! changed), or only what differs (a partial sync: new sets and chains, set elements added
//! and removed, chains whose rules changed rewritten, what is gone deleted), in the order
//! the kernel needs (a verdict may only name a chain that exists, a set or chain is only
//! deleted once nothing refers to it).

use std::collections::BTreeSet;

use super::{Chain, Set, SetElement, Table};
use crate::nftnl::{Batch, Element};

/// How a plan changes the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// Nothing to do.
    Nothing,
    /// Deleted and created again, whole.
    Full,
    /// Only what differs.
    Partial,
    /// Deleted.
    Delete,
}

/// The batch that takes the kernel from `installed` (what the last sync left; `None` when
/// unknown) to `wanted` (`None`: no table), and what kind of change it is.
pub fn plan(installed: Option<&Table>, wanted: Option<&Table>) -> (Batch, PlanKind) {
    match (installed, wanted) {
        (Some(old), Some(new)) if old == new => {
            (Batch::for_family(new.family()), PlanKind::Nothing)
        }
        (Some(old), Some(new)) if same_shape(old, new) => (partial(old, new), PlanKind::Partial),
        (_, Some(new)) => (new.replacing_batch(), PlanKind::Full),
        (Some(old), None) => (
            super::delete_table_batch(old.family(), &old.name),
            PlanKind::Delete,
        ),
        (None, None) => (Batch::new(), PlanKind::Nothing),
    }
}

/// Whether `new` can be reached from `old` without recreating the table: same table,
/// base chains hooked the same way, and every set kept is declared the same.
fn same_shape(old: &Table, new: &Table) -> bool {
    let hooks = |t: &Table| -> Vec<(String, Option<crate::nftnl::BaseChain>)> {
        let mut v: Vec<_> = t
            .chains
            .iter()
            .filter(|c| c.hook.is_some())
            .map(|c| (c.name.clone(), c.hook))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let declared_alike = new.sets.iter().all(|s| {
        old.set(&s.name).is_none_or(|o| {
            o.key == s.key
                && o.value == s.value
                && o.interval == s.interval
                && o.comment == s.comment
        })
    });
    old.name == new.name
        && old.family == new.family
        && old.comment == new.comment
        && hooks(old) == hooks(new)
        && declared_alike
}

fn partial(old: &Table, new: &Table) -> Batch {
    let t = new.name.as_str();
    let mut batch = Batch::for_family(new.family());
    let added_sets: Vec<&Set> = new
        .sets
        .iter()
        .filter(|s| old.set(&s.name).is_none())
        .collect();
    let ids: Vec<u32> = added_sets
        .iter()
        .map(|s| batch.add_set(t, &s.spec()))
        .collect();
    let added_chains: Vec<&Chain> = new
        .chains
        .iter()
        .filter(|c| old.chain(&c.name).is_none())
        .collect();
    for c in &added_chains {
        batch.add_chain(t, &c.name, c.hook);
    }
    let changed: Vec<&Chain> = new
        .chains
        .iter()
        .filter(|c| old.chain(&c.name).is_some_and(|o| o.rules != c.rules))
        .collect();
    let removed_chains: Vec<&Chain> = old
        .chains
        .iter()
        .filter(|c| new.chain(&c.name).is_none())
        .collect();
    for c in changed.iter().chain(&removed_chains) {
        batch.flush_chain(t, &c.name);
    }
    for (s, id) in added_sets.iter().zip(ids) {
        batch.add_elements_by_id(t, id, &s.kernel_elements());
    }
    for s in &new.sets {
        if let Some(o) = old.set(&s.name) {
            element_changes(&mut batch, t, o, s);
        }
    }
    for c in added_chains.iter().chain(&changed) {
        add_rules(&mut batch, new, c);
    }
    for c in &removed_chains {
        batch.delete_chain(t, &c.name);
    }
    for s in old.sets.iter().filter(|s| new.set(&s.name).is_none()) {
        batch.delete_set(t, &s.name);
    }
    batch
}

/// A chain's rules appended in `batch` (the anonymous maps they use made first).
pub(super) fn add_rules(batch: &mut Batch, table: &Table, chain: &Chain) {
    for r in &chain.rules {
        let anonymous = r
            .anonymous_vmap()
            .map(|verdicts| batch.add_anonymous_vmap(&table.name, &verdicts));
        let exprs = r.exprs(table.family(), anonymous);
        batch.add_rule_with_comment(&table.name, &chain.name, &exprs, r.comment.as_deref());
    }
}

/// The elements `old` has and `new` has not deleted, those new or changed added. A set of
/// intervals is flushed and filled again (its elements are interval edges, which change
/// together).
fn element_changes(batch: &mut Batch, table: &str, old: &Set, new: &Set) {
    if old.elements == new.elements {
        return;
    }
    if new.interval {
        batch.flush_set(table, &new.name);
        batch.add_elements(table, &new.name, &new.kernel_elements());
        return;
    }
    let before: BTreeSet<&SetElement> = old.elements.iter().collect();
    let after: BTreeSet<&SetElement> = new.elements.iter().collect();
    let removed_keys: Vec<Vec<u8>> = before
        .difference(&after)
        .map(|e| super::data::concat_bytes(&e.key))
        .collect();
    batch.delete_elements(table, &old.name, &removed_keys);
    let added: Vec<Element> = after
        .difference(&before)
        .map(|e| super::kernel_element(e))
        .collect();
    batch.add_elements(table, &new.name, &added);
}
