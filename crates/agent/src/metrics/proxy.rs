//! The service proxy's metrics, named as kube-proxy's where there is an equivalent: sync
//! durations (all, full, partial), the last good sync, the Service and EndpointSlice
//! changes pending and seen. Fed by the proxy's [`SyncObserver`](podnet_proxy::SyncObserver),
//! so a restarted proxy keeps counting on the same series.

use std::sync::atomic::AtomicU64;

use podnet_proxy::ProxyEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{now_seconds, sync_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `full` or `partial`.
    pub kind: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Handles on the proxy's series.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    duration: Histogram,
    full_duration: Histogram,
    partial_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    syncs: Family<SyncLabels, Counter>,
    conntrack_deleted: Counter,
    service_pending: Gauge,
    service_total: Counter,
    endpoint_pending: Gauge,
    endpoint_total: Counter,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry) -> ProxyMetrics {
        let m = ProxyMetrics {
            duration: Histogram::new(sync_buckets()),
            full_duration: Histogram::new(sync_buckets()),
            partial_duration: Histogram::new(sync_buckets()),
            last_sync: Gauge::default(),
            syncs: Family::default(),
            conntrack_deleted: Counter::default(),
            service_pending: Gauge::default(),
            service_total: Counter::default(),
            endpoint_pending: Gauge::default(),
            endpoint_total: Counter::default(),
        };
        let r = registry;
        r.register_with_unit(
            "kubeproxy_sync_proxy_rules_duration",
            "How long a sync of the service rules took, full or partial, failed ones included",
            Unit::Seconds,
            m.duration.clone(),
        );
        r.register_with_unit(
            "kubeproxy_sync_full_proxy_rules_duration",
            "How long a full sync of the service rules took",
            Unit::Seconds,
            m.full_duration.clone(),
        );
        r.register_with_unit(
            "kubeproxy_sync_partial_proxy_rules_duration",
            "How long a partial sync of the service rules took",
            Unit::Seconds,
            m.partial_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "When the service rules were last synced successfully (Unix time)",
            m.last_sync.clone(),
        );
        r.register(
            "podnet_proxy_syncs",
            "Syncs of the service rules, by kind (full, partial) and result (success, failure)",
            m.syncs.clone(),
        );
        r.register(
            "podnet_proxy_conntrack_entries_deleted",
            "Stale UDP conntrack entries deleted after syncs",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Services whose spec changed since the last sync",
            m.service_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Service changes seen (added, updated, deleted; each listed one at a watch's start)",
            m.service_total.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Services whose EndpointSlices changed since the last sync",
            m.endpoint_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "EndpointSlice changes seen (added, updated, deleted; each listed one at a watch's start)",
            m.endpoint_total.clone(),
        );
        m
    }

    /// Counts what the proxy tells.
    pub fn observe(&self, event: &ProxyEvent<'_>) {
        match event {
            ProxyEvent::Synced(report) => {
                self.sync_done(report.full, report.elapsed.as_secs_f64(), "success");
                self.last_sync.set(now_seconds());
                self.conntrack_deleted
                    .inc_by(report.conntrack_deleted as u64);
            }
            ProxyEvent::Failed { full, elapsed, .. } => {
                self.sync_done(*full, elapsed.as_secs_f64(), "failure");
            }
            ProxyEvent::Changes(c) => {
                self.service_total.inc_by(c.service_events as u64);
                self.endpoint_total.inc_by(c.endpoint_events as u64);
                self.service_pending.set(c.services_pending as i64);
                self.endpoint_pending.set(c.endpoints_pending as i64);
            }
        }
    }

    /// A sync took every pending change, whatever its result.
    fn sync_done(&self, full: bool, seconds: f64, result: &'static str) {
        self.duration.observe(seconds);
        let kind = if full {
            self.full_duration.observe(seconds);
            "full"
        } else {
            self.partial_duration.observe(seconds);
            "partial"
        };
        self.syncs.get_or_create(&SyncLabels { kind, result }).inc();
        self.service_pending.set(0);
        self.endpoint_pending.set(0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use podnet_proxy::{Changes, SyncReport};

    use super::*;

    #[test]
    fn syncs_and_changes_move_their_series() {
        let mut registry = Registry::default();
        let m = ProxyMetrics::register(&mut registry);
        m.observe(&ProxyEvent::Changes(Changes {
            service_events: 2,
            endpoint_events: 3,
            services_pending: 2,
            endpoints_pending: 1,
        }));
        let text = encode(&registry);
        assert!(text.contains("kubeproxy_sync_proxy_rules_service_changes_total 2\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 3\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_pending 1\n"));
        let report = SyncReport {
            full: false,
            elapsed: Duration::from_millis(3),
            ..SyncReport::default()
        };
        m.observe(&ProxyEvent::Synced(&report));
        m.observe(&ProxyEvent::Failed {
            full: true,
            elapsed: Duration::from_millis(1),
            error: "refused",
        });
        let text = encode(&registry);
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_pending 0\n"));
        assert!(text.contains("kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1\n"));
        assert!(text.contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 2\n"));
        assert!(text.contains("podnet_proxy_syncs_total{kind=\"partial\",result=\"success\"} 1\n"));
        assert!(text.contains("podnet_proxy_syncs_total{kind=\"full\",result=\"failure\"} 1\n"));
    }

    fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry).unwrap();
        out
    }
}
