//! Label selectors: `ValidateLabelSelector` and `ValidateLabelSelectorRequirement`
//! (`k8s.io/apimachinery/pkg/apis/meta/v1/validation`), on the typed `metav1.LabelSelector`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::FieldError;
use super::names::{invalid_each, label_value_errors, qualified_name_errors};
use super::util::{child, index};

/// `LabelSelectorValidationOptions`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectorOptions {
    /// Tolerate values that are not valid label values (an update keeps a selector that was
    /// accepted before the rule existed).
    pub allow_invalid_label_value: bool,
}

/// `ValidateLabelSelector` at `path`; a missing selector is valid.
pub fn validate(sel: Option<&LabelSelector>, opts: SelectorOptions, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(sel) = sel else {
        return errs;
    };
    let labels = child(path, "matchLabels");
    for (k, v) in sel.match_labels.iter().flatten() {
        errs.extend(invalid_each(&labels, k, qualified_name_errors(k)));
        errs.extend(invalid_each(&labels, v, label_value_errors(v)));
    }
    let exprs = child(path, "matchExpressions");
    for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
        errs.extend(validate_requirement(expr, opts, &index(&exprs, i)));
    }
    errs
}

/// `ValidateLabelSelectorRequirement`.
fn validate_requirement(
    req: &LabelSelectorRequirement,
    opts: SelectorOptions,
    path: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let values: &[String] = req.values.as_deref().unwrap_or_default();
    let values_path = child(path, "values");
    match req.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
            &values_path,
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
            &values_path,
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
        op => errs.push(FieldError::invalid(
            child(path, "operator"),
            op,
            "not a valid selector operator",
        )),
    }
    errs.extend(invalid_each(
        &child(path, "key"),
        &req.key,
        qualified_name_errors(&req.key),
    ));
    if !opts.allow_invalid_label_value {
        for (i, v) in values.iter().enumerate() {
            errs.extend(invalid_each(
                &index(&values_path, i),
                v,
                label_value_errors(v),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: serde_json::Value, opts: SelectorOptions) -> Vec<String> {
        let sel: LabelSelector = serde_json::from_value(v).unwrap();
        validate(Some(&sel), opts, "spec.podSelector")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn selectors() {
        let strict = SelectorOptions::default();
        assert!(errors(json!({"matchLabels": {"app": "web"}}), strict).is_empty());
        assert!(validate(None, strict, "x").is_empty());
        let cases = [
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
                "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}),
                "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Has"}]}),
                "spec.podSelector.matchExpressions[0].operator: Invalid value: \"Has\": not a valid selector operator",
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}),
                "spec.podSelector.matchExpressions[0].values[0]: Invalid value: \"a b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (
                json!({"matchLabels": {"-app": "web"}}),
                "spec.podSelector.matchLabels: Invalid value: \"-app\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(errors(sel.clone(), strict), vec![want], "{sel}");
        }
        let lenient = SelectorOptions {
            allow_invalid_label_value: true,
        };
        assert!(
            errors(
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}),
                lenient
            )
            .is_empty()
        );
    }
}
