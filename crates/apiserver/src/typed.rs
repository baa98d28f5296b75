//! Decodes objects as their Kubernetes types (the `k8s-openapi` structs, and podnet's own for
//! the network-policy-api kinds, which k8s-openapi does not have), as kube-apiserver does: a
//! body like `"containerPort": "http"` is refused with the path of the bad field, and fields
//! the type does not have are dropped (a custom resource's unknown fields are pruned the same
//! way), reported as warnings, or refused under `fieldValidation=Strict` (what kubectl sends).

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_api::k8s::kinds::ResourceKind;
use podnet_api::k8s::policy_api::ClusterNetworkPolicy;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// What to do with fields the type does not have (the `fieldValidation` parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (Kubernetes' default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid fieldValidation {other:?}: use Ignore, Warn or Strict"
            ))),
        }
    }
}

/// Decodes `obj` as the type of `kind` and returns it re-encoded (unknown fields dropped)
/// with warnings for what was dropped. A mismatch is a 400 in Kubernetes' words:
/// `Pod in version "v1" cannot be handled as a Pod: spec.containers[0].ports[0].containerPort: invalid type ...`.
pub fn normalize(
    kind: &ResourceKind,
    obj: &Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let result = match kind.kind {
        "Namespace" => round_trip::<Namespace>(obj),
        "Node" => round_trip::<Node>(obj),
        "Pod" => round_trip::<Pod>(obj),
        "Service" => round_trip::<Service>(obj),
        "Endpoints" => round_trip::<Endpoints>(obj),
        "Event" => round_trip::<Event>(obj),
        "Lease" => round_trip::<Lease>(obj),
        "EndpointSlice" => round_trip::<EndpointSlice>(obj),
        "NetworkPolicy" => round_trip::<NetworkPolicy>(obj),
        "ClusterNetworkPolicy" => round_trip::<ClusterNetworkPolicy>(obj),
        _ => Ok(obj.clone()),
    };
    let cannot = |detail: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {detail}",
            kind.kind, kind.version, kind.kind
        ))
    };
    let normalized = result.map_err(cannot)?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &normalized, "", &mut unknown);
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        FieldValidation::Strict if !messages.is_empty() => Err(cannot(format!(
            "strict decoding error: {}",
            messages.join(", ")
        ))),
        FieldValidation::Warn => Ok((normalized, messages)),
        _ => Ok((normalized, Vec::new())),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed = serde_path_to_error::deserialize::<_, T>(obj.clone()).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    serde_json::to_value(&typed).map_err(|e| format!("re-encoding: {e}"))
}

/// Paths present (and not null) in `original` but absent from `decoded`.
fn unknown_fields(original: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(dv) => unknown_fields(v, dv, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, dv)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, dv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_api::k8s::kinds::POD;
    use serde_json::json;

    #[test]
    fn bad_field_types_are_named() {
        let ok = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}});
        assert!(normalize(&POD, &ok, FieldValidation::Strict).is_ok());
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "http"}]}]}});
        let err = normalize(&POD, &bad, FieldValidation::Ignore).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("Pod in version \"v1\" cannot be handled as a Pod: spec.containers[0].ports[0].containerPort: invalid type: string \"http\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn policies_are_typed() {
        use podnet_api::k8s::kinds::{CLUSTER_NETWORK_POLICY, NETWORK_POLICY};
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p"}, "spec": {"ingress": [{"ports": [{"port": "http", "endPort": 9}]}], "colour": 1}});
        let (out, warnings) = normalize(&NETWORK_POLICY, &np, FieldValidation::Warn).unwrap();
        assert_eq!(warnings, ["unknown field \"spec.colour\""]);
        assert_eq!(out["spec"]["ingress"][0]["ports"][0]["port"], "http");
        let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p"}, "spec": {"ingress": [{"ports": [{"endPort": "9"}]}]}});
        let err = normalize(&NETWORK_POLICY, &bad, FieldValidation::Warn).unwrap_err();
        assert!(
            err.message
                .contains("spec.ingress[0].ports[0].endPort: invalid type"),
            "{}",
            err.message
        );
        let cnp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "c"}, "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {}}, "extra": true}});
        let (out, warnings) =
            normalize(&CLUSTER_NETWORK_POLICY, &cnp, FieldValidation::Warn).unwrap();
        assert_eq!(warnings, ["unknown field \"spec.extra\""]);
        assert_eq!(out["spec"]["priority"], 5);
        assert_eq!(out["kind"], "ClusterNetworkPolicy");
    }

    #[test]
    fn unknown_fields_are_dropped_reported_or_refused() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "colour": "red"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always"}], "nodeName": null}});
        let (out, warnings) = normalize(&POD, &obj, FieldValidation::Warn).unwrap();
        assert_eq!(
            warnings,
            vec![
                "unknown field \"metadata.colour\"",
                "unknown field \"spec.containers[0].imagePullPolcy\""
            ]
        );
        assert!(out["metadata"].get("colour").is_none());
        let err = normalize(&POD, &obj, FieldValidation::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .contains("strict decoding error: unknown field \"metadata.colour\""),
            "{}",
            err.message
        );
        assert!(
            normalize(&POD, &obj, FieldValidation::Ignore)
                .unwrap()
                .1
                .is_empty()
        );
    }
}
