//! Serving the OpenAPI documents (`podnet_api::k8s::openapi`) as kube-apiserver does:
//! `/openapi/v2` in JSON or gnostic protobuf by the `Accept` header, `/openapi/v3/GROUP-VERSION`
//! in JSON; both with an ETag (a matching `If-None-Match` gets 304), and a v3 document asked for
//! by the `hash` of its `serverRelativeURL` is immutable (a stale hash is redirected to the
//! current one, which is what kube-apiserver does so clients' caches stay right).
//!
//! The documents are built once and kept by the `openapi` module; these handlers only pick the
//! form and copy the bytes.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use podnet_api::k8s::openapi;

use crate::error::{ApiError, ApiResult};

/// The form of `/openapi/v2` a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Json,
    Protobuf,
}

/// The response to an OpenAPI request other than the v3 root, or `None` if `path` is not one.
pub fn respond(
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<ApiResult<Response>> {
    if path == "/openapi/v2" {
        return Some(v2(headers));
    }
    let gv = path.strip_prefix("/openapi/v3/")?;
    Some(v3(gv, query, headers))
}

fn v2(headers: &HeaderMap) -> ApiResult<Response> {
    let doc = openapi::v2()
        .map_err(|e| ApiError::internal(format!("building the OpenAPI v2 document: {e}")))?;
    let Some(form) = negotiate(header_str(headers, header::ACCEPT)) else {
        return Ok(not_acceptable());
    };
    let (content_type, body) = match form {
        Form::Json => ("application/json", &doc.json),
        Form::Protobuf => (openapi::PROTOBUF, &doc.protobuf),
    };
    Ok(cached(headers, &doc.etag, content_type, body, false))
}

fn v3(gv: &str, query: Option<&str>, headers: &HeaderMap) -> ApiResult<Response> {
    let Some(doc) = openapi::v3_document(gv) else {
        return Err(ApiError::path_not_found(&format!("/openapi/v3/{gv}")));
    };
    let asked = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "hash")
        .map(|(_, v)| v.into_owned());
    match asked {
        Some(hash) if hash != doc.hash => {
            let location = format!("/openapi/v3/{}?hash={}", doc.path, doc.hash);
            Ok((
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response())
        }
        asked => {
            let etag = format!("\"{}\"", doc.hash);
            let immutable = asked.is_some();
            Ok(cached(
                headers,
                &etag,
                "application/json",
                &doc.json,
                immutable,
            ))
        }
    }
}

/// The form the `Accept` header prefers: protobuf (either spelling), or JSON for
/// `application/json`, `*/*`, `application/*` or no header; `None` if it takes neither.
fn negotiate(accept: &str) -> Option<Form> {
    if accept.trim().is_empty() {
        return Some(Form::Json);
    }
    let mut best: Option<(f32, Form)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let form = match media.as_str() {
            openapi::PROTOBUF | openapi::PROTOBUF_AT => Form::Protobuf,
            "application/json" | "application/*" | "*/*" => Form::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, form));
        }
    }
    best.map(|(_, form)| form)
}

/// `body` with its ETag, or 304 if the client has it already.
fn cached(
    headers: &HeaderMap,
    etag: &str,
    content_type: &str,
    body: &[u8],
    immutable: bool,
) -> Response {
    let cache_control = if immutable {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let fresh = header_str(headers, header::IF_NONE_MATCH)
        .split(',')
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body.to_vec()));
        if let Ok(v) = HeaderValue::from_str(content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response
}

fn not_acceptable() -> Response {
    (
        StatusCode::NOT_ACCEPTABLE,
        [(header::CONTENT_TYPE, "text/plain")],
        format!(
            "/openapi/v2 is served as application/json or {}\n",
            openapi::PROTOBUF
        ),
    )
        .into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(""), Some(Form::Json));
        assert_eq!(negotiate("application/json"), Some(Form::Json));
        assert_eq!(negotiate("*/*"), Some(Form::Json));
        assert_eq!(negotiate(openapi::PROTOBUF), Some(Form::Protobuf));
        assert_eq!(negotiate(openapi::PROTOBUF_AT), Some(Form::Protobuf));
        let both = format!("application/json;q=0.5, {}", openapi::PROTOBUF_AT);
        assert_eq!(negotiate(&both), Some(Form::Protobuf));
        let both = format!("application/json, {};q=0.9", openapi::PROTOBUF);
        assert_eq!(negotiate(&both), Some(Form::Json));
        assert_eq!(negotiate("application/yaml"), None);
        assert_eq!(negotiate("application/json;q=0"), None);
    }

    #[test]
    fn etags_and_not_modified() {
        let doc = openapi::v2().unwrap();
        let mut headers = HeaderMap::new();
        let r = v2(&headers).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], doc.etag.as_str());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        // client-go's spelling is asked for, the valid one is answered.
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(openapi::PROTOBUF_AT),
        );
        let r = v2(&headers).unwrap();
        assert_eq!(r.headers()[header::CONTENT_TYPE], openapi::PROTOBUF);
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&doc.etag).unwrap(),
        );
        assert_eq!(v2(&headers).unwrap().status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(v2(&headers).unwrap().status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn v3_by_hash() {
        let hash = openapi::v3_group_version_hash("api/v1").unwrap();
        let headers = HeaderMap::new();
        let r = v3("api/v1", Some(&format!("hash={hash}")), &headers).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, immutable");
        let r = v3("api/v1", Some("hash=OLD"), &headers).unwrap();
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.headers()[header::LOCATION],
            format!("/openapi/v3/api/v1?hash={hash}").as_str()
        );
        let r = v3("api/v1", None, &headers).unwrap();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache, private");
        assert_eq!(v3("apis/apps/v1", None, &headers).unwrap_err().code, 404);
    }
}
