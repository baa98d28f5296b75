//! `/metrics` of a started apiserver: the text is strict Prometheus text format (every
//! line a HELP, a TYPE or a sample of a declared family, no series twice, read back with
//! prometheus-parse), and its series move as kube-rs creates, reads, lists and watches a
//! Service: requests by verb, resource and code, latency, open watches, store latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Backend, TestServer, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;

/// Parses `text` strictly; the samples.
fn parse_strict(text: &str) -> Scrape {
    let mut typed = BTreeSet::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type { metric_name, .. } => {
                assert!(typed.insert(metric_name.clone()), "TYPE twice: {line}");
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s))
                    .filter(|f| typed.contains(&format!("{f}_bucket")))
                    .map_or(metric_name.to_string(), |f| format!("{f}_bucket"));
                assert!(typed.contains(&family), "a sample of no family: {line}");
                assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
                let key = format!("{metric_name}{{{}}}", labels.unwrap_or(""));
                assert!(series.insert(key), "a series twice: {line}");
            }
            LineInfo::Empty | LineInfo::Ignored => panic!("not Prometheus text: {line:?}"),
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample of `metric` whose labels include `labels`, summed over the rest.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.last().map_or(0.0, |c| c.count),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn scrape(client: &kube::Client) -> Scrape {
    let request = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    parse_strict(&client.request_text(request).await.unwrap())
}

#[tokio::test]
async fn requests_watches_and_the_store_are_counted() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let before = scrape(&client).await;
    let create = [
        ("verb", "CREATE"),
        ("resource", "services"),
        ("code", "201"),
    ];
    assert_eq!(value(&before, "apiserver_request_total", &create), 0.0);

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    services.get("web").await.unwrap();
    let missing = services.get("none").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(ref s) if s.code == 404));
    services.list(&ListParams::default()).await.unwrap();
    let watch = services
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();

    let after = scrape(&client).await;
    assert_eq!(value(&after, "apiserver_request_total", &create), 1.0);
    let get_404 = [("verb", "GET"), ("resource", "services"), ("code", "404")];
    assert_eq!(value(&after, "apiserver_request_total", &get_404), 1.0);
    let list = [
        ("verb", "LIST"),
        ("resource", "services"),
        ("scope", "namespace"),
    ];
    assert_eq!(value(&after, "apiserver_request_total", &list), 1.0);
    let latency = [
        ("verb", "CREATE"),
        ("resource", "services"),
        ("scope", "namespace"),
    ];
    assert_eq!(
        value(&after, "apiserver_request_duration_seconds", &latency),
        1.0,
        "one CREATE in the latency histogram's +Inf bucket"
    );
    let watching = [("verb", "WATCH"), ("resource", "services")];
    assert_eq!(
        value(&after, "apiserver_longrunning_requests", &watching),
        1.0
    );
    let service_kind = [("kind", "Service"), ("group", ""), ("version", "v1")];
    assert_eq!(
        value(&after, "apiserver_registered_watchers", &service_kind),
        1.0
    );
    let stored = [("operation", "create"), ("type", "core/services")];
    assert!(value(&after, "podnet_store_request_duration_seconds", &stored) >= 1.0);
    assert_eq!(
        value(
            &after,
            "apiserver_current_inflight_requests",
            &[("request_kind", "readOnly")]
        ),
        1.0,
        "the scrape itself is in flight"
    );

    // The client goes: the watch is no longer counted.
    drop(watch);
    eventually("the watch closed", Duration::from_secs(5), || async {
        let now = scrape(&client).await;
        match value(&now, "apiserver_registered_watchers", &service_kind) {
            0.0 => Ok(()),
            n => Err(format!("{n} watchers")),
        }
    })
    .await;
    ts.stop().await;
}
