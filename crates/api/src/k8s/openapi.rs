//! The OpenAPI documents of podnet's apiserver: `/openapi/v2` (Swagger 2.0, JSON or gnostic
//! protobuf) and `/openapi/v3` (a root listing one OpenAPI 3.0 document per group version), with
//! the schemas kube-apiserver publishes for every served kind ([`definitions`], from
//! k8s-openapi, upstream's extensions put back).
//!
//! kubectl uses them in several ways, and each constrains the documents:
//!
//! - `kubectl explain` walks the v3 schemas (v2 when v3 is not served): they must be the real
//!   ones, with descriptions and `$ref`s.
//! - `--validate=strict` (the default) first checks whether the server validates fields itself
//!   (`k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go`): it fetches `/openapi/v3`,
//!   follows the `serverRelativeURL` of the object's group version, and looks for a PATCH
//!   operation whose `x-kubernetes-group-version-kind` is the object's and which takes a
//!   `fieldValidation` query parameter. The v3 documents declare exactly that, for every kind
//!   podnet serves, so kubectl leaves validation to the server. A `kind: List` has no such
//!   operation, so kubectl validates its items on the client against the v2 definitions.
//! - No v3 operation declares a request body. `kubectl apply` builds a strategic merge patch from
//!   OpenAPI v3 only if the PATCH operation accepts `application/strategic-merge-patch+json`
//!   (`gvkSupportsPatchOpenAPIV3` in kubectl's `patcher.go`); without a request body it falls
//!   back to OpenAPI v2: the v2 PATCH operations list the patch types podnet takes
//!   (`consumes`), and kubectl builds the patch from the v2 definitions, whose lists carry
//!   upstream's `x-kubernetes-patch-merge-key` and `x-kubernetes-patch-strategy`.
//!
//! Every document is built once and kept (the definitions are hundreds of schemas).

mod definitions;
mod extensions;
mod gnostic;
mod paths;
mod v2;

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use super::kinds;
use paths::Form;

pub use gnostic::ShapeError;
pub use v2::{PROTOBUF, PROTOBUF_AT, V2Document, v2};

/// One group version's OpenAPI v3 document, built once.
#[derive(Debug)]
pub struct V3Document {
    /// `api/v1` or `apis/GROUP/VERSION`.
    pub path: String,
    /// Its JSON text (only the text is kept: the parsed tree is several times larger).
    pub json: Vec<u8>,
    /// The hash in its `serverRelativeURL`; also its ETag (in quotes).
    pub hash: String,
}

/// The `/openapi/v3` root document: one path per served group version (`api/v1`,
/// `apis/GROUP/VERSION`), each with its `serverRelativeURL` carrying a `hash` that changes
/// whenever the document does (kubectl caches by URL).
pub fn v3_root() -> Value {
    let mut paths = Map::new();
    for doc in v3_documents() {
        paths.insert(
            doc.path.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{}?hash={}", doc.path, doc.hash) }),
        );
    }
    json!({ "paths": paths })
}

/// The OpenAPI v3 document of one group version, `path` being `api/v1` or
/// `apis/GROUP/VERSION` (a leading `/`, an `/openapi/v3/` prefix and a `?hash=` query are
/// tolerated); `None` if that group version is not served.
pub fn v3_document(path: &str) -> Option<&'static V3Document> {
    let path = normalize(path);
    v3_documents().iter().find(|d| d.path == path)
}

/// The document of [`v3_document`], as a value.
pub fn v3_group_version(path: &str) -> Option<Value> {
    v3_document(path).and_then(|d| serde_json::from_slice(&d.json).ok())
}

/// The hash that [`v3_root`] puts in the `serverRelativeURL` of the group version at `path`
/// (same forms as [`v3_group_version`]); for ETags. `None` if the group version is not served.
pub fn v3_group_version_hash(path: &str) -> Option<String> {
    v3_document(path).map(|d| d.hash.clone())
}

fn v3_documents() -> &'static [V3Document] {
    static DOCS: OnceLock<Vec<V3Document>> = OnceLock::new();
    DOCS.get_or_init(|| {
        group_versions()
            .into_iter()
            .map(|(group, version)| {
                let json = document(group, version).to_string().into_bytes();
                V3Document {
                    path: gv_path(group, version),
                    hash: hash_bytes(&json),
                    json,
                }
            })
            .collect()
    })
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

/// A stable hash of a document's text: FNV-1a (64 bits), in upper-case hex.
fn hash_bytes(text: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// The v3 document of one group version: the paths and operations of every kind served there,
/// and the schemas they refer to (directly or not), in the v3 form.
fn document(group: &'static str, version: &'static str) -> Value {
    let mut paths = Map::new();
    paths::add_group_version(&mut paths, group, version, Form::V3);
    for k in kinds::ALL
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        paths::add_kind(&mut paths, k, Form::V3);
    }
    let mut roots = Vec::new();
    definitions::collect_refs(&Value::Object(paths.clone()), &mut roots);
    let all = definitions::all();
    let schemas: Map<String, Value> = definitions::closure(roots.iter().map(String::as_str))
        .into_iter()
        .filter_map(|name| {
            let def = all.get(&name)?;
            let def = definitions::v3(&name, def);
            Some((name, def))
        })
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "podnet", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::kinds::ResourceKind;

    /// kubectl's `supportsQueryParamV3`, made stricter: Go stops at the first PATCH operation
    /// of the kind in map order, so every one of them must take the parameter.
    fn every_patch_supports(doc: &Value, k: &ResourceKind, param: &str) -> bool {
        let want = definitions::gvk(k.group, k.version, k.kind);
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
                "apis/discovery.k8s.io/v1",
                "apis/networking.k8s.io/v1",
                "apis/policy.networking.k8s.io/v1alpha2",
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
            for (path, item) in doc["paths"].as_object().unwrap() {
                for method in ["get", "put", "post", "patch", "delete"] {
                    if let Some(op) = item.get(method) {
                        // kubectl must not build strategic merge patches from these documents.
                        assert!(op.get("requestBody").is_none());
                        if path.ends_with('/') {
                            // Discovery (`/api/v1/`): no kind's operation.
                            assert_eq!(op["operationId"].as_str().unwrap().get(..3), Some("get"));
                            continue;
                        }
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
                    .map_or(&[][..], Vec::as_slice)
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
                let schema = &schemas[&definitions::name(k, k.kind)];
                assert_eq!(
                    schema["x-kubernetes-group-version-kind"],
                    json!([{"group": k.group, "version": k.version, "kind": k.kind}])
                );
                assert_eq!(schema["type"], "object");
            }
        }
        assert_eq!(
            definitions::name(&kinds::POD, "Pod"),
            "io.k8s.api.core.v1.Pod"
        );
        assert_eq!(
            definitions::name(&kinds::ENDPOINT_SLICE, "EndpointSliceList"),
            "io.k8s.api.discovery.v1.EndpointSliceList"
        );
        assert_eq!(
            definitions::name(&kinds::LEASE, "Lease"),
            "io.k8s.api.coordination.v1.Lease"
        );
    }

    #[test]
    fn v3_schemas_are_the_real_ones_in_the_v3_form() {
        let doc = v3_group_version("api/v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        let spec = &pod["properties"]["spec"];
        assert_eq!(
            spec["allOf"],
            json!([{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}])
        );
        assert!(
            spec["description"]
                .as_str()
                .unwrap()
                .contains("desired behavior")
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        let int_or_string = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["format"], "int-or-string");
        assert_eq!(
            int_or_string["oneOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert!(int_or_string.get("type").is_none());
        // Every schema a document refers to is in it; no v2 references are left.
        for (g, v) in group_versions() {
            let doc = v3_group_version(&gv_path(g, v)).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            assert!(!doc.to_string().contains("#/definitions/"));
            let mut refs = Vec::new();
            definitions::collect_refs(&doc, &mut refs);
            for name in refs {
                assert!(schemas.contains_key(&name), "{name} in {g}/{v}");
            }
        }
        // Only what a group version refers to: no core schemas in the coordination document.
        let lease = v3_group_version("apis/coordination.k8s.io/v1").unwrap();
        let schemas = lease["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("io.k8s.api.coordination.v1.LeaseSpec"));
        assert!(!schemas.contains_key("io.k8s.api.core.v1.PodSpec"));
    }

    #[test]
    fn network_policies_as_upstream_publishes_them() {
        let doc = v3_group_version("apis/networking.k8s.io/v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let spec = &schemas["io.k8s.api.networking.v1.NetworkPolicySpec"];
        assert_eq!(
            spec["properties"]["ingress"]["x-kubernetes-list-type"],
            "atomic"
        );
        assert_eq!(
            spec["properties"]["ingress"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.networking.v1.NetworkPolicyIngressRule"
        );
        assert!(schemas.contains_key("io.k8s.api.networking.v1.NetworkPolicyList"));
        let paths = doc["paths"].as_object().unwrap();
        let item =
            &paths["/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"];
        assert_eq!(
            item["patch"]["operationId"],
            "patchNetworkingV1NamespacedNetworkPolicy"
        );
        assert!(paths.contains_key("/apis/networking.k8s.io/v1/networkpolicies"));
    }

    #[test]
    fn cluster_network_policies_as_a_crd_is_published() {
        let doc = v3_group_version("apis/policy.networking.k8s.io/v1alpha2").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let name = "io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicy";
        let cnp = &schemas[name];
        assert_eq!(
            cnp["x-kubernetes-group-version-kind"],
            json!([{"group": "policy.networking.k8s.io", "version": "v1alpha2", "kind": "ClusterNetworkPolicy"}])
        );
        let spec = &cnp["properties"]["spec"];
        assert_eq!(spec["required"], json!(["priority", "subject", "tier"]));
        assert_eq!(
            spec["properties"]["tier"]["enum"],
            json!(["Admin", "Baseline"])
        );
        assert_eq!(spec["properties"]["priority"]["maximum"], 1000);
        let egress = &spec["properties"]["egress"]["items"];
        assert_eq!(egress["required"], json!(["action", "to"]));
        assert!(egress["x-kubernetes-validations"][0]["rule"].is_string());
        let peer = &egress["properties"]["to"]["items"];
        assert_eq!(peer["maxProperties"], 1);
        assert_eq!(
            peer["properties"]["networks"]["x-kubernetes-list-type"],
            "set"
        );
        // Selectors inline, with upstream's descriptions and list types.
        let ns = &peer["properties"]["namespaces"];
        assert_eq!(ns["x-kubernetes-map-type"], "atomic");
        assert_eq!(
            ns["properties"]["matchExpressions"]["items"]["properties"]["operator"]["type"],
            "string"
        );
        // Only metadata refers elsewhere, as in a CRD's published schema.
        let mut refs = Vec::new();
        definitions::collect_refs(cnp, &mut refs);
        assert_eq!(refs, ["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]);
        let list = &schemas["io.k8s.networking.policy.v1alpha2.ClusterNetworkPolicyList"];
        assert_eq!(
            list["description"],
            "ClusterNetworkPolicyList is a list of ClusterNetworkPolicy"
        );
        let paths = doc["paths"].as_object().unwrap();
        let item = &paths["/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/{name}"];
        assert_eq!(
            item["patch"]["operationId"],
            "patchPolicyNetworkingV1alpha2ClusterNetworkPolicy"
        );
        assert!(paths.contains_key(
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/{name}/status"
        ));
        assert!(!paths.contains_key(
            "/apis/policy.networking.k8s.io/v1alpha2/namespaces/{namespace}/clusternetworkpolicies"
        ));
    }

    #[test]
    fn documents_are_built_once() {
        let a = v3_document("api/v1").unwrap();
        let b = v3_document("/openapi/v3/api/v1?hash=X").unwrap();
        assert!(std::ptr::eq(a, b));
        let parsed: Value = serde_json::from_slice(&a.json).unwrap();
        assert_eq!(parsed["openapi"], "3.0.0");
    }
}
