//! Checks that an object has the shape of its Kubernetes type (field types, enums of the
//! wire format) by decoding it into the `k8s-openapi` struct, so a body like
//! `"containerPort": "http"` is refused with the path of the bad field.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use podnet_api::k8s::kinds::ResourceKind;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// Decodes `obj` as the type of `kind`; a mismatch is a 400 in Kubernetes' words:
/// `Pod in version "v1" cannot be handled as a Pod: spec.containers[0].ports[0].containerPort: invalid type ...`.
pub fn check_shape(kind: &ResourceKind, obj: &Value) -> Result<(), ApiError> {
    let result = match kind.kind {
        "Namespace" => decode::<Namespace>(obj),
        "Node" => decode::<Node>(obj),
        "Pod" => decode::<Pod>(obj),
        "Service" => decode::<Service>(obj),
        "Endpoints" => decode::<Endpoints>(obj),
        "Event" => decode::<Event>(obj),
        "Lease" => decode::<Lease>(obj),
        "EndpointSlice" => decode::<EndpointSlice>(obj),
        _ => Ok(()),
    };
    result.map_err(|detail| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {detail}",
            kind.kind, kind.version, kind.kind
        ))
    })
}

fn decode<T: DeserializeOwned>(obj: &Value) -> Result<(), String> {
    let de = obj.clone();
    serde_path_to_error::deserialize::<_, T>(de)
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })
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
        assert!(check_shape(&POD, &ok).is_ok());
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "http"}]}]}});
        let err = check_shape(&POD, &bad).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("Pod in version \"v1\" cannot be handled as a Pod: spec.containers[0].ports[0].containerPort: invalid type: string \"http\""),
            "{}",
            err.message
        );
    }
}
