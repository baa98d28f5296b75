//! Namespaces: `SetDefaults_Namespace`/`SetDefaults_NamespaceStatus`, the create-time
//! `kubernetes` finalizer of the namespace strategy, and `ValidateNamespace`.

use serde_json::{Value, json};

use super::FieldError;
use super::meta::{self, MetaRules, metadata, validate_kube_finalizer_names};
use super::names::NameRule;
use super::util::{default_to, ensure_obj, get, s};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Label,
    namespaced: false,
    core: true,
};

/// The label every namespace carries with its own name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

static NULL: Value = Value::Null;

/// Sets the `kubernetes.io/metadata.name` label and `status.phase` (`Active`); a new
/// namespace (one without a `uid` yet) without `spec.finalizers` gets `["kubernetes"]`.
pub fn apply_defaults(ns: &mut Value) {
    let name = s(metadata(ns), "name").to_owned();
    let is_new = s(metadata(ns), "uid").is_empty();
    if !name.is_empty() {
        let m = ensure_obj(ns, "metadata");
        ensure_obj(m, "labels")[NAME_LABEL] = json!(name);
    }
    if is_new && get(get(ns, "spec").unwrap_or(&NULL), "finalizers").is_none() {
        ensure_obj(ns, "spec")["finalizers"] = json!(["kubernetes"]);
    }
    if let Some(status) = ns.get_mut("status").filter(|v| v.is_object()) {
        default_to(status, "phase", json!("Active"));
    } else {
        ns["status"] = json!({"phase": "Active"});
    }
}

pub fn validate(ns: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(ns, META);
    let spec = get(ns, "spec").unwrap_or(&NULL);
    errs.extend(validate_kube_finalizer_names(
        spec,
        "finalizers",
        "spec.finalizers",
    ));
    errs
}

/// An update keeps the stored `spec.finalizers` (the `finalize` subresource changes them).
pub fn prepare_update(ns: &mut Value, old: &Value) {
    let old_finalizers = get(old, "spec")
        .and_then(|s| get(s, "finalizers"))
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    ensure_obj(ns, "spec")["finalizers"] = old_finalizers;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        apply_defaults(&mut ns);
        assert_eq!(
            ns,
            json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        );
        assert!(validate(&ns).is_empty());
        // an existing namespace whose finalizer is gone does not get it back
        let mut stored = json!({"metadata": {"name": "team-a", "uid": "u", "labels": {"kubernetes.io/metadata.name": "x"}},
            "status": {"phase": "Terminating"}});
        apply_defaults(&mut stored);
        assert!(stored.get("spec").is_none());
        assert_eq!(stored["status"]["phase"], "Terminating");
        assert_eq!(stored["metadata"]["labels"][NAME_LABEL], "team-a");
        let mut given = json!({"metadata": {"name": "b"}, "spec": {"finalizers": []}});
        apply_defaults(&mut given);
        assert_eq!(given["spec"]["finalizers"], json!([]));
    }

    #[test]
    fn validation() {
        let mut ns = json!({"metadata": {"name": "a.b", "namespace": "x"}, "spec": {"finalizers": ["custom"]}});
        apply_defaults(&mut ns);
        let errs: Vec<String> = validate(&ns).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            vec![
                "metadata.name: Invalid value: \"a.b\": must not contain dots",
                "metadata.namespace: Forbidden: not allowed on this type",
                "spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
    }

    #[test]
    fn updates_keep_finalizers() {
        let old =
            json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"finalizers": ["kubernetes"]}});
        let mut new = json!({"metadata": {"name": "a", "uid": "u"}, "spec": {}});
        prepare_update(&mut new, &old);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        let finalized = json!({"metadata": {"name": "a", "uid": "u"}});
        let mut again =
            json!({"metadata": {"name": "a", "uid": "u"}, "spec": {"finalizers": ["kubernetes"]}});
        prepare_update(&mut again, &finalized);
        apply_defaults(&mut again);
        assert_eq!(again["spec"]["finalizers"], json!([]));
    }
}
