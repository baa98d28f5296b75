//! kube-rs against a started apiserver, for the policy kinds: `Api<NetworkPolicy>` (k8s-openapi's
//! type) and `Api<ClusterNetworkPolicy>` (podnet-api's) list, watch from a list's version
//! (`Api::watch`, and the `watcher` the agent uses), get, patch, refusals, delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use podnet_api::k8s::policy_api::ClusterNetworkPolicy;
use serde_json::json;

fn policy(name: &str, app: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"port": 8080}]}],
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn network_policies_list_and_watch() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "default");
    let created = policies
        .create(&PostParams::default(), &policy("web", "web"))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    let ports = spec.ingress.unwrap()[0].ports.clone().unwrap();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    policies
        .create(&PostParams::default(), &policy("db", "db"))
        .await
        .unwrap();

    let list = policies.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["db", "web"]);
    let all: Api<NetworkPolicy> = Api::all(client.clone());
    let selected = all
        .list(&ListParams::default().fields("metadata.name=web"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);

    // A watch from the list's version sees the change and the deletion, in order.
    let from = list.metadata.resource_version.unwrap();
    let stream = policies
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap();
    let patch = json!({"spec": {"podSelector": {"matchLabels": {"app": "store"}}}});
    policies
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    policies
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let events: Vec<String> = tokio::time::timeout(
        Duration::from_secs(10),
        stream
            .take(2)
            .map(|e| match e.unwrap() {
                WatchEvent::Modified(p) => {
                    let labels = p.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
                    format!("modified {}", labels["app"])
                }
                WatchEvent::Deleted(p) => format!("deleted {}", p.metadata.name.unwrap()),
                other => format!("{other:?}"),
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(events, ["modified store", "deleted db"]);

    // The runtime's watcher (list, then watch) over all namespaces.
    let mut seen = watcher(all.clone(), watcher::Config::default()).boxed();
    let mut initial = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), seen.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match event {
            watcher::Event::InitApply(p) => initial.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["web"]);

    // A refusal names the field, as Kubernetes does.
    let mut bad = policy("bad", "x");
    bad.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .end_port = Some(80);
    let err = policies
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}");
    };
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "NetworkPolicy.networking.k8s.io \"bad\" is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`"
    );
    ts.stop().await;
}

fn cluster_policy(name: &str, priority: i32) -> ClusterNetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin", "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"env": "prod"}}},
            "egress": [{"action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]}],
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_network_policies_through_kube_rs() {
    let ts = TestServer::start(Backend::Embedded).await;
    let client = ts.client();
    let cnps: Api<ClusterNetworkPolicy> = Api::all(client.clone());
    let mut with_status = cluster_policy("deny-doc", 10);
    with_status.status = Some(Default::default());
    let created = cnps
        .create(&PostParams::default(), &with_status)
        .await
        .unwrap();
    // Created without a status, as a custom resource with a status subresource is.
    assert_eq!(created.status, None);
    assert_eq!(created.metadata.generation, Some(1));
    cnps.create(&PostParams::default(), &cluster_policy("other", 20))
        .await
        .unwrap();
    let list = cnps.list(&ListParams::default()).await.unwrap();
    let priorities: Vec<Option<i32>> = list
        .items
        .iter()
        .map(|c| c.spec.as_ref().and_then(|s| s.priority))
        .collect();
    assert_eq!(priorities, [Some(10), Some(20)]);

    let stream = cnps
        .watch(
            &WatchParams::default().timeout(10),
            list.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap();
    let merge = json!({"spec": {"priority": 11}});
    let patched = cnps
        .patch("deny-doc", &PatchParams::default(), &Patch::Merge(&merge))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    let first = tokio::time::timeout(Duration::from_secs(10), stream.boxed().next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let WatchEvent::Modified(c) = first else {
        panic!("{first:?}");
    };
    assert_eq!(c.spec.unwrap().priority, Some(11));

    // The status subresource takes conditions; the main resource keeps them.
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "Programmed", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let with = cnps
        .patch_status("deny-doc", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(with.status.unwrap().conditions.unwrap()[0].type_, "Ready");
    assert_eq!(with.metadata.generation, Some(2));

    // No strategic merge patch for a custom resource; the CRD's refusals.
    let err = cnps
        .patch(
            "deny-doc",
            &PatchParams::default(),
            &Patch::Strategic(&merge),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let err = cnps
        .create(&PostParams::default(), &cluster_policy("too-low", -5))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        status.message,
        "ClusterNetworkPolicy.policy.networking.k8s.io \"too-low\" is invalid: spec.priority: Invalid value: -5: spec.priority in body should be greater than or equal to 0"
    );
    cnps.delete("other", &DeleteParams::default())
        .await
        .unwrap();
    let names: Vec<String> = cnps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, ["deny-doc"]);
    ts.stop().await;
}
