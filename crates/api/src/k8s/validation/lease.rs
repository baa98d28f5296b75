//! coordination.k8s.io/v1 Leases: `ValidateLease`.

use serde_json::Value;

use super::FieldError;
use super::meta::{self, MetaRules};
use super::names::NameRule;
use super::util::{get, opt_i};

const META: MetaRules = MetaRules {
    name: NameRule::Dns1123Subdomain,
    namespaced: true,
    core: false,
};

static NULL: Value = Value::Null;

pub fn validate(lease: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate(lease, META);
    let spec = get(lease, "spec").unwrap_or(&NULL);
    if let Some(d) = opt_i(spec, "leaseDurationSeconds")
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = opt_i(spec, "leaseTransitions")
        && t < 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            &t,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leases() {
        let ok = json!({"metadata": {"name": "node-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "leaseTransitions": 0}});
        assert!(validate(&ok).is_empty());
        let bare = json!({"metadata": {"name": "x", "namespace": "d"}});
        assert!(validate(&bare).is_empty());
        let bad = json!({"metadata": {"name": "x", "namespace": "d"},
            "spec": {"leaseDurationSeconds": 0, "leaseTransitions": -1}});
        let errs: Vec<String> = validate(&bad).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            vec![
                "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
                "spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }
}
