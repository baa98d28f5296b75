//! The NetworkPolicy engine's sync metrics, fed by its report after each attempt: how
//! long each sync took by the kind of change it wrote, how many worked and failed, and when
//! the last one worked. (Its drops per policy are read from the kernel at each scrape, in
//! [`kernel`](super::kernel).)

use std::sync::atomic::AtomicU64;

use podnet_kernel::ruleset::PlanKind;
use podnet_policy::{PolicyError, SyncReport};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{now_seconds, sync_buckets};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `full`, `partial`, `nothing` (the table was already right), `delete` (no policy
    /// applies any more).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Handles on the policy engine's series.
#[derive(Clone, Debug)]
pub struct PolicyMetrics {
    duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    syncs: Family<ResultLabels, Counter>,
    watch_errors: Counter,
    last_sync: Gauge<f64, AtomicU64>,
}

fn histogram() -> Histogram {
    Histogram::new(sync_buckets())
}

pub fn kind_word(kind: PlanKind) -> &'static str {
    match kind {
        PlanKind::Full => "full",
        PlanKind::Partial => "partial",
        PlanKind::Nothing => "nothing",
        PlanKind::Delete => "delete",
    }
}

impl PolicyMetrics {
    pub fn register(registry: &mut Registry) -> PolicyMetrics {
        let m = PolicyMetrics {
            duration: Family::new_with_constructor(histogram),
            syncs: Family::default(),
            watch_errors: Counter::default(),
            last_sync: Gauge::default(),
        };
        registry.register_with_unit(
            "podnet_policy_sync_duration",
            "How long a sync of the NetworkPolicy table took, by the kind of change written",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "podnet_policy_syncs",
            "Syncs of the NetworkPolicy table, by result (success, failure)",
            m.syncs.clone(),
        );
        registry.register(
            "podnet_policy_watch_errors",
            "Failures of the engine's watches (Pods, Namespaces, NetworkPolicies, ClusterNetworkPolicies)",
            m.watch_errors.clone(),
        );
        registry.register(
            "podnet_policy_sync_last_timestamp_seconds",
            "When the NetworkPolicy table was last synced successfully (Unix time)",
            m.last_sync.clone(),
        );
        m
    }

    /// Counts one report of the engine.
    pub fn observe(&self, outcome: Result<&SyncReport, &PolicyError>) {
        match outcome {
            Ok(report) => {
                let kind = kind_word(report.kind);
                self.duration
                    .get_or_create(&KindLabels { kind })
                    .observe(report.elapsed.as_secs_f64());
                self.syncs
                    .get_or_create(&ResultLabels { result: "success" })
                    .inc();
                self.last_sync.set(now_seconds());
            }
            Err(PolicyError::Watch { .. }) => {
                self.watch_errors.inc();
            }
            Err(_) => {
                self.syncs
                    .get_or_create(&ResultLabels { result: "failure" })
                    .inc();
            }
        }
    }
}
