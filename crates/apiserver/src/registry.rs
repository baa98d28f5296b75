//! Objects in the store: the key layout, `resourceVersion` as the key's modification
//! revision, and get/list/create/update/delete/watch of JSON objects. No per-kind logic
//! lives here; see `rest` for that.

use std::sync::Arc;
use std::time::SystemTime;

use futures::{Stream, StreamExt};
use podnet_api::k8s::kinds::ResourceKind;
use podnet_store::{Event, KeyValue, Store, StoreError};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::meta;

/// How many times a read-modify-write is retried when it keeps losing races.
const MAX_UPDATE_ATTEMPTS: usize = 64;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    pub kind: EventType,
    /// The object after the change (for a delete: as it was, at the delete's revision).
    pub object: Value,
    /// The object before the change, if it existed.
    pub previous: Option<Value>,
    /// The revision of the change.
    pub revision: i64,
}

/// The objects of a list and the revision they were read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: i64,
}

/// Access to objects in the store.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Registry { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> ApiResult<Value> {
        self.try_get(kind, namespace, name)
            .await?
            .ok_or_else(|| ApiError::not_found(kind.plural, kind.group, name))
    }

    /// Reads one object, `None` if absent.
    pub async fn try_get(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Option<Value>> {
        let key = object_key(kind, namespace, name);
        match self.store.get(&key).await {
            Ok(Some(kv)) => decode(&kv).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(ApiError::store(&e)),
        }
    }

    /// Lists the objects of a kind, in one namespace or all (`None`), at a revision or now.
    pub async fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        at_revision: Option<i64>,
    ) -> ApiResult<Listed> {
        let prefix = collection_prefix(kind, namespace);
        let listed = self
            .store
            .list(&prefix, at_revision)
            .await
            .map_err(|e| list_error(&e))?;
        let items = listed
            .items
            .iter()
            .map(decode)
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(Listed {
            items,
            revision: listed.revision,
        })
    }

    /// The stored objects of a kind, not decoded, in key order (so in namespace/name
    /// order): a page of a list decodes only what it returns.
    pub async fn list_raw(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        at_revision: Option<i64>,
    ) -> ApiResult<podnet_store::ListResult> {
        let prefix = collection_prefix(kind, namespace);
        self.store
            .list(&prefix, at_revision)
            .await
            .map_err(|e| list_error(&e))
    }

    /// Stores a new object; it must carry its name (and namespace, if namespaced). Sets `uid`
    /// and `creationTimestamp` when absent.
    pub async fn create(&self, kind: &ResourceKind, mut obj: Value) -> ApiResult<Value> {
        let (namespace, name) = (
            meta::namespace(&obj).to_owned(),
            meta::name(&obj).to_owned(),
        );
        if meta::get(&obj, "uid").is_none() {
            meta::set(&mut obj, "uid", uuid::Uuid::new_v4().to_string());
        }
        if meta::get(&obj, "creationTimestamp").is_none() {
            meta::set(
                &mut obj,
                "creationTimestamp",
                meta::timestamp(SystemTime::now()),
            );
        }
        let key = object_key(kind, &namespace, &name);
        match self.store.create(&key, encode(&obj)?, None).await {
            Ok(kv) => decode(&kv),
            Err(StoreError::AlreadyExists { .. }) => {
                Err(ApiError::already_exists(kind.plural, kind.group, &name))
            }
            Err(e) => Err(ApiError::store(&e)),
        }
    }

    /// Replaces an object if it is still at `expected_revision` (409 Conflict otherwise).
    pub async fn update(
        &self,
        kind: &ResourceKind,
        obj: Value,
        expected_revision: i64,
    ) -> ApiResult<Value> {
        let (namespace, name) = (
            meta::namespace(&obj).to_owned(),
            meta::name(&obj).to_owned(),
        );
        let key = object_key(kind, &namespace, &name);
        match self
            .store
            .update(&key, encode(&obj)?, expected_revision)
            .await
        {
            Ok(kv) => decode(&kv),
            Err(StoreError::Conflict { .. }) => {
                Err(ApiError::conflict(kind.plural, kind.group, &name))
            }
            Err(StoreError::NotFound { .. }) => {
                Err(ApiError::not_found(kind.plural, kind.group, &name))
            }
            Err(e) => Err(ApiError::store(&e)),
        }
    }

    /// Read-modify-write that retries on conflicts: `change` gets the current object and
    /// returns the new one, or `None` to leave it as it is. Returns the object as stored.
    pub async fn update_with<F>(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        mut change: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Option<Value>>,
    {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self.get(kind, namespace, name).await?;
            let Some(new) = change(&current)? else {
                return Ok(current);
            };
            let revision = revision_of(&current)?;
            match self.update(kind, new, revision).await {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(kind.plural, kind.group, name))
    }

    /// Deletes an object, only if at `expected_revision` when given. Returns the object as
    /// it was, with the delete's revision as its `resourceVersion` (as a watch shows it).
    pub async fn delete(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        expected_revision: Option<i64>,
    ) -> ApiResult<Value> {
        let key = object_key(kind, namespace, name);
        match self.store.delete(&key, expected_revision).await {
            Ok(deleted) => {
                let mut obj = decode(&deleted.prev_kv)?;
                meta::set(&mut obj, "resourceVersion", deleted.revision.to_string());
                Ok(obj)
            }
            Err(StoreError::NotFound { .. }) => {
                Err(ApiError::not_found(kind.plural, kind.group, name))
            }
            Err(StoreError::Conflict { .. }) => {
                Err(ApiError::conflict(kind.plural, kind.group, name))
            }
            Err(e) => Err(ApiError::store(&e)),
        }
    }

    /// Every change to the kind's objects (in one namespace or all) after `from_revision`.
    /// A compacted revision gives a 410 error up front; one found later ends the stream
    /// with a 410 item.
    pub async fn watch(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        from_revision: i64,
    ) -> ApiResult<impl Stream<Item = ApiResult<WatchEvent>> + Send + 'static> {
        let prefix = collection_prefix(kind, namespace);
        let stream = self
            .store
            .watch(&prefix, from_revision)
            .await
            .map_err(|e| list_error(&e))?;
        Ok(stream.map(|item| match item {
            Ok(event) => to_watch_event(&event),
            Err(e) => Err(list_error(&e)),
        }))
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> ApiResult<i64> {
        self.store
            .current_revision()
            .await
            .map_err(|e| ApiError::store(&e))
    }
}

fn to_watch_event(event: &Event) -> ApiResult<WatchEvent> {
    match event {
        Event::Put { kv, prev_kv } => Ok(WatchEvent {
            kind: if prev_kv.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            object: decode(kv)?,
            previous: prev_kv.as_ref().map(decode).transpose()?,
            revision: kv.mod_revision,
        }),
        Event::Delete {
            prev_kv, revision, ..
        } => {
            let previous = decode(prev_kv)?;
            let mut object = previous.clone();
            meta::set(&mut object, "resourceVersion", revision.to_string());
            Ok(WatchEvent {
                kind: EventType::Deleted,
                object,
                previous: Some(previous),
                revision: *revision,
            })
        }
    }
}

/// A list or watch error: a compacted revision is 410 Gone with Kubernetes' wording.
fn list_error(err: &StoreError) -> ApiError {
    match err {
        StoreError::Compacted {
            requested,
            compacted_revision,
            ..
        } => ApiError::gone(format!(
            "too old resource version: {requested} ({compacted_revision})"
        )),
        StoreError::FutureRevision {
            requested, current, ..
        } => ApiError::gone(format!(
            "resource version {requested} is newer than the current revision {current}"
        )),
        other => ApiError::store(other),
    }
}

/// The object's `resourceVersion` as a store revision.
pub fn revision_of(obj: &Value) -> ApiResult<i64> {
    parse_resource_version(meta::resource_version(obj))
}

/// Parses a `resourceVersion`; a malformed one is a 400.
pub fn parse_resource_version(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid resource version {rv:?}: it must be a number the server gave out"
        ))
    })
}

/// `/registry/<group>/<plural>/[<namespace>/]<name>`.
pub fn object_key(kind: &ResourceKind, namespace: &str, name: &str) -> String {
    if kind.namespaced {
        format!("{}{namespace}/{name}", collection_prefix(kind, None))
    } else {
        format!("{}{name}", collection_prefix(kind, None))
    }
}

/// The key prefix of a kind's objects, optionally of one namespace.
pub fn collection_prefix(kind: &ResourceKind, namespace: Option<&str>) -> String {
    let group = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    match namespace {
        Some(ns) if kind.namespaced => format!("/registry/{group}/{}/{ns}/", kind.plural),
        _ => format!("/registry/{group}/{}/", kind.plural),
    }
}

fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    let mut obj = obj.clone();
    meta::remove(&mut obj, "resourceVersion");
    serde_json::to_vec(&obj).map_err(|e| ApiError::internal(format!("encoding an object: {e}")))
}

/// Where a stored object sorts in a list, from its key alone: `namespace/name`, or
/// `/name` for a cluster-scoped kind (as `namespace/name` with an empty namespace).
pub fn list_position(kind: &ResourceKind, key: &str) -> String {
    let rest = key
        .strip_prefix(&collection_prefix(kind, None))
        .unwrap_or(key);
    if kind.namespaced {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// The object stored in `kv`, with its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "the object stored at {} is not valid JSON ({e}); the store holds data podnet did not write",
            kv.key
        ))
    })?;
    meta::set(&mut obj, "resourceVersion", kv.mod_revision.to_string());
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_api::k8s::kinds::{NODE, POD};
    use podnet_store::MemoryStore;
    use serde_json::json;

    fn registry() -> Registry {
        Registry::new(Arc::new(MemoryStore::new()))
    }

    #[test]
    fn keys() {
        assert_eq!(
            object_key(&POD, "default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(object_key(&NODE, "", "n1"), "/registry/core/nodes/n1");
        assert_eq!(collection_prefix(&POD, Some("a")), "/registry/core/pods/a/");
        assert_eq!(collection_prefix(&POD, None), "/registry/core/pods/");
    }

    #[tokio::test]
    async fn create_update_conflict_delete_watch() {
        let r = registry();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}});
        let created = r.create(&POD, pod.clone()).await.unwrap();
        let rv = revision_of(&created).unwrap();
        assert!(meta::get(&created, "uid").is_some());
        assert_eq!(r.create(&POD, pod).await.unwrap_err().code, 409);

        let mut changed = created.clone();
        changed["spec"] = json!({"nodeName": "n1"});
        let updated = r.update(&POD, changed.clone(), rv).await.unwrap();
        let stale = r.update(&POD, changed, rv).await.unwrap_err();
        assert_eq!((stale.code, stale.reason), (409, "Conflict"));

        let mut events = Box::pin(r.watch(&POD, Some("default"), rv).await.unwrap());
        let deleted = r.delete(&POD, "default", "p", None).await.unwrap();
        let e1 = events.next().await.unwrap().unwrap();
        assert_eq!(e1.kind, EventType::Modified);
        assert_eq!(e1.object, updated);
        let e2 = events.next().await.unwrap().unwrap();
        assert_eq!(e2.kind, EventType::Deleted);
        assert_eq!(e2.object, deleted);
        assert_eq!(r.get(&POD, "default", "p").await.unwrap_err().code, 404);
    }

    #[tokio::test]
    async fn update_with_retries_until_it_applies() {
        let r = registry();
        let node = json!({"metadata": {"name": "n1"}});
        r.create(&NODE, node).await.unwrap();
        let mut calls = 0;
        let out = r
            .update_with(&NODE, "", "n1", |cur| {
                calls += 1;
                let mut new = cur.clone();
                new["spec"] = json!({"podCIDR": "10.244.0.0/24"});
                Ok(Some(new))
            })
            .await
            .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(out["spec"]["podCIDR"], "10.244.0.0/24");
    }
}
