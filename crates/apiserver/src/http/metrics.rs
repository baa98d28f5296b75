//! Every request counted and timed as kube-apiserver labels it (the verb from the method
//! and the path, the resource and its group, version, subresource and scope), `/metrics`
//! served, and the labels of an open watch, whose stream holds its gauges up.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::query::Query;
use super::{AppState, Target, authenticate, header_str};
use crate::metrics::RequestLabels;

const COMPONENT: &str = "apiserver";

/// The paths of non-resource requests, as their `subresource` label (anything else is
/// `other`, so no client can grow the series without bound).
const NON_RESOURCE: &[&str] = &[
    "/api",
    "/apis",
    "/version",
    "/openapi/v2",
    "/openapi/v3",
    "/healthz",
    "/livez",
    "/readyz",
    "/metrics",
];

fn non_resource(path: &str) -> RequestLabels {
    let path = path.trim_end_matches('/');
    let known = NON_RESOURCE
        .iter()
        .find(|p| path == **p || path.starts_with(&format!("{p}/")));
    RequestLabels {
        verb: "GET".into(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        subresource: known.map_or("other", |p| p).to_string(),
        scope: String::new(),
        component: COMPONENT,
    }
}

/// kube-apiserver's verb of a request on `target`.
fn verb(method: &Method, target: &Target, q: &Query, headers: &HeaderMap) -> String {
    let one = target.name.is_some();
    match *method {
        Method::GET if q.flag("watch") || target.watch => "WATCH",
        Method::GET if one => "GET",
        Method::GET => "LIST",
        Method::POST => "CREATE",
        Method::PUT => "UPDATE",
        Method::PATCH
            if header_str(headers, header::CONTENT_TYPE).starts_with("application/apply-patch") =>
        {
            "APPLY"
        }
        Method::PATCH => "PATCH",
        Method::DELETE if one => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        ref other => return other.as_str().to_string(),
    }
    .to_string()
}

/// The labels of a request on the API's resources.
pub(super) fn resource_labels(
    method: &Method,
    target: &Target,
    q: &Query,
    headers: &HeaderMap,
) -> RequestLabels {
    let scope = if target.name.is_some() {
        "resource"
    } else if target.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    RequestLabels {
        verb: verb(method, target, q, headers),
        group: target.kind.group.to_string(),
        version: target.kind.version.to_string(),
        resource: target.kind.plural.to_string(),
        subresource: target.subresource.clone().unwrap_or_default(),
        scope: scope.to_string(),
        component: COMPONENT,
    }
}

fn labels_of(method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestLabels {
    let path = uri.path().trim_end_matches('/');
    match Target::parse(path) {
        Ok(target) => resource_labels(method, &target, &Query::parse(uri.query()), headers),
        Err(_) => RequestLabels {
            verb: method.as_str().to_string(),
            ..non_resource(path)
        },
    }
}

/// Counts and times every request.
pub(super) async fn measure(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let labels = labels_of(req.method(), req.uri(), req.headers());
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let _in_flight = state.metrics.in_flight(mutating);
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .request_done(&labels, response.status().as_u16(), started.elapsed());
    response
}

/// `GET /metrics`: the text a Prometheus scrape reads, with the token when the API asks
/// for one.
pub(super) async fn scrape(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate(&state, "/metrics", &headers) {
        return e.into_response();
    }
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, uri: &str) -> RequestLabels {
        labels_of(&method, &uri.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn requests_are_labelled_as_kube_apiserver_labels_them() {
        let l = labels(Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!(
            (l.verb.as_str(), l.resource.as_str(), l.scope.as_str()),
            ("LIST", "pods", "namespace")
        );
        let l = labels(Method::GET, "/api/v1/pods?watch=true");
        assert_eq!((l.verb.as_str(), l.scope.as_str()), ("WATCH", "cluster"));
        let l = labels(Method::PUT, "/api/v1/namespaces/d/pods/p/status");
        assert_eq!(
            (l.verb.as_str(), l.subresource.as_str(), l.scope.as_str()),
            ("UPDATE", "status", "resource")
        );
        let l = labels(
            Method::DELETE,
            "/apis/discovery.k8s.io/v1/namespaces/d/endpointslices",
        );
        assert_eq!(
            (l.verb.as_str(), l.group.as_str(), l.version.as_str()),
            ("DELETECOLLECTION", "discovery.k8s.io", "v1")
        );
        let l = labels(Method::GET, "/openapi/v2");
        assert_eq!(
            (l.resource.as_str(), l.subresource.as_str()),
            ("", "/openapi/v2")
        );
        let l = labels(Method::GET, "/apis/networking.k8s.io/v1");
        assert_eq!(l.subresource, "/apis");
        assert_eq!(labels(Method::GET, "/no/such/thing").subresource, "other");
    }
}
