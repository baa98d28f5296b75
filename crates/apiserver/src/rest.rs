//! The API's verbs on objects, with what Kubernetes does around the store write: typing,
//! defaulting, validation, metadata bookkeeping, allocations, graceful deletion,
//! finalizers and the `status` and `binding` subresources.

use std::sync::Arc;
use std::time::SystemTime;

use podnet_api::k8s::kinds::{self, ResourceKind};
use podnet_api::k8s::patch::{self, PatchType};
use podnet_api::k8s::validation::{self, FieldError};
use serde_json::{Value, json};

use crate::alloc::{Allocated, Allocators};
use crate::controllers;
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta;
use crate::registry::{self, Registry};
use crate::typed::{self, FieldValidation};

/// How many times a PATCH is re-applied when the object changes under it.
const PATCH_ATTEMPTS: usize = 16;

/// The API's object operations.
#[derive(Clone)]
pub struct Rest {
    registry: Registry,
    allocators: Arc<Allocators>,
}

/// Options of a DELETE (query parameters and the `DeleteOptions` body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// Options of a create, update or patch.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and return the result without storing or allocating.
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

/// The object as written, with warnings for the client (`Warning` headers).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// The object is gone; here it is as it was.
    Deleted(Value),
    /// The object is marked for deletion (grace period, finalizers) and still exists.
    Pending(Value),
}

impl Rest {
    pub fn new(registry: Registry, allocators: Arc<Allocators>) -> Self {
        Rest {
            registry,
            allocators,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn allocators(&self) -> &Arc<Allocators> {
        &self.allocators
    }

    /// Creates an object sent to the collection of `kind` in `namespace`.
    pub async fn create(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        body: Value,
    ) -> ApiResult<Value> {
        self.create_with(kind, namespace, body, WriteOptions::default())
            .await
            .map(|w| w.object)
    }

    /// [`Rest::create`] with options.
    pub async fn create_with(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        body: Value,
        opts: WriteOptions,
    ) -> ApiResult<Written> {
        let (mut obj, warnings) = self.prepare_new(kind, namespace, body, opts)?;
        if kind.namespaced {
            self.require_active_namespace(namespace).await?;
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let allocated = self.allocate(kind, &mut obj, None).await?;
        match self.registry.create(kind, obj).await {
            Ok(object) => Ok(Written { object, warnings }),
            Err(e) => {
                self.allocators.rollback(allocated).await;
                Err(e)
            }
        }
    }

    /// Typing, identity, defaults and validation of an object about to be created.
    fn prepare_new(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        body: Value,
        opts: WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let mut obj = check_type_meta(kind, body)?;
        set_namespace(kind, &mut obj, namespace)?;
        meta::remove(&mut obj, "resourceVersion");
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta::remove(&mut obj, field);
        }
        if meta::name(&obj).is_empty() {
            let prefix = meta::get(&obj, "generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if !prefix.is_empty() {
                meta::set(&mut obj, "name", format!("{prefix}{}", random_suffix()));
            }
        }
        let (mut obj, warnings) = typed::normalize(kind, &obj, opts.field_validation)?;
        if kind.custom_resource
            && kind.has_subresource("status")
            && let Some(map) = obj.as_object_mut()
        {
            // A custom resource with a status subresource is created without a status.
            map.remove("status");
        }
        validation::apply_defaults(kind.kind, &mut obj);
        if kind == &kinds::NAMESPACE {
            obj["status"] = json!({"phase": "Active"});
        }
        meta::set(&mut obj, "generation", 1);
        let errors = validation::validate_create(kind.kind, &obj);
        if !errors.is_empty() {
            return Err(invalid(kind, &obj, &errors));
        }
        Ok((obj, warnings))
    }

    /// Replaces an object (PUT), or its `status` when `subresource` is `status`.
    pub async fn replace(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        body: Value,
    ) -> ApiResult<Value> {
        self.replace_with(
            kind,
            namespace,
            name,
            subresource,
            body,
            WriteOptions::default(),
        )
        .await
        .map(|w| w.object)
    }

    /// [`Rest::replace`] with options.
    pub async fn replace_with(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        opts: WriteOptions,
    ) -> ApiResult<Written> {
        let mut body = check_type_meta(kind, body)?;
        set_namespace(kind, &mut body, namespace)?;
        let body_name = meta::name(&body);
        if body_name.is_empty() {
            meta::set(&mut body, "name", name);
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let Some(current) = self.registry.try_get(kind, namespace, name).await? else {
            if allows_create_on_update(kind) && subresource.is_none() {
                return self.create_with(kind, namespace, body, opts).await;
            }
            return Err(ApiError::not_found(kind.plural, kind.group, name));
        };
        let expected = match meta::resource_version(&body) {
            "" => registry::revision_of(&current)?,
            rv => registry::parse_resource_version(rv)?,
        };
        self.write_update(kind, &current, body, subresource, expected, opts)
            .await
    }

    /// Applies a PATCH, re-reading and re-applying when the object changes meanwhile
    /// (unless the patch itself pins a `resourceVersion`).
    pub async fn patch(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        patch_type: PatchType,
        body: &Value,
    ) -> ApiResult<Value> {
        let opts = WriteOptions::default();
        self.patch_with(kind, namespace, name, subresource, patch_type, body, opts)
            .await
            .map(|w| w.object)
    }

    /// [`Rest::patch`] with options.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_with(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        patch_type: PatchType,
        body: &Value,
        opts: WriteOptions,
    ) -> ApiResult<Written> {
        let pinned = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .is_some();
        for _ in 0..PATCH_ATTEMPTS {
            let current = self.registry.get(kind, namespace, name).await?;
            let patched = patch::apply_patch(kind.kind, patch_type, &current, body)
                .map_err(|e| patch_error(&e))?;
            let expected = match meta::resource_version(&patched) {
                "" => registry::revision_of(&current)?,
                rv => registry::parse_resource_version(rv)?,
            };
            match self
                .write_update(kind, &current, patched, subresource, expected, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && !pinned => continue,
                other => return other,
            }
        }
        Err(ApiError::conflict(kind.plural, kind.group, name))
    }

    /// The common tail of PUT and PATCH: keep what clients may not change, validate,
    /// allocate, write at `expected`, then finish deletions whose finalizers are done.
    async fn write_update(
        &self,
        kind: &'static ResourceKind,
        current: &Value,
        new: Value,
        subresource: Option<&str>,
        expected: i64,
        opts: WriteOptions,
    ) -> ApiResult<Written> {
        let obj = merge_for_update(kind, current, new, subresource);
        let (mut obj, warnings) = typed::normalize(kind, &obj, opts.field_validation)?;
        validation::prepare_update(kind.kind, &mut obj, current);
        validation::apply_defaults(kind.kind, &mut obj);
        let errors = validation::validate_update(kind.kind, &obj, current);
        if !errors.is_empty() {
            return Err(invalid(kind, &obj, &errors));
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
            });
        }
        let allocated = self.allocate(kind, &mut obj, Some(current)).await?;
        let updated = match self.registry.update(kind, obj, expected).await {
            Ok(updated) => updated,
            Err(e) => {
                self.allocators.rollback(allocated).await;
                return Err(e);
            }
        };
        if kind == &kinds::SERVICE {
            self.allocators.release_dropped(current, &updated).await;
        }
        if is_deleting(&updated) && finalizers(&updated).is_empty() && kind != &kinds::POD {
            let rv = registry::revision_of(&updated)?;
            let (ns, name) = (meta::namespace(&updated), meta::name(&updated));
            let deleted = self.registry.delete(kind, ns, name, Some(rv)).await?;
            self.after_delete(kind, &deleted).await;
            return Ok(Written {
                object: deleted,
                warnings,
            });
        }
        Ok(Written {
            object: updated,
            warnings,
        })
    }

    /// Deletes an object as Kubernetes does: pods bound to a node get a grace period,
    /// objects with finalizers and namespaces are marked and finished by controllers.
    pub async fn delete(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deletion> {
        let current = self.registry.get(kind, namespace, name).await?;
        check_preconditions(kind, &current, opts)?;
        if kind == &kinds::POD {
            return match controllers::delete_pod_gracefully(
                &self.registry,
                namespace,
                name,
                opts.grace_period_seconds,
            )
            .await?
            {
                Some(marked) => Ok(Deletion::Pending(marked)),
                None => Ok(Deletion::Deleted(current)),
            };
        }
        if kind == &kinds::NAMESPACE || !finalizers(&current).is_empty() {
            let marked = self.mark_deleting(kind, namespace, name).await?;
            return Ok(Deletion::Pending(marked));
        }
        let expected = registry::revision_of(&current)?;
        let deleted = self
            .registry
            .delete(kind, namespace, name, Some(expected))
            .await?;
        self.after_delete(kind, &deleted).await;
        Ok(Deletion::Deleted(deleted))
    }

    /// Sets `deletionTimestamp` (and a namespace's `Terminating` phase) once.
    async fn mark_deleting(
        &self,
        kind: &'static ResourceKind,
        namespace: &str,
        name: &str,
    ) -> ApiResult<Value> {
        let now = meta::timestamp(SystemTime::now());
        self.registry
            .update_with(kind, namespace, name, |cur| {
                if is_deleting(cur) {
                    return Ok(None);
                }
                let mut new = cur.clone();
                meta::set(&mut new, "deletionTimestamp", now.clone());
                meta::set(&mut new, "deletionGracePeriodSeconds", 0);
                if kind == &kinds::NAMESPACE {
                    new["status"]["phase"] = json!("Terminating");
                }
                Ok(Some(new))
            })
            .await
    }

    /// Frees what a deleted object held.
    async fn after_delete(&self, kind: &'static ResourceKind, deleted: &Value) {
        if kind == &kinds::SERVICE {
            self.allocators.release_service(deleted).await;
        } else if kind == &kinds::NODE {
            self.allocators.release_node(deleted).await;
        }
    }

    /// `POST pods/NAME/binding`: assigns a pod to a node, once.
    pub async fn bind(&self, namespace: &str, name: &str, binding: &Value) -> ApiResult<Value> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid_field("Binding", name, "target.name", "Required value")
            })?
            .to_owned();
        let now = meta::timestamp(SystemTime::now());
        self.registry
            .update_with(&kinds::POD, namespace, name, |cur| {
                let assigned = cur
                    .pointer("/spec/nodeName")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !assigned.is_empty() {
                    return Err(ApiError::conflict_message(format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{assigned}\""
                    )));
                }
                if is_deleting(cur) {
                    return Err(ApiError::conflict_message(format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"
                    )));
                }
                let mut new = cur.clone();
                new["spec"]["nodeName"] = json!(node);
                set_condition(&mut new, "PodScheduled", "True", &now);
                Ok(Some(new))
            })
            .await?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// Allocations that the kind needs before it is written.
    async fn allocate(
        &self,
        kind: &'static ResourceKind,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Allocated> {
        if kind == &kinds::SERVICE {
            self.allocators.allocate_service(obj, old).await
        } else if kind == &kinds::NODE && old.is_none() {
            self.allocators.allocate_node_cidr(obj).await
        } else {
            Ok(Allocated::default())
        }
    }

    /// Namespaced objects may only be created in a namespace that exists and is not
    /// being deleted.
    async fn require_active_namespace(&self, namespace: &str) -> ApiResult<()> {
        match self
            .registry
            .try_get(&kinds::NAMESPACE, "", namespace)
            .await?
        {
            None => Err(ApiError::not_found("namespaces", "", namespace)),
            Some(ns) if is_deleting(&ns) => Err(ApiError::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// Checks (or fills in) `apiVersion` and `kind` of a request body.
fn check_type_meta(kind: &ResourceKind, body: Value) -> ApiResult<Value> {
    let mut obj = match body {
        Value::Object(_) => body,
        other => {
            return Err(ApiError::bad_request(format!(
                "the request body must be a JSON object (a {}), not {}",
                kind.kind,
                type_name(&other)
            )));
        }
    };
    let api_version = kind.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(api_version),
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(kind.kind),
        Some(k) if k == kind.kind => {}
        Some(k) => {
            let hint = match kinds::ALL.iter().find(|x| x.kind == k) {
                Some(x) => format!("send it to the {} collection instead", x.plural),
                None => format!("{k} is not a kind this server serves"),
            };
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}); {hint}",
                kind.kind
            )));
        }
    }
    Ok(obj)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A namespaced object takes the request's namespace; a cluster-scoped one has none.
fn set_namespace(kind: &ResourceKind, obj: &mut Value, namespace: &str) -> ApiResult<()> {
    if !kind.namespaced {
        meta::remove(obj, "namespace");
        return Ok(());
    }
    match meta::namespace(obj) {
        "" => meta::set(obj, "namespace", namespace),
        ns if ns == namespace => {}
        _ => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

/// Builds the object to store from the current one and the client's version: identity
/// and deletion state are the server's; `status` comes only through the `status`
/// subresource (for kinds that have one); `generation` counts spec changes.
fn merge_for_update(
    kind: &ResourceKind,
    current: &Value,
    new: Value,
    subresource: Option<&str>,
) -> Value {
    let mut obj = if subresource == Some("status") {
        let mut obj = current.clone();
        match new.get("status") {
            Some(status) => obj["status"] = status.clone(),
            None => {
                if let Some(map) = obj.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        obj
    } else {
        let mut obj = new;
        if kind.has_subresource("status") {
            match current.get("status") {
                Some(status) => obj["status"] = status.clone(),
                None => {
                    if let Some(map) = obj.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        obj
    };
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ] {
        match meta::get(current, field).cloned() {
            Some(v) => meta::set(&mut obj, field, v),
            None => {
                meta::remove(&mut obj, field);
            }
        }
    }
    let generation = meta::get(current, "generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let spec_changed = obj.get("spec") != current.get("spec");
    meta::set(
        &mut obj,
        "generation",
        if spec_changed {
            generation + 1
        } else {
            generation
        },
    );
    meta::remove(&mut obj, "resourceVersion");
    obj
}

fn check_preconditions(
    kind: &ResourceKind,
    current: &Value,
    opts: &DeleteOptions,
) -> ApiResult<()> {
    let name = meta::name(current);
    if let Some(uid) = &opts.precondition_uid {
        let actual = meta::get(current, "uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if actual != uid {
            return Err(ApiError::conflict_message(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual} ({} \"{name}\")",
                kind.plural
            )));
        }
    }
    if let Some(rv) = &opts.precondition_resource_version
        && meta::resource_version(current) != rv
    {
        return Err(ApiError::conflict(kind.plural, kind.group, name));
    }
    Ok(())
}

/// Kinds that Kubernetes lets a PUT create.
fn allows_create_on_update(kind: &ResourceKind) -> bool {
    matches!(kind.kind, "Endpoints" | "Lease" | "Event" | "EndpointSlice")
}

pub fn is_deleting(obj: &Value) -> bool {
    meta::get(obj, "deletionTimestamp").is_some_and(|v| !v.is_null())
}

fn finalizers(obj: &Value) -> Vec<&str> {
    meta::get(obj, "finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Sets a pod condition, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(pod: &mut Value, kind: &str, status: &str, now: &str) {
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {}
        Some(c) => {
            c["status"] = json!(status);
            c["lastTransitionTime"] = json!(now);
        }
        None => list.push(json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})),
    }
}

/// A 422 naming every bad field.
fn invalid(kind: &ResourceKind, obj: &Value, errors: &[FieldError]) -> ApiError {
    let causes = errors
        .iter()
        .map(|e| Cause {
            reason: e.kind.reason().to_owned(),
            message: e.body(),
            field: e.field.clone(),
        })
        .collect();
    ApiError::invalid(kind.kind, kind.group, meta::name(obj), causes)
}

fn patch_error(err: &patch::PatchError) -> ApiError {
    let code = err.http_code();
    if code == 422 {
        ApiError::invalid_field("", "", "patch", err.to_string())
    } else {
        ApiError::bad_request(err.to_string())
    }
}

/// Five characters as Kubernetes' `generateName` appends (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_api::k8s::kinds::{POD, SERVICE};

    #[test]
    fn type_meta_is_checked_and_filled() {
        let obj = check_type_meta(&POD, json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(
            (obj["apiVersion"].as_str(), obj["kind"].as_str()),
            (Some("v1"), Some("Pod"))
        );
        let err = check_type_meta(&POD, json!({"kind": "Service"})).unwrap_err();
        assert!(
            err.message.contains("send it to the services collection"),
            "{}",
            err.message
        );
        assert_eq!(check_type_meta(&POD, json!([1])).unwrap_err().code, 400);
    }

    #[test]
    fn update_keeps_identity_and_status_and_counts_generations() {
        let current = json!({"metadata": {"name": "s", "namespace": "d", "uid": "u1", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "5"},
            "spec": {"a": 1}, "status": {"x": 1}});
        let new = json!({"metadata": {"name": "s", "uid": "evil", "labels": {"l": "v"}},
            "spec": {"a": 2}, "status": {"x": 2}});
        let merged = merge_for_update(&SERVICE, &current, new.clone(), None);
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["metadata"]["namespace"], "d");
        assert_eq!(merged["metadata"]["generation"], 2);
        assert_eq!(merged["metadata"]["labels"]["l"], "v");
        assert_eq!(merged["status"]["x"], 1);
        let status = merge_for_update(&SERVICE, &current, new, Some("status"));
        assert_eq!(status["status"]["x"], 2);
        assert_eq!(status["spec"]["a"], 1);
        assert_eq!(status["metadata"]["generation"], 1);
    }

    #[test]
    fn generated_names() {
        let s = random_suffix();
        assert_eq!(s.len(), 5);
    }
}
