//! A batch applied to tables in memory, as the kernel would apply it to an empty (or the
//! simulated) ruleset: tables, sets, chains and rules added and deleted, elements added,
//! deleted and flushed, chains flushed. With [`crate::ruleset::Table::from_listing`] and the
//! tracer, what a dataplane's batch does can be tested without root (kube-proxy's fake
//! nftables idea). The kernel's checks (a verdict naming a missing chain, a set in use) are
//! not all repeated: a refusal here is a bug for certain, acceptance only likely.

use super::decode::{attr, be_u32, text};
use super::dump::{self, Dumped, ListedSet, ListedTable};
use super::expr::{Expr, SetRef};
use super::wire::*;
use super::{Batch, Family};

/// Tables as a sequence of batches leaves them.
#[derive(Debug, Clone, Default)]
pub struct Simulated {
    pub tables: Vec<ListedTable>,
}

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;

impl Simulated {
    pub fn new() -> Simulated {
        Simulated::default()
    }

    /// Applies every message of `batch`, in order; the first that cannot apply is the
    /// error, as the kernel refuses a whole transaction.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), String> {
        let family = batch.family();
        let mut ids: Vec<(u32, String, String)> = Vec::new();
        let mut anonymous = 0;
        for i in 0..batch.len() {
            let (kind, body) = batch.message(batch.starts[i]);
            self.one(family, kind, body, &mut ids, &mut anonymous)
                .map_err(|why| format!("{}: {why}", batch.describe(i)))?;
        }
        Ok(())
    }

    fn table_mut(&mut self, family: Family, name: &str) -> Result<&mut ListedTable, String> {
        self.tables
            .iter_mut()
            .find(|t| t.family == family && t.name == name)
            .ok_or_else(|| format!("no table {family} {name}"))
    }

    fn one(
        &mut self,
        family: Family,
        kind: u16,
        body: &[u8],
        ids: &mut Vec<(u32, String, String)>,
        anonymous: &mut u32,
    ) -> Result<(), String> {
        let named = |k: u16| text(body, k).unwrap_or_default();
        match kind {
            NFT_MSG_NEWTABLE => self.new_table(family, body),
            NFT_MSG_DELTABLE => {
                let name = named(NFTA_TABLE_NAME);
                let before = self.tables.len();
                self.tables
                    .retain(|t| !(t.family == family && t.name == name));
                (self.tables.len() < before)
                    .then_some(())
                    .ok_or(format!("no table {name}"))
            }
            NFT_MSG_NEWCHAIN => {
                let (table, chain) = dump::chain(body).ok_or("a chain that does not parse")?;
                let t = self.table_mut(family, &table)?;
                if !t.chains.iter().any(|c| c.name == chain.name) {
                    t.chains.push(chain);
                }
                Ok(())
            }
            NFT_MSG_DELCHAIN => {
                let (table, name) = (named(NFTA_CHAIN_TABLE), named(NFTA_CHAIN_NAME));
                let t = self.table_mut(family, &table)?;
                match t.chains.iter().position(|c| c.name == name) {
                    Some(i) if t.chains[i].rules.is_empty() => {
                        t.chains.remove(i);
                        Ok(())
                    }
                    Some(_) => Err(format!("chain {name} still has rules (EBUSY)")),
                    None => Err(format!("no chain {name}")),
                }
            }
            NFT_MSG_NEWSET => self.new_set(family, body, ids, anonymous),
            NFT_MSG_DELSET => {
                let (table, name) = (named(NFTA_SET_TABLE), named(NFTA_SET_NAME));
                let t = self.table_mut(family, &table)?;
                let before = t.sets.len();
                t.sets.retain(|s| s.name != name);
                (t.sets.len() < before)
                    .then_some(())
                    .ok_or(format!("no set {name}"))
            }
            NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM => self.elements(family, kind, body, ids),
            NFT_MSG_NEWRULE => self.new_rule(family, body, ids),
            NFT_MSG_DELRULE => {
                let (table, chain) = (named(NFTA_RULE_TABLE), named(NFTA_RULE_CHAIN));
                let t = self.table_mut(family, &table)?;
                let c = t
                    .chains
                    .iter_mut()
                    .find(|c| c.name == chain)
                    .ok_or(format!("no chain {chain}"))?;
                c.rules.clear();
                Ok(())
            }
            other => Err(format!("message type {other} is not simulated")),
        }
    }

    fn new_table(&mut self, family: Family, body: &[u8]) -> Result<(), String> {
        let dumped = Dumped {
            family: family as u8,
            body: body.to_vec(),
        };
        let t = dump::table(&dumped).ok_or("a table that does not parse")?;
        if !self
            .tables
            .iter()
            .any(|x| x.family == family && x.name == t.name)
        {
            self.tables.push(t);
        }
        Ok(())
    }

    fn new_set(
        &mut self,
        family: Family,
        body: &[u8],
        ids: &mut Vec<(u32, String, String)>,
        anonymous: &mut u32,
    ) -> Result<(), String> {
        let (table, mut set): (String, ListedSet) =
            dump::set(body).ok_or("a set that does not parse")?;
        if set.name.contains('%') {
            set.name = set.name.replace("%d", &anonymous.to_string());
            *anonymous += 1;
        }
        if let Some(id) = be_u32(body, NFTA_SET_ID) {
            ids.push((id, table.clone(), set.name.clone()));
        }
        let t = self.table_mut(family, &table)?;
        if !t.sets.iter().any(|s| s.name == set.name) {
            t.sets.push(set);
        }
        Ok(())
    }

    fn elements(
        &mut self,
        family: Family,
        kind: u16,
        body: &[u8],
        ids: &[(u32, String, String)],
    ) -> Result<(), String> {
        let table = text(body, NFTA_SET_ELEM_LIST_TABLE).unwrap_or_default();
        let by_id = be_u32(body, NFTA_SET_ELEM_LIST_SET_ID)
            .and_then(|id| ids.iter().rev().find(|(i, t, _)| *i == id && *t == table))
            .map(|(_, _, n)| n.clone());
        let name = by_id
            .or_else(|| text(body, NFTA_SET_ELEM_LIST_SET).filter(|n| !n.contains('%')))
            .ok_or("elements of a set given by neither name nor a known id")?;
        let listed = dump::elements(body);
        let t = self.table_mut(family, &table)?;
        let s = t
            .sets
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or(format!("no set {name}"))?;
        if kind == NFT_MSG_NEWSETELEM {
            for e in listed {
                s.elements.retain(|x| {
                    !(x.element.key == e.element.key && x.interval_end == e.interval_end)
                });
                s.elements.push(e);
            }
        } else if attr(body, NFTA_SET_ELEM_LIST_ELEMENTS).is_none() {
            s.elements.clear();
        } else {
            for e in listed {
                let before = s.elements.len();
                s.elements
                    .retain(|x| x.element.key != e.element.key || x.interval_end != e.interval_end);
                if s.elements.len() == before {
                    return Err(format!("no element {:?} in {name} (ENOENT)", e.element.key));
                }
            }
        }
        Ok(())
    }

    fn new_rule(
        &mut self,
        family: Family,
        body: &[u8],
        ids: &[(u32, String, String)],
    ) -> Result<(), String> {
        let (table, chain, mut rule) = dump::rule(body).ok_or("a rule that does not parse")?;
        for e in &mut rule.exprs {
            if let Expr::Lookup {
                set: set @ SetRef::Anonymous(_),
                ..
            } = e
            {
                let SetRef::Anonymous(id) = *set else {
                    continue;
                };
                let name = ids
                    .iter()
                    .rev()
                    .find(|(i, t, _)| *i == id && *t == table)
                    .map(|(_, _, n)| n.clone())
                    .ok_or(format!(
                        "a lookup of set id {id}, which the batch did not make"
                    ))?;
                *set = SetRef::Named(name);
            }
        }
        let t = self.table_mut(family, &table)?;
        let c = t
            .chains
            .iter_mut()
            .find(|c| c.name == chain)
            .ok_or(format!("no chain {chain}"))?;
        rule.handle = c.rules.len() as u64 + 1;
        c.rules.push(rule);
        Ok(())
    }
}
