//! The HTTP side of `podnet ui` (axum): the page and its assets (embedded in the binary),
//! the drawing, the JSON endpoints and the event stream.
//!
//! | path | what |
//! |---|---|
//! | `/` `/app.js` `/style.css` `/favicon.svg` | the page |
//! | `/graph.svg[?namespace=NS]` `/graph.dot` | the topology drawn ([`super::svg`], [`super::dot`]) |
//! | `/api/topology[?namespace=NS]` | the topology the page draws, its revision and the warnings |
//! | `/api/flows` | the flows of the last minute |
//! | `/api/events` | server-sent events: `topology` (a new revision), `flow`, `warnings` |
//! | `/api/trace?from=SRC&to=DST` | `podnet trace SRC DST` as JSON |
//!
//! It listens on loopback only, and answers only requests whose `Host` is a loopback name,
//! so that a web page elsewhere cannot read the cluster through the user's browser (DNS
//! rebinding): the page can start traces that read every node's kernel state.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt, stream};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::hub::{Change, Hub};
use super::{dot, svg};
use crate::cli::client::Client;
use crate::cli::{CliError, GlobalArgs};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// What the handlers share.
pub struct App {
    pub hub: Arc<Hub>,
    pub client: Arc<Client>,
    /// The flags the server was started with (the lab, for traces).
    pub global: GlobalArgs,
    /// The names of this server a browser may use (`127.0.0.1:PORT`, `localhost:PORT`).
    pub hosts: Vec<String>,
}

/// The names a browser reaches `addr` by.
pub fn loopback_hosts(addr: std::net::SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    if port == 80 {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    }
    hosts
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON) }),
        )
        .route("/graph.svg", get(graph_svg))
        .route("/graph.dot", get(graph_dot))
        .route("/api/topology", get(topology))
        .route("/api/flows", get(flows))
        .route("/api/events", get(events))
        .route("/api/trace", get(trace))
        .layer(middleware::from_fn_with_state(app.clone(), loopback_only))
        .with_state(app)
}

/// Refuses requests that do not name this server by a loopback name.
async fn loopback_only(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return next.run(request).await;
    }
    let message = format!(
        "podnet ui answers only to loopback names, not to Host {host:?}: open http://{}/",
        app.hosts[0]
    );
    (StatusCode::FORBIDDEN, message).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
        ),
    );
    response
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
}

/// The current topology, of one namespace when asked.
fn topology_of(app: &App, q: &NamespaceQuery) -> (u64, super::topology::Topology) {
    let (revision, t) = app.hub.topology();
    match q.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => (revision, t.in_namespace(ns)),
        None => (revision, (*t).clone()),
    }
}

async fn graph_svg(State(app): State<Arc<App>>, Query(q): Query<NamespaceQuery>) -> Response {
    let (revision, t) = topology_of(&app, &q);
    let mut response = ([(header::CONTENT_TYPE, "image/svg+xml")], svg::render(&t)).into_response();
    if let Ok(v) = HeaderValue::from_str(&revision.to_string()) {
        response.headers_mut().insert("x-podnet-revision", v);
    }
    response
}

async fn graph_dot(State(app): State<Arc<App>>, Query(q): Query<NamespaceQuery>) -> Response {
    let (_, t) = topology_of(&app, &q);
    (
        [(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")],
        dot::render(&t),
    )
        .into_response()
}

async fn topology(State(app): State<Arc<App>>, Query(q): Query<NamespaceQuery>) -> Response {
    let (revision, t) = topology_of(&app, &q);
    axum::Json(json!({
        "revision": revision,
        "namespace": q.namespace,
        "warnings": app.hub.warnings(),
        "topology": t,
    }))
    .into_response()
}

async fn flows(State(app): State<Arc<App>>) -> Response {
    let flows = app.hub.recent_flows();
    let flows: Vec<&super::hub::SeenFlow> = flows.iter().map(|f| &**f).collect();
    axum::Json(flows).into_response()
}

fn sse_of(change: &Change, hub: &Hub) -> Event {
    match change {
        Change::Topology(revision) => Event::default()
            .event("topology")
            .data(json!({ "revision": revision }).to_string()),
        Change::Flow(flow) => Event::default()
            .event("flow")
            .data(serde_json::to_string(&**flow).unwrap_or_default()),
        Change::Warnings => Event::default()
            .event("warnings")
            .data(json!(hub.warnings()).to_string()),
    }
}

/// The event stream: the current revision and warnings first, then every change. A page
/// that falls behind is told the current revision (it reloads the picture).
async fn events(State(app): State<Arc<App>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.hub.subscribe();
    let (revision, _) = app.hub.topology();
    let first = vec![
        Ok(sse_of(&Change::Topology(revision), &app.hub)),
        Ok(sse_of(&Change::Warnings, &app.hub)),
    ];
    let hub = app.hub.clone();
    let changes = stream::unfold((rx, hub), |(mut rx, hub)| async move {
        let event = match rx.recv().await {
            Ok(change) => sse_of(&change, &hub),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                sse_of(&Change::Topology(hub.topology().0), &hub)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, hub)))
    });
    Sse::new(stream::iter(first).chain(changes)).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct TraceQuery {
    from: Option<String>,
    to: Option<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `podnet trace FROM TO`, explained from the nodes' kernel state as the command does.
async fn trace(State(app): State<Arc<App>>, Query(q): Query<TraceQuery>) -> Response {
    let (Some(from), Some(to)) = (
        q.from.filter(|s| !s.is_empty()),
        q.to.filter(|s| !s.is_empty()),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "give from=NAMESPACE/POD (or an outside address) and to=svc/NAMESPACE/NAME[:PORT[/PROTO]] (or a pod, node/NAME or an address), as podnet trace takes them".into(),
        );
    };
    let world = match crate::cli::trace::world(&app.global, &app.client).await {
        Ok(w) => w,
        Err(e) => return error(status_of(&e), e.alone()),
    };
    // Names without a namespace are in -n's, as for `podnet trace`.
    let namespace = app
        .global
        .namespace
        .clone()
        .unwrap_or_else(|| app.client.default_namespace.clone());
    match crate::cli::trace::explain_in(&world, &namespace, &from, &to) {
        Ok(explained) => axum::Json(json!({
            "command": format!("podnet trace {from} {to}"),
            "text": podnet_trace::render::text(&explained),
            "hops": explained.hops,
            "verdict": explained.verdict,
        }))
        .into_response(),
        Err(e) => error(status_of(&e), e.alone()),
    }
}

/// A bad request for what the user asked wrong, a bad gateway when the API failed.
fn status_of(e: &CliError) -> StatusCode {
    match e {
        CliError::Other(_) => StatusCode::BAD_REQUEST,
        CliError::Api { .. } | CliError::Standard(_) => StatusCode::BAD_GATEWAY,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_may_name_the_server_by_its_loopback_names_only() {
        let hosts = loopback_hosts("127.0.0.1:7480".parse().unwrap());
        assert_eq!(
            hosts,
            [
                "127.0.0.1:7480",
                "localhost:7480",
                "127.0.0.1:7480",
                "[::1]:7480"
            ]
        );
        let on_80 = loopback_hosts("127.0.0.1:80".parse().unwrap());
        assert!(on_80.contains(&"localhost".to_string()));
        assert!(
            !hosts
                .iter()
                .any(|h| h.contains("evil") || h.starts_with("0.0.0.0"))
        );
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No CDN: every script, style and image is one the server serves itself.
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", APP_JS),
            ("style.css", STYLE),
        ] {
            let urls = text.matches("http://").count() + text.matches("https://").count();
            // app.js names the SVG namespace, once; nothing is fetched from elsewhere.
            assert_eq!(urls, usize::from(name == "app.js"), "{name}");
        }
        for path in ["/app.js", "/style.css", "/favicon.svg"] {
            assert!(INDEX.contains(path), "{path}");
        }
        assert!(FAVICON.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }
}
