//! Defaulting and validation of the kinds podnet serves, as kube-apiserver does them
//! (`pkg/apis/core/v1/defaults.go`, `pkg/apis/core/validation`, the discovery and
//! coordination validation and `k8s.io/apimachinery`'s name and metadata rules), with the
//! messages users know from Kubernetes.
//!
//! Objects are JSON values in the wire format. The order the API server follows, as
//! Kubernetes does: fill in server-owned metadata (name from `generateName`, namespace from
//! the URL), [`apply_defaults`], then [`validate_create`] or [`validate_update`]; allocations
//! (ClusterIPs, NodePorts, pod CIDRs) may come before or after validation, which does not
//! require allocated fields. Validation expects a defaulted object: fields that defaulting
//! fills (`spec.restartPolicy`, ports' `protocol`, ...) are `Required` when empty, as in
//! Kubernetes. Field types are not checked here (the server decodes the object into its
//! type first): a value of the wrong JSON type counts as absent.
//!
//! [`prepare_update`] is the part of Kubernetes' update strategies that keeps what a client
//! may omit in a PUT (allocated ClusterIPs and NodePorts, a namespace's finalizers).

mod cluster_network_policy;
mod endpoints;
mod event;
mod lease;
mod meta;
mod names;
mod namespace;
mod network_policy;
mod node;
mod pod;
mod selector;
mod service;
mod util;

use std::fmt;

use serde_json::Value;

pub use names::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, is_valid_port_name, validate_annotations, validate_labels,
};
pub use util::BadValue;

/// One field error, as Kubernetes' `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The path of the field, e.g. `spec.ports[0].port`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// The bad value as Kubernetes prints it: strings quoted Go-style (`"ABC"`), numbers
    /// and booleans bare, lists and objects as JSON (`["10.96.0.5"]`). `None` when the
    /// message shows no value (always for `Required`, `Forbidden` and `TooLong`).
    pub value: Option<String>,
    /// The explanation after the value; may be empty.
    pub detail: String,
}

/// The type of a [`FieldError`], as Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    /// A list with too many items (`field.TooMany`).
    TooMany,
}

impl FieldErrorKind {
    /// The `metav1.CauseType` of a `Status` cause, e.g. `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
        }
    }

    /// The words the message starts with, e.g. `Invalid value`.
    pub fn description(&self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
        }
    }
}

impl FieldError {
    /// `field.Required`: a value that must be given is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: detail.into(),
        }
    }

    /// `field.Invalid`: a malformed value.
    pub fn invalid<V: BadValue + ?Sized>(
        field: impl Into<String>,
        value: &V,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            value: Some(value.render()),
            detail: detail.into(),
        }
    }

    /// `field.NotSupported`: a value outside an enumeration; `supported` in the order
    /// Kubernetes lists them.
    pub fn not_supported<V: BadValue + ?Sized>(
        field: impl Into<String>,
        value: &V,
        supported: &[&str],
    ) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| util::go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            value: Some(value.render()),
            detail,
        }
    }

    /// `field.Duplicate`: a value that must be unique is repeated.
    pub fn duplicate<V: BadValue + ?Sized>(field: impl Into<String>, value: &V) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            value: Some(value.render()),
            detail: String::new(),
        }
    }

    /// `field.Forbidden`: a well-formed value that is not allowed here.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            value: None,
            detail: detail.into(),
        }
    }

    /// `field.TooLong`: a value longer than `max_bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            value: None,
            detail: format!("may not be more than {max_bytes} {unit}"),
        }
    }

    /// `field.TooMany`: a list of `actual` items where at most `max` are allowed.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooMany,
            value: Some(actual.to_string()),
            detail: format!("must have at most {max} {unit}"),
        }
    }

    /// The message without the field path (`ErrorBody` in Kubernetes): what a `Status`
    /// cause carries as its `message`, next to `field` and `reason`.
    pub fn body(&self) -> String {
        let mut s = self.kind.description().to_owned();
        let shows_value = !matches!(
            self.kind,
            FieldErrorKind::Required | FieldErrorKind::Forbidden | FieldErrorKind::TooLong
        );
        if shows_value && let Some(v) = &self.value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

impl std::error::Error for FieldError {}

/// The errors joined as Kubernetes' aggregate error prints them: one message alone, or
/// `[a, b]`, identical messages once.
pub fn aggregate(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        0 => String::new(),
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// The message of the `Invalid` (422) `Status` Kubernetes returns for these errors, e.g.
/// `Service "web" is invalid: spec.ports: Required value`. `qualified_kind` is the kind,
/// followed by `.group` outside the core group (`EndpointSlice.discovery.k8s.io`).
pub fn invalid_message(qualified_kind: &str, name: &str, errors: &[FieldError]) -> String {
    let quoted = util::go_quote(name);
    if errors.is_empty() {
        format!("{qualified_kind} {quoted} is invalid")
    } else {
        format!(
            "{qualified_kind} {quoted} is invalid: {}",
            aggregate(errors)
        )
    }
}

/// Fills in the defaults Kubernetes' defaulting functions set, for the kind named `kind`
/// (e.g. `"Pod"`). Unknown kinds are left alone.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match kind {
        "Pod" => pod::apply_defaults(obj),
        "Service" => service::apply_defaults(obj),
        "Node" => node::apply_defaults(obj),
        "Namespace" => namespace::apply_defaults(obj),
        "Endpoints" => endpoints::apply_endpoints_defaults(obj),
        "EndpointSlice" => endpoints::apply_slice_defaults(obj),
        "NetworkPolicy" => network_policy::apply_defaults(obj),
        _ => {}
    }
}

/// Validates a new object. Empty = valid.
pub fn validate_create(kind: &str, obj: &Value) -> Vec<FieldError> {
    match kind {
        "Pod" => pod::validate(obj),
        "Service" => service::validate(obj),
        "Node" => node::validate(obj),
        "Namespace" => namespace::validate(obj),
        "Endpoints" => endpoints::validate_endpoints(obj),
        "EndpointSlice" => endpoints::validate_slice(obj),
        "Lease" => lease::validate(obj),
        "Event" => event::validate(obj),
        "NetworkPolicy" => network_policy::validate(obj),
        "ClusterNetworkPolicy" => cluster_network_policy::validate(obj),
        _ => Vec::new(),
    }
}

/// Validates an update of `old` into `new`: the create-validation of `new` plus the rules
/// on what may not change.
pub fn validate_update(kind: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    if !is_known(kind) {
        return Vec::new();
    }
    let mut errs = meta::validate_update(new, old);
    match kind {
        // Its own update rules include the create ones (with options from the old object).
        "NetworkPolicy" => errs.extend(network_policy::validate_update(new, old)),
        _ => errs.extend(validate_create(kind, new)),
    }
    match kind {
        "Pod" => errs.extend(pod::validate_update(new, old)),
        "Service" => errs.extend(service::validate_update(new, old)),
        "Node" => errs.extend(node::validate_update(new, old)),
        "EndpointSlice" => errs.extend(endpoints::validate_slice_update(new, old)),
        _ => {}
    }
    errs
}

/// What Kubernetes' update strategies carry over from the stored object into a client's
/// replacement before it is validated, so that a PUT of the manifest a client created the
/// object from succeeds: a Service keeps its allocated `clusterIP(s)`, NodePorts and
/// `healthCheckNodePort` when the new version leaves them out (`patchAllocatedValues`) and
/// its `clusterIP` and `clusterIPs` are reconciled (`normalizeClusterIPs`); a Namespace keeps
/// its `spec.finalizers` (only the `finalize` subresource changes them). Call it before
/// [`apply_defaults`].
pub fn prepare_update(kind: &str, new: &mut Value, old: &Value) {
    if !new.is_object() {
        return;
    }
    match kind {
        "Service" => service::prepare_update(new, old),
        "Namespace" => namespace::prepare_update(new, old),
        _ => {}
    }
}

fn is_known(kind: &str) -> bool {
    matches!(
        kind,
        "Pod"
            | "Service"
            | "Node"
            | "Namespace"
            | "Endpoints"
            | "EndpointSlice"
            | "Lease"
            | "Event"
            | "NetworkPolicy"
            | "ClusterNetworkPolicy"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_matches_kubernetes() {
        let e = FieldError::invalid(
            "spec.ports[0].port",
            &70000i64,
            "must be between 1 and 65535, inclusive",
        );
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let e = FieldError::required("metadata.name", "name or generateName is required");
        assert_eq!(
            e.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let e = FieldError::not_supported("spec.ports[0].protocol", "ABC", &["SCTP", "TCP", "UDP"]);
        assert_eq!(
            e.to_string(),
            "spec.ports[0].protocol: Unsupported value: \"ABC\": supported values: \"SCTP\", \"TCP\", \"UDP\""
        );
        let e = FieldError::invalid("spec.clusterIP", "10.0.0.1", "field is immutable");
        assert_eq!(
            e.to_string(),
            "spec.clusterIP: Invalid value: \"10.0.0.1\": field is immutable"
        );
        let ips = vec!["10.96.0.5".to_owned()];
        let e = FieldError::invalid("spec.clusterIPs[0]", &ips, "may not change once set");
        assert_eq!(
            e.to_string(),
            "spec.clusterIPs[0]: Invalid value: [\"10.96.0.5\"]: may not change once set"
        );
        assert_eq!(
            FieldError::required("spec.ports", "").to_string(),
            "spec.ports: Required value"
        );
        assert_eq!(
            FieldError::duplicate("spec.containers[1].name", "a").to_string(),
            "spec.containers[1].name: Duplicate value: \"a\""
        );
        assert_eq!(
            FieldError::forbidden("metadata.namespace", "not allowed on this type").to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        assert_eq!(
            FieldError::too_long("metadata.annotations", 262144).to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            FieldError::too_many("endpoints[0].addresses", 101, 100).to_string(),
            "endpoints[0].addresses: Too many: 101: must have at most 100 items"
        );
        assert_eq!(
            FieldError::invalid("spec.hostNetwork", &true, "").to_string(),
            "spec.hostNetwork: Invalid value: true"
        );
        let json_value = json!({"a": [1, "<b>"]});
        assert_eq!(
            FieldError::invalid("x", &json_value, "bad").to_string(),
            "x: Invalid value: {\"a\":[1,\"\\u003cb\\u003e\"]}: bad"
        );
    }

    #[test]
    fn reasons_and_bodies() {
        let all = [
            (FieldErrorKind::Required, "FieldValueRequired"),
            (FieldErrorKind::Invalid, "FieldValueInvalid"),
            (FieldErrorKind::NotSupported, "FieldValueNotSupported"),
            (FieldErrorKind::Duplicate, "FieldValueDuplicate"),
            (FieldErrorKind::Forbidden, "FieldValueForbidden"),
            (FieldErrorKind::TooLong, "FieldValueTooLong"),
            (FieldErrorKind::TooMany, "FieldValueTooMany"),
        ];
        for (kind, reason) in all {
            assert_eq!(kind.reason(), reason);
        }
        let e = FieldError::invalid("spec.type", "X", "nope");
        assert_eq!(e.body(), "Invalid value: \"X\": nope");
        // a value on a Required error is never shown
        let mut r = FieldError::required("a", "");
        r.value = Some("\"\"".into());
        assert_eq!(r.body(), "Required value");
    }

    #[test]
    fn aggregates_as_kubernetes() {
        let a = FieldError::required("spec.ports", "");
        let b = FieldError::invalid("metadata.name", "A", "bad");
        assert_eq!(aggregate(&[]), "");
        assert_eq!(
            aggregate(std::slice::from_ref(&a)),
            "spec.ports: Required value"
        );
        assert_eq!(
            aggregate(&[a.clone(), b.clone(), a.clone()]),
            "[spec.ports: Required value, metadata.name: Invalid value: \"A\": bad]"
        );
        assert_eq!(
            invalid_message("Service", "web", &[a]),
            "Service \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            invalid_message("EndpointSlice.discovery.k8s.io", "x", &[]),
            "EndpointSlice.discovery.k8s.io \"x\" is invalid"
        );
    }

    #[test]
    fn unknown_kinds_pass_untouched() {
        let mut obj = json!({"metadata": {}, "spec": {"x": 1}});
        let before = obj.clone();
        apply_defaults("ConfigMap", &mut obj);
        assert_eq!(obj, before);
        assert!(validate_create("ConfigMap", &obj).is_empty());
        assert!(validate_update("ConfigMap", &obj, &json!({"metadata": {"name": "y"}})).is_empty());
        prepare_update("ConfigMap", &mut obj, &before);
        assert_eq!(obj, before);
    }

    /// Typical objects of every kind, as clients and podnet's controllers write them.
    fn manifests() -> Vec<(&'static str, Value)> {
        vec![
            (
                "Namespace",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
            ),
            (
                "Node",
                json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
                "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
                "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                    "addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}}),
            ),
            (
                "Pod",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-0", "namespace": "team-a", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "resources": {"requests": {"cpu": "100m"}}}],
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}}),
            ),
            (
                "Service",
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "team-a"},
                "spec": {"type": "NodePort", "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090}]}}),
            ),
            (
                "Endpoints",
                json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "web", "namespace": "team-a"},
                "subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "node-1",
                    "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "team-a"}}],
                    "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}]}),
            ),
            (
                "EndpointSlice",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-x7k2p", "namespace": "team-a",
                    "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "1234", "controller": true, "blockOwnerDeletion": true}]},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": "node-1"}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
            (
                "Lease",
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2026-01-01T00:00:00.000000Z"}}),
            ),
            (
                "Event",
                json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "web-0.17f0a1b2c3d4e5f6", "namespace": "team-a"},
                "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "team-a"},
                "reason": "Scheduled", "message": "Successfully assigned team-a/web-0 to node-1", "type": "Normal", "count": 1}),
            ),
        ]
    }

    #[test]
    fn typical_objects_are_valid_and_defaults_are_stable() {
        for (kind, manifest) in manifests() {
            let mut obj = manifest.clone();
            apply_defaults(kind, &mut obj);
            let errs = validate_create(kind, &obj);
            assert!(errs.is_empty(), "{kind}: {}", aggregate(&errs));
            let mut again = obj.clone();
            apply_defaults(kind, &mut again);
            assert_eq!(again, obj, "{kind}: defaulting twice changes the object");
            // what the server stores, then a PUT of the same manifest
            let mut stored = obj.clone();
            stored["metadata"]["uid"] = json!("0b5c6d1e");
            stored["metadata"]["resourceVersion"] = json!("7");
            if kind == "Service" {
                stored["spec"]["clusterIP"] = json!("10.96.0.10");
                stored["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
                stored["spec"]["ports"][0]["nodePort"] = json!(30080);
                stored["spec"]["ports"][1]["nodePort"] = json!(30090);
            }
            let errs = validate_update(kind, &stored, &stored);
            assert!(errs.is_empty(), "{kind}: {}", aggregate(&errs));
            let mut put = manifest.clone();
            put["metadata"]["uid"] = json!("0b5c6d1e");
            prepare_update(kind, &mut put, &stored);
            apply_defaults(kind, &mut put);
            if stored.get("status").is_some() && kind != "Namespace" {
                put["status"] = stored["status"].clone();
            }
            let errs = validate_update(kind, &put, &stored);
            assert!(errs.is_empty(), "{kind} PUT: {}", aggregate(&errs));
            if kind == "Service" {
                assert_eq!(put["spec"]["clusterIP"], "10.96.0.10");
                assert_eq!(put["spec"]["ports"][1]["nodePort"], 30090);
            }
        }
    }

    #[test]
    fn name_rules_are_public() {
        assert_eq!(
            is_dns1123_label("My_Name"),
            Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_owned())
        );
        assert!(is_dns1123_subdomain("node-1.lab").is_ok());
        assert!(is_dns1035_label("1svc").is_err());
        let errs = validate_labels(&json!({"app": "web", "a b": "c"}), "spec.selector");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.selector");
        assert!(validate_annotations(&json!({"note": "x"}), "metadata.annotations").is_empty());
    }

    #[test]
    fn validate_update_includes_create_validation() {
        let old = json!({"metadata": {"name": "node-1"}, "spec": {"podCIDR": "10.244.1.0/24"}});
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"bad key": "x"});
        new["spec"]["podCIDR"] = json!("10.244.2.0/24");
        apply_defaults("Node", &mut new);
        let mut stored = old.clone();
        apply_defaults("Node", &mut stored);
        let fields: Vec<String> = validate_update("Node", &new, &stored)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, vec!["metadata.labels", "spec.podCIDRs"]);
    }

    #[test]
    fn non_objects_do_not_panic() {
        for kind in [
            "Pod",
            "Service",
            "Node",
            "Namespace",
            "Endpoints",
            "EndpointSlice",
            "Lease",
            "Event",
        ] {
            for v in [
                json!(null),
                json!(1),
                json!("x"),
                json!([1]),
                json!({"metadata": 1, "spec": "x"}),
            ] {
                let mut obj = v.clone();
                apply_defaults(kind, &mut obj);
                prepare_update(kind, &mut obj, &v);
                let errs = validate_create(kind, &obj);
                assert!(!errs.is_empty(), "{kind} {v}");
                let _ = validate_update(kind, &obj, &v);
            }
        }
    }
}
