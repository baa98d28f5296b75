//! Lists: selectors, `limit`/`continue` paging and list `resourceVersion` semantics.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use podnet_api::k8s::kinds::ResourceKind;
use serde_json::{Value, json};

use super::query::Query;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::{self, Registry};
use crate::selector::{FieldSelector, LabelSelector};

/// The selectors of a list or watch request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(kind: &ResourceKind, q: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector").unwrap_or(""),
            &supported_fields(kind),
        )
        .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// The field selectors each kind supports (as kube-apiserver's field label conversions).
pub fn supported_fields(kind: &ResourceKind) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name", "metadata.namespace"];
    fields.extend_from_slice(match kind.kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ][..],
        "Node" => &["spec.unschedulable"][..],
        "Namespace" => &["status.phase"][..],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ][..],
        "EndpointSlice" => &["addressType"][..],
        _ => &[][..],
    });
    fields
}

/// A page of a list: the items, the revision, and the token for the rest.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// Runs a list request.
pub async fn list(
    registry: &Registry,
    kind: &ResourceKind,
    namespace: Option<&str>,
    q: &Query,
) -> ApiResult<Page> {
    let selectors = Selectors::parse(kind, q)?;
    let limit = q.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let token = q.get("continue").map(ContinueToken::decode).transpose()?;
    let at = match &token {
        Some(t) => Some(t.rv),
        None => list_revision(q)?,
    };
    let namespace = namespace.or_else(|| selectors.fields.required("metadata.namespace"));
    let listed = registry
        .list_raw(kind, namespace, at)
        .await
        .map_err(|e| {
            if token.is_some() && e.code == 410 {
                ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
            } else {
                e
            }
        })?;
    let start = token.as_ref().map(|t| t.start.as_str()).unwrap_or("");
    // Keys sort as positions do: the objects before the page are skipped by key, and only
    // the ones looked at are decoded (a paged list of 10,000 decoded all 10,000 per page).
    let first = listed
        .items
        .partition_point(|kv| registry::list_position(kind, &kv.key).as_str() < start);
    let mut rest = listed.items[first..].iter();
    let mut items = Vec::new();
    while let Some(kv) = rest.next() {
        let obj = registry::decode(kv)?;
        if !selectors.matches(&obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            let remaining = 1 + count_matching(rest, &selectors)?;
            let token = ContinueToken {
                rv: listed.revision,
                start: position(&obj),
            };
            return Ok(Page {
                items,
                revision: listed.revision,
                continue_token: Some(token.encode()),
                remaining: Some(remaining),
            });
        }
        items.push(obj);
    }
    Ok(Page {
        items,
        revision: listed.revision,
        continue_token: None,
        remaining: None,
    })
}

/// How many of `rest` match: all of them without selectors (nothing to decode).
fn count_matching<'a>(
    rest: impl Iterator<Item = &'a podnet_store::KeyValue>,
    selectors: &Selectors,
) -> ApiResult<usize> {
    if selectors.labels.is_empty() && selectors.fields.is_empty() {
        return Ok(rest.count());
    }
    let mut n = 0;
    for kv in rest {
        if selectors.matches(&registry::decode(kv)?) {
            n += 1;
        }
    }
    Ok(n)
}

/// The revision a list reads at: `resourceVersionMatch=Exact` pins one; otherwise the
/// current state (which is never older than any `resourceVersion` given).
fn list_revision(q: &Query) -> ApiResult<Option<i64>> {
    match (q.get("resourceVersion"), q.get("resourceVersionMatch")) {
        (Some(rv), Some("Exact")) => Ok(Some(registry::parse_resource_version(rv)?)),
        (None, Some(m)) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
        ))),
        (_, None | Some("NotOlderThan")) => Ok(None),
        (_, Some(other)) => Err(ApiError::bad_request(format!(
            "invalid resourceVersionMatch {other:?}: supported values are \"Exact\" and \"NotOlderThan\""
        ))),
    }
}

/// Where an object sorts in a list: its namespace and name.
fn position(obj: &Value) -> String {
    format!("{}/{}", meta::namespace(obj), meta::name(obj))
}

/// The `continue` token: the list's revision and where the next page starts.
#[derive(Debug)]
struct ContinueToken {
    rv: i64,
    start: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        B64.encode(json!({"v": "meta.k8s.io/v1", "rv": self.rv, "start": self.start}).to_string())
    }

    fn decode(s: &str) -> ApiResult<Self> {
        let bad = || {
            ApiError::bad_request(format!(
                "invalid continue token {s:?}: pass back the token a list response gave"
            ))
        };
        let bytes = B64.decode(s).map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(ContinueToken {
            rv: v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?,
            start: v
                .get("start")
                .and_then(Value::as_str)
                .ok_or_else(bad)?
                .to_owned(),
        })
    }
}

/// The list object, e.g. `PodList`.
pub fn list_object(kind: &ResourceKind, page: Page) -> Value {
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": page.items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = ContinueToken {
            rv: 42,
            start: "default/web-3".into(),
        };
        let back = ContinueToken::decode(&t.encode()).unwrap();
        assert_eq!((back.rv, back.start.as_str()), (42, "default/web-3"));
        assert_eq!(ContinueToken::decode("!!").unwrap_err().code, 400);
    }
}
