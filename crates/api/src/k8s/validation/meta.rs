//! `metadata`: `ValidateObjectMeta` and `ValidateObjectMetaUpdate`
//! (`k8s.io/apimachinery/pkg/api/validation/objectmeta.go`).

use serde_json::Value;

use super::FieldError;
use super::names::{
    NameRule, dns1123_label_errors, invalid_each, qualified_name_errors, validate_annotations,
    validate_labels,
};
use super::util::{arr, child, get, go_quote, i, index, opt_i, s, strs};

/// The finalizers Kubernetes knows without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// How a kind's metadata is checked.
#[derive(Debug, Clone, Copy)]
pub struct MetaRules {
    pub name: NameRule,
    pub namespaced: bool,
    /// Core-group kinds also require unprefixed finalizers to be standard ones.
    pub core: bool,
}

/// The metadata of `obj` (an empty object when absent).
pub fn metadata(obj: &Value) -> &Value {
    static EMPTY: Value = Value::Null;
    get(obj, "metadata").unwrap_or(&EMPTY)
}

/// `ValidateObjectMeta` with the rules of a kind.
pub fn validate(obj: &Value, rules: MetaRules) -> Vec<FieldError> {
    let m = metadata(obj);
    let p = "metadata";
    let mut errs = Vec::new();
    let generate_name = s(m, "generateName");
    if !generate_name.is_empty() {
        errs.extend(invalid_each(
            &child(p, "generateName"),
            generate_name,
            rules.name.errors(generate_name, true),
        ));
    }
    let name = s(m, "name");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                child(p, "name"),
                "name or generateName is required",
            ));
        }
    } else {
        errs.extend(invalid_each(
            &child(p, "name"),
            name,
            rules.name.errors(name, false),
        ));
    }
    let namespace = s(m, "namespace");
    if rules.namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(child(p, "namespace"), ""));
        } else {
            errs.extend(invalid_each(
                &child(p, "namespace"),
                namespace,
                dns1123_label_errors(namespace),
            ));
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            child(p, "namespace"),
            "not allowed on this type",
        ));
    }
    let generation = i(m, "generation");
    if generation < 0 {
        errs.push(FieldError::invalid(
            child(p, "generation"),
            &generation,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(labels) = get(m, "labels") {
        errs.extend(validate_labels(labels, &child(p, "labels")));
    }
    if let Some(annotations) = get(m, "annotations") {
        errs.extend(validate_annotations(annotations, &child(p, "annotations")));
    }
    errs.extend(validate_owner_references(m, &child(p, "ownerReferences")));
    errs.extend(validate_finalizers(m, &child(p, "finalizers"), rules.core));
    errs
}

/// `ValidateOwnerReferences`; as in Kubernetes the errors name the list, not the item.
fn validate_owner_references(m: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let refs = arr(m, "ownerReferences");
    let mut first_controller: Option<String> = None;
    for r in refs {
        let api_version = s(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errs.push(FieldError::invalid(
                child(path, "apiVersion"),
                api_version,
                "version must not be empty",
            ));
        }
        for (field, what) in [("kind", "kind"), ("name", "name"), ("uid", "uid")] {
            if s(r, field).is_empty() {
                errs.push(FieldError::invalid(
                    child(path, what),
                    s(r, field),
                    "must not be empty",
                ));
            }
        }
        if get(r, "controller").and_then(Value::as_bool) == Some(true) {
            let current = format!("{}/{}", s(r, "kind"), s(r, "name"));
            match &first_controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    get(m, "ownerReferences").unwrap_or(&Value::Null),
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"),
                )),
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

/// `ValidateFinalizers`, plus `validateKubeFinalizerName` for core kinds.
fn validate_finalizers(m: &Value, path: &str, core: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let finalizers = strs(m, "finalizers");
    for f in &finalizers {
        let msgs = qualified_name_errors(f);
        if msgs.is_empty() {
            if core && !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
                errs.push(FieldError::invalid(
                    path,
                    *f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        } else {
            errs.extend(invalid_each(path, f, msgs));
        }
    }
    if finalizers.contains(&"orphan") && finalizers.contains(&"foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            get(m, "finalizers").unwrap_or(&Value::Null),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// `ValidateObjectMetaUpdate`, for what a server that keeps identity fields itself still
/// needs: name, namespace and uid may not change (an omitted uid is the old one), a
/// deletion may not be undone or started by an update, and an object being deleted takes
/// no new finalizers.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let (n, o) = (metadata(new), metadata(old));
    let p = "metadata";
    let mut errs = Vec::new();
    let old_deleting = get(o, "deletionTimestamp").is_some();
    if old_deleting {
        let old_finalizers = strs(o, "finalizers");
        let mut extra: Vec<&str> = strs(n, "finalizers")
            .into_iter()
            .filter(|f| !old_finalizers.contains(f))
            .collect();
        extra.sort_unstable();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| go_quote(f)).collect();
            errs.push(FieldError::forbidden(
                child(p, "finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    list.join(", ")
                ),
            ));
        }
    }
    for field in ["name", "namespace"] {
        if s(n, field) != s(o, field) {
            errs.push(immutable(&child(p, field), s(n, field)));
        }
    }
    let uid = s(n, "uid");
    if !uid.is_empty() && uid != s(o, "uid") {
        errs.push(immutable(&child(p, "uid"), uid));
    }
    let new_deletion = get(n, "deletionTimestamp");
    if new_deletion.is_some() && new_deletion != get(o, "deletionTimestamp") {
        errs.push(FieldError::invalid(
            child(p, "deletionTimestamp"),
            new_deletion.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
    let new_grace = opt_i(n, "deletionGracePeriodSeconds");
    if new_grace.is_some() && new_grace != opt_i(o, "deletionGracePeriodSeconds") {
        errs.push(FieldError::invalid(
            child(p, "deletionGracePeriodSeconds"),
            &new_grace.unwrap_or(0),
            "field is immutable",
        ));
    }
    errs
}

/// `ValidateImmutableField`'s error.
pub fn immutable(path: &str, new_value: &str) -> FieldError {
    FieldError::invalid(path, new_value, "field is immutable")
}

/// The finalizer names a list field holds, checked as a namespace's `spec.finalizers`.
pub fn validate_kube_finalizer_names(obj: &Value, key: &str, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (n, f) in arr(obj, key).iter().enumerate() {
        let Some(f) = f.as_str() else {
            errs.push(FieldError::invalid(index(path, n), f, "must be a string"));
            continue;
        };
        let msgs = qualified_name_errors(f);
        if msgs.is_empty() {
            if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
                errs.push(FieldError::invalid(
                    path,
                    f,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        } else {
            errs.extend(invalid_each(path, f, msgs));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POD_RULES: MetaRules = MetaRules {
        name: NameRule::Dns1123Subdomain,
        namespaced: true,
        core: true,
    };
    const NODE_RULES: MetaRules = MetaRules {
        name: NameRule::Dns1123Subdomain,
        namespaced: false,
        core: true,
    };

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn names_and_namespaces() {
        let ok = json!({"metadata": {"name": "web.1", "namespace": "default"}});
        assert!(validate(&ok, POD_RULES).is_empty());
        assert_eq!(
            msgs(&validate(
                &json!({"metadata": {"namespace": "d"}}),
                POD_RULES
            )),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        assert!(
            validate(
                &json!({"metadata": {"generateName": "web-", "namespace": "d"}}),
                POD_RULES
            )
            .is_empty()
        );
        let errs = validate(
            &json!({"metadata": {"generateName": "Web-", "namespace": "d"}}),
            POD_RULES,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.generateName");
        let errs = validate(&json!({"metadata": {"name": "Web"}}), POD_RULES);
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0].to_string().starts_with(
                "metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain"
            )
        );
        assert_eq!(errs[1].to_string(), "metadata.namespace: Required value");
        let errs = validate(
            &json!({"metadata": {"name": "a", "namespace": "a.b"}}),
            POD_RULES,
        );
        assert_eq!(
            msgs(&errs),
            vec!["metadata.namespace: Invalid value: \"a.b\": must not contain dots"]
        );
        assert_eq!(
            msgs(&validate(
                &json!({"metadata": {"name": "n", "namespace": "x"}}),
                NODE_RULES
            )),
            vec!["metadata.namespace: Forbidden: not allowed on this type"]
        );
        assert_eq!(
            msgs(&validate(
                &json!({"metadata": {"name": "n", "generation": -1}}),
                NODE_RULES
            )),
            vec!["metadata.generation: Invalid value: -1: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn labels_annotations_finalizers_owners() {
        let obj = json!({"metadata": {"name": "n",
        "labels": {"a": "b c"}, "annotations": {"x y": "1"},
        "finalizers": ["kubernetes", "example.com/f", "custom", "orphan", "foregroundDeletion"],
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Service", "name": "s", "uid": "u", "controller": true},
            {"apiVersion": "", "kind": "", "name": "", "uid": "", "controller": true}
        ]}});
        let errs = validate(&obj, NODE_RULES);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "metadata.labels",
                "metadata.annotations",
                "metadata.ownerReferences.apiVersion",
                "metadata.ownerReferences.kind",
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid",
                "metadata.ownerReferences",
                "metadata.finalizers",
                "metadata.finalizers",
            ]
        );
        assert_eq!(
            errs[2].to_string(),
            "metadata.ownerReferences.apiVersion: Invalid value: \"\": version must not be empty"
        );
        assert!(errs[6].detail.starts_with("Only one reference can have Controller set to true. Found \"true\" in references for Service/s and /"));
        assert_eq!(
            errs[7].to_string(),
            "metadata.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
        );
        assert_eq!(
            errs[8].detail,
            "finalizer orphan and foregroundDeletion cannot be both set"
        );
        // non-core kinds accept unprefixed finalizers
        let lease = MetaRules {
            core: false,
            ..POD_RULES
        };
        let obj = json!({"metadata": {"name": "l", "namespace": "d", "finalizers": ["custom"]}});
        assert!(validate(&obj, lease).is_empty());
    }

    #[test]
    fn updates() {
        let old = json!({"metadata": {"name": "a", "namespace": "d", "uid": "u1"}});
        assert!(validate_update(&old, &old).is_empty());
        let no_uid = json!({"metadata": {"name": "a", "namespace": "d"}});
        assert!(validate_update(&no_uid, &old).is_empty());
        let renamed = json!({"metadata": {"name": "b", "namespace": "e", "uid": "u2"}});
        assert_eq!(
            msgs(&validate_update(&renamed, &old)),
            vec![
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.namespace: Invalid value: \"e\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable",
            ]
        );
        let deleting = json!({"metadata": {"name": "a", "namespace": "d",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": ["x/a"]}});
        let more = json!({"metadata": {"name": "a", "namespace": "d",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": ["x/a", "x/c", "x/b"]}});
        assert_eq!(
            msgs(&validate_update(&more, &deleting)),
            vec![
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/b\", \"x/c\"}"
            ]
        );
        let fewer = json!({"metadata": {"name": "a", "namespace": "d",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}});
        assert!(validate_update(&fewer, &deleting).is_empty());
        let start = json!({"metadata": {"name": "a", "namespace": "d",
            "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 5}});
        assert_eq!(
            msgs(&validate_update(&start, &old)),
            vec![
                "metadata.deletionTimestamp: Invalid value: \"2026-01-02T00:00:00Z\": field is immutable",
                "metadata.deletionGracePeriodSeconds: Invalid value: 5: field is immutable",
            ]
        );
    }

    #[test]
    fn namespace_finalizer_names() {
        let spec = json!({"finalizers": ["kubernetes", "example.com/x", "nope", "a b"]});
        let errs = validate_kube_finalizer_names(&spec, "finalizers", "spec.finalizers");
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[0].to_string(),
            "spec.finalizers: Invalid value: \"nope\": name is neither a standard finalizer name nor is it fully qualified"
        );
    }
}
