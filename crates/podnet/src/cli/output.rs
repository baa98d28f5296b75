//! `-o yaml`, `-o json` and `-o name` as kubectl prints them: keys sorted, `managedFields`
//! left out, JSON indented by four spaces, YAML with lists at their key's indentation.

use serde::Serialize;
use serde_json::{Map, Value};

use super::CliError;
use super::resources::Resource;

/// The object without `metadata.managedFields` (kubectl hides them by default), with its
/// `apiVersion` and `kind` filled in (list items come without them), keys sorted.
pub fn clean(object: &Value, res: &Resource) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        if !map.contains_key("apiVersion") {
            map.insert("apiVersion".to_owned(), Value::String(res.api_version()));
        }
        if !map.contains_key("kind") {
            map.insert("kind".to_owned(), Value::String(res.kind.clone()));
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
        }
    }
    sorted(v)
}

/// kubectl's `kind: List` around several objects.
pub fn list_of(items: Vec<Value>) -> Value {
    let mut meta = Map::new();
    meta.insert("resourceVersion".to_owned(), Value::String(String::new()));
    let mut map = Map::new();
    map.insert("apiVersion".to_owned(), Value::String("v1".to_owned()));
    map.insert("items".to_owned(), Value::Array(items));
    map.insert("kind".to_owned(), Value::String("List".to_owned()));
    map.insert("metadata".to_owned(), Value::Object(meta));
    Value::Object(map)
}

/// The value with every object's keys in sorted order, whatever order the map type keeps.
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// JSON indented by four spaces, as kubectl's printer writes it.
pub fn to_json(v: &Value) -> Result<String, CliError> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    v.serialize(&mut ser)
        .map_err(|e| CliError::other(format!("encoding JSON: {e}")))?;
    let mut text =
        String::from_utf8(buf).map_err(|e| CliError::other(format!("encoding JSON: {e}")))?;
    text.push('\n');
    Ok(text)
}

/// YAML as kubectl writes it: block style, lists at their key's indentation, multi-line
/// strings as literal blocks, long lines not folded.
pub fn to_yaml(v: &Value) -> Result<String, CliError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX / 2;
    let mut text = serde_saphyr::to_string_with_options(v, options)
        .map_err(|e| CliError::other(format!("encoding YAML: {e}")))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// `-o name`: `pod/web-0`, `endpointslice.discovery.k8s.io/web-abcde`.
pub fn name_of(res: &Resource, object: &Value) -> String {
    format!(
        "{}/{}",
        res.kind_prefix(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_like_kubectl() {
        let pods = super::super::resources::builtin_by_name("po").unwrap();
        let obj = json!({"metadata": {"name": "web-0", "resourceVersion": "9", "managedFields": [{"x": 1}],
            "creationTimestamp": "2026-11-29T12:15:42Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}\n"}},
            "spec": {"containers": [{"name": "main", "command": ["sleep", "3600"]}]}});
        let text = to_yaml(&clean(&obj, &pods)).unwrap();
        assert_eq!(
            text,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {\"a\":1}\n  creationTimestamp: \"2026-11-29T12:15:42Z\"\n  name: web-0\n  resourceVersion: \"9\"\nspec:\n  containers:\n  - command:\n    - sleep\n    - \"3600\"\n    name: main\n"
        );
    }

    #[test]
    fn json_like_kubectl() {
        let text = to_json(&list_of(vec![json!({"a": [1]})])).unwrap();
        assert_eq!(
            text,
            "{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n        {\n            \"a\": [\n                1\n            ]\n        }\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n"
        );
    }
}
