//! The namespace controller: a Namespace with a `deletionTimestamp` (phase `Terminating`)
//! has everything in it deleted — objects of every namespaced kind podnet serves —, then its
//! `kubernetes` finalizer removed from `spec.finalizers`, and, once no finalizer is left
//! (neither in `spec.finalizers` nor in `metadata.finalizers`), the Namespace itself deleted.
//!
//! Pods go through [`super::delete_pod_gracefully`]: a running pod bound to a node is only
//! marked, and the namespace waits until its node's agent has stopped and deleted it
//! (checked again every second). Objects with `metadata.finalizers` are marked, not deleted,
//! and waited for likewise.

use std::time::Duration;

use podnet_api::k8s::kinds::{self, NAMESPACE, POD};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    Caches, Change, ControllerConfig, Outcome, Reconciler, Watched, delete_object,
    delete_pod_gracefully, spawn_controller,
};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::{Registry, revision_of};

/// The finalizer this controller owns in a Namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace still holding objects is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// Spawns the namespace controller.
pub fn spawn(
    registry: Registry,
    config: &ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_controller(
        NamespaceController {
            registry: registry.clone(),
            resync: config.resync,
        },
        registry,
        shutdown,
    )
}

struct NamespaceController {
    registry: Registry,
    resync: Duration,
}

fn terminating(ns: &Value) -> bool {
    meta::get(ns, "deletionTimestamp").is_some_and(|t| !t.is_null())
}

impl Reconciler for NamespaceController {
    type Key = String;

    fn name(&self) -> &'static str {
        "namespace"
    }

    fn watches(&self) -> Vec<Watched> {
        vec![Watched {
            kind: &NAMESPACE,
            namespace: None,
        }]
    }

    fn resync_period(&self) -> Duration {
        self.resync
    }

    fn keys_for(&self, _caches: &Caches, change: &Change) -> Vec<String> {
        change
            .new
            .iter()
            .filter(|ns| terminating(ns))
            .map(|ns| meta::name(ns).to_owned())
            .collect()
    }

    fn all_keys(&self, caches: &Caches) -> Vec<String> {
        caches
            .of(&NAMESPACE)
            .iter()
            .filter(|ns| terminating(ns))
            .map(|ns| meta::name(ns).to_owned())
            .collect()
    }

    async fn reconcile(&mut self, _caches: &Caches, name: &String) -> ApiResult<Outcome> {
        let Some(ns) = self.registry.try_get(&NAMESPACE, "", name).await? else {
            return Ok(Outcome::default());
        };
        if !terminating(&ns) {
            return Ok(Outcome::default());
        }
        let mut remaining = empty_namespace(&self.registry, name).await?;
        if remaining == 0 {
            // Look once more: a controller may have written into the namespace meanwhile.
            remaining = empty_namespace(&self.registry, name).await?;
        }
        if remaining > 0 {
            tracing::debug!(
                namespace = name.as_str(),
                remaining,
                "namespace still has objects"
            );
            return Ok(Outcome {
                requeue_after: Some(RECHECK),
                assumed: Vec::new(),
            });
        }
        finalize(&self.registry, name).await?;
        Ok(Outcome::default())
    }
}

/// Deletes everything in the namespace; returns how many objects are still there.
async fn empty_namespace(registry: &Registry, ns: &str) -> ApiResult<usize> {
    let mut remaining = 0;
    for kind in kinds::ALL.iter().filter(|k| k.namespaced) {
        let listed = registry.list(kind, Some(ns), None).await?;
        for obj in &listed.items {
            let name = meta::name(obj);
            let gone = if *kind == POD {
                match delete_pod_gracefully(registry, ns, name, None).await {
                    Ok(marked) => marked.is_none(),
                    Err(e) if e.code == 404 => true,
                    Err(e) => return Err(e),
                }
            } else {
                delete_object(registry, kind, ns, name).await?
            };
            if !gone {
                remaining += 1;
            }
        }
        if !listed.items.is_empty() {
            tracing::debug!(
                namespace = ns,
                kind = kind.plural,
                count = listed.items.len(),
                "deleting namespace contents"
            );
        }
    }
    Ok(remaining)
}

/// Removes our finalizer and, when no finalizer is left, the Namespace.
async fn finalize(registry: &Registry, name: &str) -> ApiResult<()> {
    let ns = registry
        .update_with(&NAMESPACE, "", name, |cur| {
            let Some(finalizers) = cur.pointer("/spec/finalizers").and_then(Value::as_array) else {
                return Ok(None);
            };
            if !finalizers.iter().any(|f| f == FINALIZER) {
                return Ok(None);
            }
            let kept: Vec<Value> = finalizers
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            let mut new = cur.clone();
            new["spec"]["finalizers"] = json!(kept);
            Ok(Some(new))
        })
        .await;
    let ns = match ns {
        Ok(ns) => ns,
        Err(e) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    };
    let pending = |pointer: &str| {
        ns.pointer(pointer)
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
    };
    if pending("/spec/finalizers") || pending("/metadata/finalizers") {
        tracing::debug!(namespace = name, "namespace waits for other finalizers");
        return Ok(());
    }
    match registry
        .delete(&NAMESPACE, "", name, Some(revision_of(&ns)?))
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = name, "namespace deleted");
            Ok(())
        }
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use podnet_api::k8s::kinds::{ENDPOINTS, SERVICE};

    #[tokio::test]
    async fn a_deleted_namespace_is_emptied_and_removed() {
        let r = registry();
        for name in ["doomed", "kept"] {
            r.create(
                &NAMESPACE,
                json!({"metadata": {"name": name}, "spec": {"finalizers": [FINALIZER]}, "status": {"phase": "Active"}}),
            )
            .await
            .unwrap();
            r.create(&SERVICE, json!({"metadata": {"name": "web", "namespace": name}, "spec": {"ports": [{"port": 80}]}}))
                .await
                .unwrap();
            r.create(
                &ENDPOINTS,
                json!({"metadata": {"name": "web", "namespace": name}}),
            )
            .await
            .unwrap();
            r.create(&POD, json!({"metadata": {"name": "pending", "namespace": name}, "spec": {"containers": []}}))
                .await
                .unwrap();
            r.create(
                &POD,
                json!({"metadata": {"name": "running", "namespace": name}, "spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Running"}}),
            )
            .await
            .unwrap();
        }
        let (stop, rx) = shutdown();
        let handle = spawn(r.clone(), &ControllerConfig::default(), rx);

        r.update_with(&NAMESPACE, "", "doomed", |cur| {
            let mut ns = cur.clone();
            ns["metadata"]["deletionTimestamp"] =
                json!(meta::timestamp(std::time::SystemTime::now()));
            ns["status"]["phase"] = json!("Terminating");
            Ok(Some(ns))
        })
        .await
        .unwrap();

        // Everything but the running pod goes; that one is marked for its agent.
        let running = wait_for(
            "the contents deleted",
            Duration::from_secs(10),
            async || {
                let pods = r.list(&POD, Some("doomed"), None).await.unwrap().items;
                let services = r.list(&SERVICE, Some("doomed"), None).await.unwrap().items;
                let eps = r
                    .list(&ENDPOINTS, Some("doomed"), None)
                    .await
                    .unwrap()
                    .items;
                (pods.len() == 1 && services.is_empty() && eps.is_empty()).then(|| pods[0].clone())
            },
        )
        .await;
        assert_eq!(meta::name(&running), "running");
        assert!(running["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(running["metadata"]["deletionGracePeriodSeconds"], 30);
        let ns = r.get(&NAMESPACE, "", "doomed").await.unwrap();
        assert_eq!(ns["spec"]["finalizers"], json!([FINALIZER]));

        // The agent finishes the pod: the namespace goes.
        r.delete(&POD, "doomed", "running", None).await.unwrap();
        wait_for(
            "the namespace removed",
            Duration::from_secs(10),
            async || {
                r.try_get(&NAMESPACE, "", "doomed")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        // The other namespace is untouched.
        assert_eq!(
            r.list(&POD, Some("kept"), None).await.unwrap().items.len(),
            2
        );
        assert!(r.try_get(&NAMESPACE, "", "kept").await.unwrap().is_some());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }
}
