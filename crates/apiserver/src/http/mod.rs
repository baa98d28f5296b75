//! The HTTP front: routing of Kubernetes API paths to the verbs in `rest`, content
//! negotiation (JSON, YAML bodies, `as=Table`), authentication and body limits.

mod discovery;
mod list;
mod metrics;
mod openapi_docs;
mod query;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use podnet_api::k8s::kinds::{self, ResourceKind};
use podnet_api::k8s::patch::PatchType;
use podnet_api::k8s::{openapi, table};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::rest::{DeleteOptions, Deletion, Rest, WriteOptions, Written};
use crate::typed::FieldValidation;
use query::Query;

pub use discovery::{KUBE_MAJOR, KUBE_MINOR};

/// Largest request body accepted (kube-apiserver's limit is 3 MiB too).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the handlers share.
pub struct AppState {
    pub rest: Rest,
    /// The address clients use, for `/api`'s `serverAddressByClientCIDRs`.
    pub server_address: String,
    /// Bearer token required on every API request, if set.
    pub token: Option<String>,
    pub bookmark_interval: Duration,
    /// Set once start-up (bootstrap objects, repair) is done.
    pub ready: AtomicBool,
    /// Becomes true when the server stops; open watches end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Requests, watches and store latency, served on `/metrics`.
    pub metrics: Arc<crate::metrics::ApiMetrics>,
    /// The group versions served (`--runtime-config`).
    pub versions: crate::versions::ServedVersions,
}

/// The API's router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::measure,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response();
    }
    match state.rest.registry().current_revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.message).into_response(),
    }
}

async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, req: Request) -> ApiResult<Response> {
    authenticate(state, req.uri().path(), req.headers())?;
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let q = Query::parse(req.uri().query());
    if let Some(response) = openapi_docs::respond(&path, req.uri().query(), req.headers()) {
        return response;
    }
    if let Some(doc) = document(state, &path) {
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let target = Target::parse(&path)?;
    if !state.versions.serves(target.kind) {
        return Err(ApiError::path_not_found(&path));
    }
    let method = req.method().clone();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
    let table = TableRequest::from_headers(&headers, &q);
    let rest = &state.rest;
    let kind = target.kind;
    let ns = target.namespace.as_deref().unwrap_or("");
    match (
        &method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (&Method::GET, None, None) if q.flag("watch") || target.watch => {
            watch_response(state, &target, &q, table).await
        }
        (&Method::GET, None, None) => {
            let page = list::list(rest.registry(), kind, target.namespace.as_deref(), &q).await?;
            Ok(match table {
                Some(t) => {
                    json_response(StatusCode::OK, &t.render(kind, &page.items, page.revision))
                }
                None => json_response(StatusCode::OK, &list::list_object(kind, page)),
            })
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = rest.registry().get(kind, ns, name).await?;
            Ok(match table {
                Some(t) => {
                    let rv = crate::registry::revision_of(&obj)?;
                    json_response(
                        StatusCode::OK,
                        &t.render(kind, std::slice::from_ref(&obj), rv),
                    )
                }
                None => json_response(StatusCode::OK, &obj),
            })
        }
        (&Method::POST, None, None) => {
            if kind.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed(format!(
                    "{} are namespaced: POST to /{}/namespaces/NAMESPACE/{}",
                    kind.plural,
                    kind.group_version_path().trim_start_matches('/'),
                    kind.plural
                )));
            }
            let obj = parse_body(&headers, &body)?;
            let created = rest.create_with(kind, ns, obj, write_options(&q)?).await?;
            Ok(written_response(StatusCode::CREATED, &created))
        }
        (&Method::POST, Some(name), Some("binding")) if kind == &kinds::POD => {
            let binding = parse_body(&headers, &body)?;
            let status = rest.bind(ns, name, &binding).await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (&Method::PUT, Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
            let obj = parse_body(&headers, &body)?;
            let sub = sub.filter(|s| *s == "status");
            let updated = rest
                .replace_with(kind, ns, name, sub, obj, write_options(&q)?)
                .await?;
            Ok(written_response(StatusCode::OK, &updated))
        }
        (&Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let content_type = header_str(&headers, header::CONTENT_TYPE);
            let patch_type = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            if !PatchType::accepted(kind.custom_resource).contains(&patch_type) {
                return Err(ApiError::unsupported_patch_type(PatchType::accepted(
                    kind.custom_resource,
                )));
            }
            let patch: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
            let opts = write_options(&q)?;
            let updated = rest
                .patch_with(kind, ns, name, sub, patch_type, &patch, opts)
                .await?;
            Ok(written_response(StatusCode::OK, &updated))
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = delete_options(&q, &body)?;
            match rest.delete(kind, ns, name, &opts).await? {
                Deletion::Deleted(obj) | Deletion::Pending(obj) => {
                    Ok(json_response(StatusCode::OK, &obj))
                }
            }
        }
        (m, name, sub) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}{}{}",
            kind.plural,
            name.map(|_| "/NAME").unwrap_or(""),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// Fixed documents: discovery, version, the OpenAPI v3 root (the other OpenAPI documents are
/// served by `openapi_docs`).
fn document(state: &AppState, path: &str) -> Option<Value> {
    match path {
        "/version" => Some(discovery::version()),
        "/api" => Some(discovery::core_versions(&state.server_address)),
        "/apis" => Some(discovery::group_list(&state.versions)),
        "/api/v1" => discovery::resource_list("", "v1", &state.versions),
        "/openapi/v3" => Some(openapi::v3_root()),
        _ => {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["apis", group] => discovery::api_group(group, &state.versions),
                ["apis", group, version] => {
                    discovery::resource_list(group, version, &state.versions)
                }
                _ => None,
            }
        }
    }
}

/// Paths anyone may read without a token, as kube-apiserver's `system:public-info-viewer`
/// role allows; `/healthz`, `/livez` and `/readyz` are routed before authentication.
const ANONYMOUS_PATHS: &[&str] = &["/version"];

fn authenticate(state: &AppState, path: &str, headers: &HeaderMap) -> ApiResult<()> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    if ANONYMOUS_PATHS.contains(&path.trim_end_matches('/')) {
        return Ok(());
    }
    let given = header_str(headers, header::AUTHORIZATION)
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Where a request goes: `/api/v1/namespaces/NS/pods/NAME/status` and the like.
#[derive(Debug, PartialEq)]
struct Target {
    kind: &'static ResourceKind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    /// The legacy `/api/v1/watch/...` form.
    watch: bool,
}

impl Target {
    fn parse(path: &str) -> ApiResult<Self> {
        let not_found = || ApiError::path_not_found(path);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, version, mut rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Err(not_found()),
        };
        let watch = rest.first() == Some(&"watch");
        if watch {
            rest = &rest[1..];
        }
        let namespaced_kind =
            |plural: &str| kinds::by_plural(group, version, plural).filter(|k| k.namespaced);
        let (namespace, kind, tail) = match rest {
            ["namespaces", ns, plural, tail @ ..] if namespaced_kind(plural).is_some() => (
                Some((*ns).to_owned()),
                namespaced_kind(plural).ok_or_else(not_found)?,
                tail,
            ),
            [plural, tail @ ..] => (
                None,
                kinds::by_plural(group, version, plural).ok_or_else(not_found)?,
                tail,
            ),
            _ => return Err(not_found()),
        };
        let (name, subresource) = match tail {
            [] => (None, None),
            [name] => (Some((*name).to_owned()), None),
            [name, sub] if kind.has_subresource(sub) => {
                (Some((*name).to_owned()), Some((*sub).to_owned()))
            }
            _ => return Err(not_found()),
        };
        if kind.namespaced && namespace.is_none() && name.is_some() {
            return Err(not_found());
        }
        Ok(Target {
            kind,
            namespace,
            name,
            subresource,
            watch,
        })
    }
}

/// A request for `meta.k8s.io/v1` Table output (what kubectl asks for).
#[derive(Debug, Clone)]
struct TableRequest {
    include_object: String,
}

impl TableRequest {
    fn from_headers(headers: &HeaderMap, q: &Query) -> Option<Self> {
        let accept = header_str(headers, header::ACCEPT);
        let wants_table = accept
            .split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"));
        wants_table.then(|| TableRequest {
            include_object: q.get("includeObject").unwrap_or("Metadata").to_owned(),
        })
    }

    fn render(&self, kind: &ResourceKind, items: &[Value], revision: i64) -> Value {
        table::to_table(
            kind.kind,
            items,
            &revision.to_string(),
            &self.include_object,
            SystemTime::now(),
        )
    }
}

async fn watch_response(
    state: &AppState,
    target: &Target,
    q: &Query,
    table: Option<TableRequest>,
) -> ApiResult<Response> {
    let req = watch::WatchRequest::parse(
        target.kind,
        target.namespace.as_deref(),
        q,
        state.bookmark_interval,
    )?;
    let kind = target.kind;
    let render: watch::Render = match table {
        Some(t) => Arc::new(move |obj: &Value| {
            let rv = crate::registry::revision_of(obj).unwrap_or(0);
            t.render(kind, std::slice::from_ref(obj), rv)
        }),
        None => Arc::new(|obj: &Value| obj.clone()),
    };
    let rx = watch::start(
        state.rest.registry().clone(),
        req,
        render,
        state.shutdown.clone(),
    )
    .await?;
    // Counted open for as long as the stream is: it drops when the client goes.
    let labels = metrics::resource_labels(&Method::GET, target, q, &HeaderMap::new());
    let open = state.metrics.watch_opened(&labels, kind);
    let stream = ReceiverStream::new(rx).map(move |chunk| {
        let _ = &open;
        chunk
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(format!("building the watch response: {e}")))
}

/// Parses a JSON or YAML request body.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let content_type = header_str(headers, header::CONTENT_TYPE);
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML request body is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// DELETE options from the query string and the optional `DeleteOptions` body.
fn delete_options(q: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        grace_period_seconds: q.int("gracePeriodSeconds")?,
        ..DeleteOptions::default()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
    })?;
    if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace_period_seconds = Some(g);
    }
    let pre = v.get("preconditions");
    opts.precondition_uid = pre
        .and_then(|p| p.get("uid"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    opts.precondition_resource_version = pre
        .and_then(|p| p.get("resourceVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(opts)
}

fn write_options(q: &Query) -> ApiResult<WriteOptions> {
    Ok(WriteOptions {
        dry_run: q.dry_run()?,
        field_validation: FieldValidation::parse(q.get("fieldValidation"))?,
    })
}

/// The written object, with a `Warning` header per warning (RFC 7234 style, as
/// kube-apiserver sends them and kubectl prints them).
fn written_response(code: StatusCode, written: &Written) -> Response {
    let mut response = json_response(code, &written.object);
    for warning in &written.warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The `kubernetes` Service's Endpoints point at the apiserver itself.
pub fn kubernetes_endpoints(address: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(t.kind, &kinds::POD);
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = Target::parse("/api/v1/namespaces/default").unwrap();
        assert_eq!(
            (t.kind, t.name.as_deref()),
            (&kinds::NAMESPACE, Some("default"))
        );
        let t = Target::parse("/api/v1/pods").unwrap();
        assert_eq!((t.kind, t.namespace.as_deref()), (&kinds::POD, None));
        let t = Target::parse("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1")
            .unwrap();
        assert_eq!(t.kind, &kinds::LEASE);
        let t = Target::parse("/api/v1/watch/namespaces/a/pods").unwrap();
        assert!(t.watch);
        assert_eq!(Target::parse("/api/v1/widgets").unwrap_err().code, 404);
        assert_eq!(Target::parse("/api/v1/pods/web").unwrap_err().code, 404);
        assert_eq!(
            Target::parse("/api/v1/namespaces/a/pods/web/exec")
                .unwrap_err()
                .code,
            404
        );
    }
}
