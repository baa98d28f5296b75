//! Helpers shared by the validators: field paths, reading JSON leniently, rendering bad
//! values as Kubernetes does, and Kubernetes' "semantic" equality of objects.

use serde_json::{Map, Value};

/// A value that a [`FieldError`] can show, rendered as Kubernetes renders a bad value:
/// strings with Go's `%q`, numbers and booleans bare, anything else as JSON.
pub trait BadValue {
    fn render(&self) -> String;
}

impl BadValue for str {
    fn render(&self) -> String {
        go_quote(self)
    }
}

impl BadValue for String {
    fn render(&self) -> String {
        go_quote(self)
    }
}

macro_rules! bare_bad_value {
    ($($t:ty),*) => {
        $(impl BadValue for $t {
            fn render(&self) -> String {
                self.to_string()
            }
        })*
    };
}

bare_bad_value!(i64, i32, u64, u32, u16, usize, bool);

impl BadValue for Value {
    fn render(&self) -> String {
        match self {
            Value::String(s) => go_quote(s),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".to_owned(),
            other => go_json(other),
        }
    }
}

impl BadValue for [String] {
    fn render(&self) -> String {
        go_json(&Value::Array(
            self.iter().map(|s| Value::String(s.clone())).collect(),
        ))
    }
}

impl BadValue for Vec<String> {
    fn render(&self) -> String {
        self.as_slice().render()
    }
}

/// A value already rendered (for Go structs printed with their field order).
pub struct Rendered(pub String);

impl BadValue for Rendered {
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON as Go's `encoding/json` writes it (HTML characters escaped).
pub fn go_json(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned());
    escape_html(&s)
}

/// A string as a JSON string literal, Go-style.
pub fn go_json_str(s: &str) -> String {
    go_json(&Value::String(s.to_owned()))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `path.name`
pub fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// `path[i]`
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The member `k` of `v` when `v` is an object and the member is not null.
pub fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object()
        .and_then(|m| m.get(k))
        .filter(|x| !x.is_null())
}

/// A string member, `""` when absent or not a string.
pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    get(v, k).and_then(Value::as_str).unwrap_or("")
}

/// A string member when present as a string.
pub fn opt_s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    get(v, k).and_then(Value::as_str)
}

/// An integer member when present as an integer.
pub fn opt_i(v: &Value, k: &str) -> Option<i64> {
    get(v, k).and_then(Value::as_i64)
}

/// An integer member, 0 when absent.
pub fn i(v: &Value, k: &str) -> i64 {
    opt_i(v, k).unwrap_or(0)
}

/// A boolean member, false when absent.
pub fn b(v: &Value, k: &str) -> bool {
    get(v, k).and_then(Value::as_bool).unwrap_or(false)
}

/// An array member, empty when absent or not an array.
pub fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An object member when present as an object.
pub fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    get(v, k).and_then(Value::as_object)
}

/// The strings of an array member (other items skipped).
pub fn strs<'a>(v: &'a Value, k: &str) -> Vec<&'a str> {
    arr(v, k).iter().filter_map(Value::as_str).collect()
}

/// The strings of an array member, owned.
pub fn strings(v: &Value, k: &str) -> Vec<String> {
    strs(v, k).into_iter().map(str::to_owned).collect()
}

/// `v[k]`, made an object first when it is not one.
pub fn ensure_obj<'a>(v: &'a mut Value, k: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let slot = &mut v[k];
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot
}

/// Sets `v[k] = value` when the member is absent, null or an empty string.
pub fn default_to(v: &mut Value, k: &str, value: Value) {
    let Some(m) = v.as_object_mut() else {
        return;
    };
    let empty = match m.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if empty {
        m.insert(k.to_owned(), value);
    }
}

/// The items of an array member, mutable.
pub fn items_mut<'a>(v: &'a mut Value, k: &str) -> &'a mut [Value] {
    match v.as_object_mut().and_then(|m| m.get_mut(k)) {
        Some(Value::Array(a)) => a.as_mut_slice(),
        _ => &mut [],
    }
}

/// A member that is an object, mutable.
pub fn obj_mut<'a>(v: &'a mut Value, k: &str) -> Option<&'a mut Value> {
    v.as_object_mut()
        .and_then(|m| m.get_mut(k))
        .filter(|x| x.is_object())
}

/// Whether `v` is Go's zero value for its field: absent, null, `""`, `0`, `false`, or an
/// empty (or all-zero) list or object.
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.values().all(is_zero),
    }
}

/// Kubernetes' semantic equality, approximated on JSON: zero values equal absent ones
/// (a Go field that is unset and one set to its zero value look the same).
pub fn semantic_eq(a: &Value, b: &Value) -> bool {
    if is_zero(a) && is_zero(b) {
        return true;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let null = Value::Null;
            x.keys()
                .chain(y.keys())
                .all(|k| semantic_eq(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| semantic_eq(p, q))
        }
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// The fields under `path` that differ between `old` and `new`, one line each:
/// `path: old -> new` (`<unset>` for an absent value).
pub fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if semantic_eq(old, new) {
        return;
    }
    let null = Value::Null;
    match (old, new) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff(
                    &child(path, k),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (n, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&index(path, n), p, q, out);
            }
        }
        _ => {
            let show = |v: &Value| {
                if is_zero(v) && !matches!(v, Value::Number(_) | Value::Bool(_)) {
                    "<unset>".to_owned()
                } else {
                    v.render()
                }
            };
            out.push(format!("{path}: {} -> {}", show(old), show(new)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_is_gos() {
        assert_eq!(go_quote("abc"), "\"abc\"");
        assert_eq!(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(go_quote("a\nb\tc\u{1}"), "\"a\\nb\\tc\\x01\"");
        assert_eq!(go_quote("naïve"), "\"naïve\"");
        assert_eq!(go_quote("\u{85}"), "\"\\u0085\"");
    }

    #[test]
    fn json_is_gos() {
        assert_eq!(go_json(&json!(["a", "b"])), "[\"a\",\"b\"]");
        assert_eq!(go_json(&json!("a&b")), "\"a\\u0026b\"");
        assert_eq!(json!(5).render(), "5");
        assert_eq!(json!("x").render(), "\"x\"");
        assert_eq!(json!(null).render(), "null");
        assert_eq!(vec!["1.2.3.4".to_owned()].render(), "[\"1.2.3.4\"]");
        assert_eq!(Rendered("raw".into()).render(), "raw");
    }

    #[test]
    fn paths() {
        assert_eq!(child("", "spec"), "spec");
        assert_eq!(child("spec", "ports"), "spec.ports");
        assert_eq!(index("spec.ports", 2), "spec.ports[2]");
    }

    #[test]
    fn lenient_reads() {
        let v = json!({"a": "x", "n": 3, "f": 1.5, "b": true, "l": [1, "s"], "o": {}, "z": null});
        assert_eq!(s(&v, "a"), "x");
        assert_eq!(s(&v, "n"), "");
        assert_eq!(opt_i(&v, "n"), Some(3));
        assert_eq!(opt_i(&v, "f"), None);
        assert_eq!(i(&v, "missing"), 0);
        assert!(b(&v, "b"));
        assert_eq!(arr(&v, "l").len(), 2);
        assert_eq!(strs(&v, "l"), vec!["s"]);
        assert!(obj(&v, "o").is_some());
        assert!(get(&v, "z").is_none());
        assert!(arr(&json!(3), "l").is_empty());
    }

    #[test]
    fn semantic_equality() {
        assert!(semantic_eq(&json!({"a": ""}), &json!({})));
        assert!(semantic_eq(&json!({"a": []}), &json!({"a": null})));
        assert!(semantic_eq(&json!({"a": {"b": false}}), &json!({})));
        assert!(semantic_eq(&json!({"a": 1}), &json!({"a": 1.0})));
        assert!(!semantic_eq(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!semantic_eq(&json!([1]), &json!([1, 2])));
        let mut out = Vec::new();
        diff(
            "spec",
            &json!({"nodeName": "a", "c": [{"p": 80}], "x": true}),
            &json!({"nodeName": "b", "c": [{"p": 81}]}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "spec.c[0].p: 80 -> 81".to_owned(),
                "spec.nodeName: \"a\" -> \"b\"".to_owned(),
                "spec.x: true -> <unset>".to_owned(),
            ]
        );
    }

    #[test]
    fn defaulting_helpers() {
        let mut v = json!({"a": "", "b": "set", "c": null});
        default_to(&mut v, "a", json!("A"));
        default_to(&mut v, "b", json!("B"));
        default_to(&mut v, "c", json!(1));
        default_to(&mut v, "d", json!(2));
        assert_eq!(v, json!({"a": "A", "b": "set", "c": 1, "d": 2}));
        let mut w = json!({"spec": 5});
        ensure_obj(&mut w, "spec")["x"] = json!(1);
        assert_eq!(w, json!({"spec": {"x": 1}}));
        assert!(items_mut(&mut w, "nope").is_empty());
        assert!(obj_mut(&mut w, "spec").is_some());
    }
}
