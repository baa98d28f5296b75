//! The apiserver's Prometheus metrics, named and labelled as kube-apiserver's so its
//! dashboards read them: requests by verb, group, version, resource, subresource, scope and
//! code (`apiserver_request_total`), their latency (`apiserver_request_duration_seconds`,
//! without the code and without WATCH, whose stream lasts as long as the client wants, as
//! kube-apiserver keeps long-running requests apart), the requests in flight, the open
//! watches (`apiserver_longrunning_requests`, `apiserver_registered_watchers`) and the
//! store's latency per operation and key prefix (`podnet_store_request_duration_seconds`,
//! kube-apiserver's `etcd_request_duration_seconds` for any backend, [`MeasuredStore`]).
//!
//! Served on the API's own port at `/metrics`, as kube-apiserver does: plain on loopback,
//! behind TLS and the bearer token elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use podnet_store::{Deleted, KeyValue, LeaseId, ListResult, Store, WatchStream};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A request's labels, as kube-apiserver sets them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// GET, LIST, WATCH, CREATE, UPDATE, PATCH, APPLY, DELETE, DELETECOLLECTION.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    /// The subresource (`status`, `binding`), or the path of a non-resource request
    /// (`/openapi/v2`, `/healthz`, …).
    pub subresource: String,
    /// `resource` (one object), `namespace` or `cluster` (a collection); empty for a
    /// non-resource request.
    pub scope: String,
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodedLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InflightLabels {
    /// `readOnly` or `mutating`.
    request_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatcherLabels {
    group: String,
    version: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: &'static str,
    /// The key prefix's kind: `core/pods`, `discovery.k8s.io/endpointslices`,
    /// `allocations/…`.
    r#type: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // kube-apiserver's buckets, up to a minute.
    Histogram::new([
        0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
        10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
    ])
}

fn store_histogram() -> Histogram {
    // etcd_request_duration_seconds' buckets, from 5 ms (an embedded read takes less).
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// The apiserver's series.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<CodedLabels, Counter>,
    latency: Histograms<RequestLabels>,
    inflight: Family<InflightLabels, Gauge>,
    longrunning: Family<RequestLabels, Gauge>,
    watchers: Family<WatcherLabels, Gauge>,
    store_latency: Histograms<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiMetrics")
    }
}

impl ApiMetrics {
    pub fn new() -> Arc<ApiMetrics> {
        let mut m = ApiMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(request_histogram),
            inflight: Family::default(),
            longrunning: Family::default(),
            watchers: Family::default(),
            store_latency: Family::new_with_constructor(store_histogram),
            store_errors: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "apiserver_request",
            "Requests by verb, group, version, resource, subresource, scope, component and HTTP code",
            m.requests.clone(),
        );
        r.register_with_unit(
            "apiserver_request_duration",
            "Response latency by verb, group, version, resource, subresource, scope and component (WATCH not included)",
            Unit::Seconds,
            m.latency.clone(),
        );
        r.register(
            "apiserver_current_inflight_requests",
            "Requests being served, by kind (readOnly, mutating)",
            m.inflight.clone(),
        );
        r.register(
            "apiserver_longrunning_requests",
            "Long-running requests (watches) open, by verb, group, version, resource, subresource, scope and component",
            m.longrunning.clone(),
        );
        r.register(
            "apiserver_registered_watchers",
            "Watches open, by group, version and kind",
            m.watchers.clone(),
        );
        r.register_with_unit(
            "podnet_store_request_duration",
            "Latency of store requests, by operation and key type (kube-apiserver's etcd_request_duration_seconds, for every store backend)",
            Unit::Seconds,
            m.store_latency.clone(),
        );
        r.register(
            "podnet_store_request_errors",
            "Store requests that failed, by operation and key type (a compare-and-swap conflict or a missing key included)",
            m.store_errors.clone(),
        );
        Arc::new(m)
    }

    /// The text a scrape gets (Prometheus text format 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(32 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Counts a request from now until the guard drops.
    pub fn in_flight(self: &Arc<Self>, mutating: bool) -> Tracked {
        let labels = InflightLabels {
            request_kind: if mutating { "mutating" } else { "readOnly" },
        };
        self.inflight.get_or_create(&labels).inc();
        Tracked {
            gauge: self.inflight.get_or_create(&labels).clone(),
            also: None,
        }
    }

    /// Counts an answered request.
    pub fn request_done(&self, labels: &RequestLabels, code: u16, elapsed: Duration) {
        if labels.verb != "WATCH" {
            self.latency
                .get_or_create(labels)
                .observe(elapsed.as_secs_f64());
        }
        let coded = CodedLabels {
            request: labels.clone(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&coded).inc();
    }

    /// Counts an open watch of `kind` until the guard drops (with its stream).
    pub fn watch_opened(
        &self,
        labels: &RequestLabels,
        kind: &podnet_api::k8s::kinds::ResourceKind,
    ) -> Tracked {
        let open = self.longrunning.get_or_create(labels).clone();
        open.inc();
        let watchers = self
            .watchers
            .get_or_create(&WatcherLabels {
                group: kind.group.to_string(),
                version: kind.version.to_string(),
                kind: kind.kind.to_string(),
            })
            .clone();
        watchers.inc();
        Tracked {
            gauge: open,
            also: Some(watchers),
        }
    }

    fn store_done(&self, operation: &'static str, key: &str, started: Instant, ok: bool) {
        let labels = StoreLabels {
            operation,
            r#type: key_type(key),
        };
        self.store_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }
}

/// Decrements its gauges when dropped.
#[derive(Debug)]
pub struct Tracked {
    gauge: Gauge,
    also: Option<Gauge>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.gauge.dec();
        if let Some(g) = &self.also {
            g.dec();
        }
    }
}

/// What kind of key: the two segments after `/registry/` (`core/pods`,
/// `allocations/clusterips`), the first segment of any other key, empty for none.
pub fn key_type(key: &str) -> String {
    let mut parts = key.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("registry"), Some(a), Some(b)) if !b.is_empty() => format!("{a}/{b}"),
        (Some("registry"), Some(a), _) => a.to_string(),
        (Some(first), _, _) => first.to_string(),
        (None, _, _) => String::new(),
    }
}

/// A store whose every request is timed into [`ApiMetrics`].
pub struct MeasuredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<ApiMetrics>,
}

impl MeasuredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<ApiMetrics>) -> MeasuredStore {
        MeasuredStore { inner, metrics }
    }

    fn done<T>(
        &self,
        operation: &'static str,
        key: &str,
        started: Instant,
        result: podnet_store::Result<T>,
    ) -> podnet_store::Result<T> {
        self.metrics
            .store_done(operation, key, started, result.is_ok());
        result
    }
}

#[async_trait]
impl Store for MeasuredStore {
    async fn get(&self, key: &str) -> podnet_store::Result<Option<KeyValue>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.done("get", key, t, r)
    }

    async fn list(&self, prefix: &str, at: Option<i64>) -> podnet_store::Result<ListResult> {
        let t = Instant::now();
        let r = self.inner.list(prefix, at).await;
        self.done("list", prefix, t, r)
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> podnet_store::Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.create(key, value, lease).await;
        self.done("create", key, t, r)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
    ) -> podnet_store::Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected_mod_revision).await;
        self.done("update", key, t, r)
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> podnet_store::Result<Deleted> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.done("delete", key, t, r)
    }

    async fn current_revision(&self) -> podnet_store::Result<i64> {
        let t = Instant::now();
        let r = self.inner.current_revision().await;
        self.done("current_revision", "", t, r)
    }

    async fn compact(&self, revision: i64) -> podnet_store::Result<()> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.done("compact", "", t, r)
    }

    async fn watch(&self, prefix: &str, from: i64) -> podnet_store::Result<WatchStream> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, from).await;
        self.done("watch", prefix, t, r)
    }

    async fn grant_lease(&self, ttl: Duration) -> podnet_store::Result<LeaseId> {
        let t = Instant::now();
        let r = self.inner.grant_lease(ttl).await;
        self.done("grant_lease", "", t, r)
    }

    async fn keep_alive(&self, lease: LeaseId) -> podnet_store::Result<()> {
        let t = Instant::now();
        let r = self.inner.keep_alive(lease).await;
        self.done("keep_alive", "", t, r)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> podnet_store::Result<()> {
        let t = Instant::now();
        let r = self.inner.revoke_lease(lease).await;
        self.done("revoke_lease", "", t, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_are_few() {
        assert_eq!(key_type("/registry/core/pods/default/web"), "core/pods");
        assert_eq!(key_type("/registry/core/pods/"), "core/pods");
        assert_eq!(
            key_type("/registry/discovery.k8s.io/endpointslices/"),
            "discovery.k8s.io/endpointslices"
        );
        assert_eq!(key_type("/registry/"), "");
        assert_eq!(key_type(""), "");
    }
}
