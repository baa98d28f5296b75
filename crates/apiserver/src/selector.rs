//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`spec.nodeName=n1,status.phase!=Failed`), parsed from query parameters.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    /// Parses the `labelSelector` syntax of the Kubernetes API.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in split_terms(s)? {
            reqs.push(parse_label_term(&term)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// A selector requiring every pair (a Service's `spec.selector`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        LabelSelector(
            pairs
                .into_iter()
                .map(|(k, v)| LabelReq::In(k.to_owned(), vec![v.to_owned()]))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        let get = |k: &str| labels.iter().find(|(lk, _)| *lk == k).map(|(_, v)| *v);
        self.0.iter().all(|req| match req {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("unable to parse requirement: unbalanced ')' in {s:?}")
                })?;
                cur.push(c);
            }
            ',' if depth == 0 => terms.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unbalanced '(' in {s:?}"
        ));
    }
    terms.push(cur);
    Ok(terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect())
}

fn parse_label_term(term: &str) -> Result<LabelReq, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(check_key(key.trim())?));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some(at) = term.find(op) {
            let key = check_key(term[..at].trim())?;
            let values = parse_set(term[at + op.len()..].trim(), term)?;
            return Ok(if negate {
                LabelReq::NotIn(key, values)
            } else {
                LabelReq::In(key, values)
            });
        }
    }
    let (key, value, negate) = split_comparison(term)?;
    match value {
        None => Ok(LabelReq::Exists(check_key(&key)?)),
        Some(v) => {
            let key = check_key(&key)?;
            Ok(if negate {
                LabelReq::NotIn(key, vec![v])
            } else {
                LabelReq::In(key, vec![v])
            })
        }
    }
}

/// `k=v`, `k==v`, `k!=v` or a bare `k` (value `None`).
fn split_comparison(term: &str) -> Result<(String, Option<String>, bool), String> {
    if let Some((k, v)) = term.split_once("!=") {
        return Ok((k.trim().to_owned(), Some(v.trim().to_owned()), true));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Ok((k.trim().to_owned(), Some(v.trim().to_owned()), false));
    }
    if let Some((k, v)) = term.split_once('=') {
        return Ok((k.trim().to_owned(), Some(v.trim().to_owned()), false));
    }
    if term.contains(['<', '>', '(', ')', ' ']) {
        return Err(format!("unable to parse requirement: {term:?}"));
    }
    Ok((term.trim().to_owned(), None, false))
}

fn parse_set(s: &str, term: &str) -> Result<Vec<String>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement {term:?}: expected a set like (a,b)")
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(key: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

/// One requirement of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldReq {
    path: String,
    value: String,
    negate: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldReq>);

impl FieldSelector {
    /// Parses `a=b,c!=d`; every field must be one of `supported` (dotted JSON paths).
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, value, negate) = split_comparison(term)?;
            let value = value.ok_or_else(|| {
                format!(
                    "invalid selector: {term:?}; a field selector needs an operator (=, == or !=)"
                )
            })?;
            if !supported.contains(&path.as_str()) {
                return Err(format!(
                    "field label not supported: {path} (supported: {})",
                    supported.join(", ")
                ));
            }
            reqs.push(FieldReq {
                path,
                value,
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value required for `path` by an `=` term, if any (lets a caller narrow a list).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.path == path && !r.negate)
            .map(|r| r.value.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let actual = field_value(obj, &r.path);
            (actual == r.value) != r.negate
        })
    }
}

/// The string value at a dotted path; absent fields read as "" (as Kubernetes' field sets do).
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let labels = [("app", "web"), ("tier", "front")];
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(ok(""));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("app in (web, db),!legacy"));
        assert!(!ok("tier notin (front)"));
        assert!(ok("env notin (prod)"));
        assert!(!ok("env"));
        assert!(LabelSelector::parse("app in (web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let fields = ["metadata.name", "spec.nodeName", "status.phase"];
        let ok = |s: &str| FieldSelector::parse(s, &fields).unwrap().matches(&pod);
        assert!(ok("spec.nodeName=n1"));
        assert!(ok(
            "spec.nodeName=n1,status.phase!=Failed,status.phase!=Succeeded"
        ));
        assert!(!ok("metadata.name==q"));
        let unscheduled = json!({"metadata": {"name": "p"}});
        assert!(
            FieldSelector::parse("spec.nodeName=", &fields)
                .unwrap()
                .matches(&unscheduled)
        );
        let err = FieldSelector::parse("spec.foo=x", &fields).unwrap_err();
        assert!(err.contains("field label not supported: spec.foo"), "{err}");
        assert!(FieldSelector::parse("spec.nodeName", &fields).is_err());
    }
}
