//! Nodes: `SetDefaults_NodeStatus` and the v1 conversion of `podCIDR`/`podCIDRs`,
//! `ValidateNode`/`ValidateNodeUpdate`.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::{
    NameRule, invalid_each, label_value_errors, parse_cidr_sloppy, qualified_name_errors,
    validate_cidr,
};
use super::util::{Rendered, arr, child, get, go_json, go_json_str, index, s, strings};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: false,
    core: true,
};

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const POD_CIDR_CHANGE: &str = "node updates may not change podCIDR except from \"\" to valid";

static NULL: Value = Value::Null;

pub fn apply_defaults(node: &mut Value) {
    if let Some(spec) = node.get_mut("spec").filter(|s| s.is_object()) {
        let pod_cidr = s(spec, "podCIDR").to_owned();
        let cidrs = strings(spec, "podCIDRs");
        if !pod_cidr.is_empty() && cidrs.is_empty() {
            spec["podCIDRs"] = json!([pod_cidr]);
        } else if pod_cidr.is_empty() && !cidrs.is_empty() {
            spec["podCIDR"] = json!(cidrs[0]);
        }
    }
    if let Some(status) = node.get_mut("status").filter(|s| s.is_object())
        && get(status, "allocatable").is_none()
        && let Some(capacity) = get(status, "capacity").cloned()
    {
        status["allocatable"] = capacity;
    }
}

/// A taint's or toleration's `effect` (not empty).
pub fn validate_taint_effect(effect: &str, path: &str) -> Vec<FieldError> {
    if TAINT_EFFECTS.contains(&effect) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(path, effect, TAINT_EFFECTS)]
    }
}

pub fn validate(node: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(node, META);
    let spec = get(node, "spec").unwrap_or(&NULL);
    // sic: Kubernetes reports taints under `metadata.taints`
    errs.extend(validate_taints(arr(spec, "taints"), "metadata.taints"));
    let cidrs_path = "spec.podCIDRs";
    let cidrs = strings(spec, "podCIDRs");
    for (n, cidr) in cidrs.iter().enumerate() {
        errs.extend(validate_cidr(cidr, &index(cidrs_path, n)));
    }
    if cidrs.len() > 1 {
        let parsed: Vec<Option<(IpAddr, u8)>> =
            cidrs.iter().map(|c| parse_cidr_sloppy(c)).collect();
        if parsed.iter().all(Option::is_some) {
            let v6 = parsed
                .iter()
                .flatten()
                .filter(|(ip, _)| ip.is_ipv6())
                .count();
            let dual = v6 > 0 && v6 < cidrs.len();
            if !dual || cidrs.len() > 2 {
                errs.push(FieldError::invalid(
                    cidrs_path,
                    &cidrs,
                    "may specify no more than one CIDR for each IP family",
                ));
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (n, cidr) in cidrs.iter().enumerate() {
            if !seen.insert(cidr) {
                errs.push(FieldError::duplicate(index(cidrs_path, n), cidr));
            }
        }
    }
    let pod_cidr = s(spec, "podCIDR");
    if !pod_cidr.is_empty() {
        if cidrs.is_empty() {
            errs.extend(validate_cidr(pod_cidr, "spec.podCIDR"));
        } else if cidrs[0] != pod_cidr {
            errs.push(FieldError::invalid(
                cidrs_path,
                &cidrs,
                "first value must match `podCIDR`",
            ));
        }
    }
    errs
}

/// `validateNodeTaints`.
fn validate_taints(taints: &[Value], p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut unique: HashSet<(&str, &str)> = HashSet::new();
    for (n, t) in taints.iter().enumerate() {
        let tp = index(p, n);
        let (key, value, effect) = (s(t, "key"), s(t, "value"), s(t, "effect"));
        errs.extend(invalid_each(
            &child(&tp, "key"),
            key,
            qualified_name_errors(key),
        ));
        let msgs = label_value_errors(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                child(&tp, "value"),
                value,
                msgs.join(";"),
            ));
        }
        if effect.is_empty() {
            errs.push(FieldError::required(child(&tp, "effect"), ""));
        } else {
            errs.extend(validate_taint_effect(effect, &child(&tp, "effect")));
        }
        if !unique.insert((effect, key)) {
            let time_added = get(t, "timeAdded").map_or("null".to_owned(), go_json);
            let mut dup = FieldError::duplicate(
                &tp,
                &Rendered(format!(
                    "{{\"Key\":{},\"Value\":{},\"Effect\":{},\"TimeAdded\":{time_added}}}",
                    go_json_str(key),
                    go_json_str(value),
                    go_json_str(effect)
                )),
            );
            dup.detail = "taints must be unique by key and effect pair".to_owned();
            errs.push(dup);
        }
    }
    errs
}

/// `ValidateNodeUpdate` beyond the create-validation of the new node: pod CIDRs and the
/// provider ID are set once.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = get(new, "spec").unwrap_or(&NULL);
    let os = get(old, "spec").unwrap_or(&NULL);
    let old_cidrs = strings(os, "podCIDRs");
    if !old_cidrs.is_empty() && old_cidrs != strings(ns, "podCIDRs") {
        errs.push(FieldError::forbidden("spec.podCIDRs", POD_CIDR_CHANGE));
    }
    let old_provider = s(os, "providerID");
    if !old_provider.is_empty() && old_provider != s(ns, "providerID") {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
    let status = get(new, "status").unwrap_or(&NULL);
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for (n, a) in arr(status, "addresses").iter().enumerate() {
        let (typ, address) = (s(a, "type"), s(a, "address"));
        if !seen.insert((typ, address)) {
            errs.push(FieldError::duplicate(
                index("status.addresses", n),
                &Rendered(format!(
                    "{{\"Type\":{},\"Address\":{}}}",
                    go_json_str(typ),
                    go_json_str(address)
                )),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(spec: Value) -> Value {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.lab"}, "spec": spec});
        apply_defaults(&mut n);
        n
    }

    fn errors(v: &Value) -> Vec<String> {
        validate(v).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults() {
        let n = node(json!({"podCIDR": "10.244.1.0/24"}));
        assert_eq!(n["spec"]["podCIDRs"], json!(["10.244.1.0/24"]));
        let n = node(json!({"podCIDRs": ["10.244.2.0/24", "fd00:2::/64"]}));
        assert_eq!(n["spec"]["podCIDR"], "10.244.2.0/24");
        assert!(validate(&n).is_empty(), "{:?}", errors(&n));
        let mut n =
            json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "2", "pods": "110"}}});
        apply_defaults(&mut n);
        assert_eq!(
            n["status"]["allocatable"],
            json!({"cpu": "2", "pods": "110"})
        );
        assert!(n.get("spec").is_none());
        assert!(validate(&n).is_empty());
    }

    #[test]
    fn names_and_cidrs() {
        let mut n = node(json!({}));
        n["metadata"]["name"] = json!("Node_1");
        assert_eq!(errors(&n).len(), 1);
        let n = node(json!({"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24", "x", "10.244.1.0/24"]}));
        assert_eq!(
            errors(&n),
            vec![
                "spec.podCIDRs[2]: Invalid value: \"x\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.podCIDRs[3]: Duplicate value: \"10.244.1.0/24\"",
            ]
        );
        let n = node(json!({"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}));
        assert_eq!(
            errors(&n),
            vec![
                "spec.podCIDRs: Invalid value: [\"10.244.1.0/24\",\"10.244.2.0/24\"]: may specify no more than one CIDR for each IP family"
            ]
        );
        let n = node(json!({"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.1.0/24"]}));
        assert_eq!(
            errors(&n),
            vec![
                "spec.podCIDRs: Invalid value: [\"10.244.1.0/24\"]: first value must match `podCIDR`"
            ]
        );
        let mut n = node(json!({}));
        n["spec"]["podCIDR"] = json!("10.244.1.0");
        assert_eq!(
            errors(&n),
            vec![
                "spec.podCIDR: Invalid value: \"10.244.1.0\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            ]
        );
    }

    #[test]
    fn taints() {
        let n = node(json!({"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "other", "effect": "NoSchedule"},
            {"key": "dedicated", "effect": "NoExecute"},
            {"key": "", "effect": "Sometimes"},
            {"key": "k", "value": "-v"},
        ]}));
        let errs = errors(&n);
        assert_eq!(
            errs[0],
            "metadata.taints[1]: Duplicate value: {\"Key\":\"dedicated\",\"Value\":\"other\",\"Effect\":\"NoSchedule\",\"TimeAdded\":null}: taints must be unique by key and effect pair"
        );
        assert_eq!(
            errs[1],
            "metadata.taints[3].key: Invalid value: \"\": name part must be non-empty"
        );
        assert!(
            errs[2].starts_with(
                "metadata.taints[3].key: Invalid value: \"\": name part must consist of"
            )
        );
        assert_eq!(
            errs[3],
            "metadata.taints[3].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
        );
        assert!(
            errs[4].starts_with(
                "metadata.taints[4].value: Invalid value: \"-v\": a valid label must be"
            )
        );
        assert_eq!(errs[5], "metadata.taints[4].effect: Required value");
        assert_eq!(errs.len(), 6, "{errs:?}");
    }

    #[test]
    fn updates() {
        let old = node(json!({"podCIDR": "10.244.1.0/24", "providerID": "lab://1"}));
        assert!(validate_update(&old, &old).is_empty());
        let unset = node(json!({}));
        let set = node(json!({"podCIDR": "10.244.3.0/24"}));
        assert!(validate_update(&set, &unset).is_empty());
        let moved = node(json!({"podCIDR": "10.244.2.0/24", "providerID": "lab://2"}));
        let errs: Vec<String> = validate_update(&moved, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
                "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
            ]
        );
        let mut addresses = old.clone();
        addresses["status"] = json!({"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"},
            {"type": "InternalIP", "address": "10.0.0.1"}]});
        let errs: Vec<String> = validate_update(&addresses, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "status.addresses[2]: Duplicate value: {\"Type\":\"InternalIP\",\"Address\":\"10.0.0.1\"}"
            ]
        );
    }
}
