//! Label selectors as Kubernetes evaluates them (`matchLabels` and `matchExpressions`
//! with In, NotIn, Exists, DoesNotExist; all must hold; an empty selector selects all),
//! and a canonical text of a selector, so that equal selectors share an address set.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// Whether `selector` selects an object with `labels`. An operator Kubernetes does not
/// know selects nothing (the API refuses such selectors; this only guards against one
/// that got through).
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The selector as one canonical text: labels and expressions sorted (`{}` for all).
pub fn canonical(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        values.dedup();
        parts.push(match e.operator.as_str() {
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => format!("{} {} ({})", e.key, op.to_lowercase(), values.join(",")),
        });
    }
    parts.sort();
    if parts.is_empty() {
        "{}".to_string()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn labels_and_every_operator_select_as_kubernetes_does() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(matches(&LabelSelector::default(), &pod));
        let s = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "back"]),
                expr("env", "NotIn", &["prod"]),
                expr("app", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(matches(&s, &pod));
        assert!(!matches(&s, &labels(&[("app", "web"), ("tier", "db")])));
        assert!(!matches(
            &s,
            &labels(&[("app", "web"), ("tier", "front"), ("legacy", "1")])
        ));
        let bad = LabelSelector {
            match_expressions: Some(vec![expr("app", "Like", &["web"])]),
            ..LabelSelector::default()
        };
        assert!(!matches(&bad, &pod));
    }

    #[test]
    fn equal_selectors_have_one_text() {
        let a = LabelSelector {
            match_labels: Some(labels(&[("b", "2"), ("a", "1")])),
            match_expressions: Some(vec![expr("c", "In", &["y", "x"])]),
        };
        let b = LabelSelector {
            match_labels: Some(labels(&[("a", "1"), ("b", "2")])),
            match_expressions: Some(vec![expr("c", "In", &["x", "y", "x"])]),
        };
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), "a=1,b=2,c in (x,y)");
        assert_eq!(canonical(&LabelSelector::default()), "{}");
    }
}
