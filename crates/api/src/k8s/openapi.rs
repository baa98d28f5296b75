//! The OpenAPI v3 documents kubectl needs from podnet's apiserver.
//!
//! kubectl (v1.27 and later) validates manifests with `--validate=strict` by default. Before it
//! falls back to client-side validation (which needs the full OpenAPI v2 schema), it checks
//! whether the server validates fields itself (`k8s.io/cli-runtime/pkg/resource/
//! query_param_verifier_v3.go`): it fetches `/openapi/v3`, follows the `serverRelativeURL` of
//! the object's group version, and looks for a PATCH operation whose
//! `x-kubernetes-group-version-kind` is the object's and which takes a `fieldValidation` query
//! parameter. The documents here declare exactly that, for every kind podnet serves, so kubectl
//! leaves validation to the server.
//!
//! No operation declares a request body. `kubectl apply` builds a strategic merge patch from
//! OpenAPI v3 only if the PATCH operation accepts `application/strategic-merge-patch+json`
//! (`gvkSupportsPatchOpenAPIV3` in kubectl's `patcher.go`); without a request body it falls back
//! to OpenAPI v2 and then to its compiled-in types, which know the patch merge keys of every
//! built-in kind. The component schemas are minimal (an object with the group-version-kind
//! extension), enough for tools that look a kind up but not for `kubectl explain`.

use serde_json::{Map, Value, json};

use super::kinds::{self, ResourceKind};

/// The `/openapi/v3` root document: one path per served group version (`api/v1`,
/// `apis/GROUP/VERSION`), each with its `serverRelativeURL` carrying a `hash` that changes
/// whenever the document does (kubectl caches by URL).
pub fn v3_root() -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions() {
        let path = gv_path(group, version);
        let hash = hash(&document(group, version));
        paths.insert(
            path.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
        );
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group version, `path` being `api/v1` or
/// `apis/GROUP/VERSION` (a leading `/`, an `/openapi/v3/` prefix and a `?hash=` query are
/// tolerated); `None` if that group version is not served.
pub fn v3_group_version(path: &str) -> Option<Value> {
    let path = normalize(path);
    group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path)
        .map(|(g, v)| document(g, v))
}

/// The hash that [`v3_root`] puts in the `serverRelativeURL` of the group version at `path`
/// (same forms as [`v3_group_version`]); for ETags. `None` if the group version is not served.
pub fn v3_group_version_hash(path: &str) -> Option<String> {
    v3_group_version(path).map(|doc| hash(&doc))
}

/// `path` without a leading `/`, the `openapi/v3/` prefix or a query.
fn normalize(path: &str) -> &str {
    let path = path.split('?').next().unwrap_or("");
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("openapi/v3/").unwrap_or(path);
    path.trim_end_matches('/')
}

/// The served group versions, core first, in the order of [`kinds::ALL`].
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in kinds::ALL {
        if !out.iter().any(|(g, v)| *g == k.group && *v == k.version) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// `api/v1` or `apis/GROUP/VERSION`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of a document: FNV-1a (64 bits) of its JSON text, in upper-case hex.
fn hash(doc: &Value) -> String {
    let text = doc.to_string();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

const STATUS_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";

/// The document of one group version: the paths and operations of every kind served there.
fn document(group: &'static str, version: &'static str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for k in kinds::ALL
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        add_kind_paths(&mut paths, k);
        let list_kind = k.list_kind();
        schemas.insert(
            schema_name(k, k.kind),
            json!({
                "description": format!("{} is a {} object served by podnet.", k.kind, k.api_version()),
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "metadata": {"type": "object", "description": "Standard object's metadata."},
                    "spec": {"type": "object"},
                    "status": {"type": "object"},
                },
                "x-kubernetes-group-version-kind": [gvk(k.group, k.version, k.kind)],
            }),
        );
        schemas.insert(
            schema_name(k, &list_kind),
            json!({
                "description": format!("{list_kind} is a list of {}.", k.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"type": "object", "description": "Standard list metadata."},
                    "items": {
                        "type": "array",
                        "items": {"$ref": schema_ref(&schema_name(k, k.kind))},
                    },
                },
                "x-kubernetes-group-version-kind": [gvk(k.group, k.version, &list_kind)],
            }),
        );
    }
    schemas.insert(
        STATUS_SCHEMA.to_owned(),
        json!({
            "description": "Status is a return value for calls that don't return other objects.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "status": {"type": "string"},
                "details": {"type": "object"},
                "metadata": {"type": "object"},
            },
            "x-kubernetes-group-version-kind": [gvk("", "v1", "Status")],
        }),
    );
    json!({
        "openapi": "3.0.0",
        "info": {"title": "podnet", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// The component schema name of a kind of `k`'s group version, as Kubernetes names them
/// (`io.k8s.api.core.v1.Pod`, `io.k8s.api.discovery.v1.EndpointSlice`).
fn schema_name(k: &ResourceKind, kind: &str) -> String {
    let package = if k.group.is_empty() {
        "core"
    } else {
        k.group.split('.').next().unwrap_or(k.group)
    };
    format!("io.k8s.api.{package}.{}.{kind}", k.version)
}

fn schema_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// `CoreV1`, `DiscoveryV1`, `CoordinationV1`, ...: the group version part of operation ids.
fn op_prefix(k: &ResourceKind) -> String {
    let group = if k.group.is_empty() {
        "core"
    } else {
        k.group.strip_suffix(".k8s.io").unwrap_or(k.group)
    };
    let mut out: String = group.split('.').map(capitalize).collect();
    out.push_str(&capitalize(k.version));
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The tag of a group version's operations: `core_v1`, `discovery_v1`.
fn tag(k: &ResourceKind) -> String {
    let group = if k.group.is_empty() {
        "core"
    } else {
        k.group.strip_suffix(".k8s.io").unwrap_or(k.group)
    };
    format!("{}_{}", group.replace('.', "_"), k.version)
}

/// The REST operations, with the `x-kubernetes-action` each carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    List,
    Create,
    DeleteCollection,
    Read,
    Replace,
    Patch,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Create => "post",
            Action::DeleteCollection => "deletecollection",
            Action::Read => "get",
            Action::Replace => "put",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Action::List | Action::Read => "get",
            Action::Create => "post",
            Action::Replace => "put",
            Action::Patch => "patch",
            Action::Delete | Action::DeleteCollection => "delete",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Create => "create",
            Action::DeleteCollection => "deleteCollection",
            Action::Read => "read",
            Action::Replace => "replace",
            Action::Patch => "patch",
            Action::Delete => "delete",
        }
    }

    /// The query parameters kube-apiserver accepts for this operation.
    fn query_parameters(self) -> &'static [&'static str] {
        match self {
            Action::List => &[
                "allowWatchBookmarks",
                "continue",
                "fieldSelector",
                "labelSelector",
                "limit",
                "resourceVersion",
                "resourceVersionMatch",
                "sendInitialEvents",
                "timeoutSeconds",
                "watch",
            ],
            Action::Create | Action::Replace => &["dryRun", "fieldManager", "fieldValidation"],
            Action::Patch => &["dryRun", "fieldManager", "fieldValidation", "force"],
            Action::Delete => &[
                "dryRun",
                "gracePeriodSeconds",
                "orphanDependents",
                "propagationPolicy",
            ],
            Action::DeleteCollection => &[
                "continue",
                "dryRun",
                "fieldSelector",
                "gracePeriodSeconds",
                "labelSelector",
                "limit",
                "orphanDependents",
                "propagationPolicy",
                "resourceVersion",
                "resourceVersionMatch",
                "sendInitialEvents",
                "timeoutSeconds",
            ],
            Action::Read => &[],
        }
    }
}

/// Adds the collection, item, all-namespaces and status paths of kind `k`.
fn add_kind_paths(paths: &mut Map<String, Value>, k: &ResourceKind) {
    let base = k.group_version_path();
    let prefix = op_prefix(k);
    let (collection, item, scope) = if k.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", k.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", k.plural),
            "Namespaced",
        )
    } else {
        (
            format!("{base}/{}", k.plural),
            format!("{base}/{}/{{name}}", k.plural),
            "",
        )
    };
    let scoped = |name: bool| -> Vec<Value> {
        let mut params = Vec::new();
        if name {
            params.push(path_parameter("name", &format!("name of the {}", k.kind)));
        }
        if k.namespaced {
            params.push(path_parameter(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            ));
        }
        params.push(pretty_parameter());
        params
    };

    let mut collection_ops = vec![Action::List, Action::Create];
    // Kubernetes serves no deletecollection for namespaces.
    if k.kind != "Namespace" {
        collection_ops.push(Action::DeleteCollection);
    }
    let ops = collection_ops
        .into_iter()
        .map(|a| {
            let id = match a {
                Action::DeleteCollection => format!("delete{prefix}Collection{scope}{}", k.kind),
                _ => format!("{}{prefix}{scope}{}", a.verb(), k.kind),
            };
            operation(k, a, id, "")
        })
        .collect();
    paths.insert(collection, path_item(scoped(false), ops));

    let item_actions = [Action::Read, Action::Replace, Action::Patch, Action::Delete];
    let ops = item_actions
        .into_iter()
        .map(|a| {
            let id = format!("{}{prefix}{scope}{}", a.verb(), k.kind);
            operation(k, a, id, "")
        })
        .collect();
    paths.insert(item.clone(), path_item(scoped(true), ops));

    if k.namespaced {
        let id = format!("list{prefix}{}ForAllNamespaces", k.kind);
        paths.insert(
            format!("{base}/{}", k.plural),
            path_item(
                vec![pretty_parameter()],
                vec![operation(k, Action::List, id, "")],
            ),
        );
    }

    if k.has_subresource("status") {
        let ops = [Action::Read, Action::Replace, Action::Patch]
            .into_iter()
            .map(|a| {
                let id = format!("{}{prefix}{scope}{}Status", a.verb(), k.kind);
                operation(k, a, id, "status")
            })
            .collect();
        paths.insert(format!("{item}/status"), path_item(scoped(true), ops));
    }
}

fn path_item(parameters: Vec<Value>, operations: Vec<(&'static str, Value)>) -> Value {
    let mut item = Map::new();
    for (method, op) in operations {
        item.insert(method.to_owned(), op);
    }
    item.insert("parameters".to_owned(), Value::Array(parameters));
    Value::Object(item)
}

/// One operation on kind `k` (or on its `subresource`, if not empty), keyed by HTTP method.
fn operation(
    k: &ResourceKind,
    action: Action,
    operation_id: String,
    subresource: &str,
) -> (&'static str, Value) {
    let what = if subresource.is_empty() {
        k.kind.to_owned()
    } else {
        format!("{subresource} of the specified {}", k.kind)
    };
    let description = match action {
        Action::List => format!("list or watch objects of kind {}", k.kind),
        Action::Create => format!("create a {}", k.kind),
        Action::DeleteCollection => format!("delete collection of {}", k.kind),
        Action::Read if subresource.is_empty() => format!("read the specified {what}"),
        Action::Read => format!("read {what}"),
        Action::Replace if subresource.is_empty() => format!("replace the specified {what}"),
        Action::Replace => format!("replace {what}"),
        Action::Patch if subresource.is_empty() => {
            format!("partially update the specified {what}")
        }
        Action::Patch => format!("partially update {what}"),
        Action::Delete => format!("delete a {}", k.kind),
    };
    let object = schema_ref(&schema_name(k, k.kind));
    let list = schema_ref(&schema_name(k, &k.list_kind()));
    let status = schema_ref(STATUS_SCHEMA);
    let (codes, schema): (&[&str], &str) = match action {
        Action::List => (&["200"], &list),
        Action::Read => (&["200"], &object),
        Action::Create => (&["200", "201", "202"], &object),
        Action::Replace | Action::Patch => (&["200", "201"], &object),
        Action::Delete => (&["200", "202"], &status),
        Action::DeleteCollection => (&["200"], &status),
    };
    let mut responses = Map::new();
    for code in codes {
        let text = match *code {
            "201" => "Created",
            "202" => "Accepted",
            _ => "OK",
        };
        responses.insert(
            (*code).to_owned(),
            json!({
                "description": text,
                "content": {"application/json": {"schema": {"$ref": schema}}},
            }),
        );
    }
    responses.insert("401".to_owned(), json!({"description": "Unauthorized"}));
    let parameters: Vec<Value> = action
        .query_parameters()
        .iter()
        .map(|name| query_parameter(name))
        .collect();
    let mut op = json!({
        "tags": [tag(k)],
        "description": description,
        "operationId": operation_id,
        "responses": responses,
        "x-kubernetes-action": action.name(),
        "x-kubernetes-group-version-kind": gvk(k.group, k.version, k.kind),
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    (action.method(), op)
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn pretty_parameter() -> Value {
    query_parameter("pretty")
}

/// A query parameter as kube-apiserver documents it.
fn query_parameter(name: &str) -> Value {
    let (ty, description) = match name {
        "allowWatchBookmarks" => (
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        ),
        "continue" => (
            "string",
            "The continue option should be set when retrieving more results from the server.",
        ),
        "dryRun" => (
            "string",
            "When present, indicates that modifications should not be persisted. Valid values \
             are: - All: all dry run stages will be processed",
        ),
        "fieldManager" => (
            "string",
            "fieldManager is a name associated with the actor or entity that is making these \
             changes.",
        ),
        "fieldSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to \
             everything.",
        ),
        "fieldValidation" => (
            "string",
            "fieldValidation instructs the server on how to handle objects in the request \
             (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - \
             Ignore, - Warn, - Strict.",
        ),
        "force" => (
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire \
             conflicting fields owned by other people.",
        ),
        "gracePeriodSeconds" => (
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        "labelSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to \
             everything.",
        ),
        "limit" => (
            "integer",
            "limit is a maximum number of responses to return for a list call.",
        ),
        "orphanDependents" => (
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7.",
        ),
        "pretty" => ("string", "If 'true', then the output is pretty printed."),
        "propagationPolicy" => (
            "string",
            "Whether and how garbage collection will be performed.",
        ),
        "resourceVersion" => (
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be \
             served from.",
        ),
        "resourceVersionMatch" => (
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
        ),
        "sendInitialEvents" => (
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
        ),
        "timeoutSeconds" => ("integer", "Timeout for the list/watch call."),
        "watch" => (
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, \
             update, and remove notifications.",
        ),
        _ => ("string", ""),
    };
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubectl's `supportsQueryParamV3`, made stricter: Go stops at the first PATCH operation
    /// of the kind in map order, so every one of them must take the parameter.
    fn every_patch_supports(doc: &Value, k: &ResourceKind, param: &str) -> bool {
        let want = gvk(k.group, k.version, k.kind);
        let patches: Vec<&Value> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|item| item.get("patch"))
            .filter(|op| op["x-kubernetes-group-version-kind"] == want)
            .collect();
        !patches.is_empty()
            && patches.iter().all(|op| {
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == param && p["in"] == "query")
            })
    }

    #[test]
    fn root_lists_every_served_group_version() {
        let root = v3_root();
        let paths = root["paths"].as_object().unwrap();
        let mut keys: Vec<&str> = paths.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "api/v1",
                "apis/coordination.k8s.io/v1",
                "apis/discovery.k8s.io/v1"
            ]
        );
        for (path, entry) in paths {
            let url = entry["serverRelativeURL"].as_str().unwrap();
            let hash = v3_group_version_hash(path).unwrap();
            assert_eq!(url, format!("/openapi/v3/{path}?hash={hash}"));
            assert_eq!(hash.len(), 16);
            assert!(
                hash.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
            );
            // The URL kubectl follows resolves to the document.
            assert!(v3_group_version(url).is_some(), "{url}");
        }
        // Every kind's group version is there.
        for k in kinds::ALL {
            let path = gv_path(k.group, k.version);
            assert!(paths.contains_key(&path), "{path}");
        }
        // Stable across calls; different documents, different hashes.
        assert_eq!(v3_root(), root);
        assert_ne!(
            v3_group_version_hash("api/v1"),
            v3_group_version_hash("apis/discovery.k8s.io/v1")
        );
    }

    #[test]
    fn group_version_lookup() {
        assert!(v3_group_version("api/v1").is_some());
        assert!(v3_group_version("/api/v1").is_some());
        assert!(v3_group_version("/openapi/v3/apis/discovery.k8s.io/v1?hash=ABC").is_some());
        assert!(v3_group_version("apis/coordination.k8s.io/v1").is_some());
        assert!(v3_group_version("api/v2").is_none());
        assert!(v3_group_version("apis/apps/v1").is_none());
        assert!(v3_group_version("apis/discovery.k8s.io/v1beta1").is_none());
        assert!(v3_group_version("").is_none());
        assert!(v3_group_version("api").is_none());
        assert_eq!(v3_group_version_hash("apis/apps/v1"), None);
    }

    #[test]
    fn every_kind_has_a_patch_with_field_validation_and_no_request_body() {
        for k in kinds::ALL {
            let doc = v3_group_version(&gv_path(k.group, k.version)).unwrap();
            assert_eq!(doc["openapi"], "3.0.0");
            for param in ["fieldValidation", "fieldManager", "dryRun", "force"] {
                assert!(every_patch_supports(&doc, k, param), "{} {param}", k.kind);
            }
            for item in doc["paths"].as_object().unwrap().values() {
                for method in ["get", "put", "post", "patch", "delete"] {
                    if let Some(op) = item.get(method) {
                        // kubectl must not build strategic merge patches from these documents.
                        assert!(op.get("requestBody").is_none());
                        assert!(op["x-kubernetes-action"].is_string());
                        assert!(op["x-kubernetes-group-version-kind"]["kind"].is_string());
                        assert!(op["operationId"].is_string());
                    }
                }
            }
        }
    }

    #[test]
    fn pod_paths_and_operations() {
        let doc = v3_group_version("api/v1").unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        for (method, action) in [
            ("get", "get"),
            ("put", "put"),
            ("patch", "patch"),
            ("delete", "delete"),
        ] {
            assert_eq!(item[method]["x-kubernetes-action"], action);
            assert_eq!(
                item[method]["x-kubernetes-group-version-kind"],
                json!({"group": "", "version": "v1", "kind": "Pod"})
            );
        }
        assert_eq!(item["patch"]["operationId"], "patchCoreV1NamespacedPod");
        assert!(item.get("post").is_none());
        let params: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["name", "namespace", "pretty"]);
        let collection = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(collection["get"]["x-kubernetes-action"], "list");
        assert_eq!(collection["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            collection["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        assert_eq!(
            collection["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedPod"
        );
        let all = &paths["/api/v1/pods"];
        assert_eq!(all["get"]["operationId"], "listCoreV1PodForAllNamespaces");
        assert!(all.get("post").is_none());
        let status = &paths["/api/v1/namespaces/{namespace}/pods/{name}/status"];
        assert_eq!(
            status["patch"]["operationId"],
            "patchCoreV1NamespacedPodStatus"
        );
        // Endpoints serve no status subresource.
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/endpoints/{name}/status"));
        assert!(paths.contains_key("/api/v1/namespaces/{namespace}/endpoints/{name}"));
        // Cluster-scoped kinds.
        let node = &paths["/api/v1/nodes/{name}"];
        assert_eq!(node["patch"]["operationId"], "patchCoreV1Node");
        let ns = &paths["/api/v1/namespaces"];
        assert!(ns.get("delete").is_none());
        assert!(paths.contains_key("/api/v1/namespaces/{name}/status"));
        // Only core kinds in the core document.
        assert!(paths.keys().all(|p| p.starts_with("/api/v1/")));
        let discovery = v3_group_version("apis/discovery.k8s.io/v1").unwrap();
        let slice = &discovery["paths"]["/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}"];
        assert_eq!(
            slice["patch"]["operationId"],
            "patchDiscoveryV1NamespacedEndpointSlice"
        );
        assert_eq!(slice["patch"]["tags"], json!(["discovery_v1"]));
        let coordination = v3_group_version("apis/coordination.k8s.io/v1").unwrap();
        assert!(
            coordination["paths"]
                .as_object()
                .unwrap()
                .contains_key("/apis/coordination.k8s.io/v1/leases")
        );
    }

    #[test]
    fn path_templates_declare_their_parameters_and_refs_resolve() {
        for (g, v) in group_versions() {
            let doc = v3_group_version(&gv_path(g, v)).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            for (path, item) in doc["paths"].as_object().unwrap() {
                let declared: Vec<&str> = item["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let mut templated: Vec<&str> = path
                    .split('/')
                    .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                templated.sort_unstable();
                let mut declared_sorted = declared.clone();
                declared_sorted.sort_unstable();
                assert_eq!(templated, declared_sorted, "{path}");
                let text = item.to_string();
                for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
                    let name = piece.split('"').next().unwrap();
                    assert!(schemas.contains_key(name), "{name} in {path}");
                }
            }
            // Each kind's schema names its kind, as kubectl's OpenAPI v3 lookups expect.
            for k in kinds::ALL.iter().filter(|k| k.group == g && k.version == v) {
                let schema = &schemas[&schema_name(k, k.kind)];
                assert_eq!(
                    schema["x-kubernetes-group-version-kind"],
                    json!([{"group": k.group, "version": k.version, "kind": k.kind}])
                );
                assert_eq!(schema["type"], "object");
            }
        }
        assert_eq!(schema_name(&kinds::POD, "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(
            schema_name(&kinds::ENDPOINT_SLICE, "EndpointSliceList"),
            "io.k8s.api.discovery.v1.EndpointSliceList"
        );
        assert_eq!(
            schema_name(&kinds::LEASE, "Lease"),
            "io.k8s.api.coordination.v1.Lease"
        );
    }
}
