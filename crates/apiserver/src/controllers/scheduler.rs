//! A simple scheduler: a Pod with no `spec.nodeName`, no `deletionTimestamp`, not in a
//! terminal phase and for the default scheduler (`spec.schedulerName` empty or
//! `default-scheduler`) is bound to a node that
//!
//! - is Ready (condition `Ready` is `"True"`),
//! - is schedulable (`spec.unschedulable` unset, or the pod tolerates
//!   `node.kubernetes.io/unschedulable:NoSchedule`),
//! - has no `NoSchedule`/`NoExecute` taint the pod does not tolerate (a toleration matches
//!   on key — empty with `Exists` matches every key —, effect — empty matches every
//!   effect —, and with `Equal`, the default, on value); a node whose `NetworkUnavailable`
//!   condition is `True` counts as carrying `node.kubernetes.io/network-unavailable:
//!   NoSchedule` already (node lifecycle adds the taint itself a moment later; this closes
//!   the window in between),
//! - carries every label of the pod's `spec.nodeSelector`,
//!
//! choosing the one with the fewest pods bound to it (pods not in a terminal phase), ties
//! broken by node name. Binding sets `spec.nodeName` and the condition `PodScheduled: True`
//! in one write that applies only while `spec.nodeName` is still empty. When no node fits,
//! the pod gets `PodScheduled: False`, reason `Unschedulable`, and a message in
//! kube-scheduler's words (`0/3 nodes are available: 1 node(s) didn't match Pod's node
//! affinity/selector, 2 node(s) were not ready.`); it is tried again whenever a node
//! changes in a way that matters for scheduling, and at every resync.
//!
//! Not covered: node affinity, pod (anti-)affinity, resource requests, topology spread,
//! priorities and preemption.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use podnet_api::k8s::kinds::{NODE, POD};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    Caches, Change, ControllerConfig, Outcome, Reconciler, Watched, condition, condition_status,
    conditions_mut, now_timestamp, pod_is_terminal, spawn_controller, str_at,
};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::Registry;

/// The name pods use to ask for this scheduler.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// The taint of a node with `spec.unschedulable`.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node whose `NetworkUnavailable` condition is `True`.
pub const NETWORK_UNAVAILABLE_TAINT: &str = super::node_lifecycle::NETWORK_UNAVAILABLE_TAINT;

/// Spawns the scheduler.
pub fn spawn(
    registry: Registry,
    config: &ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_controller(
        Scheduler {
            registry: registry.clone(),
            resync: config.resync,
            pods_per_node: HashMap::new(),
        },
        registry,
        shutdown,
    )
}

struct Scheduler {
    registry: Registry,
    resync: Duration,
    /// Pods (not terminal) bound to each node, kept up to date from the pod cache.
    pods_per_node: HashMap<String, usize>,
}

type PodKey = (String, String);

/// The node a pod occupies, if it counts towards that node's load.
fn occupied_node(pod: &Value) -> Option<&str> {
    let node = str_at(pod, "/spec/nodeName");
    (!node.is_empty() && !pod_is_terminal(pod)).then_some(node)
}

/// Whether this scheduler should place the pod.
pub fn is_pending(pod: &Value) -> bool {
    str_at(pod, "/spec/nodeName").is_empty()
        && meta::get(pod, "deletionTimestamp").is_none_or(Value::is_null)
        && !pod_is_terminal(pod)
        && matches!(str_at(pod, "/spec/schedulerName"), "" | SCHEDULER_NAME)
}

/// What of a node matters for scheduling.
fn node_fingerprint(node: &Value) -> Value {
    json!([
        node.pointer("/metadata/labels"),
        node.pointer("/spec/unschedulable"),
        node.pointer("/spec/taints"),
        condition_status(node, "Ready"),
        condition_status(node, "NetworkUnavailable"),
    ])
}

fn pod_key(pod: &Value) -> PodKey {
    (meta::namespace(pod).to_owned(), meta::name(pod).to_owned())
}

impl Reconciler for Scheduler {
    type Key = PodKey;

    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![
            Watched {
                kind: &NODE,
                namespace: None,
            },
            Watched {
                kind: &POD,
                namespace: None,
            },
        ]
    }

    fn resync_period(&self) -> Duration {
        self.resync
    }

    fn observe(&mut self, change: &Change) {
        if *change.kind != POD {
            return;
        }
        if let Some(node) = change.old.as_ref().and_then(occupied_node)
            && let Some(count) = self.pods_per_node.get_mut(node)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pods_per_node.remove(node);
            }
        }
        if let Some(node) = change.new.as_ref().and_then(occupied_node) {
            *self.pods_per_node.entry(node.to_owned()).or_default() += 1;
        }
    }

    fn keys_for(&self, caches: &Caches, change: &Change) -> Vec<PodKey> {
        if *change.kind == POD {
            return change
                .new
                .iter()
                .filter(|pod| is_pending(pod))
                .map(pod_key)
                .collect();
        }
        // A node: retry the pending pods if something that decides placement changed.
        let (old, new) = (
            change.old.as_ref().map(node_fingerprint),
            change.new.as_ref().map(node_fingerprint),
        );
        if old == new {
            return Vec::new();
        }
        self.all_keys(caches)
    }

    fn all_keys(&self, caches: &Caches) -> Vec<PodKey> {
        caches
            .of(&POD)
            .iter()
            .filter(|pod| is_pending(pod))
            .map(pod_key)
            .collect()
    }

    async fn reconcile(&mut self, caches: &Caches, key: &PodKey) -> ApiResult<Outcome> {
        let (ns, name) = key;
        let Some(pod) = caches.get(&POD, ns, name) else {
            return Ok(Outcome::default());
        };
        if !is_pending(pod) {
            return Ok(Outcome::default());
        }
        let nodes: Vec<&Value> = caches.of(&NODE).iter().collect();
        let decision = choose_node(pod, &nodes, &self.pods_per_node);
        let written = match &decision {
            Ok(node) => {
                tracing::info!(
                    namespace = ns.as_str(),
                    pod = name.as_str(),
                    node = node.as_str(),
                    "binding pod"
                );
                self.registry
                    .update_with(&POD, ns, name, |cur| Ok(bind(cur, node)))
                    .await?
            }
            Err(message) => {
                tracing::debug!(
                    namespace = ns.as_str(),
                    pod = name.as_str(),
                    message = message.as_str(),
                    "pod unschedulable"
                );
                self.registry
                    .update_with(&POD, ns, name, |cur| Ok(mark_unschedulable(cur, message)))
                    .await?
            }
        };
        Ok(Outcome {
            requeue_after: None,
            assumed: vec![(&POD, written)],
        })
    }
}

/// The pod bound to `node`, or `None` if it is no longer pending.
fn bind(pod: &Value, node: &str) -> Option<Value> {
    if !is_pending(pod) {
        return None;
    }
    let mut new = pod.clone();
    if !new.get("spec").is_some_and(Value::is_object) {
        new["spec"] = json!({});
    }
    new["spec"]["nodeName"] = json!(node);
    set_pod_scheduled(&mut new, "True", None);
    Some(new)
}

/// The pod with `PodScheduled: False` (`Unschedulable`, `message`), or `None` if it is no
/// longer pending or already says so.
fn mark_unschedulable(pod: &Value, message: &str) -> Option<Value> {
    if !is_pending(pod) {
        return None;
    }
    if let Some(c) = condition(pod, "PodScheduled")
        && str_at(c, "/status") == "False"
        && str_at(c, "/reason") == "Unschedulable"
        && str_at(c, "/message") == message
    {
        return None;
    }
    let mut new = pod.clone();
    set_pod_scheduled(&mut new, "False", Some(message));
    Some(new)
}

fn set_pod_scheduled(pod: &mut Value, status: &str, unschedulable: Option<&str>) {
    let previous = condition(pod, "PodScheduled").cloned();
    let transition = match &previous {
        Some(p) if str_at(p, "/status") == status => p
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now_timestamp())),
        _ => json!(now_timestamp()),
    };
    let mut cond = json!({
        "type": "PodScheduled",
        "status": status,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    });
    if let Some(message) = unschedulable {
        cond["reason"] = json!("Unschedulable");
        cond["message"] = json!(message);
    }
    let conditions = conditions_mut(pod);
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        Some(existing) => *existing = cond,
        None => conditions.push(cond),
    }
}

/// The pod's tolerations as (key, operator, value, effect).
fn tolerations(pod: &Value) -> Vec<(&str, &str, &str, &str)> {
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            (
                str_at(t, "/key"),
                match str_at(t, "/operator") {
                    "" => "Equal",
                    op => op,
                },
                str_at(t, "/value"),
                str_at(t, "/effect"),
            )
        })
        .collect()
}

fn tolerates(
    tolerations: &[(&str, &str, &str, &str)],
    key: &str,
    value: &str,
    effect: &str,
) -> bool {
    tolerations.iter().any(|(tk, op, tv, te)| {
        (te.is_empty() || *te == effect)
            && (tk.is_empty() && *op == "Exists" || *tk == key)
            && match *op {
                "Exists" => true,
                "Equal" => *tv == value,
                _ => false,
            }
    })
}

/// Why a node does not fit a pod, in kube-scheduler's words.
fn unfit_reason(pod: &Value, node: &Value) -> Option<String> {
    if condition_status(node, "Ready") != "True" {
        return Some("node(s) were not ready".into());
    }
    let tolerations = tolerations(pod);
    let unschedulable = node
        .pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if unschedulable && !tolerates(&tolerations, UNSCHEDULABLE_TAINT, "", "NoSchedule") {
        return Some("node(s) were unschedulable".into());
    }
    if condition_status(node, "NetworkUnavailable") == "True"
        && !tolerates(&tolerations, NETWORK_UNAVAILABLE_TAINT, "", "NoSchedule")
    {
        return Some(format!(
            "node(s) had untolerated taint {{{NETWORK_UNAVAILABLE_TAINT}: }}"
        ));
    }
    for taint in node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (key, value, effect) = (
            str_at(taint, "/key"),
            str_at(taint, "/value"),
            str_at(taint, "/effect"),
        );
        if matches!(effect, "NoSchedule" | "NoExecute")
            && !tolerates(&tolerations, key, value, effect)
        {
            return Some(format!("node(s) had untolerated taint {{{key}: {value}}}"));
        }
    }
    let labels = meta::labels(node);
    let selector_matches = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| {
            v.as_str()
                .is_some_and(|v| labels.iter().any(|(lk, lv)| lk == k && *lv == v))
        });
    if !selector_matches {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    None
}

/// The node to bind the pod to, or kube-scheduler's message saying why there is none.
fn choose_node(
    pod: &Value,
    nodes: &[&Value],
    pods_per_node: &HashMap<String, usize>,
) -> Result<String, String> {
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let mut best: Option<(usize, &str)> = None;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        let name = meta::name(node);
        match unfit_reason(pod, node) {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => {
                let load = pods_per_node.get(name).copied().unwrap_or(0);
                if best.is_none_or(|(l, n)| (load, name) < (l, n)) {
                    best = Some((load, name));
                }
            }
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_owned()),
        None => {
            let reasons: Vec<String> = reasons
                .into_iter()
                .map(|(reason, count)| format!("{count} {reason}"))
                .collect();
            Err(format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                reasons.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn node(name: &str, ready: bool, labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn pod(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"},
        })
    }

    fn start(r: &Registry) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, rx) = shutdown();
        (stop, spawn(r.clone(), &ControllerConfig::default(), rx))
    }

    async fn node_of(r: &Registry, name: &str) -> String {
        wait_for(
            &format!("pod {name} to be bound"),
            Duration::from_secs(10),
            async || {
                let p = r.get(&POD, "default", name).await.unwrap();
                let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
                (!node.is_empty()).then_some(node)
            },
        )
        .await
    }

    #[tokio::test]
    async fn binds_to_the_least_loaded_ready_node() {
        let r = registry();
        r.create(&NODE, node("n1", true, json!({}))).await.unwrap();
        r.create(&NODE, node("n2", true, json!({}))).await.unwrap();
        r.create(&NODE, node("n3", false, json!({}))).await.unwrap();
        // n1 already runs two pods (one of them terminal: not counted), n2 one.
        for (name, node, phase) in [
            ("x1", "n1", "Running"),
            ("x2", "n1", "Running"),
            ("x3", "n2", "Running"),
            ("x4", "n2", "Succeeded"),
            ("x5", "n2", "Failed"),
        ] {
            let mut p = pod(name);
            p["spec"]["nodeName"] = json!(node);
            p["status"]["phase"] = json!(phase);
            r.create(&POD, p).await.unwrap();
        }
        r.create(&POD, pod("a")).await.unwrap();
        let (stop, handle) = start(&r);
        // n2 has the fewest pods.
        assert_eq!(node_of(&r, "a").await, "n2");
        let a = r.get(&POD, "default", "a").await.unwrap();
        let cond = condition(&a, "PodScheduled").unwrap();
        assert_eq!(cond["status"], "True");
        assert!(cond.get("reason").is_none());
        // Now n1 and n2 have two each: ties go by name; then n2.
        r.create(&POD, pod("b")).await.unwrap();
        assert_eq!(node_of(&r, "b").await, "n1");
        r.create(&POD, pod("c")).await.unwrap();
        assert_eq!(node_of(&r, "c").await, "n2");
        // Several at once are spread (the scheduler counts its own bindings at once).
        for i in 0..6 {
            r.create(&POD, pod(&format!("m{i}"))).await.unwrap();
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..6 {
            *counts
                .entry(node_of(&r, &format!("m{i}")).await)
                .or_default() += 1;
        }
        assert_eq!(counts.get("n1"), Some(&3), "{counts:?}");
        assert_eq!(counts.get("n2"), Some(&3), "{counts:?}");
        assert_eq!(counts.get("n3"), None);
        // A pod for another scheduler, or being deleted, is left alone.
        let mut other = pod("other");
        other["spec"]["schedulerName"] = json!("my-scheduler");
        r.create(&POD, other).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let other = r.get(&POD, "default", "other").await.unwrap();
        assert!(other["spec"].get("nodeName").is_none());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn node_selector_taints_and_unschedulable_message() {
        let r = registry();
        r.create(&NODE, node("n1", true, json!({"disk": "hdd"})))
            .await
            .unwrap();
        r.create(&NODE, node("n2", false, json!({"disk": "ssd"})))
            .await
            .unwrap();
        r.create(&NODE, node("n3", false, json!({"disk": "ssd"})))
            .await
            .unwrap();
        let mut p = pod("fast");
        p["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        r.create(&POD, p).await.unwrap();
        let (stop, handle) = start(&r);

        let message = wait_for("PodScheduled False", Duration::from_secs(10), async || {
            let p = r.get(&POD, "default", "fast").await.unwrap();
            let c = condition(&p, "PodScheduled")?.clone();
            (c["status"] == "False").then_some(c)
        })
        .await;
        assert_eq!(message["reason"], "Unschedulable");
        assert_eq!(
            message["message"],
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) were not ready."
        );
        // No rewrite while nothing changes.
        let rev = r.current_revision().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.current_revision().await.unwrap(), rev);

        // n3 becomes Ready, but tainted: still no fit.
        r.update_with(&NODE, "", "n3", |cur| {
            let mut n = cur.clone();
            n["status"]["conditions"][0]["status"] = json!("True");
            n["spec"] =
                json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
            Ok(Some(n))
        })
        .await
        .unwrap();
        wait_for("the taint in the message", Duration::from_secs(10), async || {
            let p = r.get(&POD, "default", "fast").await.unwrap();
            let m = condition(&p, "PodScheduled")?["message"].as_str()?.to_owned();
            (m == "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were not ready.").then_some(())
        })
        .await;
        // n2 becomes Ready: the pod goes there.
        r.update_with(&NODE, "", "n2", |cur| {
            let mut n = cur.clone();
            n["status"]["conditions"][0]["status"] = json!("True");
            Ok(Some(n))
        })
        .await
        .unwrap();
        assert_eq!(node_of(&r, "fast").await, "n2");
        let fast = r.get(&POD, "default", "fast").await.unwrap();
        assert_eq!(condition(&fast, "PodScheduled").unwrap()["status"], "True");

        // A toleration lets a pod onto the tainted node.
        let mut tolerant = pod("tolerant");
        tolerant["spec"]["nodeSelector"] = json!({"disk": "ssd"});
        tolerant["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
        r.create(&POD, tolerant).await.unwrap();
        assert_eq!(node_of(&r, "tolerant").await, "n3");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn tolerations_match() {
        let t = [("", "Exists", "", "")];
        assert!(tolerates(&t, "anything", "v", "NoSchedule"));
        let t = [("k", "Exists", "", "NoSchedule")];
        assert!(tolerates(&t, "k", "v", "NoSchedule"));
        assert!(!tolerates(&t, "k", "v", "NoExecute"));
        let t = [("k", "Equal", "v", "")];
        assert!(tolerates(&t, "k", "v", "NoExecute"));
        assert!(!tolerates(&t, "k", "w", "NoExecute"));
        let mut unsched = node("u", true, json!({}));
        unsched["spec"] = json!({"unschedulable": true});
        assert_eq!(
            choose_node(&pod("p"), &[&unsched], &HashMap::new()),
            Err("0/1 nodes are available: 1 node(s) were unschedulable.".into())
        );
        assert_eq!(
            choose_node(&pod("p"), &[], &HashMap::new()),
            Err("no nodes available to schedule pods".into())
        );
        // NetworkUnavailable=True: as if tainted, before node lifecycle adds the taint.
        let mut no_network = node("x", true, json!({}));
        no_network["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "NetworkUnavailable", "status": "True"}));
        assert_eq!(
            choose_node(&pod("p"), &[&no_network], &HashMap::new()),
            Err("0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/network-unavailable: }.".into())
        );
        let mut tolerant = pod("t");
        tolerant["spec"]["tolerations"] = json!([{"key": NETWORK_UNAVAILABLE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]);
        assert_eq!(
            choose_node(&tolerant, &[&no_network], &HashMap::new()),
            Ok("x".into())
        );
    }
}
