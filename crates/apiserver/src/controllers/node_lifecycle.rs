//! The node lifecycle controller: a node whose agent stops sending heartbeats is marked
//! `Unknown` and tainted, as kube-controller-manager does.
//!
//! A node's heartbeat is the renewal of its `coordination.k8s.io/v1` Lease
//! `kube-node-lease/<node>` (`spec.renewTime`) or a new `lastHeartbeatTime` of its `Ready`
//! condition. Like kube-controller-manager, the grace period is measured on this
//! controller's own clock from the moment it saw the heartbeat change (so clock skew between
//! nodes and the server does not matter, and a restarted server gives every node a full
//! grace period before judging it). When a node has gone `node_monitor_grace` without a
//! heartbeat, its conditions `Ready`, `MemoryPressure`, `DiskPressure` and `PIDPressure`
//! become `Unknown` (reason `NodeStatusUnknown`, message `Kubelet stopped posting node
//! status.`, `lastTransitionTime` now; a condition the node never posted is added with reason
//! `NodeStatusNeverUpdated`). While `Ready` is `Unknown` the node carries the taint
//! `node.kubernetes.io/unreachable:NoSchedule`; it is removed once the node reports `Ready`
//! (`True` or `False`) again. Nodes are checked on every Node and Lease change, at the
//! moment their grace runs out, and every few seconds.
//!
//! Not covered: the `NoExecute` taint and pod eviction, the `not-ready` taint, zone-based
//! rate limiting of evictions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use podnet_api::k8s::kinds::{LEASE, NODE};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    Caches, Change, ControllerConfig, Outcome, Reconciler, Watched, condition, condition_status,
    conditions_mut, now_timestamp, spawn_controller, str_at,
};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::Registry;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose `Ready` condition is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The conditions marked `Unknown` when a node stops sending heartbeats.
pub const MONITORED_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Spawns the node lifecycle controller.
pub fn spawn(
    registry: Registry,
    config: &ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_controller(
        NodeLifecycle {
            registry: registry.clone(),
            grace: config.node_monitor_grace,
            period: monitor_period(config),
            heartbeats: HashMap::new(),
        },
        registry,
        shutdown,
    )
}

/// How often every node is checked: a quarter of the grace period, between 100 ms and 5 s
/// (kube-controller-manager's `--node-monitor-period` is 5 s), and at most `resync`.
fn monitor_period(config: &ControllerConfig) -> Duration {
    (config.node_monitor_grace / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5))
        .min(config.resync)
}

struct NodeLifecycle {
    registry: Registry,
    grace: Duration,
    period: Duration,
    /// Per node: its last heartbeat as seen, and when this controller saw it change.
    heartbeats: HashMap<String, (String, Instant)>,
}

/// What changes with every heartbeat of a node.
fn heartbeat(node: &Value, lease: Option<&Value>) -> String {
    let renew = lease.map(|l| str_at(l, "/spec/renewTime")).unwrap_or("");
    let status = condition(node, "Ready")
        .filter(|c| str_at(c, "/reason") != "NodeStatusNeverUpdated")
        .map(|c| str_at(c, "/lastHeartbeatTime"))
        .unwrap_or("");
    format!("{renew}|{status}")
}

impl Reconciler for NodeLifecycle {
    type Key = String;

    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                kind: &NODE,
                namespace: None,
            },
            Watched {
                kind: &LEASE,
                namespace: Some(NODE_LEASE_NAMESPACE),
            },
        ]
    }

    fn resync_period(&self) -> Duration {
        self.period
    }

    fn keys_for(&self, _caches: &Caches, change: &Change) -> Vec<String> {
        change
            .object()
            .map(|o| vec![meta::name(o).to_owned()])
            .unwrap_or_default()
    }

    fn all_keys(&self, caches: &Caches) -> Vec<String> {
        caches
            .of(&NODE)
            .iter()
            .map(|n| meta::name(n).to_owned())
            .collect()
    }

    async fn reconcile(&mut self, caches: &Caches, name: &String) -> ApiResult<Outcome> {
        let Some(node) = caches.get(&NODE, "", name) else {
            self.heartbeats.remove(name);
            return Ok(Outcome::default());
        };
        let lease = caches.get(&LEASE, NODE_LEASE_NAMESPACE, name);
        let beat = heartbeat(node, lease);
        let now = Instant::now();
        let seen_at = match self.heartbeats.get(name) {
            Some((last, at)) if *last == beat => *at,
            _ => {
                self.heartbeats.insert(name.clone(), (beat, now));
                now
            }
        };
        let silent = now.saturating_duration_since(seen_at);
        let stale = silent > self.grace;

        let needs_write = |n: &Value| apply(n, stale).is_some();
        let mut outcome = Outcome::default();
        if needs_write(node) {
            if stale {
                tracing::warn!(node = name.as_str(), silent = ?silent, "node stopped sending heartbeats; marking it Unknown");
            } else {
                tracing::info!(node = name.as_str(), "node is reporting again");
            }
            let written = self
                .registry
                .update_with(&NODE, "", name, |cur| Ok(apply(cur, stale)))
                .await;
            match written {
                Ok(n) => outcome.assumed.push((&NODE, n)),
                Err(e) if e.code == 404 => return Ok(outcome),
                Err(e) => return Err(e),
            }
        }
        if !stale {
            // Look again just after the grace would run out.
            outcome.requeue_after =
                Some(self.grace.saturating_sub(silent) + Duration::from_millis(20));
        }
        Ok(outcome)
    }
}

/// The node with its conditions and taint made consistent with `stale`, or `None` if it
/// already is.
fn apply(node: &Value, stale: bool) -> Option<Value> {
    let mut new = node.clone();
    let mut changed = false;
    if stale {
        let now = now_timestamp();
        let created = meta::get(node, "creationTimestamp").cloned();
        let conditions = conditions_mut(&mut new);
        for type_ in MONITORED_CONDITIONS {
            match conditions
                .iter_mut()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
            {
                Some(c) => {
                    if str_at(c, "/status") != "Unknown" {
                        c["status"] = json!("Unknown");
                        c["reason"] = json!("NodeStatusUnknown");
                        c["message"] = json!("Kubelet stopped posting node status.");
                        c["lastTransitionTime"] = json!(now);
                        changed = true;
                    }
                }
                None => {
                    let mut c = json!({
                        "type": type_,
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": "Kubelet never posted node status.",
                        "lastTransitionTime": now,
                    });
                    if let Some(created) = &created {
                        c["lastHeartbeatTime"] = created.clone();
                    }
                    conditions.push(c);
                    changed = true;
                }
            }
        }
    }
    let want_taint = condition_status(&new, "Ready") == "Unknown";
    let is_unreachable =
        |t: &Value| str_at(t, "/key") == UNREACHABLE_TAINT && str_at(t, "/effect") == "NoSchedule";
    let has_taint = new
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(is_unreachable));
    if want_taint && !has_taint {
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        if !new["spec"].get("taints").is_some_and(Value::is_array) {
            new["spec"]["taints"] = json!([]);
        }
        if let Some(taints) = new["spec"]["taints"].as_array_mut() {
            taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}));
        }
        changed = true;
    } else if !want_taint && has_taint {
        if let Some(taints) = new
            .pointer_mut("/spec/taints")
            .and_then(Value::as_array_mut)
        {
            taints.retain(|t| !is_unreachable(t));
            if taints.is_empty()
                && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.remove("taints");
            }
        }
        changed = true;
    }
    changed.then_some(new)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn stamp() -> String {
        chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    }

    fn has_unreachable_taint(node: &Value) -> bool {
        node.pointer("/spec/taints")
            .and_then(Value::as_array)
            .is_some_and(|ts| ts.iter().any(|t| t["key"] == UNREACHABLE_TAINT))
    }

    async fn renew(r: &Registry, node: &str) {
        r.update_with(&LEASE, NODE_LEASE_NAMESPACE, node, |cur| {
            let mut l = cur.clone();
            l["spec"]["renewTime"] = json!(stamp());
            Ok(Some(l))
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn node_goes_unknown_after_the_grace_and_recovers() {
        let r = registry();
        let now = meta::timestamp(std::time::SystemTime::now());
        r.create(
            &NODE,
            json!({
                "metadata": {"name": "n1"},
                "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
                "status": {"conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now},
                    {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": now, "lastTransitionTime": now},
                ]},
            }),
        )
        .await
        .unwrap();
        // A node that never reported anything.
        r.create(&NODE, json!({"metadata": {"name": "silent"}}))
            .await
            .unwrap();
        r.create(
            &LEASE,
            json!({"metadata": {"name": "n1", "namespace": NODE_LEASE_NAMESPACE},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40, "renewTime": stamp()}}),
        )
        .await
        .unwrap();
        let (stop, rx) = shutdown();
        let config = ControllerConfig {
            node_monitor_grace: Duration::from_secs(2),
            ..ControllerConfig::default()
        };
        let handle = spawn(r.clone(), &config, rx);

        // Renewing keeps it Ready past the grace.
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(3000) {
            renew(&r, "n1").await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let n1 = r.get(&NODE, "", "n1").await.unwrap();
        assert_eq!(condition_status(&n1, "Ready"), "True");
        assert!(!has_unreachable_taint(&n1));
        // The silent node went Unknown meanwhile.
        let silent = r.get(&NODE, "", "silent").await.unwrap();
        assert_eq!(condition_status(&silent, "Ready"), "Unknown");
        assert_eq!(
            condition(&silent, "Ready").unwrap()["reason"],
            "NodeStatusNeverUpdated"
        );
        assert!(has_unreachable_taint(&silent));

        // Stop renewing: Unknown after the grace, not before.
        let stopped_at = Instant::now();
        let n1 = wait_for("n1 Unknown", Duration::from_secs(10), async || {
            let n = r.get(&NODE, "", "n1").await.unwrap();
            (condition_status(&n, "Ready") == "Unknown").then_some(n)
        })
        .await;
        assert!(
            stopped_at.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            stopped_at.elapsed()
        );
        let ready = condition(&n1, "Ready").unwrap();
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        assert_eq!(ready["lastHeartbeatTime"], now);
        assert_eq!(condition_status(&n1, "MemoryPressure"), "Unknown");
        assert_eq!(condition_status(&n1, "DiskPressure"), "Unknown");
        assert_eq!(condition_status(&n1, "PIDPressure"), "Unknown");
        assert!(has_unreachable_taint(&n1));
        assert_eq!(n1["spec"]["taints"][0]["key"], "other");

        // Nothing more is written while it stays silent.
        let rev = r.current_revision().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(r.current_revision().await.unwrap(), rev);

        // The agent comes back: lease renewed, Ready posted.
        renew(&r, "n1").await;
        r.update_with(&NODE, "", "n1", |cur| {
            let mut n = cur.clone();
            n["status"]["conditions"][0] = json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": meta::timestamp(std::time::SystemTime::now()), "lastTransitionTime": now});
            Ok(Some(n))
        })
        .await
        .unwrap();
        let n1 = wait_for("the taint removed", Duration::from_secs(10), async || {
            let n = r.get(&NODE, "", "n1").await.unwrap();
            (!has_unreachable_taint(&n)).then_some(n)
        })
        .await;
        assert_eq!(condition_status(&n1, "Ready"), "True");
        assert_eq!(
            n1["spec"]["taints"],
            json!([{"key": "other", "effect": "NoSchedule"}])
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }
}
