//! Reading and writing `metadata` of objects kept as JSON values.

use std::time::SystemTime;

use serde_json::{Map, Value};

/// `metadata.name`, or "" when absent.
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace`, or "" when absent.
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion`, or "" when absent.
pub fn resource_version(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.labels` as pairs.
pub fn labels(obj: &Value) -> Vec<(&str, &str)> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The object's `metadata` map, created if missing (and replaced if not a map).
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect_object();
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect_object()
}

/// Sets a string field of `metadata`.
pub fn set(obj: &mut Value, field: &str, value: impl Into<Value>) {
    metadata_mut(obj).insert(field.to_owned(), value.into());
}

/// Removes a field of `metadata`.
pub fn remove(obj: &mut Value, field: &str) -> Option<Value> {
    metadata_mut(obj).remove(field)
}

/// A metadata field as it is, if present.
pub fn get<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(field))
}

/// The time in Kubernetes' wire format (RFC 3339, whole seconds, UTC).
pub fn timestamp(at: SystemTime) -> String {
    let at: chrono::DateTime<chrono::Utc> = at.into();
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses a Kubernetes timestamp.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// Helper for values just made objects: their `as_object_mut` cannot fail.
trait ExpectObject<T> {
    fn expect_object(self) -> T;
}

impl<'a> ExpectObject<&'a mut Map<String, Value>> for Option<&'a mut Map<String, Value>> {
    fn expect_object(self) -> &'a mut Map<String, Value> {
        match self {
            Some(m) => m,
            // Unreachable: callers made the value an object just before.
            None => unreachable!("value was just made an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_access() {
        let mut o = json!({"metadata": {"name": "a", "labels": {"app": "web"}}});
        assert_eq!(name(&o), "a");
        assert_eq!(labels(&o), vec![("app", "web")]);
        set(&mut o, "namespace", "default");
        assert_eq!(namespace(&o), "default");
        let mut bare = json!(5);
        set(&mut bare, "name", "x");
        assert_eq!(name(&bare), "x");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let s = timestamp(t);
        assert_eq!(s, "2027-01-15T08:00:00Z");
        assert_eq!(parse_timestamp(&s), Some(t));
    }
}
