//! Repair: makes the allocation keys match the objects again after a crash.
//!
//! A crash between taking an allocation and writing the object leaves an orphan key (the item
//! can never be handed out again); a crash between deleting an object and releasing its keys
//! does too. A store restored from an older backup, or objects written by something else, can
//! hold items whose keys are missing (the item could be handed out twice). Repair lists the
//! allocations and, at the same store revision, the Services and Nodes, then frees orphans and
//! re-takes missing keys.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use podnet_api::k8s::kinds::{NODE, ResourceKind, SERVICE};
use podnet_store::StoreError;
use serde_json::Value;

use super::node::node_owner;
use super::service::service_owner;
use super::space::{self, ALLOCATIONS_PREFIX, Kind, Record};
use super::{Allocators, Held};
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

impl Allocators {
    /// At start (and periodically): frees allocations whose owner object no longer exists or
    /// no longer holds them (only those older than `min_age`, so an allocation whose object
    /// another apiserver is writing right now is not freed), and re-takes allocations held by
    /// stored objects but missing (after a crash). Returns how many were freed and re-taken.
    ///
    /// Items outside the configured ranges (the ranges were changed since they were handed
    /// out) are left alone and logged.
    pub async fn repair(
        &self,
        registry: &Registry,
        min_age: Duration,
    ) -> ApiResult<(usize, usize)> {
        let store = self.store();
        let allocations = store
            .list(ALLOCATIONS_PREFIX, None)
            .await
            .map_err(|e| ApiError::store(&e))?;
        let at = allocations.revision;
        let services = list_at(registry, &SERVICE, at).await?;
        let nodes = list_at(registry, &NODE, at).await?;

        // What the objects hold: key -> owner.
        let mut expected: HashMap<String, String> = HashMap::new();
        let held = services
            .iter()
            .map(|svc| (service_owner(svc), self.service_held(svc)))
            .chain(nodes.iter().map(|n| (node_owner(n), self.node_held(n))));
        for (owner, items) in held {
            for Held {
                key,
                in_range,
                what,
            } in items
            {
                if !in_range {
                    tracing::warn!(
                        owner,
                        "{what} is outside the configured ranges; it is not tracked (recreate the object to move it into the current range)"
                    );
                    continue;
                }
                match expected.entry(key) {
                    Entry::Vacant(v) => {
                        v.insert(owner.clone());
                    }
                    Entry::Occupied(o) => tracing::warn!(
                        first = %o.get(),
                        second = owner,
                        "{what} is held by two objects; delete and recreate one of them"
                    ),
                }
            }
        }

        let now = space::unix_now();
        let (mut freed, mut retaken) = (0, 0);
        for kv in allocations.items {
            if !Kind::ALL.iter().any(|k| kv.key.starts_with(k.prefix())) {
                continue;
            }
            let record = Record::decode(&kv.value);
            let old_enough = record
                .as_ref()
                .is_none_or(|r| Duration::from_secs(now.saturating_sub(r.at)) >= min_age);
            match expected.remove(&kv.key) {
                Some(owner) if record.as_ref().is_some_and(|r| r.owner == owner) => {}
                Some(owner) => {
                    // Held, but recorded for someone else (or unreadable): record the holder.
                    if old_enough {
                        match store
                            .update(&kv.key, Record::now(&owner).encode(), kv.mod_revision)
                            .await
                        {
                            Ok(_) => retaken += 1,
                            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                            Err(e) => return Err(ApiError::store(&e)),
                        }
                    }
                }
                None => {
                    if old_enough && space::delete_at(store, &kv.key, kv.mod_revision).await {
                        tracing::info!(
                            key = kv.key,
                            owner = record.map(|r| r.owner).unwrap_or_default(),
                            "freed an allocation no object holds"
                        );
                        freed += 1;
                    }
                }
            }
        }
        for (key, owner) in expected {
            if space::take_key(store, &key, &owner).await?.is_some() {
                tracing::info!(key, owner, "re-took an allocation held by a stored object");
                retaken += 1;
            }
        }
        Ok((freed, retaken))
    }
}

/// The objects of a kind at revision `at`, or now if that revision is already compacted.
async fn list_at(registry: &Registry, kind: &ResourceKind, at: i64) -> ApiResult<Vec<Value>> {
    match registry.list(kind, None, Some(at)).await {
        Ok(listed) => Ok(listed.items),
        Err(e) if e.code == 410 => Ok(registry.list(kind, None, None).await?.items),
        Err(e) => Err(e),
    }
}
