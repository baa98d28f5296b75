//! The `/openapi/v2` document: Swagger 2.0, every served kind's paths and every definition they
//! refer to, as kube-apiserver serves it.
//!
//! kubectl reads it (as protobuf, see [`super::gnostic`]) to validate a `kind: List` on the
//! client (`--validate=strict` checks the items of a List against these schemas, as server-side
//! field validation cannot take a List), to find a kind's patch strategy and the merge keys of
//! its lists for `kubectl apply`, and for `kubectl explain` when OpenAPI v3 is not there. The
//! document is large (hundreds of definitions), so it is built and encoded once.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::definitions;
use super::gnostic::{self, ShapeError};
use super::paths::{self, Form};
use crate::k8s::kinds;

/// The document in both of its forms, with the ETag they share.
#[derive(Debug)]
pub struct V2Document {
    /// The JSON text (`application/json`).
    pub json: Vec<u8>,
    /// The gnostic protobuf ([`PROTOBUF`]).
    pub protobuf: Vec<u8>,
    /// A strong ETag (with its quotes) that changes whenever the document does.
    pub etag: String,
}

/// The media type of the protobuf form, as kube-apiserver names it in `Content-Type`.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
/// The spelling client-go asks for in `Accept` (kube-openapi calls it deprecated). Not a valid
/// media type (`@` is a separator), so never sent back: Go's `mime.ParseMediaType`, which
/// client-go runs on the `Content-Type` of a response, refuses it.
pub const PROTOBUF_AT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The document, built on first use.
pub fn v2() -> Result<&'static V2Document, ShapeError> {
    static V2: OnceLock<Result<V2Document, ShapeError>> = OnceLock::new();
    V2.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<V2Document, ShapeError> {
    let doc = json_document();
    let protobuf = gnostic::encode(&doc)?;
    let json = doc.to_string().into_bytes();
    let etag = format!("\"{}\"", super::hash_bytes(&json));
    Ok(V2Document {
        json,
        protobuf,
        etag,
    })
}

/// The Swagger 2.0 document as JSON.
pub fn json_document() -> Value {
    let mut paths = serde_json::Map::new();
    let mut groups: Vec<&str> = Vec::new();
    for (group, version) in super::group_versions() {
        paths::add_group_version(&mut paths, group, version, Form::V2);
        if !group.is_empty() && !groups.contains(&group) {
            groups.push(group);
        }
    }
    paths::add_discovery_roots(&mut paths, &groups, Form::V2);
    for k in kinds::ALL {
        paths::add_kind(&mut paths, k, Form::V2);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "podnet", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "definitions": definitions::all(),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            },
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::from_slice(&v2().unwrap().json).unwrap()
    }

    #[test]
    fn built_once_with_a_quoted_etag() {
        let a = v2().unwrap();
        let b = v2().unwrap();
        assert!(std::ptr::eq(a, b));
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"') && a.etag.len() == 18);
        assert!(!a.protobuf.is_empty());
        assert_eq!(doc()["swagger"], "2.0");
    }

    #[test]
    fn every_kind_and_list_is_found_by_its_group_version_kind() {
        let doc = doc();
        let defs = doc["definitions"].as_object().unwrap();
        for k in kinds::ALL {
            for kind in [k.kind.to_owned(), k.list_kind()] {
                let want = json!([definitions::gvk(k.group, k.version, &kind)]);
                let found: Vec<&String> = defs
                    .iter()
                    .filter(|(_, d)| d["x-kubernetes-group-version-kind"] == want)
                    .map(|(name, _)| name)
                    .collect();
                assert_eq!(found, [&definitions::name(k, &kind)], "{kind}");
            }
        }
    }

    #[test]
    fn every_reference_resolves() {
        let doc = doc();
        let defs = doc["definitions"].as_object().unwrap();
        let mut refs = Vec::new();
        definitions::collect_refs(&doc, &mut refs);
        assert!(refs.len() > 400, "{}", refs.len());
        let text = doc.to_string();
        assert!(!text.contains("#/components/"));
        for name in refs {
            assert!(defs.contains_key(&name), "{name}");
        }
    }

    /// What kubectl looks for: `GetConsumes(gvk, "PATCH")` (the patch type of `kubectl apply`)
    /// and `supportsQueryParam` (the first PATCH operation of the kind takes `fieldValidation`).
    #[test]
    fn patch_operations_as_kubectl_reads_them() {
        let doc = doc();
        for k in kinds::ALL {
            let want = definitions::gvk(k.group, k.version, k.kind);
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|item| item.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == want)
                .collect();
            assert!(!patches.is_empty(), "{}", k.kind);
            for op in patches {
                let consumes = op["consumes"].as_array().unwrap();
                // kube-apiserver takes no strategic merge patch for a custom resource.
                assert_eq!(
                    consumes.contains(&json!("application/strategic-merge-patch+json")),
                    !k.custom_resource,
                    "{}",
                    k.kind
                );
                assert!(consumes.contains(&json!("application/merge-patch+json")));
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
                );
                assert!(params.iter().any(|p| p["in"] == "body"));
            }
        }
    }

    #[test]
    fn pod_schemas_are_upstream_ones() {
        let doc = doc();
        let defs = &doc["definitions"];
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert!(
            pod["description"]
                .as_str()
                .unwrap()
                .starts_with("Pod is a collection of containers")
        );
        assert!(pod.get("required").is_none());
        assert_eq!(
            pod["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodSpec"
        );
        assert!(
            pod["properties"]["spec"]["description"]
                .as_str()
                .unwrap()
                .contains("desired behavior of the pod")
        );
        let spec = &defs["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(spec["required"], json!(["containers"]));
        assert_eq!(
            spec["properties"]["containers"]["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Container"
        );
        let int_or_string = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["type"], "string");
        assert_eq!(int_or_string["format"], "int-or-string");
        assert_eq!(
            defs["io.k8s.api.core.v1.Event"]["required"],
            json!(["involvedObject", "metadata"])
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.PodList"]["properties"]["items"]["items"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        let status = &defs[definitions::STATUS];
        assert_eq!(
            status["x-kubernetes-group-version-kind"],
            json!([definitions::gvk("", "v1", "Status")])
        );
    }

    #[test]
    fn paths_of_every_kind_and_discovery() {
        let doc = doc();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/",
            "/api/v1/",
            "/apis/",
            "/apis/discovery.k8s.io/",
            "/apis/discovery.k8s.io/v1/",
            "/api/v1/namespaces/{namespace}/pods/{name}",
            "/api/v1/watch/namespaces/{namespace}/pods",
            "/api/v1/nodes/{name}/status",
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
        ] {
            assert!(paths.contains_key(path), "{path}");
        }
        let read = &paths["/api/v1/namespaces/{namespace}/pods/{name}"]["get"];
        assert_eq!(read["operationId"], "readCoreV1NamespacedPod");
        assert_eq!(
            read["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.Pod"
        );
        let name = &paths["/api/v1/namespaces/{namespace}/pods/{name}"]["parameters"][0];
        assert_eq!(name["type"], "string");
        assert_eq!(name["required"], true);
    }
}
