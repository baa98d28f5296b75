//! PATCH semantics: what the apiserver does with the body of a PATCH request.
//!
//! Three patch types, chosen by the request's `Content-Type` ([`PatchType::from_content_type`]):
//! - JSON patch (RFC 6902, `kubectl patch --type=json`, kube-rs `Patch::Json`);
//! - JSON merge patch (RFC 7386, `kubectl label`, `kubectl annotate`,
//!   `kubectl patch --type=merge`, kube-rs `Patch::Merge`);
//! - strategic merge patch (`kubectl apply` and `kubectl patch` on the built-in kinds,
//!   kube-rs `Patch::Strategic`): a merge patch whose lists merge by key where the kind's
//!   schema says so (the table in `schema.rs`), with the `$patch`, `$retainKeys`,
//!   `$setElementOrder/…` and `$deleteFromPrimitiveList/…` directives.
//!
//! Server-side apply (`application/apply-patch+yaml`) is not one of them:
//! [`PatchType::from_content_type`] returns `None` for it, for the apiserver to answer 415.
//!
//! A patch may not change the object's `apiVersion` or `kind`; one that removes them gets
//! them back, as the Kubernetes apiserver does when it decodes the patched object. Everything
//! else about the result (names, immutable fields, validity) is for the caller to check.

pub mod schema;
mod strategic;
#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde_json::Value;

/// The most operations a JSON patch may have; the Kubernetes apiserver's limit.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The kind of patch a PATCH request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: RFC 6902, a list of operations.
    Json,
    /// `application/merge-patch+json`: RFC 7386.
    Merge,
    /// `application/strategic-merge-patch+json`: Kubernetes' strategic merge patch.
    Strategic,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value; parameters (`; charset=utf-8`), case
    /// and surrounding spaces are ignored. `None` for anything else, including server-side
    /// apply's `application/apply-patch+yaml`.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        [PatchType::Json, PatchType::Merge, PatchType::Strategic]
            .into_iter()
            .find(|t| t.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The patch types a kind takes: all three, or, for a custom resource (the network-policy-api
    /// kinds), JSON and merge patches only, as kube-apiserver takes for custom resources.
    pub fn accepted(custom_resource: bool) -> &'static [PatchType] {
        if custom_resource {
            &[PatchType::Json, PatchType::Merge]
        } else {
            &[PatchType::Json, PatchType::Merge, PatchType::Strategic]
        }
    }

    /// The media type of this patch type, e.g. for an `Accept-Patch` header.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
        }
    }
}

/// Why a patch could not be applied. [`PatchError::http_code`] gives the status the
/// Kubernetes apiserver answers with.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not of the form its type requires: not a JSON object (merge
    /// patches), not a list of valid operations (JSON patch), a list element without its
    /// merge key. 400 Bad Request.
    #[error("malformed patch: {0}")]
    Malformed(String),
    /// A JSON patch with more than [`MAX_JSON_PATCH_OPERATIONS`] operations.
    /// 413 Request Entity Too Large.
    #[error("the JSON patch has {count} operations; at most {max} are allowed")]
    TooManyOperations { count: usize, max: usize },
    /// A JSON patch `test` operation found another value (or none). 422 Unprocessable Entity,
    /// like every JSON patch that fails to apply.
    #[error(
        "JSON patch operation {index} (test) failed: the value at {path:?} is not the one tested for"
    )]
    TestFailed { index: usize, path: String },
    /// A JSON patch operation could not be applied, typically because its `path` (or `from`)
    /// does not exist. 422 Unprocessable Entity.
    #[error("JSON patch operation {index} ({op}) cannot be applied at {path:?}: {reason}")]
    OperationFailed {
        index: usize,
        op: &'static str,
        path: String,
        reason: String,
    },
    /// A strategic merge patch directive (`$patch`, `$retainKeys`, `$setElementOrder/…`,
    /// `$deleteFromPrimitiveList/…`) is invalid, or the patch sets a key its `$retainKeys`
    /// does not name. 400 Bad Request.
    #[error("invalid strategic merge patch directive {at}: {reason}")]
    InvalidDirective { at: String, reason: String },
    /// A strategic merge patch does not fit the object: lists of lists, list elements of
    /// different types. 422 Unprocessable Entity.
    #[error("the strategic merge patch cannot be merged {at}: {reason}")]
    Unmergeable { at: String, reason: String },
    /// The patch would change the object's `apiVersion` or `kind`. 422 Unprocessable Entity.
    #[error("a patch may not change the {field} of the object from {from} to {to}")]
    TypeChanged {
        field: &'static str,
        from: String,
        to: String,
    },
    /// The patch turned the object into something other than a JSON object (e.g. a JSON
    /// patch replacing the root). 422 Unprocessable Entity.
    #[error("the patched object is a JSON {0}, not an object")]
    NotAnObject(&'static str),
    /// The object to patch is not a JSON object: a fault of the caller, not of the request.
    /// 500 Internal Server Error.
    #[error("the object to patch is a JSON {0}, not an object")]
    InvalidOriginal(&'static str),
}

impl PatchError {
    /// The HTTP status for this error, as the Kubernetes apiserver answers.
    pub fn http_code(&self) -> u16 {
        match self {
            PatchError::Malformed(_) | PatchError::InvalidDirective { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::TestFailed { .. }
            | PatchError::OperationFailed { .. }
            | PatchError::Unmergeable { .. }
            | PatchError::TypeChanged { .. }
            | PatchError::NotAnObject(_) => 422,
            PatchError::InvalidOriginal(_) => 500,
        }
    }
}

/// Applies `patch` (the raw request body, already parsed as JSON) to `original` for an object
/// of `kind` (e.g. "Pod", "Service", "Node", "Namespace", "Endpoints", "EndpointSlice",
/// "Lease", "Event").
///
/// `kind` selects the strategic-merge schema; a kind without one (or an unknown kind) merges
/// only `metadata.finalizers` and `metadata.ownerReferences` by key and replaces its other
/// lists. The original is not modified.
pub fn apply_patch(
    kind: &str,
    patch_type: PatchType,
    original: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(original_map) = original else {
        return Err(PatchError::InvalidOriginal(type_name(original)));
    };
    let patched = match patch_type {
        PatchType::Json => apply_json_patch(original, patch)?,
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::Malformed(format!(
                    "a JSON merge patch must be a JSON object, not a {}",
                    type_name(patch)
                )));
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, patch);
            doc
        }
        PatchType::Strategic => {
            let Value::Object(patch_map) = patch else {
                return Err(PatchError::Malformed(format!(
                    "a strategic merge patch must be a JSON object, not a {}",
                    type_name(patch)
                )));
            };
            Value::Object(strategic::apply(
                kind,
                original_map.clone(),
                patch_map.clone(),
            )?)
        }
    };
    keep_type_meta(kind, original_map, patched)
}

fn apply_json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed(format!(
            "a JSON patch must be a list of operations, not a {}",
            type_name(patch)
        )));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: ops.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    let ops = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            json_patch::PatchOperation::deserialize(op)
                .map_err(|e| PatchError::Malformed(format!("JSON patch operation {i}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| {
        let index = e.operation;
        let path = e.path.to_string();
        let reason = match e.kind {
            json_patch::PatchErrorKind::TestFailed => {
                return PatchError::TestFailed { index, path };
            }
            json_patch::PatchErrorKind::InvalidPointer => {
                "the path does not exist (or is not a valid index of its list)".to_owned()
            }
            json_patch::PatchErrorKind::InvalidFromPointer => {
                "the \"from\" path does not exist".to_owned()
            }
            json_patch::PatchErrorKind::CannotMoveInsideItself => {
                "a value cannot be moved inside itself".to_owned()
            }
            other => other.to_string(),
        };
        let op = match ops.get(index) {
            Some(json_patch::PatchOperation::Add(_)) => "add",
            Some(json_patch::PatchOperation::Remove(_)) => "remove",
            Some(json_patch::PatchOperation::Replace(_)) => "replace",
            Some(json_patch::PatchOperation::Move(_)) => "move",
            Some(json_patch::PatchOperation::Copy(_)) => "copy",
            Some(json_patch::PatchOperation::Test(_)) => "test",
            None => "unknown",
        };
        PatchError::OperationFailed {
            index,
            op,
            path,
            reason,
        }
    })?;
    Ok(doc)
}

/// Checks that the patch kept the object's `apiVersion` and `kind` (or, for a kind the
/// original does not state, that the result's is `kind`), and puts back one it removed.
fn keep_type_meta(
    kind: &str,
    original: &serde_json::Map<String, Value>,
    patched: Value,
) -> Result<Value, PatchError> {
    let Value::Object(mut patched) = patched else {
        return Err(PatchError::NotAnObject(type_name(&patched)));
    };
    let given_kind = (!kind.is_empty()).then(|| Value::String(kind.to_owned()));
    for (field, expected) in [
        ("apiVersion", original.get("apiVersion").cloned()),
        ("kind", original.get("kind").cloned().or(given_kind)),
    ] {
        match patched.get(field) {
            None | Some(Value::Null) => match original.get(field) {
                Some(value) => {
                    patched.insert(field.to_owned(), value.clone());
                }
                None => {
                    patched.remove(field);
                }
            },
            Some(value) => {
                if let Some(expected) = expected.filter(|e| e != value) {
                    return Err(PatchError::TypeChanged {
                        field,
                        from: expected.to_string(),
                        to: value.to_string(),
                    });
                }
            }
        }
    }
    Ok(Value::Object(patched))
}

/// The JSON type of `value`, for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}
