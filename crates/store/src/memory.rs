//! The in-memory backend, for tests: a `BTreeMap` of keys plus the history log.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::RwLock;

use crate::codec::LeaseRecord;
use crate::local::{Backend, Local, LocalOptions, ReadTxn, WriteTxn, delegate_store};
use crate::{Event, KeyValue, LeaseId, Op, Result};

/// A [`crate::Store`] that keeps everything in memory; nothing survives a drop.
pub struct MemoryStore {
    local: Local<MemBackend>,
}

impl MemoryStore {
    /// An empty store (revision 1). Needs a tokio runtime (it starts the lease expiry task).
    pub fn new() -> Self {
        Self::with_options(LocalOptions::default())
    }

    pub fn with_options(opts: LocalOptions) -> Self {
        MemoryStore {
            local: Local::start(MemBackend::default(), opts),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

delegate_store!(MemoryStore);

#[derive(Default)]
struct MemBackend {
    state: RwLock<MemState>,
}

struct MemState {
    revision: i64,
    compacted: i64,
    kvs: BTreeMap<String, KeyValue>,
    history: BTreeMap<i64, Vec<Event>>,
    leases: BTreeMap<LeaseId, LeaseRecord>,
    lease_keys: BTreeSet<(LeaseId, String)>,
    next_lease: i64,
}

impl Default for MemState {
    fn default() -> Self {
        MemState {
            revision: 1,
            compacted: 0,
            kvs: BTreeMap::new(),
            history: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_keys: BTreeSet::new(),
            next_lease: 1,
        }
    }
}

impl Backend for MemBackend {
    fn read<T>(&self, _op: Op, _key: &str, f: impl FnOnce(&dyn ReadTxn) -> Result<T>) -> Result<T> {
        let g = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&*g)
    }

    fn write<T>(
        &self,
        _op: Op,
        _key: &str,
        f: impl FnOnce(&mut dyn WriteTxn) -> Result<T>,
    ) -> Result<T> {
        // Operations check their preconditions before their first write and in-memory writes
        // cannot fail, so there is nothing to roll back.
        let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut *g)
    }
}

impl ReadTxn for MemState {
    fn revision(&self) -> Result<i64> {
        Ok(self.revision)
    }

    fn compacted(&self) -> Result<i64> {
        Ok(self.compacted)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.kvs.get(key).cloned())
    }

    fn range(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self
            .kvs
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    fn history(&self, after: i64, limit: usize) -> Result<Vec<(i64, Vec<Event>)>> {
        Ok(self
            .history
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(r, e)| (*r, e.clone()))
            .collect())
    }

    fn lease(&self, id: LeaseId) -> Result<Option<LeaseRecord>> {
        Ok(self.leases.get(&id).copied())
    }

    fn leases(&self) -> Result<Vec<(LeaseId, LeaseRecord)>> {
        Ok(self.leases.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn lease_keys(&self, id: LeaseId) -> Result<Vec<String>> {
        Ok(self
            .lease_keys
            .range((id, String::new())..)
            .take_while(|(l, _)| *l == id)
            .map(|(_, k)| k.clone())
            .collect())
    }

    fn next_lease_id(&self) -> Result<i64> {
        Ok(self.next_lease)
    }
}

impl WriteTxn for MemState {
    fn set_revision(&mut self, rev: i64) -> Result<()> {
        self.revision = rev;
        Ok(())
    }

    fn put(&mut self, kv: &KeyValue) -> Result<()> {
        self.kvs.insert(kv.key.clone(), kv.clone());
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<()> {
        self.kvs.remove(key);
        Ok(())
    }

    fn push_history(&mut self, rev: i64, events: &[Event]) -> Result<()> {
        self.history.insert(rev, events.to_vec());
        Ok(())
    }

    fn compact(&mut self, upto: i64) -> Result<()> {
        self.history = self.history.split_off(&upto.saturating_add(1));
        self.compacted = upto;
        Ok(())
    }

    fn put_lease(&mut self, id: LeaseId, rec: &LeaseRecord) -> Result<()> {
        self.leases.insert(id, *rec);
        Ok(())
    }

    fn remove_lease(&mut self, id: LeaseId) -> Result<()> {
        self.leases.remove(&id);
        Ok(())
    }

    fn attach(&mut self, id: LeaseId, key: &str) -> Result<()> {
        self.lease_keys.insert((id, key.to_owned()));
        Ok(())
    }

    fn detach(&mut self, id: LeaseId, key: &str) -> Result<()> {
        self.lease_keys.remove(&(id, key.to_owned()));
        Ok(())
    }

    fn set_next_lease_id(&mut self, next: i64) -> Result<()> {
        self.next_lease = next;
        Ok(())
    }
}
