//! The node lifecycle controller: a node whose agent stops sending heartbeats is marked
//! `Unknown` and tainted, as kube-controller-manager does; a node whose network is
//! unavailable is tainted too.
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
//! As kube-controller-manager's taint-by-condition does, a node whose `NetworkUnavailable`
//! condition is `True` (its agent could not program the overlay, masquerade or service
//! proxy; or a cloud route is missing) carries `node.kubernetes.io/network-unavailable:
//! NoSchedule` until the condition is no longer `True`: the scheduler then places no pod
//! there that does not tolerate it (pods that set `spec.nodeName` themselves, as kubelet
//! allows, are not held back). A node going `Unknown` leaves `NetworkUnavailable` as it is,
//! as upstream does.
//!
//! While a node is `Unknown`, its pods' `Ready` condition is set `False`, as the upstream
//! controller's `MarkPodsNotReady` does: the EndpointSlice controller then takes them out of
//! every Service, so no node keeps sending connections to a node that is gone. The node's
//! agent posts their real status again when it is back.
//!
//! Not covered: the `NoExecute` taint and pod eviction, the `not-ready` and pressure taints,
//! zone-based rate limiting of evictions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use podnet_api::k8s::kinds::{LEASE, NODE, POD};
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
/// The taint of a node whose `NetworkUnavailable` condition is `True`.
pub const NETWORK_UNAVAILABLE_TAINT: &str = "node.kubernetes.io/network-unavailable";
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
            Watched {
                kind: &POD,
                namespace: None,
            },
        ]
    }

    fn resync_period(&self) -> Duration {
        self.period
    }

    fn keys_for(&self, _caches: &Caches, change: &Change) -> Vec<String> {
        let Some(o) = change.object() else {
            return Vec::new();
        };
        // A pod is looked at through its node.
        if change.kind.kind == POD.kind {
            let node = str_at(o, "/spec/nodeName");
            return if node.is_empty() {
                Vec::new()
            } else {
                vec![node.to_owned()]
            };
        }
        vec![meta::name(o).to_owned()]
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

        let mut outcome = Outcome::default();
        if let Some(updated) = apply(node, stale) {
            log_change(name, node, &updated, silent);
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
        let node_now = outcome.assumed.last().map(|(_, n)| n).unwrap_or(node);
        if condition_status(node_now, "Ready") == "Unknown" {
            self.mark_pods_not_ready(caches, name, &mut outcome).await?;
        }
        if !stale {
            // Look again just after the grace would run out.
            outcome.requeue_after =
                Some(self.grace.saturating_sub(silent) + Duration::from_millis(20));
        }
        Ok(outcome)
    }
}

impl NodeLifecycle {
    /// Sets `Ready=False` on every pod of `node` that is still ready.
    async fn mark_pods_not_ready(
        &self,
        caches: &Caches,
        node: &str,
        outcome: &mut Outcome,
    ) -> ApiResult<()> {
        let ready: Vec<(String, String)> = caches
            .of(&POD)
            .iter()
            .filter(|p| {
                str_at(p, "/spec/nodeName") == node && condition_status(p, "Ready") == "True"
            })
            .map(|p| (meta::namespace(p).to_owned(), meta::name(p).to_owned()))
            .collect();
        for (ns, pod) in ready {
            tracing::warn!(node, namespace = %ns, pod = %pod, "node is unreachable; marking its pod not ready");
            let written = self
                .registry
                .update_with(&POD, &ns, &pod, |cur| Ok(not_ready(cur)))
                .await;
            match written {
                Ok(p) => outcome.assumed.push((&POD, p)),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The pod with its `Ready` condition `False` (now), or `None` when it is not `True`.
fn not_ready(pod: &Value) -> Option<Value> {
    if condition_status(pod, "Ready") != "True" {
        return None;
    }
    let mut new = pod.clone();
    let now = now_timestamp();
    for c in conditions_mut(&mut new) {
        if c.get("type").and_then(Value::as_str) == Some("Ready") {
            c["status"] = json!("False");
            c["lastTransitionTime"] = json!(now);
        }
    }
    Some(new)
}

/// Logs what `apply` is about to change.
fn log_change(name: &str, old: &Value, new: &Value, silent: Duration) {
    let network = |n: &Value| has_taint(n, NETWORK_UNAVAILABLE_TAINT);
    let unreachable = |n: &Value| has_taint(n, UNREACHABLE_TAINT);
    if unreachable(new) && (!unreachable(old) || condition_status(old, "Ready") != "Unknown") {
        tracing::warn!(node = name, silent = ?silent, "node stopped sending heartbeats; marking it Unknown");
    } else if unreachable(old) && !unreachable(new) {
        tracing::info!(node = name, "node is reporting again");
    }
    if network(new) && !network(old) {
        let c = condition(new, "NetworkUnavailable");
        tracing::warn!(
            node = name,
            reason = c.map(|c| str_at(c, "/reason")).unwrap_or(""),
            message = c.map(|c| str_at(c, "/message")).unwrap_or(""),
            "node's network is unavailable; tainting it {NETWORK_UNAVAILABLE_TAINT}:NoSchedule"
        );
    } else if network(old) && !network(new) {
        tracing::info!(
            node = name,
            "node's network is available again; removing its {NETWORK_UNAVAILABLE_TAINT} taint"
        );
    }
}

fn has_taint(node: &Value, key: &str) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(|t| str_at(t, "/key") == key))
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
    let unreachable = condition_status(&new, "Ready") == "Unknown";
    changed |= set_taint(&mut new, UNREACHABLE_TAINT, unreachable);
    let network_unavailable = condition_status(&new, "NetworkUnavailable") == "True";
    changed |= set_taint(&mut new, NETWORK_UNAVAILABLE_TAINT, network_unavailable);
    changed.then_some(new)
}

/// Adds (`want`) or removes the `NoSchedule` taint `key`; whether the node changed.
fn set_taint(node: &mut Value, key: &str, want: bool) -> bool {
    let is_ours = |t: &Value| str_at(t, "/key") == key && str_at(t, "/effect") == "NoSchedule";
    let has = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|ts| ts.iter().any(is_ours));
    if want == has {
        return false;
    }
    if want {
        if !node.get("spec").is_some_and(Value::is_object) {
            node["spec"] = json!({});
        }
        if !node["spec"].get("taints").is_some_and(Value::is_array) {
            node["spec"]["taints"] = json!([]);
        }
        if let Some(taints) = node["spec"]["taints"].as_array_mut() {
            taints.push(json!({"key": key, "effect": "NoSchedule"}));
        }
        return true;
    }
    if let Some(taints) = node
        .pointer_mut("/spec/taints")
        .and_then(Value::as_array_mut)
    {
        taints.retain(|t| !is_ours(t));
        if taints.is_empty()
            && let Some(spec) = node.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove("taints");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use podnet_api::k8s::kinds::POD;

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

    #[test]
    fn network_unavailable_taints_until_it_is_not_true() {
        let node = |status: &str, taints: Value| {
            json!({
                "metadata": {"name": "n1"},
                "spec": {"taints": taints},
                "status": {"conditions": [
                    {"type": "NetworkUnavailable", "status": status, "reason": "ServiceProxyFailing"},
                    {"type": "Ready", "status": "True"},
                ]},
            })
        };
        let other = json!({"key": "other", "effect": "NoSchedule"});
        let tainted = apply(&node("True", json!([other])), false).unwrap();
        assert_eq!(
            tainted["spec"]["taints"],
            json!([other, {"key": NETWORK_UNAVAILABLE_TAINT, "effect": "NoSchedule"}])
        );
        assert!(apply(&tainted, false).is_none(), "already consistent");
        let mut recovered = tainted.clone();
        recovered["status"]["conditions"][0]["status"] = json!("False");
        let untainted = apply(&recovered, false).unwrap();
        assert_eq!(untainted["spec"]["taints"], json!([other]));
        // No condition (a kubelet that does not post it): no taint.
        let plain = json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(apply(&plain, false).is_none());
        // Gone Unknown: NetworkUnavailable is left as it was (and its taint stays).
        let stale = apply(&tainted, true).unwrap();
        assert_eq!(condition_status(&stale, "NetworkUnavailable"), "True");
        assert!(has_taint(&stale, NETWORK_UNAVAILABLE_TAINT));
        assert!(has_taint(&stale, UNREACHABLE_TAINT));
    }

    /// With the scheduler: a pod is not placed on a node whose network is unavailable, and
    /// is once the network is back.
    #[tokio::test]
    async fn the_scheduler_waits_for_the_network() {
        let r = registry();
        let node = |status: &str| {
            json!({
                "metadata": {"name": "n1"},
                "status": {"conditions": [
                    {"type": "NetworkUnavailable", "status": status, "reason": "ServiceProxyFailing",
                     "message": "service proxy: Operation not permitted"},
                    {"type": "Ready", "status": "True"},
                ]},
            })
        };
        r.create(&NODE, node("True")).await.unwrap();
        r.create(
            &POD,
            json!({"metadata": {"name": "p", "namespace": "default"},
                   "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Pending"}}),
        )
        .await
        .unwrap();
        let (stop, rx) = shutdown();
        let config = ControllerConfig::default();
        let lifecycle = spawn(r.clone(), &config, rx.clone());
        let scheduler = super::super::scheduler::spawn(r.clone(), &config, rx);
        let message = wait_for(
            "the pod unschedulable",
            Duration::from_secs(10),
            async || {
                let p = r.get(&POD, "default", "p").await.unwrap();
                let c = condition(&p, "PodScheduled")?;
                let m = str_at(c, "/message").to_owned();
                m.contains("network-unavailable").then_some(m)
            },
        )
        .await;
        assert_eq!(
            message,
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/network-unavailable: }."
        );
        r.update_with(&NODE, "", "n1", |cur| {
            let mut n = cur.clone();
            n["status"]["conditions"][0]["status"] = json!("False");
            Ok(Some(n))
        })
        .await
        .unwrap();
        wait_for("the pod bound", Duration::from_secs(10), async || {
            let p = r.get(&POD, "default", "p").await.unwrap();
            (str_at(&p, "/spec/nodeName") == "n1").then_some(())
        })
        .await;
        let n1 = r.get(&NODE, "", "n1").await.unwrap();
        assert!(!has_taint(&n1, NETWORK_UNAVAILABLE_TAINT), "{n1}");
        stop.send(true).unwrap();
        for handle in [lifecycle, scheduler] {
            tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .unwrap()
                .unwrap();
        }
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
        // A ready pod on n1, and one elsewhere.
        for (name, node) in [("web-1", "n1"), ("web-2", "other")] {
            r.create(
                &POD,
                json!({"metadata": {"name": name, "namespace": "default"},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
                    "status": {"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}}),
            )
            .await
            .unwrap();
        }
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
        let pod = r.get(&POD, "default", "web-1").await.unwrap();
        assert_eq!(condition_status(&pod, "Ready"), "True");
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
        // Its pod is not ready any more (so no Service sends to it); the other is.
        let pod = wait_for("web-1 not ready", Duration::from_secs(5), async || {
            let p = r.get(&POD, "default", "web-1").await.unwrap();
            (condition_status(&p, "Ready") == "False").then_some(p)
        })
        .await;
        assert_eq!(pod["status"]["phase"], "Running");
        let other = r.get(&POD, "default", "web-2").await.unwrap();
        assert_eq!(condition_status(&other, "Ready"), "True");

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
