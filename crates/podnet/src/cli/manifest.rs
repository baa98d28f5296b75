//! Manifests: `-f FILE|DIR|-`, each a multi-document YAML stream or a stream of JSON values,
//! with `List`s (`kind: List`, `PodList`, …) flattened into their items.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::CliError;

/// One object of a manifest and where it came from (`"STDIN"` or the file's path, as
/// kubectl names sources in its messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub source: String,
    pub object: Value,
}

/// Reads every `-f` argument, in order. A directory contributes its `.json`, `.yaml` and
/// `.yml` files in name order. Nothing is returned unless every file parses.
pub fn read_all(files: &[String]) -> Result<Vec<Document>, CliError> {
    let mut docs = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::other(format!("reading STDIN: {e}")))?;
            docs.extend(parse("STDIN", &text)?);
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| CliError::other(format!("reading the directory {f}: {e}")))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "json" | "yaml" | "yml"))
                })
                .collect();
            entries.sort();
            for p in entries {
                docs.extend(read_file(&p)?);
            }
            continue;
        }
        docs.extend(read_file(path)?);
    }
    Ok(docs)
}

fn read_file(path: &Path) -> Result<Vec<Document>, CliError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::other(format!("the path \"{name}\" does not exist"))
        } else {
            CliError::other(format!("reading {name}: {e}"))
        }
    })?;
    parse(&name, &text)
}

/// Parses one source: JSON when it starts with `{` or `[`, YAML otherwise.
pub fn parse(source: &str, text: &str) -> Result<Vec<Document>, CliError> {
    let trimmed = text.trim_start();
    let values: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::other(format!("error parsing {source}: JSON: {e}")))?
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
            // The first line says where and why; the rest is a source snippet.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            CliError::other(format!("error parsing {source}: YAML: {first}"))
        })?
    };
    let mut out = Vec::new();
    for v in values {
        flatten(source, v, &mut out)?;
    }
    Ok(out)
}

fn flatten(source: &str, v: Value, out: &mut Vec<Document>) -> Result<(), CliError> {
    match v {
        Value::Null => Ok(()),
        Value::Array(items) => {
            for item in items {
                flatten(source, item, out)?;
            }
            Ok(())
        }
        Value::Object(mut map) => {
            let is_list = map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array);
            if is_list {
                if let Some(Value::Array(items)) = map.remove("items") {
                    for item in items {
                        flatten(source, item, out)?;
                    }
                }
                return Ok(());
            }
            out.push(Document {
                source: source.to_owned(),
                object: Value::Object(map),
            });
            Ok(())
        }
        other => Err(CliError::other(format!(
            "error parsing {source}: a document is {}, not an object",
            short_json(&other)
        ))),
    }
}

fn short_json(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml() {
        let docs = parse(
            "m.yaml",
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].object["kind"], "Namespace");
        assert_eq!(docs[1].object["metadata"]["name"], "web");
        assert_eq!(docs[1].source, "m.yaml");
    }

    #[test]
    fn json_stream_and_lists() {
        let docs = parse(
            "STDIN",
            r#"{"apiVersion":"v1","kind":"List","items":[{"kind":"Pod","metadata":{"name":"a"}},{"kind":"Pod","metadata":{"name":"b"}}]}
               {"kind":"Service","metadata":{"name":"c"}}"#,
        )
        .unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d.object["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = parse(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   bad: [\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("error parsing bad.yaml: YAML: "), "{text}");
        assert!(text.contains("line 5"), "{text}");
    }

    #[test]
    fn malformed_json_names_the_line() {
        let err = parse("x.json", "{\"kind\": \"Pod\",\n \"metadata\": {,}}").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
