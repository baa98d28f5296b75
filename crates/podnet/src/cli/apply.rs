//! `podnet apply -f FILE|DIR|-`: kubectl's client-side apply. Each object is created when it
//! does not exist; otherwise the patch from a three-way diff of the last applied
//! configuration (kept in the `kubectl.kubernetes.io/last-applied-configuration` annotation,
//! compatible with kubectl's), the manifest and the live object is sent (see [`super::patch`]):
//! `created`, `configured` or `unchanged`.
//!
//! Every file is parsed before anything is sent: a malformed one stops the command with
//! nothing applied. Objects are then applied in order; one that fails (unknown kind, rejected
//! by the server) does not stop the others; the exit code is 1 if any failed.

use clap::Args;
use serde_json::{Map, Value};

use super::client::{Client, is_not_found, resource_path};
use super::manifest::{self, Document};
use super::output::sorted;
use super::patch::{Schema, three_way};
use super::resources::{self, Resource};
use super::{CliError, GlobalArgs, report};

/// The annotation kubectl keeps the last applied configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// A manifest: a YAML or JSON file, a directory of them, or - for standard input.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

pub async fn run(g: GlobalArgs, args: ApplyArgs) -> i32 {
    let docs = match manifest::read_all(&args.files) {
        Ok(d) => d,
        Err(e) => return report(&[e]),
    };
    if docs.is_empty() {
        return report(&[CliError::other("no objects passed to apply".to_owned())]);
    }
    let client = match Client::connect(&g).await {
        Ok(c) => c,
        Err(e) => return report(&[e]),
    };
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());

    // Map every object to its resource first, as kubectl's builder does: the ones that do
    // not map are reported, the others applied.
    let mut errors = Vec::new();
    let mut planned = Vec::new();
    for doc in docs {
        match plan(&client, doc, &namespace, g.namespace.is_some()).await {
            Ok(p) => planned.push(p),
            Err(e) => errors.push(e),
        }
    }
    for p in planned {
        match apply_one(&client, &p).await {
            Ok(line) => println!("{line}"),
            Err(e) => errors.push(e),
        }
    }
    report(&errors)
}

/// One object, ready to apply.
struct Planned {
    res: Resource,
    source: String,
    name: String,
    /// The object's namespace (`None` for cluster-scoped kinds).
    namespace: Option<String>,
    /// The manifest's object with its namespace and the last-applied annotation set.
    modified: Value,
}

impl Planned {
    /// kubectl's `Info.String()`: which object, for error messages.
    fn info(&self) -> String {
        format!(
            "Resource: \"{}\", GroupVersionKind: \"{}\"\nName: \"{}\", Namespace: \"{}\"",
            self.res.gvr_string(),
            self.res.gvk_string(),
            self.name,
            self.namespace.as_deref().unwrap_or_default()
        )
    }
}

async fn plan(
    client: &Client,
    doc: Document,
    namespace: &str,
    namespace_given: bool,
) -> Result<Planned, CliError> {
    let Document { source, object } = doc;
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    if kind.is_empty() {
        return Err(CliError::other(format!(
            "unable to decode \"{source}\": Object 'Kind' is missing in '{object}'"
        )));
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let object_ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let Some(res) = resources::by_kind(client, &api_version, &kind).await? else {
        return Err(CliError::other(format!(
            "resource mapping not found for name: \"{name}\" namespace: \"{object_ns}\" from \"{source}\": no matches for kind \"{kind}\" in version \"{api_version}\"\nensure CRDs are installed first"
        )));
    };
    let namespace = if res.namespaced {
        if !object_ns.is_empty() && namespace_given && object_ns != namespace {
            return Err(CliError::other(format!(
                "the namespace from the provided object \"{object_ns}\" does not match the namespace \"{namespace}\". You must pass '--namespace={object_ns}' to perform this operation."
            )));
        }
        Some(if object_ns.is_empty() {
            namespace.to_owned()
        } else {
            object_ns
        })
    } else {
        None
    };
    let mut planned = Planned {
        res,
        source,
        name,
        namespace,
        modified: Value::Null,
    };
    if planned.name.is_empty() && object["metadata"]["generateName"].as_str().is_none() {
        return Err(CliError::other(format!(
            "error when retrieving current configuration of:\n{}\nfrom server for: \"{}\": resource name may not be empty",
            planned.info(),
            planned.source
        )));
    }
    planned.modified = with_last_applied(object, planned.namespace.as_deref())?;
    Ok(planned)
}

/// The object as applied: its namespace set (removed for cluster-scoped kinds), and the
/// last-applied annotation holding the object itself (without that annotation), as kubectl
/// writes it: compact JSON, keys sorted, a newline at the end.
pub fn with_last_applied(mut object: Value, namespace: Option<&str>) -> Result<Value, CliError> {
    let Some(map) = object.as_object_mut() else {
        return Err(CliError::other("a manifest object is not a map".to_owned()));
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        return Err(CliError::other(
            "the object's metadata is not a map".to_owned(),
        ));
    }
    if let Some(meta) = meta.as_object_mut() {
        match namespace {
            Some(ns) => {
                meta.insert("namespace".to_owned(), Value::String(ns.to_owned()));
            }
            None => {
                meta.remove("namespace");
            }
        }
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(a) = annotations.as_object_mut() {
            a.remove(LAST_APPLIED);
        }
    }
    let mut text = serde_json::to_string(&sorted(object.clone()))
        .map_err(|e| CliError::other(format!("encoding the object: {e}")))?;
    text.push('\n');
    if let Some(a) = object
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        a.insert(LAST_APPLIED.to_owned(), Value::String(text));
    }
    Ok(object)
}

async fn apply_one(client: &Client, p: &Planned) -> Result<String, CliError> {
    let ns = p.namespace.as_deref();
    let display = format!("{}/{}", p.res.kind_prefix(), p.name);
    if p.name.is_empty() {
        // generateName: always a new object.
        let created = client
            .post(&resource_path(&p.res, ns, None, &[]), &p.modified)
            .await
            .map_err(|e| e.with_context(&format!("error when creating \"{}\": ", p.source)))?;
        return Ok(format!(
            "{}/{} created",
            p.res.kind_prefix(),
            created["metadata"]["name"].as_str().unwrap_or_default()
        ));
    }
    let path = resource_path(&p.res, ns, Some(&p.name), &[]);
    let current = match client.get(&path).await {
        Ok(c) => c,
        Err(e) if is_not_found(&e) => {
            client
                .post(&resource_path(&p.res, ns, None, &[]), &p.modified)
                .await
                .map_err(|e| e.with_context(&format!("error when creating \"{}\": ", p.source)))?;
            return Ok(format!("{display} created"));
        }
        Err(e) => {
            return Err(e.with_context(&format!(
                "error when retrieving current configuration of:\n{}\nfrom server for: \"{}\": ",
                p.info(),
                p.source
            )));
        }
    };
    let original = match current["metadata"]["annotations"][LAST_APPLIED].as_str() {
        Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|e| {
            CliError::other(format!(
                "error when retrieving original configuration of:\n{}\nfor: \"{}\": the {LAST_APPLIED} annotation is not JSON: {e}",
                p.info(),
                p.source
            ))
        })?),
        None => {
            eprintln!(
                "Warning: resource {}/{} is missing the {LAST_APPLIED} annotation which is required by podnet apply. \
                 podnet apply should only be used on resources created declaratively by either kubectl create --save-config \
                 or podnet apply. The missing annotation will be patched automatically.",
                p.res.qualified_plural(),
                p.name
            );
            None
        }
    };
    let schema = Schema::for_kind(&p.res.kind, p.res.builtin);
    let patch = three_way(schema, original.as_ref(), &p.modified, &current);
    if patch.is_empty() {
        return Ok(format!("{display} unchanged"));
    }
    let patch = Value::Object(patch);
    client
        .patch(&path, schema.content_type(), &patch)
        .await
        .map_err(|e| {
            e.with_context(&format!(
                "error when applying patch:\n{patch}\nto:\n{}\nfor: \"{}\": ",
                p.info(),
                p.source
            ))
        })?;
    Ok(format!("{display} configured"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_applied_like_kubectl() {
        let obj = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "y3"},
            "spec": {"containers": [{"name": "a", "image": "c"}]}});
        let applied = with_last_applied(obj, Some("default")).unwrap();
        assert_eq!(
            applied["metadata"]["annotations"][LAST_APPLIED],
            "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"annotations\":{},\"name\":\"y3\",\"namespace\":\"default\"},\"spec\":{\"containers\":[{\"image\":\"c\",\"name\":\"a\"}]}}\n"
        );
        let ns = with_last_applied(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "namespace": "x"}}),
            None,
        )
        .unwrap();
        assert_eq!(
            ns["metadata"]["annotations"][LAST_APPLIED],
            "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"annotations\":{},\"name\":\"shop\"}}\n"
        );
    }
}
