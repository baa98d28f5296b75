//! Label selectors (`metav1.LabelSelector`) as Kubernetes prints them: the one-line form of
//! `metav1.FormatLabelSelector` that `kubectl get networkpolicy` shows in POD-SELECTOR and
//! `kubectl describe` in its selector lines (`app=web,tier in (a,b),!legacy`). Shared by the
//! server's tables and the CLI's describers, so both say the same thing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement of a selector, as `labels.Requirement` prints it.
struct Requirement<'a> {
    key: &'a str,
    op: Op,
    values: Vec<&'a str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Requirement<'_> {
    /// `labels.Requirement.String`: values sorted, `in`/`notin` sets in parentheses.
    fn render(&self) -> String {
        let mut out = String::new();
        if self.op == Op::DoesNotExist {
            out.push('!');
        }
        out.push_str(self.key);
        let (op, open, close) = match self.op {
            Op::Equals => ("=", "", ""),
            Op::In => (" in ", "(", ")"),
            Op::NotIn => (" notin ", "(", ")"),
            Op::Exists | Op::DoesNotExist => return out,
        };
        let mut values = self.values.clone();
        values.sort_unstable();
        out.push_str(op);
        out.push_str(open);
        out.push_str(&values.join(","));
        out.push_str(close);
        out
    }
}

/// `metav1.FormatLabelSelector`: the selector as `labels.Selector.String` writes it
/// (requirements ordered by key), `<none>` when it selects everything (no labels and no
/// expressions) or nothing (`None`), `<error>` when an expression's operator is not one of
/// `In`, `NotIn`, `Exists`, `DoesNotExist` or its values do not fit it.
pub fn format(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return "<none>".to_owned();
    };
    let mut reqs: Vec<Requirement<'_>> = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        reqs.push(Requirement {
            key,
            op: Op::Equals,
            values: vec![value],
        });
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values: Vec<&str> = expr.values.iter().flatten().map(String::as_str).collect();
        let op = match expr.operator.as_str() {
            "In" => Op::In,
            "NotIn" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            _ => return "<error>".to_owned(),
        };
        // `labels.NewRequirement`: set operators need values, existence ones none.
        let fits = match op {
            Op::In | Op::NotIn => !values.is_empty(),
            _ => values.is_empty(),
        };
        if !fits {
            return "<error>".to_owned();
        }
        reqs.push(Requirement {
            key: &expr.key,
            op,
            values,
        });
    }
    // `Selector.Add` sorts by key; stable here, so a key's label comes before its expressions.
    reqs.sort_by(|a, b| a.key.cmp(b.key));
    let text = reqs
        .iter()
        .map(Requirement::render)
        .collect::<Vec<_>>()
        .join(",");
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text
    }
}

/// Whether the selector has neither labels nor expressions (it selects everything).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn formats_as_kubernetes() {
        assert_eq!(format(None), "<none>");
        assert_eq!(format(Some(&sel(json!({})))), "<none>");
        assert_eq!(
            format(Some(&sel(json!({"matchLabels": {"app": "web"}})))),
            "app=web"
        );
        let mixed = sel(json!({
        "matchLabels": {"tier": "front", "app": "web"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "canary", "operator": "Exists"},
        ]}));
        assert_eq!(
            format(Some(&mixed)),
            "app=web,canary,env in (dev,prod),!legacy,tier=front,zone notin (b)"
        );
        let bad = sel(json!({"matchExpressions": [{"key": "a", "operator": "Has"}]}));
        assert_eq!(format(Some(&bad)), "<error>");
        let no_values = sel(json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
        assert_eq!(format(Some(&no_values)), "<error>");
        assert!(is_empty(&sel(json!({"matchLabels": {}}))));
        assert!(!is_empty(&mixed));
    }
}
