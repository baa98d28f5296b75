//! core/v1 Events: the object metadata plus `legacyValidateEvent`'s rules.

use serde_json::Value;

use super::FieldError;
use super::meta::{self, MetaRules, metadata};
use super::names::NameRule;
use super::names::validate_qualified_name;
use super::util::{get, s};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: true,
};

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

static NULL: Value = Value::Null;

pub fn validate(event: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(event, META);
    let namespace = s(metadata(event), "namespace");
    let involved = get(event, "involvedObject").unwrap_or(&NULL);
    let involved_ns = s(involved, "namespace");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if get(event, "eventTime").is_none() {
        // an old-style event: its namespace is its object's
        if involved_ns.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                errs.push(mismatch());
            }
        } else if namespace != involved_ns {
            errs.push(mismatch());
        }
        return errs;
    }
    if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        errs.push(mismatch());
    }
    let controller = s(event, "reportingComponent");
    if controller.is_empty() {
        errs.push(FieldError::required("reportingComponent", ""));
    } else {
        errs.extend(validate_qualified_name(controller, "reportingComponent"));
    }
    for (field, limit) in [
        ("reportingInstance", REPORTING_INSTANCE_LIMIT),
        ("action", ACTION_LIMIT),
        ("reason", REASON_LIMIT),
    ] {
        let value = s(event, field);
        if value.is_empty() {
            errs.push(FieldError::required(field, ""));
        }
        if value.len() > limit {
            errs.push(FieldError::invalid(
                field,
                "",
                format!("can have at most {limit} characters"),
            ));
        }
    }
    if s(event, "message").len() > NOTE_LIMIT {
        errs.push(FieldError::invalid(
            "message",
            "",
            format!("can have at most {NOTE_LIMIT} characters"),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: &Value) -> Vec<String> {
        validate(v).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn old_style_events() {
        let ok = json!({"metadata": {"name": "web.17a3b", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal"});
        assert!(validate(&ok).is_empty(), "{:?}", errors(&ok));
        let node_event = json!({"metadata": {"name": "n.1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n"}});
        assert!(validate(&node_event).is_empty());
        let other = json!({"metadata": {"name": "e", "namespace": "team"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}});
        assert_eq!(
            errors(&other),
            vec![
                "involvedObject.namespace: Invalid value: \"default\": does not match event.namespace"
            ]
        );
        let cluster = json!({"metadata": {"name": "e", "namespace": "team"},
            "involvedObject": {"kind": "Node", "name": "n"}});
        assert_eq!(
            errors(&cluster),
            vec!["involvedObject.namespace: Invalid value: \"\": does not match event.namespace"]
        );
        let bad_name = json!({"metadata": {"name": "E", "namespace": "default"}, "involvedObject": {"namespace": "default"}});
        assert_eq!(errors(&bad_name).len(), 1);
    }

    #[test]
    fn new_style_events() {
        let ok = json!({"metadata": {"name": "e", "namespace": "kube-system"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "involvedObject": {"kind": "Node", "name": "n"},
            "reportingComponent": "podnet.io/agent", "reportingInstance": "node-1",
            "action": "Reconcile", "reason": "Ready"});
        assert!(validate(&ok).is_empty(), "{:?}", errors(&ok));
        let bad = json!({"metadata": {"name": "e", "namespace": "team"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "involvedObject": {"kind": "Node", "name": "n"},
            "reportingInstance": "x".repeat(129), "reason": "r", "message": "m".repeat(1025)});
        assert_eq!(
            errors(&bad),
            vec![
                "involvedObject.namespace: Invalid value: \"\": does not match event.namespace",
                "reportingComponent: Required value",
                "reportingInstance: Invalid value: \"\": can have at most 128 characters",
                "action: Required value",
                "message: Invalid value: \"\": can have at most 1024 characters",
            ]
        );
    }
}
